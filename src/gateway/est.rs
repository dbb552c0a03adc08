//! [`rampart_est::EstBackend`] for the daemon: HTTP Basic users from `[est.users]`
//! (argon2), client certificates rampart issued (valid, not revoked), enrollment through
//! the one pipeline, PKCS#7 certs-only answers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use der::Decode;
use rampart_est::{Connection, Credentials, EstBackend, EstError, Operation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ca::CaError;
use crate::config::{AcceptedKeyType, EstAuth};
use crate::gateway::passwords::PasswordChecker;
use crate::model::{CertificateStatus, Credential, EnrollmentRequest, Identity, Protocol};
use crate::pipeline::submission::{Wait, STILL_ISSUING};
use crate::pipeline::{Claimant, Outcome, Pipeline, PipelineError};
use crate::pkix::csr::VerifiedCsr;
use crate::pkix::pkcs7;
use crate::policy::Layer;
use crate::store::RequestState;

/// The serial of the certificate in a certs-only PKCS#7.
fn issued_serial(pkcs7: &[u8]) -> Option<String> {
    let info = cms::content_info::ContentInfo::from_der(pkcs7).ok()?;
    let signed: cms::signed_data::SignedData = info.content.decode_as().ok()?;
    signed
        .certificates?
        .0
        .iter()
        .find_map(|choice| match choice {
            cms::cert::CertificateChoices::Certificate(cert) => Some(
                rampart_acme::ari::serial_hex(cert.tbs_certificate.serial_number.as_bytes()),
            ),
            _ => None,
        })
}

/// Protocol-state namespace: requests answered 202, by hash of requester and CSR →
/// [`Resendable`].
pub(crate) const RESENT: &str = "est.pending";

/// A request answered 202, kept so the client's re-send finds it (RFC 7030 §4.2.3).
#[derive(Debug, Serialize, Deserialize)]
struct Resendable {
    request_id: Uuid,
    /// When a re-send was first given its final answer, the certificate or the refusal
    /// (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    answered_at: Option<i64>,
}

impl Resendable {
    /// As stored; entries written before [`Resendable`] hold the bare request id.
    fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok().or_else(|| {
            let request_id = String::from_utf8_lossy(bytes).parse().ok()?;
            Some(Resendable {
                request_id,
                answered_at: None,
            })
        })
    }
}

/// The request of a stored [`Resendable`] (for [`super::retention`]).
pub(crate) fn resend_request(bytes: &[u8]) -> Option<Uuid> {
    Resendable::decode(bytes).map(|r| r.request_id)
}

/// How long after its final answer a re-send still gets that answer: time enough for a
/// client that lost the response. Later the same CSR from the same client is a new
/// enrollment (a device with a fixed CSR renewing), never its old certificate again.
const RESEND_WINDOW_SECONDS: i64 = 3600;

/// A manufacturer CA devices may bootstrap with.
#[derive(Debug, Clone)]
struct BootstrapCa {
    name: String,
    subject: x509_cert::name::Name,
    roles: Vec<String>,
    subject_cn_pattern: Option<String>,
}

/// The daemon as an EST backend.
#[derive(Debug, Clone)]
pub struct Backend {
    pipeline: Pipeline,
    bootstrap: Vec<BootstrapCa>,
    /// Basic users' passwords against their argon2 hashes, remembered once verified.
    passwords: Arc<PasswordChecker>,
}

/// The certificates of `[est.bootstrap]`, DER (also the TLS layer's extra client roots).
pub fn bootstrap_certificates(pipeline: &Pipeline) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for (name, bootstrap) in &pipeline.config().est.bootstrap {
        let text = std::fs::read_to_string(&bootstrap.ca_file)
            .map_err(|e| format!("{}: {e}", bootstrap.ca_file.display()))?;
        for der in crate::pkix::pem::decode_certificates(&text)
            .map_err(|e| format!("{}: {e}", bootstrap.ca_file.display()))?
        {
            out.push((name.clone(), der));
        }
    }
    Ok(out)
}

