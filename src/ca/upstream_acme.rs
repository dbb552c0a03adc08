//! The upstream ACME adapter (`[ca_adapters.<name>] type = "acme"`): rampart decides, an
//! upstream ACME CA (Let's Encrypt, ZeroSSL, a corporate ACME CA, another rampart) signs.
//! The requester's CSR is forwarded unchanged in an order for exactly its names; each name
//! is proven with a dns-01 record that [`super::dns01`] publishes and removes again;
//! revocations are forwarded.
//!
//! One upstream account per adapter, created at the first order (so rampart starts while
//! the upstream is down) and kept in the store (namespace `upstream-acme`, key
//! `<adapter>/account`: account URL and its private key, like the rest of the store readable
//! by rampart only); a new account is made when `directory_url` changes.
//!
//! What the upstream CA puts in the certificate (lifetime, EKUs, key usage) is its
//! decision: rampart's template still decides *whether* to ask (keys, names, approvals,
//! rate limits), and records what came back.
//!
//! Imports `config`, `model`, `store`, `files` and `pkix`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine;
use der::Decode;
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    ExternalAccountKey, HttpClient, Identifier as AcmeIdentifier, NewAccount, NewOrder, Order,
    OrderStatus, RetryPolicy, RevocationReason, RevocationRequest,
};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_cert::Certificate;

use super::dns01::{ChallengeRecord, Dns01Publisher};
use super::{CaAdapter, CaError, IssuanceOrder, IssuedCertificate};
use crate::config::UpstreamAcmeConfig;
use crate::model::Identifier;
use crate::pkix::pem;
use crate::store::Store;

/// Store namespace of upstream accounts.
const NAMESPACE: &str = "upstream-acme";
/// Attempts at one upstream call that the upstream asked to retry (rateLimited, 503…).
const ATTEMPTS: u32 = 3;
/// Wait before the first retry when the upstream names no `Retry-After`; doubled after each.
const FIRST_RETRY: Duration = Duration::from_secs(2);

type Https = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// The HTTPS client instant-acme talks to the upstream through, noting the `Retry-After` of
/// each answer (RFC 8555 §6.6: rate-limited and 503 answers say when to come back), which
/// instant-acme does not expose on its errors.
#[derive(Clone)]
struct UpstreamHttp {
    client: Https,
    retry_after: Arc<Mutex<Option<Duration>>>,
}

impl UpstreamHttp {
    fn new(trust_root_file: Option<&std::path::Path>) -> Result<Self, CaError> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match trust_root_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CaError::Internal(format!("{}: {e}", path.display())))?;
                let mut roots = rustls::RootCertStore::empty();
                for der in pem::decode_certificates(&text)
                    .map_err(|e| CaError::Internal(format!("{}: {e}", path.display())))?
                {
                    roots
                        .add(CertificateDer::from(der))
                        .map_err(|e| CaError::Internal(format!("{}: {e}", path.display())))?;
                }
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| CaError::Internal(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                builder.with_tls_config(config)
            }
            None => builder
                .try_with_platform_verifier()
                .map_err(|e| CaError::Internal(format!("the system's trust store: {e}")))?,
        };
        let connector = builder.https_only().enable_http1().enable_http2().build();
        Ok(UpstreamHttp {
            client: HyperClient::builder(TokioExecutor::new()).build(connector),
            retry_after: Arc::default(),
        })
    }

    /// The `Retry-After` of the latest answer that had one, taken.
    fn take_retry_after(&self) -> Option<Duration> {
        self.retry_after
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl HttpClient for UpstreamHttp {
    fn request(
        &self,
        request: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let response = self.client.request(request);
        let slot = self.retry_after.clone();
        Box::pin(async move {
            let response = response
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            if let Some(wait) = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after)
            {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(wait);
            }
            Ok(BytesResponse::from(response))
        })
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let format = time::format_description::well_known::Rfc2822;
    let when = OffsetDateTime::parse(value.trim(), &format).ok()?;
    let seconds = (when - OffsetDateTime::now_utc()).whole_seconds().max(0);
    Some(Duration::from_secs(seconds as u64))
}

/// How long to wait before retry number `tries` (from 1): what the upstream asked for, else
/// exponential backoff — or `None` when that would pass the order's deadline.
fn retry_wait(asked: Option<Duration>, tries: u32, remaining: Duration) -> Option<Duration> {
    let wait = asked.unwrap_or(FIRST_RETRY * 2u32.pow(tries.saturating_sub(1)));
    (wait < remaining).then_some(wait)
}

/// What the store keeps of the upstream account.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory_url: String,
    /// [`AccountCredentials`], which instant-acme keeps opaque.
    credentials: serde_json::Value,
}

