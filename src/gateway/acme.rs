//! [`rampart_acme::AcmeBackend`] and [`rampart_acme::KeyValue`] for the daemon.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use der::{Decode, Encode};
use rampart_acme::{
    AccountRecord, AcmeBackend, CaaRefusal, ExternalAccountKey, Issuance, KeyValue,
    KnownCertificate, OrderRecord, PendingStatus, Problem, ProblemType, Profile, Revoker,
};
use serde_json::{json, Map};
use uuid::Uuid;

use crate::lifecycle::revocation::{self, RevokeError};
use crate::model::{
    Credential, EnrollmentRequest, Identifier, Identity, Protocol, RevocationReason,
};
use crate::pipeline::submission::{Submitted, Wait};
use crate::pipeline::{Claimant, Outcome, Pipeline, PipelineError};
use crate::pkix::pem;
use crate::policy::{self, Layer};
use crate::store::RequestState;

/// The daemon as an ACME backend.
#[derive(Debug, Clone)]
pub struct Backend {
    pipeline: Pipeline,
    /// The ACME view of `[acme.profiles]`, built once (the configuration does not change
    /// while the daemon runs).
    profiles: BTreeMap<String, Profile>,
    /// Finalizes answered `processing` while their issuance goes on (see
    /// [`Backend::issue`]).
    background: Arc<Mutex<HashMap<Uuid, Background>>>,
}

/// An issuance that outlasted `acme.finalize_wait_ms`, by request id.
#[derive(Debug)]
enum Background {
    /// Still under way.
    Running,
    /// Ended at that moment; taken by the next poll of its order.
    Ended(Instant, Result<Issuance, Problem>),
}

/// How long an ended background issuance waits for its order to be polled before it is
/// forgotten (the store still answers for every request it recorded).
const BACKGROUND_KEPT: Duration = Duration::from_secs(3600);

impl Backend {
    /// Over `pipeline`.
    pub fn new(pipeline: Pipeline) -> Self {
        let config = pipeline.config();
        let profiles = config
            .acme
            .profiles
            .iter()
            .map(|(name, p)| (name.clone(), acme_profile(&config, p)))
            .collect();
        Backend {
            pipeline,
            profiles,
            background: Arc::default(),
        }
    }
}

/// The ACME view of what the pipeline made of a finalize.
fn issuance_of(outcome: Result<Outcome, PipelineError>) -> Result<Issuance, Problem> {
    match outcome {
        Ok(Outcome::Issued(record)) => Ok(Issuance::Issued {
            serial: record.serial,
        }),
        Ok(Outcome::Pending { request_id, .. }) => Ok(Issuance::Pending {
            request_id: request_id.to_string(),
        }),
        Ok(Outcome::Denied { request_id, denial }) => Err(denial_problem(request_id, &denial)),
        Err(PipelineError::Ca(error)) => Err(Problem::internal(format!("CA: {error}"))),
        Err(PipelineError::Store(error)) => Err(store_problem(error)),
        Err(error @ PipelineError::Aborted(_)) => Err(Problem::internal(error.to_string())),
    }
}