impl Backend {
    /// Over `pipeline`, with the bootstrap CA certificates from [`bootstrap_certificates`].
    pub fn new(pipeline: Pipeline, bootstrap_cas: &[(String, Vec<u8>)]) -> Result<Self, String> {
        let mut bootstrap = Vec::new();
        for (name, der) in bootstrap_cas.iter().cloned() {
            let cert = x509_cert::Certificate::from_der(&der)
                .map_err(|e| format!("bootstrap CA {name}: {e}"))?;
            let entry = pipeline.config().est.bootstrap[&name].clone();
            let (roles, subject_cn_pattern) = (entry.roles, entry.subject_cn_pattern);
            bootstrap.push(BootstrapCa {
                name,
                subject: cert.tbs_certificate.subject,
                roles,
                subject_cn_pattern,
            });
        }
        Ok(Backend {
            pipeline,
            bootstrap,
            passwords: Arc::default(),
        })
    }

    fn auth(&self, label: Option<&str>) -> EstAuth {
        self.pipeline
            .config()
            .est
            .profiles
            .get(label.unwrap_or("default"))
            .map(|p| p.auth)
            .unwrap_or_default()
    }

    fn template(&self, label: Option<&str>) -> Option<String> {
        self.pipeline
            .config()
            .est
            .profiles
            .get(label.unwrap_or("default"))
            .map(|p| p.template.clone())
    }

    /// Check a Basic user's password (argon2 off the async workers, remembered once right).
    async fn basic_identity(&self, user: String, password: String) -> Result<Identity, EstError> {
        let wrong = || EstError::Unauthenticated("unknown user or wrong password".into());
        let Some(entry) = self.pipeline.config().est.users.get(&user).cloned() else {
            return Err(wrong());
        };
        let verified = self
            .passwords
            .verify(&user, &entry.password_hash, &password)
            .await;
        if !verified {
            tracing::info!(%user, "EST Basic authentication failed");
            return Err(wrong());
        }
        let roles = self.pipeline.config().est.users[&user].roles.clone();
        Ok(Identity {
            name: user.clone(),
            roles,
            credential: Credential::EstUser { user },
        })
    }

    /// A device certificate from a manufacturer CA (the TLS handshake verified the chain;
    /// this finds the entry by issuer name and subject CN pattern): identity
    /// `<bootstrap name>:<subject CN>`.
    fn bootstrap_identity(&self, cert: &x509_cert::Certificate) -> Result<Identity, EstError> {
        let mut by_issuer = self
            .bootstrap
            .iter()
            .filter(|b| b.subject == cert.tbs_certificate.issuer)
            .peekable();
        if by_issuer.peek().is_none() {
            return Err(EstError::Unauthenticated(
                "client certificate refused: not issued by rampart".into(),
            ));
        }
        let common_name = cert
            .tbs_certificate
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .find(|attribute| attribute.oid == const_oid::db::rfc4519::CN)
            .and_then(|attribute| {
                der::asn1::Utf8StringRef::try_from(&attribute.value)
                    .map(|s| s.as_str().to_string())
                    .or_else(|_| {
                        der::asn1::PrintableStringRef::try_from(&attribute.value)
                            .map(|s| s.as_str().to_string())
                    })
                    .ok()
            })
            .ok_or_else(|| {
                EstError::Unauthenticated("device certificate without a subject CN".into())
            })?;
        let bootstrap = by_issuer
            .find(|b| {
                b.subject_cn_pattern
                    .as_deref()
                    .is_none_or(|pattern| crate::policy::identity::glob_matches(pattern, &common_name))
            })
            .ok_or_else(|| {
                EstError::Unauthenticated(format!(
                    "device certificate refused: subject CN `{common_name}` matches no bootstrap entry of its CA"
                ))
            })?;
        let serial = rampart_acme::ari::serial_hex(cert.tbs_certificate.serial_number.as_bytes());
        Ok(Identity {
            name: format!("{}:{common_name}", bootstrap.name),
            roles: bootstrap.roles.clone(),
            credential: Credential::ClientCertificate { serial },
        })
    }