/// An upstream ACME CA.
pub struct UpstreamAcme {
    name: String,
    config: UpstreamAcmeConfig,
    store: Arc<dyn Store>,
    dns: Dns01Publisher,
    http: UpstreamHttp,
    account: tokio::sync::Mutex<Option<Account>>,
    /// The issuer chain of the last certificate (empty before the first).
    last_chain: RwLock<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for UpstreamAcme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamAcme")
            .field("name", &self.name)
            .field("directory_url", &self.config.directory_url)
            .field("dns", &self.dns)
            .finish_non_exhaustive()
    }
}

/// An upstream failure as rampart reports it: the problem document's type and detail.
fn upstream(error: instant_acme::Error) -> CaError {
    match error {
        instant_acme::Error::Api(problem) => CaError::Upstream(describe(&problem)),
        other => CaError::Upstream(other.to_string()),
    }
}

fn describe(problem: &instant_acme::Problem) -> String {
    let kind = problem
        .r#type
        .as_deref()
        .unwrap_or("about:blank")
        .trim_start_matches("urn:ietf:params:acme:error:");
    let mut text = format!(
        "{kind}: {}",
        problem.detail.as_deref().unwrap_or("no detail")
    );
    for sub in &problem.subproblems {
        if let Some(detail) = &sub.detail {
            text.push_str(&format!("; {detail}"));
        }
    }
    text
}

/// Whether the upstream said to try again later.
fn retryable(error: &instant_acme::Error) -> bool {
    match error {
        instant_acme::Error::Api(problem) => {
            problem
                .r#type
                .as_deref()
                .is_some_and(|t| t.ends_with(":rateLimited") || t.ends_with(":badNonce"))
                || problem.status.is_some_and(|s| s == 503)
        }
        instant_acme::Error::Http(_) | instant_acme::Error::Hyper(_) => true,
        _ => false,
    }
}

/// Call `attempt` until it succeeds, fails for good, [`ATTEMPTS`] ran out, or the wait the
/// upstream asks for would pass `deadline`.
async fn with_retries<T, F, Fut>(
    what: &str,
    http: &UpstreamHttp,
    deadline: tokio::time::Instant,
    mut attempt: F,
) -> Result<T, instant_acme::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, instant_acme::Error>>,
{
    let mut tries = 1;
    loop {
        http.take_retry_after();
        let error = match attempt().await {
            Err(error) if tries < ATTEMPTS && retryable(&error) => error,
            other => return other,
        };
        let asked = http.take_retry_after();
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(wait) = retry_wait(asked, tries, remaining) else {
            return Err(error);
        };
        tracing::warn!(%error, what, retry_in_s = wait.as_secs(), "upstream ACME asked to retry");
        tokio::time::sleep(wait).await;
        tries += 1;
    }
}

impl UpstreamAcme {
    /// The adapter `name` from its configuration; reads its secrets now.
    pub fn new(
        name: &str,
        config: &UpstreamAcmeConfig,
        store: Arc<dyn Store>,
    ) -> Result<Self, CaError> {
        let dns = Dns01Publisher::from_config(&config.dns01)
            .map_err(|e| CaError::Internal(format!("ca_adapters.{name}: {e}")))?;
        if config.eab_key_id.is_some() {
            eab_key(name, config)?;
        }
        Ok(UpstreamAcme {
            name: name.to_string(),
            config: config.clone(),
            store,
            dns,
            http: UpstreamHttp::new(config.trust_root_file.as_deref())
                .map_err(|e| CaError::Internal(format!("ca_adapters.{name}: {e}")))?,
            account: tokio::sync::Mutex::new(None),
            last_chain: RwLock::new(Vec::new()),
        })
    }