/// The ACME view of a configured profile.
fn acme_profile(
    config: &crate::config::Config,
    profile: &crate::config::AcmeProfileConfig,
) -> Profile {
    let mut meta = Map::new();
    if !profile.terms_of_service.is_empty() {
        meta.insert("termsOfService".into(), json!(profile.terms_of_service));
    }
    if !profile.website.is_empty() {
        meta.insert("website".into(), json!(profile.website));
    }
    meta.insert(
        "externalAccountRequired".into(),
        json!(profile.anonymous_role.is_empty()),
    );
    let anonymous_roles =
        (!profile.anonymous_role.is_empty()).then(|| vec![profile.anonymous_role.clone()]);
    let templates = &config.templates;
    let certificate_profiles = std::iter::once(&profile.template)
        .chain(&profile.certificate_profiles)
        .map(|name| {
            (
                name.clone(),
                templates
                    .get(name)
                    .map(|t| t.description.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    Profile {
        meta,
        anonymous_roles,
        certificate_profiles,
        caa_identities: profile.caa_identities.clone(),
        default_certificate_profile: profile.template.clone(),
    }
}

fn identity_of(account: &AccountRecord) -> Identity {
    Identity {
        name: account.identity.clone(),
        roles: account.roles.clone(),
        credential: Credential::AcmeAccount {
            account_id: account.id.clone(),
        },
    }
}

/// ACME identifier → model identifier (already normalised by the crate).
fn to_model(identifier: &rampart_acme::wire::Identifier) -> Option<Identifier> {
    match identifier.kind.as_str() {
        "dns" => Identifier::dns(&identifier.value).ok(),
        "ip" => identifier.value.parse().ok().map(Identifier::Ip),
        _ => None,
    }
}

/// Model identifier → ACME identifier; email and URI names have no ACME type.
fn to_acme(identifier: &Identifier) -> Option<rampart_acme::wire::Identifier> {
    match identifier {
        Identifier::Dns(name) => Some(rampart_acme::wire::Identifier::dns(name.clone())),
        Identifier::Ip(ip) => Some(rampart_acme::wire::Identifier::ip(*ip)),
        Identifier::Email(_) | Identifier::Uri(_) => None,
    }
}

fn store_problem(error: impl std::fmt::Display) -> Problem {
    Problem::internal(error)
}

#[async_trait::async_trait]
impl AcmeBackend for Backend {
    fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    async fn check_identifiers(
        &self,
        account: &AccountRecord,
        certificate_profile: &str,
        identifiers: &[rampart_acme::wire::Identifier],
        client: Option<IpAddr>,
    ) -> Result<(), Vec<(rampart_acme::wire::Identifier, String)>> {
        let mut refused = Vec::new();
        let mut model = Vec::new();
        for identifier in identifiers {
            match to_model(identifier) {
                Some(id) => model.push(id),
                None => refused.push((
                    identifier.clone(),
                    format!("`{}` is not a valid identifier", identifier.value),
                )),
            }
        }
        let identity = identity_of(account);
        let mut layer = Layer::Input;
        if let Err(denied) = policy::precheck_names(
            &self.pipeline.config(),
            &identity,
            certificate_profile,
            &model,
        ) {
            layer = denied.layer;
            refused.extend(
                denied
                    .refused
                    .iter()
                    .filter_map(|(id, reason)| Some((to_acme(id)?, reason.clone()))),
            );
        }
        if refused.is_empty() {
            return Ok(());
        }
        let reason = refused
            .iter()
            .map(|(identifier, why)| format!("`{}`: {why}", identifier.value))
            .collect::<Vec<_>>()
            .join("; ");
        let details = json!({
            "account": account.id,
            "profile": account.profile,
            "certificate_profile": certificate_profile,
            "identifiers": identifiers.iter().map(|i| format!("{}:{}", i.kind, i.value)).collect::<Vec<_>>(),
            "refused": refused.iter().map(|(identifier, why)| json!({"identifier": identifier.value, "reason": why})).collect::<Vec<_>>(),
        });
        self.pipeline
            .audit_precheck_denial(
                Claimant {
                    protocol: Protocol::Acme,
                    name: identity.name,
                    client,
                },
                layer,
                None,
                reason,
                details,
            )
            .await;
        Err(refused)
    }

    async fn issue(
        &self,
        account: &AccountRecord,
        order: &OrderRecord,
        csr_der: Vec<u8>,
        client: Option<IpAddr>,
    ) -> Result<Issuance, Problem> {
        let config = self.pipeline.config();
        let profile = config
            .acme
            .profiles
            .get(&order.profile)
            .ok_or_else(|| Problem::internal("order of an unknown profile"))?;
        // Orders made before certificate profiles existed carry none: the default.
        let template = if order.certificate_profile.is_empty() {
            profile.template.clone()
        } else {
            order.certificate_profile.clone()
        };
        let identifiers = order.identifiers.iter().filter_map(to_model).collect();
        let request = EnrollmentRequest {
            request_id: Uuid::now_v7(),
            protocol: Protocol::Acme,
            identity: identity_of(account),
            csr_der,
            template,
            requested_identifiers: Some(identifiers),
            validity_days: None,
            resource: None,
            metadata: BTreeMap::from([
                ("acme_account".to_string(), account.id.clone()),
                ("acme_order".to_string(), order.id.clone()),
            ]),
            // RFC 9773 `replaces` (checked at newOrder): a renewal of that certificate.
            renews: order
                .replaces
                .as_deref()
                .and_then(|id| rampart_acme::ari::CertId::parse(id).ok())
                .map(|id| id.serial),
            client,
        };
        // A CA that takes longer than `finalize_wait_ms` (an upstream CA validating its own
        // order) gets the order answered `processing` (RFC 8555 §7.4: the client polls it
        // with Retry-After) instead of holding the client's finalize request past its
        // timeout. The issuance goes on; its end is kept for the order's next poll.
        let wait = Wait::millis(config.acme.finalize_wait_ms);
        match self.pipeline.submit_within(request, None, wait).await {
            Submitted::Ended(outcome) => issuance_of(outcome),
            Submitted::Continuing(submission) => {
                let request_id = submission.request_id();
                self.background
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(request_id, Background::Running);
                let background = self.background.clone();
                tokio::spawn(async move {
                    let ended = issuance_of(submission.outcome().await);
                    let now = Instant::now();
                    let mut background = background.lock().unwrap_or_else(|e| e.into_inner());
                    background.retain(|_, b| match b {
                        Background::Running => true,
                        Background::Ended(at, _) => now.duration_since(*at) < BACKGROUND_KEPT,
                    });
                    background.insert(request_id, Background::Ended(now, ended));
                });
                Ok(Issuance::Pending {
                    request_id: request_id.to_string(),
                })
            }
        }
    }

    async fn pending_status(&self, request_id: &str) -> Result<PendingStatus, Problem> {
        let id: Uuid = request_id
            .parse()
            .map_err(|_| Problem::internal("malformed pending request id"))?;
        {
            let mut background = self.background.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(Background::Running) = background.get(&id) {
                return Ok(PendingStatus::Waiting);
            }
            match background.remove(&id) {
                Some(Background::Ended(_, Ok(Issuance::Issued { serial }))) => {
                    return Ok(PendingStatus::Issued { serial });
                }
                Some(Background::Ended(_, Err(problem))) => {
                    return Ok(PendingStatus::Refused(problem));
                }
                // Held for approval now, or never run here: the store knows.
                _ => {}
            }
        }
        let state = self
            .pipeline
            .request_state(id)
            .await
            .map_err(store_problem)?;
        Ok(match state {
            Some(RequestState::Issued { serial }) => PendingStatus::Issued { serial },
            Some(RequestState::Denied { reason }) => PendingStatus::Refused(Problem::new(
                ProblemType::Unauthorized,
                format!("{reason} (request {id})"),
            )),
            Some(RequestState::Failed { reason }) => {
                PendingStatus::Refused(Problem::internal(reason))
            }
            Some(RequestState::Pending { .. } | RequestState::Issuing { .. }) => {
                PendingStatus::Waiting
            }
            None => PendingStatus::Refused(Problem::internal("the pending request disappeared")),
        })
    }

    async fn certificate_chain(&self, serial: &str) -> Result<Option<String>, Problem> {
        // A read: on this task, like the ACME records' (see `StoreKv`).
        let record = self
            .pipeline
            .store()
            .certificate(serial)
            .map_err(store_problem)?;
        Ok(record.map(|r| {
            let mut all = vec![r.der.as_slice()];
            all.extend(r.chain.iter().map(Vec::as_slice));
            pem::encode_certificates(all)
        }))
    }

    async fn certificate(&self, serial: &str) -> Result<Option<KnownCertificate>, Problem> {
        let record = self
            .pipeline
            .store()
            .certificate(serial)
            .map_err(store_problem)?;
        let Some(record) = record else {
            return Ok(None);
        };
        let spki_der = x509_cert::Certificate::from_der(&record.der)
            .and_then(|cert| cert.tbs_certificate.subject_public_key_info.to_der())
            .map_err(|e| {
                Problem::internal(format!("re-reading stored certificate {serial}: {e}"))
            })?;
        Ok(Some(KnownCertificate {
            serial: record.serial.clone(),
            owner: record.owner.clone(),
            identifiers: record.sans.iter().filter_map(to_acme).collect(),
            spki_der,
            not_before: record.not_before,
            not_after: record.not_after,
            revoked: record.revocation.is_some(),
            // The same window the renewal scheduler uses (template renew_before_days).
            renewal_window: Some(crate::lifecycle::renewal::suggested_window(
                &self.pipeline.config(),
                &record,
            )),
            der: record.der,
        }))
    }

    async fn external_account_key(
        &self,
        key_id: &str,
    ) -> Result<Option<ExternalAccountKey>, Problem> {
        let stored = load_eab_key(&self.pipeline, key_id).await?;
        Ok(stored.map(|k| ExternalAccountKey {
            mac_key: k.mac_key(),
            identity: k.identity,
            roles: k.roles,
            bound_account: k.bound_account,
        }))
    }

    async fn external_account_refused(
        &self,
        profile: &str,
        key_id: &str,
        reason: &str,
        client: Option<IpAddr>,
    ) {
        // The identity the key belongs to, when the key id is known: whom the binding claimed.
        let claimed = load_eab_key(&self.pipeline, key_id)
            .await
            .ok()
            .flatten()
            .map_or_else(|| "unknown".to_string(), |key| key.identity);
        self.pipeline
            .audit_refused_credentials(
                Claimant {
                    protocol: Protocol::Acme,
                    name: claimed,
                    client,
                },
                reason.to_string(),
                json!({ "profile": profile, "eab_key_id": key_id }),
            )
            .await;
    }

    async fn caa_refused(&self, refusal: CaaRefusal<'_>) {
        let name = match refusal.wildcard {
            true => format!("*.{}", refusal.name),
            false => refusal.name.to_string(),
        };
        let stage = match refusal.at_finalize {
            true => "finalize",
            false => "validation",
        };
        self.pipeline
            .audit_precheck_denial(
                Claimant {
                    protocol: Protocol::Acme,
                    name: identity_of(refusal.account).name,
                    client: refusal.client,
                },
                Layer::Names,
                Some("caa"),
                format!("CAA at {stage} for `{name}`: {}", refusal.reason),
                json!({
                    "account": refusal.account.id,
                    "profile": refusal.account.profile,
                    "name": name,
                    "method": refusal.method,
                    "stage": stage,
                    "problem_type": refusal.problem_type,
                }),
            )
            .await;
    }

    async fn bind_external_account_key(
        &self,
        key_id: &str,
        account_id: &str,
    ) -> Result<(), Problem> {
        let mut key = load_eab_key(&self.pipeline, key_id)
            .await?
            .ok_or_else(|| Problem::unauthorized("unknown external account key id"))?;
        if key.bound_account.is_some() {
            return Err(Problem::unauthorized(
                "this external account key is already bound to an account",
            ));
        }
        key.bound_account = Some(account_id.to_string());
        save_eab_key(&self.pipeline, &key)
            .await
            .map_err(store_problem)
    }

    async fn revoke(&self, serial: &str, reason: u8, revoker: Revoker) -> Result<(), Problem> {
        let reason = RevocationReason::parse(&reason.to_string())
            .map_err(|e| Problem::new(ProblemType::BadRevocationReason, e))?;
        let actor = match revoker {
            Revoker::Account(identity) => identity,
            Revoker::CertificateKey => "acme:certificate-key".to_string(),
        };
        match revocation::revoke_authorized(&self.pipeline, &actor, serial, reason).await {
            Ok(_) => Ok(()),
            Err(RevokeError::AlreadyRevoked { .. }) => Err(Problem::new(
                ProblemType::AlreadyRevoked,
                "the certificate is already revoked",
            )),
            Err(RevokeError::NotFound(_)) => Err(Problem::not_found("certificate")),
            Err(RevokeError::ReasonNotAllowed(message)) => {
                Err(Problem::new(ProblemType::BadRevocationReason, message))
            }
            Err(error @ RevokeError::Ca { .. }) => Err(Problem::internal(error.to_string())),
            Err(RevokeError::Store(error)) => Err(store_problem(error)),
        }
    }
}

/// ACME records in the daemon's store.
#[derive(Debug, Clone)]
pub struct StoreKv {
    pipeline: Pipeline,
}

impl StoreKv {
    /// Over the pipeline's store.
    pub fn new(pipeline: Pipeline) -> Self {
        StoreKv { pipeline }
    }

    /// When `durable`, wait until what was written so far is on disk.
    async fn flushed(&self, durable: bool) -> Result<(), String> {
        match durable {
            true => self.pipeline.store().flush().completed().await,
            false => Ok(()),
        }
        .map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl KeyValue for StoreKv {
    // Reads and writes are in-memory operations of microseconds: they run on the calling
    // task, since a hop to the blocking pool costs more than they do. A durable write then
    // awaits its flush (run by the store's own thread, shared with concurrent changes).
    async fn put(
        &self,
        namespace: &'static str,
        key: String,
        value: Vec<u8>,
        durable: bool,
    ) -> Result<(), String> {
        let store = self.pipeline.store();
        store
            .protocol_put(namespace, &key, &value, false)
            .map_err(|e| e.to_string())?;
        self.flushed(durable).await
    }

    async fn remove(
        &self,
        namespace: &'static str,
        key: String,
        durable: bool,
    ) -> Result<(), String> {
        let store = self.pipeline.store();
        store
            .protocol_delete(namespace, &key, false)
            .map_err(|e| e.to_string())?;
        self.flushed(durable).await
    }

    async fn get(&self, namespace: &'static str, key: String) -> Result<Option<Vec<u8>>, String> {
        self.pipeline
            .store()
            .protocol_get(namespace, &key)
            .map_err(|e| e.to_string())
    }

    async fn scan_after(
        &self,
        namespace: &'static str,
        prefix: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        self.pipeline
            .store()
            .protocol_scan_after(namespace, &prefix, after.as_deref(), limit)
            .map_err(|e| e.to_string())
    }
}

/// A policy denial as an ACME problem: by the layer that decided.
fn denial_problem(request_id: Uuid, denial: &crate::policy::Denial) -> Problem {
    let kind = match (denial.layer, denial.rule) {
        (_, "rate_limited") => ProblemType::RateLimited,
        (Layer::Input | Layer::Template, _) => ProblemType::BadCsr,
        (Layer::Names, _) => ProblemType::RejectedIdentifier,
        (Layer::Identity | Layer::Resource, _) => ProblemType::Unauthorized,
    };
    Problem::new(
        kind,
        format!(
            "{} (rule {}, request {request_id})",
            denial.reason, denial.rule
        ),
    )
}

/// The ACME server over the daemon.
pub fn server(pipeline: &Pipeline) -> Result<Arc<rampart_acme::AcmeServer>, String> {
    let acme = &pipeline.config().acme;
    let settings = rampart_acme::validation::ValidationSettings {
        http01_port: acme.http01_port,
        tlsalpn01_port: acme.tlsalpn01_port,
        dns_resolver: acme.resolver_addr(),
        allow_private_targets: acme.allow_private_targets,
        retry_delays: acme
            .validation_retry_ms
            .iter()
            .map(|ms| std::time::Duration::from_millis(*ms))
            .collect(),
        ..Default::default()
    };
    let validator =
        rampart_acme::validation::Validator::new(settings).map_err(|e| e.to_string())?;
    let clock = pipeline.clock().clone();
    Ok(rampart_acme::AcmeServer::new(
        Arc::new(Backend::new(pipeline.clone())),
        rampart_acme::Records::new(Box::new(StoreKv::new(pipeline.clone()))),
        validator,
        Arc::new(move || clock.now()),
    ))
}

/// `N` random bytes from `fill`, base64url: drawn again while the text would begin with
/// `-`. Users paste the key id and the HMAC key into command lines (`certbot --eab-kid
/// <id> --eab-hmac-key <key>`, lego, acme.sh), where a value beginning with `-` is taken for
/// an option: one key in 32 would otherwise fail so. Excluding one of 64 first characters
/// costs 0.02 bits of the key's entropy.
fn random_option_safe_b64<const N: usize>(mut fill: impl FnMut(&mut [u8])) -> String {
    use base64::Engine;
    loop {
        let mut bytes = [0u8; N];
        fill(&mut bytes);
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if !text.starts_with('-') {
            return text;
        }
    }
}

/// Where external account keys live in the store.
const EAB_NAMESPACE: &str = "acme.eab_keys";

/// An external account (MAC) key as stored. The MAC key must be kept usable (the server
/// verifies HMACs with it), so unlike API keys it is stored as is; it is single use: it
/// binds one account.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredEabKey {
    /// Key id (the EAB `kid`).
    pub key_id: String,
    /// base64url MAC key.
    pub mac_key_b64: String,
    /// Identity accounts bound with it act as.
    pub identity: String,
    /// Roles of that identity.
    pub roles: Vec<String>,
    /// Account bound with it.
    pub bound_account: Option<String>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
}

impl StoredEabKey {
    fn mac_key(&self) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&self.mac_key_b64)
            .unwrap_or_default()
    }
}

async fn load_eab_key(pipeline: &Pipeline, key_id: &str) -> Result<Option<StoredEabKey>, Problem> {
    let owned = key_id.to_string();
    let bytes = pipeline
        .with_store(move |store| store.protocol_get(EAB_NAMESPACE, &owned))
        .await
        .map_err(store_problem)?;
    bytes
        .map(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| Problem::internal(format!("corrupt EAB key record: {e}")))
        })
        .transpose()
}

async fn save_eab_key(
    pipeline: &Pipeline,
    key: &StoredEabKey,
) -> Result<(), crate::store::StoreError> {
    let bytes = serde_json::to_vec(key).expect("serializes");
    let key_id = key.key_id.clone();
    pipeline
        .with_store(move |store| store.protocol_put(EAB_NAMESPACE, &key_id, &bytes, true))
        .await
}

/// Create an external account key for `identity` with `roles`, audited. Returns the
/// stored record; its `mac_key_b64` is what the ACME client is configured with.
pub async fn create_eab_key(
    pipeline: &Pipeline,
    actor: &str,
    identity: &str,
    roles: Vec<String>,
) -> Result<StoredEabKey, crate::store::StoreError> {
    let fill = |bytes: &mut [u8]| aws_lc_rs::rand::fill(bytes).expect("system randomness");
    let now = pipeline.clock().now();
    let key = StoredEabKey {
        key_id: random_option_safe_b64::<12>(fill),
        mac_key_b64: random_option_safe_b64::<32>(fill),
        identity: identity.to_string(),
        roles: roles.clone(),
        bound_account: None,
        created_at: now,
    };
    save_eab_key(pipeline, &key).await?;
    let audit = crate::store::AuditEntry {
        time: now,
        request_id: None,
        actor: actor.to_string(),
        action: crate::store::AuditAction::ApiKeyCreated,
        outcome: "ok".into(),
        layer: None,
        rule: None,
        reason: "ACME external account key created".into(),
        subject: Some(key.key_id.clone()),
        details: json!({ "identity": identity, "roles": roles, "kind": "acme_eab" }),
    };
    pipeline
        .with_store(move |store| store.append_audit(&audit))
        .await?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_account_keys_never_begin_with_a_dash() {
        // 0xF8 encodes as `-` first: drawn again, as often as it comes.
        let mut draws = [0xF8u8, 0xFB, 0x00].into_iter();
        let mut drawn = 0;
        let text = random_option_safe_b64::<12>(|bytes| {
            drawn += 1;
            bytes.fill(draws.next().unwrap());
        });
        assert_eq!(drawn, 3);
        assert_eq!(text, "AAAAAAAAAAAAAAAA");
        let fill = |bytes: &mut [u8]| aws_lc_rs::rand::fill(bytes).unwrap();
        assert!((0..2000).all(|_| !random_option_safe_b64::<32>(fill).starts_with('-')));
    }
}