    /// The identity behind a client certificate rampart issued and that is valid now; its
    /// roles are those of the EST user of the same name, if any.
    async fn certificate_identity(
        &self,
        chain: &[Vec<u8>],
    ) -> Result<(Identity, BTreeSet<String>), EstError> {
        let refused =
            |why: &str| EstError::Unauthenticated(format!("client certificate refused: {why}"));
        let leaf = chain.first().ok_or_else(|| refused("none presented"))?;
        let cert = x509_cert::Certificate::from_der(leaf).map_err(|_| refused("unreadable"))?;
        let serial = rampart_acme::ari::serial_hex(cert.tbs_certificate.serial_number.as_bytes());
        let record = self
            .pipeline
            .issued_record(leaf)
            .await
            .map_err(|e| EstError::Unavailable(e.to_string()))?;
        let Some(record) = record else {
            return self
                .bootstrap_identity(&cert)
                .map(|identity| (identity, BTreeSet::new()));
        };
        match record.status_at(self.pipeline.clock().now()) {
            CertificateStatus::Valid => {}
            status => return Err(refused(&format!("it is {status:?}").to_lowercase())),
        }
        let roles = self
            .pipeline
            .config()
            .est
            .users
            .get(&record.owner)
            .map(|u| u.roles.clone())
            .unwrap_or_default();
        let identity = Identity {
            name: record.owner.clone(),
            roles,
            credential: Credential::ClientCertificate { serial },
        };
        Ok((
            identity,
            record.sans.iter().map(|s| s.to_string()).collect(),
        ))
    }
}

impl Backend {
    /// §3.5: when the profile asks for it, the CSR must be bound to this TLS connection.
    fn check_pop_linking(
        &self,
        label: Option<&str>,
        csr_der: &[u8],
        binding: Option<&[u8]>,
    ) -> Result<(), EstError> {
        use base64::Engine;
        let required = self
            .pipeline
            .config()
            .est
            .profiles
            .get(label.unwrap_or("default"))
            .is_some_and(|p| p.require_pop_linking);
        if !required {
            return Ok(());
        }
        let binding = binding.ok_or_else(|| {
            EstError::BadRequest("no TLS channel binding on this connection".into())
        })?;
        let expected = base64::engine::general_purpose::STANDARD.encode(binding);
        let csr = VerifiedCsr::parse(csr_der).map_err(|e| EstError::BadRequest(e.to_string()))?;
        match csr.challenge_password {
            Some(password) if password == expected => Ok(()),
            Some(_) => Err(EstError::BadRequest(
                "the CSR's challengePassword is not this connection's tls-exporter channel binding".into(),
            )),
            None => Err(EstError::BadRequest(
                "this profile requires proof-of-possession linking: put base64(tls-exporter) in challengePassword".into(),
            )),
        }
    }

    /// Who the request is from; a re-enrollment must also keep its certificate's names.
    /// Refused credentials are audited, with the `client` they came from.
    async fn authenticate(
        &self,
        auth: EstAuth,
        credentials: Credentials,
        operation: Operation,
        csr_der: &[u8],
        client: Option<IpAddr>,
    ) -> Result<Identity, EstError> {
        // What the audit needs of refused credentials, kept before they are consumed (the
        // certificate is read only if they are refused).
        let presented = Presented {
            user: match &credentials {
                Credentials::Basic { user, .. } | Credentials::Both { user, .. } => {
                    Some(user.clone())
                }
                Credentials::Certificate(_) => None,
            },
            leaf: match &credentials {
                Credentials::Certificate(chain) | Credentials::Both { chain, .. } => {
                    chain.first().cloned()
                }
                Credentials::Basic { .. } => None,
            },
        };
        let identified = self.identify(auth, credentials, operation, csr_der).await;
        if let Err(EstError::Unauthenticated(reason) | EstError::Forbidden(reason)) = &identified {
            let (claimed, mut details) = presented.claimed();
            details.insert("operation".into(), format!("{operation:?}").into());
            self.pipeline
                .audit_refused_credentials(
                    Claimant {
                        protocol: Protocol::Est,
                        name: claimed,
                        client,
                    },
                    reason.clone(),
                    serde_json::Value::Object(details),
                )
                .await;
        }
        identified
    }

