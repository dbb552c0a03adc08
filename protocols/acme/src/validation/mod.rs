//! ACME challenge validation: http-01 and dns-01 (RFC 8555 §8.3, §8.4) and
//! tls-alpn-01 (RFC 8737), for DNS names and IP addresses (RFC 8738), plus the CAA check
//! (RFC 8659, RFC 8657) made before issuing for a DNS name.
//!
//! [`Validator`] is built once from [`ValidationSettings`] and shared (it is cheap to
//! clone). Each check is bounded by [`ValidationSettings::timeout`] and returns a
//! [`ValidationError`] whose [`ValidationError::acme_type`] names the RFC 8555 §6.7 error
//! type to put in the challenge's `error` field.
//!
//! Layout:
//! - `target`: the identifier being validated and the policy refusing non-public addresses;
//! - `resolver`: cache-less hickory DNS resolution under that policy (also fed to reqwest);
//! - `tls`: the rustls client configuration (no chain verification) shared by the TLS users;
//! - `http01`, `dns01`, `tlsalpn01`: one module per challenge type;
//! - `caa`: CAA tree climbing and evaluation.

mod caa;
mod dns01;
mod http01;
mod resolver;
mod target;
mod tls;
mod tlsalpn01;

#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

pub use target::Target;

/// Knobs for the challenge validators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationSettings {
    /// TCP port http-01 connects to (80 in production).
    pub http01_port: u16,
    /// TCP port tls-alpn-01 connects to (443 in production).
    pub tlsalpn01_port: u16,
    /// Nameserver (UDP/TCP) used for every lookup; `None` uses the system configuration
    /// (`/etc/resolv.conf`).
    pub dns_resolver: Option<SocketAddr>,
    /// Allow connecting to loopback, private, link-local and other non-public addresses.
    /// Only for tests and closed networks.
    pub allow_private_targets: bool,
    /// Upper bound on one whole validation (lookups, connects, redirects, body).
    pub timeout: Duration,
    /// Waits before each new attempt of a failed validation, one per retry (RFC 8555 §8.2:
    /// a server should retry after some time, for responses still being set up). Empty:
    /// the first failure is final.
    pub retry_delays: Vec<Duration>,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        Self {
            http01_port: 80,
            tlsalpn01_port: 443,
            dns_resolver: None,
            allow_private_targets: false,
            timeout: Duration::from_secs(10),
            retry_delays: vec![Duration::from_secs(1), Duration::from_secs(2)],
        }
    }
}

/// Why a validation failed; each variant maps to an ACME error type (RFC 8555 §6.7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// DNS lookup failed: NXDOMAIN, no records, SERVFAIL, timeout (`dns`).
    #[error("DNS problem: {0}")]
    Dns(String),
    /// Could not connect, timed out, or the address was refused by policy (`connection`).
    #[error("connection problem: {0}")]
    Connection(String),
    /// The response proved no control: wrong key authorization, TXT value or
    /// acmeIdentifier (`unauthorized`).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The HTTP exchange was malformed: status not 200, body too large, bad redirect
    /// (`incorrectResponse`).
    #[error("incorrect response: {0}")]
    IncorrectResponse(String),
    /// TLS handshake or ALPN negotiation failed in tls-alpn-01 (`tls`).
    #[error("TLS problem: {0}")]
    Tls(String),
    /// A CAA record set forbids issuance by this CA for this request (`caa`).
    #[error("CAA problem: {0}")]
    Caa(String),
}

impl ValidationError {
    /// The RFC 8555 error type name, without the `urn:ietf:params:acme:error:` prefix.
    pub fn acme_type(&self) -> &'static str {
        match self {
            Self::Dns(_) => "dns",
            Self::Connection(_) => "connection",
            Self::Unauthorized(_) => "unauthorized",
            Self::IncorrectResponse(_) => "incorrectResponse",
            Self::Tls(_) => "tls",
            Self::Caa(_) => "caa",
        }
    }
}

/// base64url(SHA-256(key_authorization)) without padding — the dns-01 TXT value.
pub fn dns01_txt_value(key_authorization: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(key_authorization.as_bytes()))
}

/// Runs the ACME challenge checks. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Validator {
    shared: Arc<Shared>,
}