    fn account_key(&self) -> String {
        format!("{}/account", self.name)
    }

    fn builder(&self) -> instant_acme::AccountBuilder {
        Account::builder_with_http(Box::new(self.http.clone()))
    }

    /// When an operation started now must be done.
    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(self.config.order_timeout_seconds)
    }

    /// The upstream account: from the store, or registered now.
    async fn account(&self, deadline: tokio::time::Instant) -> Result<Account, CaError> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let stored = self
            .store
            .protocol_get(NAMESPACE, &self.account_key())
            .map_err(|e| CaError::Internal(e.to_string()))?
            .and_then(|bytes| serde_json::from_slice::<StoredAccount>(&bytes).ok())
            .filter(|stored| stored.directory_url == self.config.directory_url);
        let account = match stored {
            Some(stored) => with_retries("account", &self.http, deadline, || async {
                let credentials: AccountCredentials =
                    serde_json::from_value(stored.credentials.clone())?;
                self.builder().from_credentials(credentials).await
            })
            .await
            .map_err(upstream)?,
            None => self.register(deadline).await?,
        };
        *slot = Some(account.clone());
        Ok(account)
    }

    async fn register(&self, deadline: tokio::time::Instant) -> Result<Account, CaError> {
        let contacts: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
        let new_account = NewAccount {
            contact: &contacts,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let eab = match &self.config.eab_key_id {
            Some(_) => Some(eab_key(&self.name, &self.config)?),
            None => None,
        };
        let (account, credentials) = with_retries("newAccount", &self.http, deadline, || async {
            self.builder()
                .create(
                    &new_account,
                    self.config.directory_url.clone(),
                    eab.as_ref(),
                )
                .await
        })
        .await
        .map_err(upstream)?;
        let stored = StoredAccount {
            directory_url: self.config.directory_url.clone(),
            credentials: serde_json::to_value(&credentials)
                .map_err(|e| CaError::Internal(e.to_string()))?,
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| CaError::Internal(e.to_string()))?;
        self.store
            .protocol_put(NAMESPACE, &self.account_key(), &bytes, true)
            .map_err(|e| CaError::Internal(e.to_string()))?;
        tracing::info!(adapter = %self.name, account = %account.id(), "registered the upstream ACME account");
        Ok(account)
    }

    /// Place the order, prove every name, finalize with the requester's CSR. Records
    /// published go to `published` before they are published, so the caller removes them
    /// whatever happens here.
    async fn place(
        &self,
        order: &IssuanceOrder,
        identifiers: &[AcmeIdentifier],
        published: &mut Vec<ChallengeRecord>,
        deadline: tokio::time::Instant,
    ) -> Result<String, CaError> {
        let account = self.account(deadline).await?;
        let mut new_order = NewOrder::new(identifiers);
        if let Some(profile) = &self.config.profile {
            new_order = new_order.profile(profile);
        }
        let mut upstream_order: Order = with_retries("newOrder", &self.http, deadline, || {
            account.new_order(&new_order)
        })
        .await
        .map_err(upstream)?;
        let mut ready = Vec::new();
        {
            let mut authorizations = upstream_order.authorizations();
            while let Some(authorization) = authorizations.next().await {
                let mut authorization = authorization.map_err(upstream)?;
                match authorization.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    other => {
                        return Err(CaError::Upstream(format!(
                            "the authorization for {} is {other:?}",
                            authorization.identifier()
                        )))
                    }
                }
                let name = authorization.identifier().to_string();
                let Some(mut challenge) = authorization.challenge(ChallengeType::Dns01) else {
                    return Err(CaError::Upstream(format!(
                        "the upstream offers no dns-01 challenge for {name}"
                    )));
                };
                let record = ChallengeRecord::for_identifier(
                    &name,
                    &challenge.token,
                    challenge.key_authorization().dns_value(),
                );
                published.push(record.clone());
                self.dns
                    .publish(&record)
                    .await
                    .map_err(|e| CaError::Upstream(format!("publishing dns-01 for {name}: {e}")))?;
                challenge.set_ready().await.map_err(upstream)?;
                ready.push(name);
            }
        }
        let remaining = |deadline: tokio::time::Instant| {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        let polling = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(remaining(deadline));
        let status = upstream_order
            .poll_ready(&polling)
            .await
            .map_err(upstream)?;
        if status != OrderStatus::Ready {
            return Err(CaError::Upstream(format!(
                "the order became {status:?} after validating {}",
                ready.join(", ")
            )));
        }
        upstream_order
            .finalize_csr(&order.csr_der)
            .await
            .map_err(upstream)?;
        let polling = polling.timeout(remaining(deadline));
        upstream_order
            .poll_certificate(&polling)
            .await
            .map_err(upstream)
    }
}