    async fn identify(
        &self,
        auth: EstAuth,
        credentials: Credentials,
        operation: Operation,
        csr_der: &[u8],
    ) -> Result<Identity, EstError> {
        let refused = |why: &str| {
            Err(EstError::Unauthenticated(format!(
                "this EST profile accepts {why}"
            )))
        };
        let credentials = match (auth, operation, credentials) {
            // A renewal is authenticated by the certificate it renews, whatever the profile.
            (_, Operation::Reenroll, credentials) => credentials,
            (EstAuth::Any, _, Credentials::Both { user, password, .. }) => {
                Credentials::Basic { user, password }
            }
            (EstAuth::Any, _, credentials) => credentials,
            (
                EstAuth::Basic,
                _,
                Credentials::Basic { user, password } | Credentials::Both { user, password, .. },
            ) => Credentials::Basic { user, password },
            (EstAuth::Basic, _, _) => return refused("HTTP Basic only"),
            (
                EstAuth::Certificate,
                _,
                Credentials::Certificate(chain) | Credentials::Both { chain, .. },
            ) => Credentials::Certificate(chain),
            (EstAuth::Certificate, _, _) => return refused("client certificates only"),
            (
                EstAuth::Both,
                _,
                Credentials::Both {
                    user,
                    password,
                    chain,
                },
            ) => {
                // The certificate must be one rampart accepts; the user is who enrolls.
                self.certificate_identity(&chain).await?;
                Credentials::Basic { user, password }
            }
            (EstAuth::Both, _, _) => {
                return refused("HTTP Basic together with a client certificate only")
            }
        };
        match credentials {
            Credentials::Basic { user, password } => self.basic_identity(user, password).await,
            Credentials::Both { chain, .. } | Credentials::Certificate(chain) => {
                let (identity, current_names) = self.certificate_identity(&chain).await?;
                if operation == Operation::Reenroll && current_names.is_empty() {
                    return Err(EstError::Unauthenticated(
                        "simplereenroll renews a certificate rampart issued; a manufacturer certificate only bootstraps".into(),
                    ));
                }
                if operation == Operation::Reenroll {
                    // §4.2.2: a renewal keeps the names of the certificate it renews.
                    let csr = VerifiedCsr::parse(csr_der)
                        .map_err(|e| EstError::BadRequest(e.to_string()))?;
                    let requested: BTreeSet<String> =
                        csr.identifiers.iter().map(|i| i.to_string()).collect();
                    if requested != current_names {
                        return Err(EstError::Forbidden(
                            "simplereenroll must request the names of the current certificate"
                                .into(),
                        ));
                    }
                }
                Ok(identity)
            }
        }
    }