/// State shared by all validations of one [`Validator`].
struct Shared {
    settings: ValidationSettings,
    /// TLS configuration for tls-alpn-01 (ALPN `acme-tls/1` only).
    acme_tls: Arc<rustls::ClientConfig>,
    /// One resolver for every validation (its cache is off, so nothing is shared between
    /// validations but the connection set-up).
    resolver: hickory_resolver::TokioResolver,
    /// One HTTP client for every http-01 validation (no idle connections are kept).
    http_client: reqwest::Client,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl Validator {
    /// Builds a validator; reads the system resolver configuration when
    /// `settings.dns_resolver` is `None` (failure is a [`ValidationError::Dns`]).
    pub fn new(settings: ValidationSettings) -> Result<Self, ValidationError> {
        let dns = resolver::DnsSettings::new(settings.dns_resolver, settings.timeout)?;
        let http_tls = tls::client_config(&[b"http/1.1"])?;
        let acme_tls = Arc::new(tls::client_config(&[tlsalpn01::ACME_TLS_ALPN])?);
        let resolver = dns.resolver();
        let http_client = http01::client(&settings, &http_tls, resolver.clone())?;
        Ok(Self {
            shared: Arc::new(Shared {
                settings,
                acme_tls,
                resolver,
                http_client,
            }),
        })
    }

    /// The settings this validator was built with.
    pub fn settings(&self) -> &ValidationSettings {
        &self.shared.settings
    }

    /// http-01 (RFC 8555 §8.3): `GET http://<target>/.well-known/acme-challenge/<token>`
    /// must answer 200 with `key_authorization` (trailing whitespace ignored).
    pub async fn http01(
        &self,
        target: &Target,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), ValidationError> {
        let fut = http01::validate(&self.shared, target, token, key_authorization);
        self.bounded("http-01", fut, ValidationError::Connection)
            .await
    }

    /// dns-01 (RFC 8555 §8.4): a TXT record at `_acme-challenge.<domain>` must hold
    /// [`dns01_txt_value`]`(key_authorization)`. `domain` has no `*.` prefix.
    pub async fn dns01(
        &self,
        domain: &str,
        key_authorization: &str,
    ) -> Result<(), ValidationError> {
        let fut = dns01::validate(&self.shared, domain, key_authorization);
        self.bounded("dns-01", fut, ValidationError::Dns).await
    }

    /// tls-alpn-01 (RFC 8737, RFC 8738): the target must negotiate ALPN `acme-tls/1` and
    /// present a certificate for exactly the identifier carrying the critical
    /// acmeIdentifier extension with SHA-256(`key_authorization`).
    pub async fn tlsalpn01(
        &self,
        target: &Target,
        key_authorization: &str,
    ) -> Result<(), ValidationError> {
        let fut = tlsalpn01::validate(&self.shared, target, key_authorization);
        self.bounded("tls-alpn-01", fut, ValidationError::Connection)
            .await
    }

    /// CAA check (RFC 8659 §3 tree climbing, RFC 8657 parameters) for issuing `domain`
    /// (no `*.` prefix; `wildcard` says whether the certificate name is `*.<domain>`) by a
    /// CA known by `issuer_domains` (e.g. `["rampart.internal"]`, matched
    /// case-insensitively), for ACME account `account_uri`, validated with `method`
    /// (`http-01`, `dns-01`, `tls-alpn-01`).
    ///
    /// The closest name (climbing towards, but excluding, the root) with a non-empty CAA
    /// RRset is relevant; none means issuance is allowed. Within that set, `issuewild`
    /// properties replace `issue` for wildcards when any exist; no property of the chosen
    /// kind allows issuance; otherwise some property must name one of `issuer_domains` and
    /// its `accounturi` / `validationmethods` parameters (when present) must admit
    /// `account_uri` / `method`. An unknown property flagged critical forbids issuance.
    /// A refusal is a [`ValidationError::Caa`]; a failed lookup (SERVFAIL, REFUSED,
    /// timeout; NXDOMAIN and NODATA just mean "go up") is a [`ValidationError::Dns`],
    /// since a CA must not issue when it cannot read CAA.
    ///
    /// An empty `issuer_domains` skips the check entirely (returns `Ok` without any
    /// lookup): operators of purely internal names turn CAA off this way. CAA is defined for
    /// domain names only, so an IP address literal also returns `Ok`.
    pub async fn caa(
        &self,
        domain: &str,
        wildcard: bool,
        issuer_domains: &[String],
        account_uri: &str,
        method: &str,
    ) -> Result<(), ValidationError> {
        let request = caa::Request {
            domain,
            wildcard,
            issuer_domains,
            account_uri,
            method,
        };
        let fut = caa::check(&self.shared, request);
        self.bounded("caa", fut, ValidationError::Dns).await
    }

    /// Runs `fut` under the configured timeout; on expiry returns `on_timeout(message)`.
    async fn bounded(
        &self,
        kind: &str,
        fut: impl Future<Output = Result<(), ValidationError>>,
        on_timeout: fn(String) -> ValidationError,
    ) -> Result<(), ValidationError> {
        let timeout = self.shared.settings.timeout;
        let result = match tokio::time::timeout(timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(on_timeout(format!(
                "{kind} validation timed out after {timeout:?}"
            ))),
        };
        match &result {
            Ok(()) => tracing::debug!(kind, "challenge validation succeeded"),
            Err(error) => tracing::debug!(kind, %error, "challenge validation failed"),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_value_is_unpadded_base64url_sha256() {
        // SHA-256("abc") = ba7816bf...; base64url without padding.
        assert_eq!(
            dns01_txt_value("abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }

    #[test]
    fn acme_types() {
        let cases = [
            (ValidationError::Dns(String::new()), "dns"),
            (ValidationError::Connection(String::new()), "connection"),
            (ValidationError::Unauthorized(String::new()), "unauthorized"),
            (
                ValidationError::IncorrectResponse(String::new()),
                "incorrectResponse",
            ),
            (ValidationError::Tls(String::new()), "tls"),
            (ValidationError::Caa(String::new()), "caa"),
        ];
        for (error, name) in cases {
            assert_eq!(error.acme_type(), name);
        }
    }

    #[test]
    fn defaults() {
        let s = ValidationSettings::default();
        assert_eq!((s.http01_port, s.tlsalpn01_port), (80, 443));
        assert!(s.dns_resolver.is_none());
        assert!(!s.allow_private_targets);
        assert_eq!(s.timeout, Duration::from_secs(10));
    }

    #[test]
    fn validator_and_futures_are_send() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        fn send<T: Send>(_: &T) {}
        check::<Validator>();
        let v = Validator::new(test_support::settings(None)).unwrap();
        let target = Target::Dns("example.test".into());
        send(&v.http01(&target, "t", "k"));
        send(&v.dns01("example.test", "k"));
        send(&v.tlsalpn01(&target, "k"));
        send(&v.caa("example.test", false, &[], "acct", "http-01"));
    }
}