/// The EAB key from its file or environment variable (base64url, as CAs hand it out).
fn eab_key(name: &str, config: &UpstreamAcmeConfig) -> Result<ExternalAccountKey, CaError> {
    let fail = |reason: String| CaError::Internal(format!("ca_adapters.{name} EAB key: {reason}"));
    let text = crate::files::read_configured_secret(
        config.eab_hmac_key_file.as_deref(),
        config.eab_hmac_key_env.as_deref(),
    )
    .map_err(fail)?;
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .map_err(|_| fail("not base64url".into()))?;
    let id = config.eab_key_id.clone().unwrap_or_default();
    Ok(ExternalAccountKey::new(id, &key))
}

/// RFC 5280 reason code → the upstream's.
fn reason(code: u8) -> RevocationReason {
    match code {
        1 => RevocationReason::KeyCompromise,
        2 => RevocationReason::CaCompromise,
        3 => RevocationReason::AffiliationChanged,
        4 => RevocationReason::Superseded,
        5 => RevocationReason::CessationOfOperation,
        6 => RevocationReason::CertificateHold,
        8 => RevocationReason::RemoveFromCrl,
        9 => RevocationReason::PrivilegeWithdrawn,
        10 => RevocationReason::AaCompromise,
        _ => RevocationReason::Unspecified,
    }
}

#[async_trait::async_trait]
impl CaAdapter for UpstreamAcme {
    fn id(&self) -> &str {
        &self.name
    }