    /// The answer to a request sent before that was answered 202 (RFC 7030 §4.2.3: the
    /// client re-sends the same request): 202 while it waits, then the certificate or 403,
    /// for [`RESEND_WINDOW_SECONDS`] after that answer was first given. `None` when there
    /// was no such request, or its window has passed (the entry is then dropped).
    async fn earlier_answer(
        &self,
        resend_key: &str,
    ) -> Result<Option<Result<Vec<u8>, EstError>>, EstError> {
        let unavailable = |e: crate::store::StoreError| EstError::Unavailable(e.to_string());
        // Asked at every enrollment and nearly always absent. Reads and unflushed writes of
        // the store are in-memory work of microseconds: they run on this task (as in the
        // ACME and SCEP gateways), not through a hop to the blocking pool.
        let store = self.pipeline.store();
        let Some(stored) = store
            .protocol_get(RESENT, resend_key)
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let Some(mut resendable) = Resendable::decode(&stored) else {
            return Ok(None);
        };
        let request_id = resendable.request_id;
        let state = self
            .pipeline
            .request_state(request_id)
            .await
            .map_err(unavailable)?;
        if matches!(
            state,
            Some(RequestState::Issued { .. } | RequestState::Denied { .. })
        ) {
            let now = self.pipeline.clock().now().unix_timestamp();
            match resendable.answered_at {
                Some(at) if now - at > RESEND_WINDOW_SECONDS => {
                    store
                        .protocol_delete(RESENT, resend_key, false)
                        .map_err(unavailable)?;
                    return Ok(None);
                }
                Some(_) => {}
                None => {
                    resendable.answered_at = Some(now);
                    let value = serde_json::to_vec(&resendable).expect("serializes");
                    store
                        .protocol_put(RESENT, resend_key, &value, false)
                        .map_err(unavailable)?;
                }
            }
        }
        Ok(match state {
            Some(RequestState::Issued { serial }) => {
                let record = store.certificate(&serial).map_err(unavailable)?;
                record.map(|r| {
                    pkcs7::certs_only(std::slice::from_ref(&r.der))
                        .map_err(|e| EstError::Unavailable(e.to_string()))
                })
            }
            Some(RequestState::Pending { .. }) => Some(Err(EstError::Pending(format!(
                "request {request_id} still waits for approval"
            )))),
            Some(RequestState::Issuing { .. }) => Some(Err(EstError::Pending(format!(
                "request {request_id}: {STILL_ISSUING}"
            )))),
            Some(RequestState::Denied { reason }) => Some(Err(EstError::Forbidden(format!(
                "{reason} (request {request_id})"
            )))),
            Some(RequestState::Failed { .. }) | None => None,
        })
    }

    /// Through the one pipeline; the certs-only PKCS#7 of the issued certificate.
    async fn submit(
        &self,
        identity: Identity,
        template: String,
        csr_der: Vec<u8>,
        operation: Operation,
        client: Option<IpAddr>,
    ) -> Result<Vec<u8>, EstError> {
        // A re-enrollment authenticated by the certificate it replaces renews it.
        let renews = match (&operation, &identity.credential) {
            (Operation::Reenroll, Credential::ClientCertificate { serial }) => Some(serial.clone()),
            _ => None,
        };
        // A key the server makes is answered once, with the certificate: that answer waits
        // for it. Otherwise a slow CA gets 202, and the client's re-sent request the
        // certificate (RFC 7030 §4.2.3).
        let wait = match operation {
            Operation::ServerKeygen => Wait::ToTheEnd,
            Operation::Enroll | Operation::Reenroll => {
                Wait::millis(self.pipeline.config().est.issue_wait_ms)
            }
        };
        let operation = match operation {
            Operation::Enroll => "simpleenroll",
            Operation::Reenroll => "simplereenroll",
            Operation::ServerKeygen => "serverkeygen",
        };
        let request = EnrollmentRequest {
            request_id: Uuid::now_v7(),
            protocol: Protocol::Est,
            identity,
            csr_der,
            template,
            requested_identifiers: None,
            validity_days: None,
            resource: None,
            metadata: BTreeMap::from([("est_operation".to_string(), operation.to_string())]),
            renews,
            client,
        };
        let resend_key = crate::pkix::sha256_hex(
            format!(
                "{}\n{}",
                request.identity.name,
                hex::encode(&request.csr_der)
            )
            .as_bytes(),
        );
        if let Some(answer) = self.earlier_answer(&resend_key).await? {
            return answer;
        }
        let submitted = self.pipeline.submit_within(request, None, wait).await;
        match submitted.or_pending() {
            Ok(Outcome::Issued(record)) => pkcs7::certs_only(std::slice::from_ref(&record.der))
                .map_err(|e| EstError::Unavailable(e.to_string())),
            Ok(Outcome::Pending { request_id, reason }) => {
                let value = serde_json::to_vec(&Resendable {
                    request_id,
                    answered_at: None,
                })
                .expect("serializes");
                let now = self.pipeline.clock().now();
                self.pipeline
                    .with_store(move |store| {
                        super::retention::file(store, RESENT, &resend_key, now)?;
                        store.protocol_put(RESENT, &resend_key, &value, true)
                    })
                    .await
                    .map_err(|e| EstError::Unavailable(e.to_string()))?;
                Err(EstError::Pending(format!(
                    "{reason} (request {request_id}); send it again later"
                )))
            }
            Ok(Outcome::Denied { request_id, denial }) => {
                let message = format!(
                    "{} (rule {}, request {request_id})",
                    denial.reason, denial.rule
                );
                Err(match denial.layer {
                    Layer::Input => EstError::BadRequest(message),
                    _ => EstError::Forbidden(message),
                })
            }
            Err(PipelineError::Ca(error @ CaError::Upstream(_))) => {
                Err(EstError::BadGateway(error.to_string()))
            }
            Err(PipelineError::Ca(error)) => Err(EstError::Unavailable(format!("CA: {error}"))),
            Err(PipelineError::Store(error)) => {
                Err(EstError::Unavailable(format!("store: {error}")))
            }
            Err(error @ PipelineError::Aborted(_)) => Err(EstError::Unavailable(error.to_string())),
        }
    }
}

#[async_trait::async_trait]
impl EstBackend for Backend {
    fn has_profile(&self, label: Option<&str>) -> bool {
        self.template(label).is_some()
    }

    async fn ca_certs(&self, _label: Option<&str>) -> Result<Vec<u8>, EstError> {
        // RFC 7030 §4.1.3: the issuing chain and the root the client must trust explicitly.
        let ca = self.pipeline.ca();
        let mut certificates = ca.chain();
        certificates.extend(ca.trust_anchors());
        pkcs7::certs_only(&certificates).map_err(|e| EstError::Unavailable(e.to_string()))
    }

    async fn csr_attributes(&self, label: Option<&str>) -> Result<Option<Vec<u8>>, EstError> {
        use der::Encode;
        let template = self
            .template(label)
            .ok_or_else(|| EstError::NotFound("no such EST label".into()))?;
        let config = self.pipeline.config();
        let Some(template) = config.templates.get(&template) else {
            return Ok(None);
        };
        let oid = der::oid::ObjectIdentifier::new_unwrap;
        let mut oids = Vec::new();
        for key_type in &template.key_types {
            match key_type {
                AcceptedKeyType::Rsa => oids.push(oid("1.2.840.113549.1.1.1")),
                AcceptedKeyType::EcdsaP256 => {
                    oids.extend([oid("1.2.840.10045.2.1"), oid("1.2.840.10045.3.1.7")])
                }
                AcceptedKeyType::EcdsaP384 => {
                    oids.extend([oid("1.2.840.10045.2.1"), oid("1.3.132.0.34")])
                }
                AcceptedKeyType::Ed25519 => oids.push(oid("1.3.101.112")),
            }
        }
        oids.dedup();
        // §3.5: the challengePassword attribute carries the channel binding when required.
        if self
            .pipeline
            .config()
            .est
            .profiles
            .get(label.unwrap_or("default"))
            .is_some_and(|p| p.require_pop_linking)
        {
            oids.push(oid("1.2.840.113549.1.9.7"));
        }
        // CsrAttrs ::= SEQUENCE OF AttrOrOID; each an OBJECT IDENTIFIER here.
        oids.to_der()
            .map(Some)
            .map_err(|e| EstError::Unavailable(e.to_string()))
    }