    fn chain(&self) -> Vec<Vec<u8>> {
        self.last_chain
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn trust_anchors(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }

    async fn issue(&self, order: &IssuanceOrder) -> Result<IssuedCertificate, CaError> {
        if order.csr_der.is_empty() {
            return Err(CaError::Refused(
                "an upstream ACME CA signs requests, and this one has no CSR".into(),
            ));
        }
        let identifiers = order
            .sans
            .iter()
            .map(|identifier| match identifier {
                Identifier::Dns(name) => Ok(AcmeIdentifier::Dns(name.to_string())),
                other => Err(CaError::Refused(format!(
                    "{other} cannot be proven to the upstream with dns-01 (only DNS names can)"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let limit = Duration::from_secs(self.config.order_timeout_seconds);
        let deadline = self.deadline();
        let mut published = Vec::new();
        let outcome = tokio::time::timeout_at(
            deadline,
            self.place(order, &identifiers, &mut published, deadline),
        )
        .await
        .unwrap_or_else(|_| {
            Err(CaError::Upstream(format!(
                "the upstream order did not complete within {}s",
                limit.as_secs()
            )))
        });
        for record in &published {
            if let Err(error) = self.dns.remove(record).await {
                tracing::warn!(adapter = %self.name, record = %record.name, %error, "could not remove a dns-01 record");
            }
        }
        let chain_pem = outcome?;
        let mut certificates = pem::decode_certificates(&chain_pem)
            .map_err(|e| CaError::Upstream(format!("the certificate chain is not PEM: {e}")))?
            .into_iter();
        let der = certificates
            .next()
            .ok_or_else(|| CaError::Upstream("the upstream returned no certificate".into()))?;
        let chain: Vec<Vec<u8>> = certificates.collect();
        let parsed = Certificate::from_der(&der)
            .map_err(|e| CaError::Upstream(format!("the certificate does not parse: {e}")))?;
        let tbs = &parsed.tbs_certificate;
        if tbs.subject_public_key_info.subject_public_key.raw_bytes() != order.public_key {
            return Err(CaError::Upstream(
                "the upstream certificate is not for the requester's key".into(),
            ));
        }
        let time = |t: x509_cert::time::Time| {
            OffsetDateTime::from_unix_timestamp(t.to_unix_duration().as_secs() as i64)
                .map_err(|e| CaError::Upstream(e.to_string()))
        };
        let issued = IssuedCertificate {
            serial: rampart_acme::ari::serial_hex(tbs.serial_number.as_bytes()),
            subject: tbs.subject.to_string(),
            not_before: time(tbs.validity.not_before)?,
            not_after: time(tbs.validity.not_after)?,
            chain: chain.clone(),
            der,
        };
        *self.last_chain.write().unwrap_or_else(|e| e.into_inner()) = chain;
        Ok(issued)
    }

    async fn revoke(&self, der: &[u8], code: u8) -> Result<(), CaError> {
        let deadline = self.deadline();
        let account = self.account(deadline).await?;
        let certificate = CertificateDer::from(der.to_vec());
        let request = RevocationRequest {
            certificate: &certificate,
            reason: Some(reason(code)),
        };
        match with_retries("revokeCert", &self.http, deadline, || {
            account.revoke(&request)
        })
        .await
        {
            Ok(()) => Ok(()),
            // Revoked upstream before (by someone else): what rampart is about to record.
            Err(instant_acme::Error::Api(problem))
                if problem
                    .r#type
                    .as_deref()
                    .is_some_and(|t| t.ends_with(":alreadyRevoked")) =>
            {
                Ok(())
            }
            Err(error) => Err(upstream(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_described_with_type_and_detail() {
        let problem: instant_acme::Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:rejectedIdentifier",
            "detail": "policy forbids it",
            "status": 400,
            "subproblems": [{"type": "urn:ietf:params:acme:error:rejectedIdentifier",
                "detail": "a.test is forbidden", "identifier": {"type": "dns", "value": "a.test"}}]
        }))
        .unwrap();
        assert_eq!(
            describe(&problem),
            "rejectedIdentifier: policy forbids it; a.test is forbidden"
        );
        let limited: instant_acme::Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:rateLimited", "detail": "slow down"
        }))
        .unwrap();
        assert!(retryable(&instant_acme::Error::Api(limited)));
        assert!(!retryable(&instant_acme::Error::Api(problem)));
    }

    #[test]
    fn retry_waits_follow_retry_after_else_back_off_within_the_deadline() {
        let minute = Duration::from_secs(60);
        assert_eq!(retry_wait(None, 1, minute), Some(FIRST_RETRY));
        assert_eq!(retry_wait(None, 2, minute), Some(FIRST_RETRY * 2));
        let asked = Duration::from_secs(7);
        assert_eq!(retry_wait(Some(asked), 2, minute), Some(asked));
        assert_eq!(retry_wait(Some(minute), 1, Duration::from_secs(30)), None);
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        let later = OffsetDateTime::now_utc() + time::Duration::seconds(90);
        let date = later
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap();
        let parsed = parse_retry_after(&date).unwrap().as_secs();
        assert!((85..=90).contains(&parsed), "{date}: {parsed}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn reason_codes_map_one_to_one() {
        for code in [0u8, 1, 2, 3, 4, 5, 6, 8, 9, 10] {
            assert_eq!(reason(code) as u8, code);
        }
    }
}