    async fn server_keygen(
        &self,
        label: Option<&str>,
        credentials: Credentials,
        csr_der: Vec<u8>,
        connection: &Connection,
    ) -> Result<(Vec<u8>, Vec<u8>), EstError> {
        self.check_pop_linking(label, &csr_der, connection.channel_binding.as_deref())?;
        let template = self
            .template(label)
            .ok_or_else(|| EstError::NotFound("no such EST label".into()))?;
        // A held request would have to keep the generated key until someone approves it;
        // rampart does not hold keys for that, so such templates do not offer serverkeygen.
        if self
            .pipeline
            .config()
            .templates
            .get(&template)
            .is_some_and(|t| t.approval_required)
        {
            return Err(EstError::Forbidden(
                "serverkeygen is not offered on a template that requires approval; send a CSR to simpleenroll".into(),
            ));
        }
        let identity = self
            .authenticate(
                self.auth(label),
                credentials,
                Operation::ServerKeygen,
                &csr_der,
                connection.client,
            )
            .await?;
        // The client's CSR names the certificate; rampart makes the key (never stored).
        let requested =
            VerifiedCsr::parse(&csr_der).map_err(|e| EstError::BadRequest(e.to_string()))?;
        let generated = crate::pkix::keygen::key_and_csr(
            crate::model::KeyType::EcdsaP256,
            requested.common_name.as_deref(),
            &requested.identifiers,
        )
        .map_err(EstError::BadRequest)?;
        let pkcs7 = self
            .submit(
                identity,
                template,
                generated.csr_der,
                Operation::ServerKeygen,
                connection.client,
            )
            .await?;
        let escrow = self
            .pipeline
            .config()
            .est
            .profiles
            .get(label.unwrap_or("default"))
            .is_some_and(|p| p.escrow_keys);
        if escrow {
            let serial = issued_serial(&pkcs7)
                .ok_or_else(|| EstError::Unavailable("unreadable issued PKCS#7".into()))?;
            crate::lifecycle::escrow::deposit(&self.pipeline, &serial, &generated.pkcs8)
                .await
                .map_err(|e| EstError::Unavailable(format!("key escrow: {e}")))?;
        }
        Ok((generated.pkcs8.to_vec(), pkcs7))
    }

    async fn enroll(
        &self,
        label: Option<&str>,
        operation: Operation,
        credentials: Credentials,
        csr_der: Vec<u8>,
        connection: &Connection,
    ) -> Result<Vec<u8>, EstError> {
        self.check_pop_linking(label, &csr_der, connection.channel_binding.as_deref())?;
        let template = self
            .template(label)
            .ok_or_else(|| EstError::NotFound("no such EST label".into()))?;
        let identity = self
            .authenticate(
                self.auth(label),
                credentials,
                operation,
                &csr_der,
                connection.client,
            )
            .await?;
        self.submit(identity, template, csr_der, operation, connection.client)
            .await
    }
}

/// Of presented credentials, what the audit may keep: never the password.
struct Presented {
    /// The HTTP Basic user.
    user: Option<String>,
    /// The client certificate (DER).
    leaf: Option<Vec<u8>>,
}

impl Presented {
    /// Whom they claim to be (the Basic user, else the client certificate's subject), and
    /// the certificate's serial and issuer.
    fn claimed(&self) -> (String, serde_json::Map<String, serde_json::Value>) {
        let mut details = serde_json::Map::new();
        let leaf = self
            .leaf
            .as_deref()
            .and_then(|der| x509_cert::Certificate::from_der(der).ok());
        let serial = leaf.as_ref().map(|leaf| {
            let tbs = &leaf.tbs_certificate;
            let serial = rampart_acme::ari::serial_hex(tbs.serial_number.as_bytes());
            details.insert("certificate_serial".into(), serial.clone().into());
            details.insert("certificate_issuer".into(), tbs.issuer.to_string().into());
            serial
        });
        let claimed = match (&self.user, &leaf, serial) {
            (Some(user), _, _) => user.clone(),
            // An empty subject (a certificate naming its holder in SANs only): its serial.
            (None, Some(leaf), Some(serial)) => match leaf.tbs_certificate.subject.to_string() {
                subject if subject.is_empty() => format!("certificate {serial}"),
                subject => subject,
            },
            _ => "unknown".into(),
        };
        (claimed, details)
    }
}
