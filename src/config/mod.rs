//! Configuration: the embedded defaults (`config/rampart.toml`), an optional TOML file and
//! `RAMPART__SECTION__KEY` environment overrides, merged in that order, then validated up
//! front so that a bad value is one precise line before anything starts.
//!
//! A leaf module: it imports nothing from the rest of the daemon.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Bounds of `acme.validation_retry_ms`: a challenge stays `processing` meanwhile.
const MAX_VALIDATION_RETRIES: usize = 10;
const MAX_VALIDATION_RETRY_MS: u64 = 300_000;

/// The fully commented default configuration; also what `rampart init` writes.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../config/rampart.toml");

/// Prefix of environment overrides (`RAMPART__API__LISTEN=…`).
pub const ENV_PREFIX: &str = "RAMPART__";

/// Policy tables that a user file replaces as a whole instead of merging into the demo.
const POLICY_TABLES: [&str; 2] = ["templates", "roles"];

/// A configuration problem, always naming the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key is unknown, missing or has the wrong type.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A value parsed but is not acceptable.
    #[error("invalid value for `{key}`: {reason}")]
    Value {
        /// Dotted key, e.g. `roles.admin.dns_names`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where the running configuration came from, so that it can be read again on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// The embedded defaults, this file (if any) and the environment ([`Config::load`]).
    Loaded(Option<PathBuf>),
    /// Built in memory by an embedder (tests): there is nothing to read again.
    Memory,
}

impl ConfigSource {
    /// Read the configuration again from its source.
    pub fn read(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::Loaded(path) => Config::load(path.as_deref()),
            ConfigSource::Memory => Err(ConfigError::Invalid(
                "this daemon was configured in memory; there is no file to reload".into(),
            )),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[ca]`
    pub ca: CaConfig,
    /// `[tls]`
    pub tls: TlsConfig,
    /// `[api]`
    pub api: ApiConfig,
    /// `[acme]`
    pub acme: AcmeConfig,
    /// `[est]`
    pub est: EstConfig,
    /// `[scep]`
    pub scep: ScepConfig,
    /// `[publish]`
    pub publish: PublishConfig,
    /// `[webhooks]`
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// `[renewal]`
    #[serde(default)]
    pub renewal: RenewalConfig,
    /// `[approvals]`
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    /// `[resources]`
    #[serde(default)]
    pub resources: ResourcesConfig,
    /// `[delivery]`
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// `[discovery]`
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    /// `[policy]`
    #[serde(default)]
    pub policy: PolicySettingsConfig,
    /// `[limits]`
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[ca_adapters.<name>]`: CAs besides the built-in one, chosen per template (`ca`).
    #[serde(default)]
    pub ca_adapters: BTreeMap<String, CaAdapterConfig>,
    /// `[templates.<name>]`
    pub templates: BTreeMap<String, TemplateConfig>,
    /// `[roles.<name>]`
    pub roles: BTreeMap<String, RoleConfig>,
}

/// `[server]`: process-wide settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Directory for the store, CA material and listener certificate.
    pub data_dir: PathBuf,
    /// Public DNS name of this instance.
    pub public_hostname: String,
    /// Days protocol state is kept once it is done (expired ACME orders, decided SCEP
    /// transactions and EST re-send records); 0 keeps it for ever.
    pub retain_protocol_state_days: u32,
    /// Reverse proxies in front of the listeners whose `X-Forwarded-For` names the client
    /// (the per-client rate limit and the audit's `client`); from any other peer the header
    /// is ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// The header trusted proxies name the client in: `X-Forwarded-For` or RFC 7239
    /// `Forwarded` (its `for=` parameters). Only that one is read, so a client cannot slip
    /// an address past the proxy in the other.
    #[serde(default)]
    pub forwarded_header: ForwardedHeader,
    /// Listeners whose connections from `trusted_proxies` begin with a PROXY protocol
    /// header (v1 or v2) naming the client: for proxies that forward at the TCP level
    /// (EST, whose TLS must reach rampart). Connections from other peers carry none.
    #[serde(default)]
    pub proxy_protocol: Vec<Listener>,
}

/// The header a reverse proxy appends the client's address to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, …`
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1, …` (RFC 7239).
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// A listener, by the name of its section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Listener {
    /// `[api]`
    Api,
    /// `[acme]`
    Acme,
    /// `[est]`
    Est,
    /// `[scep]`
    Scep,
    /// `[publish]`
    Publish,
}

impl Listener {
    /// The section's name (the `listener` label of the metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Api => "api",
            Listener::Acme => "acme",
            Listener::Est => "est",
            Listener::Scep => "scep",
            Listener::Publish => "publish",
        }
    }
}

/// Key algorithm of a key rampart generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256.
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcdsaP384,
    /// RSA 3072 with SHA-256 signatures (PKCS#1 v1.5 or PSS: [`RsaSignature`]).
    #[serde(rename = "rsa-3072")]
    Rsa3072,
}

/// The signature scheme of the built-in CA's RSA keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RsaSignature {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`sha256WithRSAEncryption`): what every verifier
    /// accepts.
    #[default]
    Pkcs1v15,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt (RFC 4055, encoded as the
    /// CA/Browser Forum Baseline Requirements §7.1.3.2.1 prescribe).
    Pss,
}

/// `[ca]`: the built-in CA.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// Key algorithm of the root and issuing CA keys.
    pub key_algorithm: KeyAlgorithm,
    /// Common name stem of the CA subjects.
    pub common_name: String,
    /// Organization of the CA subjects.
    pub organization: String,
    /// Root CA validity in days.
    pub root_validity_days: u32,
    /// Issuing CA validity in days.
    pub issuing_validity_days: u32,
    /// CRL distribution point URL written into issued certificates (empty = none).
    pub crl_url: String,
    /// Lifetime of a CRL (thisUpdate → nextUpdate), in hours; a new one is signed after
    /// half of it, and after every revocation.
    pub crl_validity_hours: u32,
    /// AIA OCSP URL written into issued certificates (empty = none).
    pub ocsp_url: String,
    /// AIA caIssuers URL written into issued certificates (empty = none).
    pub ca_issuers_url: String,
    /// Where the issuing CA's private key lives: empty = a key file in `<data_dir>/ca/`;
    /// an RFC 7512 `pkcs11:` URI = a key in a PKCS#11 token, which signs every certificate,
    /// CRL and OCSP response (created there on first start when the token holds none).
    #[serde(default)]
    pub key: String,
    /// The PKCS#11 module (shared library) for a `pkcs11:` key.
    #[serde(default)]
    pub pkcs11_module: String,
    /// File holding the token's user PIN (mode 0600); empty = the `RAMPART_PKCS11_PIN`
    /// environment variable. Never the PIN itself.
    #[serde(default)]
    pub pin_file: String,
    /// How the CA's RSA keys sign (`key_algorithm = "rsa-3072"` only): every certificate,
    /// CRL and OCSP response, in a token or from a key file.
    #[serde(default)]
    pub rsa_signature: RsaSignature,
}

impl CaConfig {
    /// `key` is empty or a `pkcs11:` URI that carries no PIN (`pin-value`, `pin-source`),
    /// with `pkcs11_module` set. The URI's own grammar is checked where the key is opened
    /// (`ca::pkcs11`).
    fn check_key_location(&self) -> Result<(), String> {
        check_pkcs11_key(&self.key, &self.pkcs11_module)
    }
}

/// A private key's location: empty (a key file in `<data_dir>/ca/`) or a `pkcs11:` URI that
/// carries no PIN (`pin-value`, `pin-source`), with `[ca] pkcs11_module` set. The URI's own
/// grammar is checked where the key is opened (`ca::pkcs11`).
fn check_pkcs11_key(key: &str, pkcs11_module: &str) -> Result<(), String> {
    if key.is_empty() {
        return Ok(());
    }
    let Some(rest) = key.strip_prefix("pkcs11:") else {
        return Err(
            "must be empty (key files in <data_dir>/ca/) or an RFC 7512 pkcs11: URI".into(),
        );
    };
    let names = rest.split([';', '?', '&']).map(|attribute| {
        attribute
            .split_once('=')
            .map_or(attribute, |(name, _)| name)
    });
    for name in names {
        if name == "pin-value" || name == "pin-source" {
            return Err(format!(
                "`{name}` would put the token PIN in the configuration; use ca.pin_file or the RAMPART_PKCS11_PIN environment variable"
            ));
        }
    }
    if pkcs11_module.is_empty() {
        return Err("a pkcs11: key needs ca.pkcs11_module (the PKCS#11 library)".into());
    }
    Ok(())
}

/// Name of the built-in CA, the one templates use unless they name another (`ca`).
pub const BUILT_IN_CA: &str = "local";

/// `[ca_adapters.<name>]`: a CA rampart forwards approved requests to, by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CaAdapterConfig {
    /// An upstream ACME CA (RFC 8555): Let's Encrypt, ZeroSSL, a corporate ACME CA, another
    /// rampart.
    Acme(UpstreamAcmeConfig),
}

/// `type = "acme"`: one account at an upstream ACME CA; names proven by dns-01.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAcmeConfig {
    /// The upstream's directory URL (https).
    pub directory_url: String,
    /// PEM file with the root that the upstream's HTTPS certificate chains to (none: the
    /// Mozilla roots that rustls ships).
    #[serde(default)]
    pub trust_root_file: Option<PathBuf>,
    /// Account contacts (`mailto:` URLs).
    #[serde(default)]
    pub contact: Vec<String>,
    /// External account binding key id, when the upstream requires EAB.
    #[serde(default)]
    pub eab_key_id: Option<String>,
    /// File holding the EAB HMAC key (base64url, mode 0600).
    #[serde(default)]
    pub eab_hmac_key_file: Option<PathBuf>,
    /// Environment variable holding the EAB HMAC key (instead of the file).
    #[serde(default)]
    pub eab_hmac_key_env: Option<String>,
    /// ACME profile asked for in each newOrder (`meta.profiles` of the upstream).
    #[serde(default)]
    pub profile: Option<String>,
    /// How long one upstream order may take, validation and retries included, in seconds.
    #[serde(default = "default_upstream_order_timeout")]
    pub order_timeout_seconds: u64,
    /// How rampart publishes the dns-01 TXT records the upstream checks.
    pub dns01: Dns01Config,
}

fn default_upstream_order_timeout() -> u64 {
    40
}

/// `[ca_adapters.<name>.dns01]`: where `_acme-challenge` TXT records are published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Dns01Config {
    /// RFC 2136 dynamic updates, TSIG-signed, sent to the zone's primary server.
    Rfc2136(Rfc2136Config),
    /// A command run as `COMMAND… set|clear RECORD_NAME TOKEN VALUE` (DNS providers with
    /// their own APIs).
    Exec(ExecHookConfig),
}

/// `method = "rfc2136"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136Config {
    /// The primary server accepting updates (`address:port`, TCP).
    pub server: SocketAddr,
    /// The zone to update (none: the zone whose SOA the server returns for the record).
    #[serde(default)]
    pub zone: Option<String>,
    /// TSIG key name, as the server knows it.
    pub tsig_key_name: String,
    /// TSIG algorithm: hmac-sha256, hmac-sha384 or hmac-sha512.
    #[serde(default = "default_tsig_algorithm")]
    pub tsig_algorithm: String,
    /// File holding the base64 TSIG secret (mode 0600).
    #[serde(default)]
    pub tsig_secret_file: Option<PathBuf>,
    /// Environment variable holding the base64 TSIG secret (instead of the file).
    #[serde(default)]
    pub tsig_secret_env: Option<String>,
    /// TTL of the TXT records, in seconds.
    #[serde(default = "default_txt_ttl")]
    pub ttl: u32,
    /// Seconds to wait after the primary serves the record (secondaries catching up).
    #[serde(default)]
    pub propagation_seconds: u64,
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".into()
}

fn default_txt_ttl() -> u32 {
    60
}

/// `method = "exec"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecHookConfig {
    /// Program and leading arguments (argv; no shell).
    pub command: Vec<String>,
    /// Longest a run may take, in seconds.
    #[serde(default = "default_hook_timeout")]
    pub timeout_seconds: u64,
    /// Seconds to wait after `set` succeeded before asking the upstream to validate.
    #[serde(default)]
    pub propagation_seconds: u64,
}

fn default_hook_timeout() -> u64 {
    60
}

impl UpstreamAcmeConfig {
    /// Checks one upstream; the error is (key suffix, reason).
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, reason: &str| Err((k.to_string(), reason.to_string()));
        if !self.directory_url.starts_with("https://") {
            return bad(".directory_url", "must be an https:// URL");
        }
        if self.contact.iter().any(|c| !c.starts_with("mailto:")) {
            return bad(".contact", "contacts are mailto: URLs");
        }
        let eab_secret =
            self.eab_hmac_key_file.is_some() as u8 + self.eab_hmac_key_env.is_some() as u8;
        match (&self.eab_key_id, eab_secret) {
            (None, 0) | (Some(_), 1) => {}
            (None, _) => return bad(".eab_key_id", "an EAB HMAC key needs its eab_key_id"),
            (Some(_), _) => return bad(
                ".eab_hmac_key_file",
                "set exactly one of eab_hmac_key_file and eab_hmac_key_env (never the key itself)",
            ),
        }
        if self.order_timeout_seconds == 0 {
            return bad(".order_timeout_seconds", "must be at least 1");
        }
        match &self.dns01 {
            Dns01Config::Rfc2136(update) => {
                if update.tsig_secret_file.is_some() == update.tsig_secret_env.is_some() {
                    return bad(
                        ".dns01.tsig_secret_file",
                        "set exactly one of tsig_secret_file and tsig_secret_env (never the secret itself)",
                    );
                }
                if !matches!(
                    update.tsig_algorithm.as_str(),
                    "hmac-sha256" | "hmac-sha384" | "hmac-sha512"
                ) {
                    return bad(
                        ".dns01.tsig_algorithm",
                        "must be hmac-sha256, hmac-sha384 or hmac-sha512",
                    );
                }
                if update.tsig_key_name.trim().is_empty() {
                    return bad(".dns01.tsig_key_name", "must not be empty");
                }
            }
            Dns01Config::Exec(hook) => {
                if hook.command.first().is_none_or(|c| c.is_empty()) {
                    return bad(".dns01.command", "must name a program");
                }
                if hook.timeout_seconds == 0 {
                    return bad(".dns01.timeout_seconds", "must be at least 1");
                }
            }
        }
        Ok(())
    }
}

/// `[tls]`: the HTTPS listeners' own certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain file (empty = issued by the built-in CA).
    pub cert_file: String,
    /// PEM private key file (empty = issued by the built-in CA).
    pub key_file: String,
}

/// `[api]`: the admin REST API listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Whether the listener runs.
    pub enabled: bool,
    /// Socket address to bind.
    pub listen: SocketAddr,
    /// HTTPS instead of plain HTTP.
    pub tls: bool,
    /// Request body limit in bytes.
    pub max_body_bytes: usize,
    /// Listing page size when none is asked for.
    pub default_page_size: usize,
    /// Largest listing page size.
    pub max_page_size: usize,
}

/// `[est]`: the EST (RFC 7030) listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstConfig {
    /// Whether the listener runs.
    pub enabled: bool,
    /// Socket address to bind (HTTPS; client certificates optional).
    pub listen: SocketAddr,
    /// `[est.profiles.<label>]`; `default` serves `/.well-known/est/<operation>`.
    pub profiles: BTreeMap<String, EstProfileConfig>,
    /// `[est.users.<name>]`: HTTP Basic users.
    pub users: BTreeMap<String, EstUserConfig>,
    /// `[est.bootstrap.<name>]`: manufacturer (IDevID) CAs whose device certificates may
    /// authenticate a first enrollment.
    pub bootstrap: BTreeMap<String, EstBootstrapConfig>,
    /// How long an enrollment waits for its certificate before answering 202 with
    /// Retry-After (the issuance goes on; the client sends the request again). 0 = always
    /// answer at once. serverkeygen always waits: its key is answered only once.
    pub issue_wait_ms: u64,
}

/// `[est.bootstrap.<name>]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstBootstrapConfig {
    /// PEM file with the manufacturer's CA certificate(s).
    pub ca_file: PathBuf,
    /// Roles of devices authenticated this way; a device enrolls as `<name>:<subject CN>`.
    pub roles: Vec<String>,
    /// Only device certificates whose subject CN matches this glob (`*` = any run of
    /// characters, e.g. `SN-*`) map to this entry; several entries may share one CA.
    #[serde(default)]
    pub subject_cn_pattern: Option<String>,
}

/// `[est.profiles.<label>]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstProfileConfig {
    /// Template certificates are issued on.
    pub template: String,
    /// How clients authenticate: `any` (HTTP Basic or a client certificate), `basic`,
    /// `certificate`, or `both` (HTTP Basic on a connection with a valid client certificate).
    #[serde(default)]
    pub auth: EstAuth,
    /// Require RFC 7030 §3.5 proof-of-possession linking: the CSR's challengePassword must
    /// hold the base64 `tls-exporter` channel binding (RFC 9266) of the TLS connection.
    #[serde(default)]
    pub require_pop_linking: bool,
    /// Keep serverkeygen private keys, encrypted at rest (AES-256-GCM with a key in
    /// `<data_dir>/escrow.key`), retrievable by managers; otherwise they are never stored.
    #[serde(default)]
    pub escrow_keys: bool,
}

/// Allowed EST authentication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EstAuth {
    /// HTTP Basic or a client certificate.
    #[default]
    Any,
    /// HTTP Basic only.
    Basic,
    /// A client certificate only.
    Certificate,
    /// HTTP Basic and a client certificate together.
    Both,
}

/// `[publish]`: the plain-HTTP listener relying parties fetch CRLs from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// Whether the listener runs.
    pub enabled: bool,
    /// Socket address to bind (plain HTTP, as RFC 5280 distribution points are).
    pub listen: SocketAddr,
}

/// `[webhooks]`: signed event notifications (Standard Webhooks) from the outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Attempts per event and endpoint before the event is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds; doubled per attempt, ±20 % jitter.
    pub initial_backoff_ms: u64,
    /// Longest delay between retries, in seconds.
    pub max_backoff_seconds: u64,
    /// Time limit of one delivery attempt, in seconds.
    pub timeout_seconds: u64,
    /// Days an event stays in the outbox (for replays) before it is removed, once every
    /// endpoint has got past it; 0 keeps events for ever.
    pub retain_events_days: u32,
    /// `[webhooks.endpoints.<name>]`
    pub endpoints: BTreeMap<String, WebhookEndpointConfig>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            max_attempts: 10,
            initial_backoff_ms: 5_000,
            max_backoff_seconds: 3_600,
            timeout_seconds: 10,
            retain_events_days: 30,
            endpoints: BTreeMap::new(),
        }
    }
}

/// `[webhooks.endpoints.<name>]`: one subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointConfig {
    /// Where events are POSTed (http or https).
    pub url: String,
    /// File holding the signing secret (`whsec_…`, Standard Webhooks format; mode 0600).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the signing secret (instead of `secret_file`).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Event types delivered (empty = all).
    #[serde(default)]
    pub events: Vec<String>,
    /// Templates whose events are delivered (empty = all).
    #[serde(default)]
    pub templates: Vec<String>,
}

/// `[resources]`: policy layer 3, who owns the resources certificates are for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourcesConfig {
    /// A TOML registry: `[<resource>] owner = "<role>", environment = "<env>"`.
    pub registry_file: Option<PathBuf>,
    /// An HTTP JSON CMDB: `GET {cmdb_url}/{resource}` → `{"owner": …, "environment": …}`;
    /// 404 = no such resource; errors and timeouts deny.
    pub cmdb_url: Option<String>,
    /// Time limit of one CMDB look-up, in milliseconds.
    pub cmdb_timeout_ms: u64,
    /// How long an answer (found or not found) is reused, in seconds.
    pub cache_ttl_seconds: u64,
    /// Names that map to resources when the request names none.
    pub mappings: Vec<ResourceMappingConfig>,
    /// `[resources.environments.<env>]`
    pub environments: BTreeMap<String, EnvironmentConfig>,
}

impl Default for ResourcesConfig {
    fn default() -> Self {
        ResourcesConfig {
            registry_file: None,
            cmdb_url: None,
            cmdb_timeout_ms: 2_000,
            cache_ttl_seconds: 300,
            mappings: Vec::new(),
            environments: BTreeMap::new(),
        }
    }
}

/// `[[resources.mappings]]`: requested names matching `pattern` concern `resource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceMappingConfig {
    /// DNS name pattern (as in roles).
    pub pattern: DnsNamePattern,
    /// The resource those names belong to.
    pub resource: String,
}

/// `[resources.environments.<env>]`: what certificates for resources in it may be.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvironmentConfig {
    /// Templates allowed (empty = any the role allows).
    pub templates: Vec<String>,
    /// Every request for such a resource waits for an approver.
    pub approval_required: bool,
}

/// `[limits]`: abuse limits of every listener (connections, slow clients, request rates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Connections one listener serves at a time; further clients wait in the kernel's
    /// accept queue until one closes.
    pub max_connections_per_listener: usize,
    /// Seconds an HTTP/1 client has to send a request's headers (also how long an idle
    /// keep-alive connection waits for the next request); slower clients are disconnected.
    pub header_read_timeout_seconds: u64,
    /// Seconds a connection may go without a byte read or written (a stalled body, a
    /// client that stopped reading, an idle HTTP/2 connection) before it is closed.
    pub idle_timeout_seconds: u64,
    /// Enrollment requests one client address (IPv6: its /64) may make per minute and
    /// listener, with bursts up to the same number: ACME newNonce, newAccount and newOrder;
    /// EST simpleenroll, simplereenroll and serverkeygen; SCEP PKIOperation. 0 = no limit.
    pub per_ip_requests_per_minute: u32,
    /// ACME orders one account may have pending, ready or processing at once (0 = no limit).
    pub max_pending_orders_per_account: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections_per_listener: 1024,
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            per_ip_requests_per_minute: 300,
            max_pending_orders_per_account: 100,
        }
    }
}

/// `[approvals]`: requests held for a person.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// Hours a request waits for a decision before it is denied as expired (0 = never).
    pub pending_expiry_hours: u32,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            pending_expiry_hours: 72,
        }
    }
}

/// `[renewal]`: the renewal scheduler.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenewalConfig {
    /// Whether the scheduler runs.
    pub enabled: bool,
    /// Minutes between inventory scans.
    pub interval_minutes: u32,
    /// Renew-before window for templates that set none, as a share of the lifetime (%).
    pub default_renew_before_percent: u8,
    /// Attempts of a failing server-side renewal before it waits for the next window scan.
    pub max_attempts: u32,
    /// Delay before the first retry of a failed renewal, in seconds; doubled per attempt.
    pub initial_backoff_seconds: u64,
}

impl Default for RenewalConfig {
    fn default() -> Self {
        RenewalConfig {
            enabled: true,
            interval_minutes: 60,
            default_renew_before_percent: 33,
            max_attempts: 8,
            initial_backoff_seconds: 300,
        }
    }
}

/// `[policy]`: settings that apply to every request, whatever its template.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettingsConfig {
    /// Public keys refused as weak (rule `weak_key`): the SHA-256, hex, of each key's
    /// SubjectPublicKeyInfo DER (`openssl pkey -pubin -outform DER | sha256sum`).
    pub blocked_spki_sha256: Vec<String>,
    /// DNS names nobody gets, whatever their roles allow (patterns as in roles).
    pub deny_dns_names: Vec<DnsNamePattern>,
    /// IP ranges nobody gets.
    pub deny_ip_ranges: Vec<IpNet>,
    /// Nameserver for roles' DNS checks (`host:port`; empty: the system's resolvers).
    pub dns_resolver: String,
}

/// `[discovery]`: scheduled certificate discovery.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// `[[discovery.jobs]]`, each run at start and then every `interval_minutes`.
    #[serde(default)]
    pub jobs: Vec<DiscoveryJobConfig>,
}

/// What a discovery job scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryKind {
    /// TLS handshakes with `targets`.
    Tls,
    /// Certificate files below `path`.
    Files,
}

/// `[[discovery.jobs]]`: one scheduled discovery job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryJobConfig {
    /// Name (letters, digits, - and _), used in logs.
    pub name: String,
    /// `"tls"` or `"files"`.
    pub kind: DiscoveryKind,
    /// Kind `tls`: `host:port`, `IP:port`, `[IPv6]:port` or `CIDR:port` (at most 4096
    /// addresses per range).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Kind `files`: the directory (or file) searched.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Minutes between runs; the first run is at start.
    pub interval_minutes: u32,
}

/// `[delivery]`: places certificates are written to after issuance and renewal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// `[delivery.targets.<name>]`
    #[serde(default)]
    pub targets: BTreeMap<String, DeliveryTargetConfig>,
}

/// What kind of place a delivery target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryKind {
    /// Files in a local directory, replaced by atomic rename.
    Filesystem,
}

/// `[delivery.targets.<name>]`: one delivery target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryTargetConfig {
    /// Kind of target (`"filesystem"`).
    pub kind: DeliveryKind,
    /// Absolute path of an existing directory the files are written to.
    pub directory: PathBuf,
    /// File name of the leaf certificate (PEM).
    #[serde(default = "default_cert_file")]
    pub cert_file: String,
    /// File name of the issuer chain without the leaf (PEM).
    #[serde(default = "default_chain_file")]
    pub chain_file: String,
    /// File name of the leaf followed by the issuer chain (PEM).
    #[serde(default = "default_fullchain_file")]
    pub fullchain_file: String,
    /// File name of the private key (PKCS#8 PEM, mode 0600); written only when rampart
    /// holds the key.
    #[serde(default = "default_key_file")]
    pub key_file: String,
    /// File name of a PKCS#12 bundle (key, leaf and chain; mode 0600); none = no bundle.
    #[serde(default)]
    pub pkcs12_file: Option<String>,
    /// Name of the environment variable holding the PKCS#12 password (never the password).
    #[serde(default)]
    pub pkcs12_password_env: Option<String>,
    /// Command run after the files are in place, as argv (no shell); empty = none.
    #[serde(default)]
    pub reload_command: Vec<String>,
    /// Seconds the reload command may run before it counts as failed.
    #[serde(default = "default_reload_timeout_seconds")]
    pub reload_timeout_seconds: u64,
    /// Mode of the files that hold no key (certificate, chain, full chain).
    #[serde(default = "default_file_mode")]
    pub file_mode: u32,
}

fn default_cert_file() -> String {
    "cert.pem".into()
}

fn default_chain_file() -> String {
    "chain.pem".into()
}

fn default_fullchain_file() -> String {
    "fullchain.pem".into()
}

fn default_key_file() -> String {
    "key.pem".into()
}

fn default_reload_timeout_seconds() -> u64 {
    30
}

fn default_file_mode() -> u32 {
    0o644
}

/// `[scep]`: the SCEP (RFC 8894) listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScepConfig {
    /// Whether the listener runs.
    pub enabled: bool,
    /// Socket address to bind (plain HTTP: SCEP messages are signed and encrypted).
    pub listen: SocketAddr,
    /// Lifetime of the RA certificate made when none exists, in days.
    pub ra_validity_days: u32,
    /// Where the RA's RSA key lives: empty = a key file in `<data_dir>/ca/`; an RFC 7512
    /// `pkcs11:` URI = a key in the PKCS#11 token of `[ca] pkcs11_module` (PIN from
    /// `[ca] pin_file` or `RAMPART_PKCS11_PIN`), which decrypts requests and signs replies.
    #[serde(default)]
    pub ra_key: String,
    /// `[scep.profiles.<name>]`; `default` serves `/scep`.
    pub profiles: BTreeMap<String, ScepProfileConfig>,
    /// How long an enrollment waits for its certificate before answering PENDING (the
    /// issuance goes on; the device polls with CertPoll). 0 = always answer at once.
    pub issue_wait_ms: u64,
}

/// `[scep.profiles.<name>]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScepProfileConfig {
    /// Template certificates are issued on.
    pub template: String,
    /// Identity of devices that enroll with the static challenge.
    pub identity: String,
    /// Roles of enrolling devices (static and one-time challenges, renewals).
    pub roles: Vec<String>,
    /// Argon2 hash of the static challenge password; none = only one-time challenges.
    #[serde(default)]
    pub challenge_hash: Option<String>,
    /// URL an MDM answers challenge checks at (challenges that are neither one-time nor
    /// the static one are POSTed there; see the README).
    #[serde(default)]
    pub challenge_webhook: Option<String>,
    /// Accept single-DES envelopes and SHA-1 signatures from legacy clients.
    #[serde(default = "yes")]
    pub legacy_algorithms: bool,
    /// Refuse (badTime) a request whose signingTime is further than this from the
    /// server's clock, in seconds; 0 = do not check (devices without a real-time clock).
    #[serde(default = "one_day_seconds")]
    pub max_clock_skew_seconds: u64,
}

fn one_day_seconds() -> u64 {
    86_400
}

fn yes() -> bool {
    true
}

/// `[est.users.<name>]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstUserConfig {
    /// Argon2 PHC string (`rampart hash-password`); never the password itself.
    pub password_hash: String,
    /// Roles of the identity the user enrolls as.
    pub roles: Vec<String>,
}

/// `[acme]`: the ACME (RFC 8555) listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// Whether the listener runs.
    pub enabled: bool,
    /// Socket address to bind (HTTPS).
    pub listen: SocketAddr,
    /// Port http-01 validation connects to.
    pub http01_port: u16,
    /// Port tls-alpn-01 validation connects to.
    pub tlsalpn01_port: u16,
    /// DNS server for dns-01 and for resolving validation targets (`ip:port`); empty =
    /// the system resolver.
    pub dns_resolver: String,
    /// Validate against private, loopback and link-local addresses.
    pub allow_private_targets: bool,
    /// Waits (ms) before each new attempt of a failed validation, one per retry (RFC 8555
    /// §8.2); empty = the first failure is final.
    pub validation_retry_ms: Vec<u64>,
    /// How long a finalize waits for its certificate before answering the order
    /// `processing` (the issuance goes on; the client polls). 0 = always answer at once.
    pub finalize_wait_ms: u64,
    /// `[acme.profiles.<name>]`, served at `/acme/<name>/directory`.
    pub profiles: BTreeMap<String, AcmeProfileConfig>,
}

/// `[acme.profiles.<name>]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeProfileConfig {
    /// Template certificates of this profile are issued on when an order names no
    /// certificate profile.
    pub template: String,
    /// Further templates a newOrder may pick with its `profile` field (ACME profiles, as
    /// listed in the directory's `meta.profiles`).
    pub certificate_profiles: Vec<String>,
    /// Role given to accounts registered without external account binding; empty = such
    /// registrations are refused.
    pub anonymous_role: String,
    /// Terms of service URL shown in the directory (empty = none; clients must agree
    /// when set).
    pub terms_of_service: String,
    /// Website URL shown in the directory.
    pub website: String,
    /// CAA issuer domains shown in the directory.
    pub caa_identities: Vec<String>,
}

impl AcmeConfig {
    /// The resolver address, when one is configured.
    pub fn resolver_addr(&self) -> Option<SocketAddr> {
        resolver_addr(&self.dns_resolver)
    }
}

impl PolicySettingsConfig {
    /// The resolver address for roles' DNS checks, when one is configured.
    pub fn resolver_addr(&self) -> Option<SocketAddr> {
        resolver_addr(&self.dns_resolver)
    }
}

/// `ip` or `ip:port` (port 53 by default); `None` when empty or unparseable.
fn resolver_addr(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    text.parse().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// An extended key usage a template can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExtendedKeyUsage {
    /// id-kp-serverAuth
    ServerAuth,
    /// id-kp-clientAuth
    ClientAuth,
    /// id-kp-codeSigning
    CodeSigning,
    /// id-kp-emailProtection
    EmailProtection,
    /// id-kp-timeStamping
    TimeStamping,
    /// id-kp-OCSPSigning
    OcspSigning,
}

/// A key type a template accepts in a CSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcceptedKeyType {
    /// RSA, size bounded by `min_rsa_bits`/`max_rsa_bits`.
    Rsa,
    /// ECDSA P-256.
    EcdsaP256,
    /// ECDSA P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

/// `[templates.<name>]`: what an issued certificate looks like.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// Human description.
    pub description: String,
    /// EKUs written into the certificate.
    pub extended_key_usages: Vec<ExtendedKeyUsage>,
    /// Accepted CSR key types.
    pub key_types: Vec<AcceptedKeyType>,
    /// Smallest RSA modulus.
    pub min_rsa_bits: u32,
    /// Largest RSA modulus.
    pub max_rsa_bits: u32,
    /// Lifetime when the request names none.
    pub default_validity_days: u32,
    /// Longest lifetime a request may ask for.
    pub max_validity_days: u32,
    /// Most SANs in one certificate.
    pub max_sans: usize,
    /// Every request on this template waits for an approver (four eyes).
    #[serde(default)]
    pub approval_required: bool,
    /// Days before not-after when renewal is due (default: `renewal.default_renew_before_percent`
    /// of the lifetime).
    #[serde(default)]
    pub renew_before_days: Option<u32>,
    /// Requests naming a wildcard (`*.zone`) wait for an approver.
    #[serde(default)]
    pub approval_for_wildcards: bool,
    /// Requests for a longer lifetime than this many days wait for an approver.
    #[serde(default)]
    pub approval_above_days: Option<u32>,
    /// Roles whose holders may approve requests on this template (empty: any managing
    /// role). Nobody approves their own request.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Most certificates one identity gets on this template in any 24 hours (none: no limit).
    #[serde(default)]
    pub rate_limit_per_day: Option<u32>,
    /// The CA that signs: a `[ca_adapters]` name (none: the built-in CA).
    #[serde(default)]
    pub ca: Option<String>,
}

/// `[roles.<name>]`: what holders of a role may request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// Templates the role may use.
    pub templates: Vec<String>,
    /// DNS name patterns (`name`, `*.zone`, `**.zone`, `**`).
    pub dns_names: Vec<DnsNamePattern>,
    /// IP ranges.
    pub ip_ranges: Vec<IpNet>,
    /// Email domains for rfc822Name SANs: `example.com` (exactly) or `.example.com` (any
    /// subdomain).
    #[serde(default)]
    pub email_domains: Vec<String>,
    /// URI prefixes for uniformResourceIdentifier SANs (`spiffe://prod.example.com/`).
    #[serde(default)]
    pub uri_prefixes: Vec<String>,
    /// May manage every certificate and API keys.
    pub manage: bool,
    /// DNS checks on the names this role allows (`[roles.<name>.dns_checks]`).
    #[serde(default)]
    pub dns_checks: Option<DnsChecksConfig>,
}

/// `[roles.<name>.dns_checks]`: what the DNS must say about a name before the role allows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsChecksConfig {
    /// The name must resolve (A or AAAA).
    pub resolve: bool,
    /// Every address it resolves to must fall in one of these ranges (empty: any).
    pub addresses_in: Vec<IpNet>,
    /// Its DNS zone (the closest enclosing SOA) must be one of these (empty: any).
    pub zones: Vec<String>,
}

impl Config {
    /// The CRL distribution point written into certificates: `ca.crl_url` when set, else
    /// the publish listener's CRL URL (when it runs on a fixed port), else none.
    pub fn crl_url(&self) -> Option<String> {
        self.published_url(&self.ca.crl_url, "/crl/local.crl")
    }

    /// The AIA OCSP responder written into certificates: `ca.ocsp_url` when set, else the
    /// publish listener's `/ocsp` (when it runs on a fixed port), else none.
    pub fn ocsp_url(&self) -> Option<String> {
        self.published_url(&self.ca.ocsp_url, "/ocsp")
    }

    fn published_url(&self, configured: &str, path: &str) -> Option<String> {
        if !configured.is_empty() {
            return Some(configured.to_string());
        }
        (self.publish.enabled && self.publish.listen.port() != 0).then(|| {
            let host = if self.publish.listen.ip().is_loopback() {
                self.publish.listen.ip().to_string()
            } else {
                self.server.public_hostname.clone()
            };
            format!("http://{host}:{}{path}", self.publish.listen.port())
        })
    }

    /// The embedded defaults, with environment overrides applied.
    pub fn load_default() -> Result<Self, ConfigError> {
        Self::load(None)
    }

    /// Load from the embedded defaults, an optional file and the environment, then validate.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, Env::prefixed(ENV_PREFIX).split("__"))
    }

    fn load_with_env(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut defaults: toml::Table = DEFAULT_CONFIG_TOML
            .parse()
            .expect("the embedded default configuration is valid TOML");
        let mut figment = Figment::new();
        let mut user = None;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
                path: path.to_path_buf(),
                source,
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Syntax {
                        path: path.to_path_buf(),
                        message: e.message().to_string() + &line_hint(&text, e.span()),
                    })?;
            let mut replaced = false;
            for policy_table in POLICY_TABLES {
                if table.contains_key(policy_table) {
                    defaults.remove(policy_table);
                    replaced = true;
                }
            }
            if replaced {
                // The demo's anonymous ACME role went with the demo policy.
                if let Some(toml::Value::Table(profile)) = defaults
                    .get_mut("acme")
                    .and_then(|a| a.get_mut("profiles"))
                    .and_then(|p| p.get_mut("default"))
                {
                    profile.insert("anonymous_role".into(), toml::Value::String(String::new()));
                }
                // So did the demo SCEP profile (its template and role): SCEP runs with the
                // user's own profiles, or not at all.
                if let Some(toml::Value::Table(scep)) = defaults.get_mut("scep") {
                    scep.insert("profiles".into(), toml::Value::Table(toml::Table::new()));
                    let user_profiles = table.get("scep").and_then(|s| s.get("profiles")).is_some();
                    if !user_profiles {
                        scep.insert("enabled".into(), toml::Value::Boolean(false));
                    }
                }
            }
            user = Some(table);
        }
        figment = figment.merge(Toml::string(
            &toml::to_string(&defaults).expect("re-encode defaults"),
        ));
        if let Some(table) = user {
            let text = toml::to_string(&table).expect("re-encode a parsed table");
            figment = figment.merge(Toml::string(&text));
        }
        let config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Invalid(one_line_figment_error(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that are about values, not types: references between sections, ranges, names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: String, reason: &str| ConfigError::Value {
            key,
            reason: reason.to_string(),
        };
        if self.server.public_hostname.trim().is_empty() {
            return Err(bad("server.public_hostname".into(), "must not be empty"));
        }
        if self.ca.root_validity_days == 0 || self.ca.issuing_validity_days == 0 {
            return Err(bad(
                "ca.root_validity_days".into(),
                "CA validity must be at least one day",
            ));
        }
        if self.ca.crl_validity_hours == 0 {
            return Err(bad("ca.crl_validity_hours".into(), "must be at least 1"));
        }
        if self.ca.issuing_validity_days > self.ca.root_validity_days {
            return Err(bad(
                "ca.issuing_validity_days".into(),
                "the issuing CA cannot outlive the root CA",
            ));
        }
        if let Err(reason) = self.ca.check_key_location() {
            return Err(bad("ca.key".into(), &reason));
        }
        if self.ca.rsa_signature == RsaSignature::Pss
            && self.ca.key_algorithm != KeyAlgorithm::Rsa3072
        {
            return Err(bad(
                "ca.rsa_signature".into(),
                "\"pss\" needs RSA CA keys (ca.key_algorithm = \"rsa-3072\")",
            ));
        }
        if let Err(reason) = check_pkcs11_key(&self.scep.ra_key, &self.ca.pkcs11_module) {
            return Err(bad("scep.ra_key".into(), &reason));
        }
        for (key, url) in [
            ("ca.crl_url", &self.ca.crl_url),
            ("ca.ocsp_url", &self.ca.ocsp_url),
            ("ca.ca_issuers_url", &self.ca.ca_issuers_url),
        ] {
            if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad(
                    key.into(),
                    "must be an http:// or https:// URL, or empty",
                ));
            }
        }
        if self.tls.cert_file.is_empty() != self.tls.key_file.is_empty() {
            return Err(bad(
                "tls.cert_file".into(),
                "tls.cert_file and tls.key_file go together",
            ));
        }
        for (key, file) in [
            ("tls.cert_file", &self.tls.cert_file),
            ("tls.key_file", &self.tls.key_file),
        ] {
            if !file.is_empty() && !Path::new(file).is_file() {
                return Err(bad(key.into(), &format!("file {file} does not exist")));
            }
        }
        if let Some(entry) = self
            .policy
            .blocked_spki_sha256
            .iter()
            .find(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(bad(
                "policy.blocked_spki_sha256".into(),
                &format!("`{entry}` is not a SHA-256 in hex (64 hex digits)"),
            ));
        }
        if self.api.max_body_bytes < 1024 {
            return Err(bad("api.max_body_bytes".into(), "must be at least 1024"));
        }
        let limits = &self.limits;
        if !(1..=1_000_000).contains(&limits.max_connections_per_listener) {
            return Err(bad(
                "limits.max_connections_per_listener".into(),
                "must be between 1 and 1000000",
            ));
        }
        for (key, seconds) in [
            (
                "limits.header_read_timeout_seconds",
                limits.header_read_timeout_seconds,
            ),
            ("limits.idle_timeout_seconds", limits.idle_timeout_seconds),
        ] {
            if seconds == 0 || seconds > 3600 {
                return Err(bad(key.into(), "must be between 1 and 3600 seconds"));
            }
        }
        if self.api.default_page_size == 0 || self.api.default_page_size > self.api.max_page_size {
            return Err(bad(
                "api.default_page_size".into(),
                "must be between 1 and api.max_page_size",
            ));
        }
        for (name, adapter) in &self.ca_adapters {
            let key = |k: &str| format!("ca_adapters.{name}{k}");
            if name == BUILT_IN_CA
                || name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad(
                    key(""),
                    "adapter names use letters, digits, - and _ (and `local` is the built-in CA)",
                ));
            }
            match adapter {
                CaAdapterConfig::Acme(upstream) => upstream
                    .validate()
                    .map_err(|(k, reason)| bad(key(&k), &reason))?,
            }
        }
        for (name, t) in &self.templates {
            let key = |k: &str| format!("templates.{name}.{k}");
            if let Some(ca) = &t.ca {
                if ca != BUILT_IN_CA && !self.ca_adapters.contains_key(ca) {
                    return Err(bad(
                        key("ca"),
                        &format!(
                            "CA `{ca}` is not defined under [ca_adapters] (and is not `local`)"
                        ),
                    ));
                }
            }
            if t.key_types.is_empty() {
                return Err(bad(key("key_types"), "must list at least one key type"));
            }
            if t.min_rsa_bits < 2048 || t.min_rsa_bits > t.max_rsa_bits || t.max_rsa_bits > 8192 {
                return Err(bad(
                    key("min_rsa_bits"),
                    "RSA bounds must satisfy 2048 <= min_rsa_bits <= max_rsa_bits <= 8192",
                ));
            }
            if t.default_validity_days == 0 || t.default_validity_days > t.max_validity_days {
                return Err(bad(
                    key("default_validity_days"),
                    "must be between 1 and max_validity_days",
                ));
            }
            if t.max_validity_days > self.ca.issuing_validity_days {
                return Err(bad(
                    key("max_validity_days"),
                    "a certificate cannot outlive the issuing CA (ca.issuing_validity_days)",
                ));
            }
            if t.max_sans == 0 {
                return Err(bad(key("max_sans"), "must be at least 1"));
            }
        }
        let acme = &self.acme;
        if acme.http01_port == 0 || acme.tlsalpn01_port == 0 {
            return Err(bad(
                "acme.http01_port".into(),
                "validation ports must not be 0",
            ));
        }
        if acme.validation_retry_ms.len() > MAX_VALIDATION_RETRIES
            || acme
                .validation_retry_ms
                .iter()
                .any(|ms| *ms > MAX_VALIDATION_RETRY_MS)
        {
            return Err(bad(
                "acme.validation_retry_ms".into(),
                &format!(
                    "at most {MAX_VALIDATION_RETRIES} retries, each after at most \
                     {MAX_VALIDATION_RETRY_MS} ms"
                ),
            ));
        }
        if !self.server.proxy_protocol.is_empty() && self.server.trusted_proxies.is_empty() {
            return Err(bad(
                "server.proxy_protocol".into(),
                "PROXY headers are read only from `server.trusted_proxies`, which is empty",
            ));
        }
        if !self.policy.dns_resolver.trim().is_empty() && self.policy.resolver_addr().is_none() {
            return Err(bad(
                "policy.dns_resolver".into(),
                "must be `ip` or `ip:port`, or empty",
            ));
        }
        if !acme.dns_resolver.trim().is_empty() && acme.resolver_addr().is_none() {
            return Err(bad(
                "acme.dns_resolver".into(),
                "must be `ip` or `ip:port`, or empty",
            ));
        }
        // Profiles only matter when the listener runs.
        if acme.enabled {
            if !acme.profiles.contains_key("default") {
                return Err(bad(
                    "acme.profiles".into(),
                    "the profile `default` must exist",
                ));
            }
            for (name, profile) in &acme.profiles {
                let key = |k: &str| format!("acme.profiles.{name}.{k}");
                if !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(bad(
                        format!("acme.profiles.{name}"),
                        "profile names may use letters, digits, - and _",
                    ));
                }
                if !self.templates.contains_key(&profile.template) {
                    return Err(bad(
                        key("template"),
                        &format!(
                            "template `{}` is not defined (name one of [templates], or set acme.enabled = false)",
                            profile.template
                        ),
                    ));
                }
                for template in &profile.certificate_profiles {
                    if !self.templates.contains_key(template) {
                        return Err(bad(
                            key("certificate_profiles"),
                            &format!("template `{template}` is not defined"),
                        ));
                    }
                }
                if !profile.anonymous_role.is_empty()
                    && !self.roles.contains_key(&profile.anonymous_role)
                {
                    return Err(bad(
                        key("anonymous_role"),
                        &format!("role `{}` is not defined", profile.anonymous_role),
                    ));
                }
            }
        }
        if self.est.enabled {
            if !self.est.profiles.contains_key("default") {
                return Err(bad(
                    "est.profiles".into(),
                    "the profile `default` must exist",
                ));
            }
            for (label, profile) in &self.est.profiles {
                if !self.templates.contains_key(&profile.template) {
                    return Err(bad(
                        format!("est.profiles.{label}.template"),
                        &format!(
                            "template `{}` is not defined (or set est.enabled = false)",
                            profile.template
                        ),
                    ));
                }
            }
        }
        for (name, bootstrap) in &self.est.bootstrap {
            if !bootstrap.ca_file.is_file() {
                return Err(bad(
                    format!("est.bootstrap.{name}.ca_file"),
                    &format!("file {} does not exist", bootstrap.ca_file.display()),
                ));
            }
            if let Some(role) = bootstrap
                .roles
                .iter()
                .find(|r| !self.roles.contains_key(*r))
            {
                return Err(bad(
                    format!("est.bootstrap.{name}.roles"),
                    &format!("role `{role}` is not defined"),
                ));
            }
        }
        for (user, entry) in &self.est.users {
            if !entry.password_hash.starts_with("$argon2") {
                return Err(bad(
                    format!("est.users.{user}.password_hash"),
                    "must be an argon2 hash from `rampart hash-password`",
                ));
            }
            if let Some(role) = entry.roles.iter().find(|r| !self.roles.contains_key(*r)) {
                return Err(bad(
                    format!("est.users.{user}.roles"),
                    &format!("role `{role}` is not defined"),
                ));
            }
        }
        if self.scep.enabled && !self.scep.profiles.contains_key("default") {
            return Err(bad(
                "scep.profiles".into(),
                "the profile `default` must exist",
            ));
        }
        for (name, profile) in &self.scep.profiles {
            let key = |k: &str| format!("scep.profiles.{name}.{k}");
            if !self.templates.contains_key(&profile.template) {
                return Err(bad(
                    key("template"),
                    &format!("template `{}` is not defined", profile.template),
                ));
            }
            if let Some(role) = profile.roles.iter().find(|r| !self.roles.contains_key(*r)) {
                return Err(bad(key("roles"), &format!("role `{role}` is not defined")));
            }
            if profile
                .challenge_hash
                .as_ref()
                .is_some_and(|h| !h.starts_with("$argon2"))
            {
                return Err(bad(
                    key("challenge_hash"),
                    "must be an argon2 hash from `rampart hash-password`",
                ));
            }
            if profile.identity.trim().is_empty() {
                return Err(bad(key("identity"), "must not be empty"));
            }
            if let Some(url) = &profile.challenge_webhook {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(bad(
                        key("challenge_webhook"),
                        "must be an http:// or https:// URL",
                    ));
                }
            }
        }
        for (name, role) in &self.roles {
            for template in &role.templates {
                if !self.templates.contains_key(template) {
                    return Err(bad(
                        format!("roles.{name}.templates"),
                        &format!("template `{template}` is not defined under [templates]"),
                    ));
                }
            }
        }
        for (name, target) in &self.delivery.targets {
            validate_delivery_target(name, target)
                .map_err(|(k, reason)| bad(format!("delivery.targets.{name}{k}"), &reason))?;
        }
        let mut job_names = std::collections::BTreeSet::new();
        for (i, job) in self.discovery.jobs.iter().enumerate() {
            validate_discovery_job(job)
                .map_err(|(k, reason)| bad(format!("discovery.jobs[{i}]{k}"), &reason))?;
            if !job_names.insert(job.name.as_str()) {
                return Err(bad(
                    format!("discovery.jobs[{i}].name"),
                    &format!("a job named `{}` exists already", job.name),
                ));
            }
        }
        self.webhooks
            .validate()
            .map_err(|(k, reason)| bad(format!("webhooks{k}"), &reason))?;
        if self.renewal.interval_minutes == 0 {
            return Err(bad("renewal.interval_minutes".into(), "must be at least 1"));
        }
        if !(1..=99).contains(&self.renewal.default_renew_before_percent) {
            return Err(bad(
                "renewal.default_renew_before_percent".into(),
                "must be between 1 and 99",
            ));
        }
        if self.renewal.max_attempts == 0 {
            return Err(bad("renewal.max_attempts".into(), "must be at least 1"));
        }
        if let Some(url) = &self.resources.cmdb_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad(
                    "resources.cmdb_url".into(),
                    "must be an http:// or https:// URL",
                ));
            }
        }
        for (env, environment) in &self.resources.environments {
            if let Some(unknown) = environment
                .templates
                .iter()
                .find(|t| !self.templates.contains_key(*t))
            {
                return Err(bad(
                    format!("resources.environments.{env}.templates"),
                    &format!("template `{unknown}` is not defined"),
                ));
            }
        }
        for (i, mapping) in self.resources.mappings.iter().enumerate() {
            if mapping.resource.trim().is_empty() {
                return Err(bad(
                    format!("resources.mappings[{i}].resource"),
                    "must not be empty",
                ));
            }
        }
        for (name, template) in &self.templates {
            if let Some(unknown) = template
                .approvers
                .iter()
                .find(|r| !self.roles.contains_key(*r))
            {
                return Err(bad(
                    format!("templates.{name}.approvers"),
                    &format!("role `{unknown}` is not defined under [roles]"),
                ));
            }
            if template.rate_limit_per_day == Some(0) {
                return Err(bad(
                    format!("templates.{name}.rate_limit_per_day"),
                    "must be at least 1 (leave it out for no limit)",
                ));
            }
            if let Some(days) = template.renew_before_days {
                if days == 0 || days >= template.max_validity_days {
                    return Err(bad(
                        format!("templates.{name}.renew_before_days"),
                        "must be at least 1 and shorter than max_validity_days",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl WebhooksConfig {
    /// Checks the retry settings and each endpoint; the error is (key suffix, reason).
    /// Event type names are checked by `lifecycle::webhooks`, which owns them.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: String, reason: &str| Err((k, reason.to_string()));
        if self.max_attempts == 0 {
            return bad(".max_attempts".into(), "must be at least 1");
        }
        if self.timeout_seconds == 0 {
            return bad(".timeout_seconds".into(), "must be at least 1");
        }
        if self.initial_backoff_ms == 0 || self.max_backoff_seconds == 0 {
            return bad(".initial_backoff_ms".into(), "backoff must be positive");
        }
        for (name, endpoint) in &self.endpoints {
            let key = |k: &str| format!(".endpoints.{name}{k}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return bad(key(""), "endpoint names may use letters, digits, - and _");
            }
            if !(endpoint.url.starts_with("http://") || endpoint.url.starts_with("https://")) {
                return bad(key(".url"), "must be an http:// or https:// URL");
            }
            if endpoint.secret_file.is_some() == endpoint.secret_env.is_some() {
                return bad(
                    key(".secret_file"),
                    "set exactly one of secret_file and secret_env (never the secret itself)",
                );
            }
        }
        Ok(())
    }
}

/// Checks one `[[discovery.jobs]]`; the error is (key suffix, reason). Targets are checked
/// for shape here; `lifecycle::discovery` parses and expands them.
fn validate_discovery_job(job: &DiscoveryJobConfig) -> Result<(), (String, String)> {
    let bad = |k: &str, reason: String| Err((format!(".{k}"), reason));
    if job.name.is_empty()
        || !job
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return bad("name", "job names may use letters, digits, - and _".into());
    }
    if job.interval_minutes == 0 {
        return bad("interval_minutes", "must be at least 1".into());
    }
    match job.kind {
        DiscoveryKind::Tls => {
            if job.targets.is_empty() || job.path.is_some() {
                return bad("targets", "a `tls` job lists targets and no path".into());
            }
            for target in &job.targets {
                check_discovery_target(target)
                    .map_err(|reason| (".targets".to_string(), format!("`{target}`: {reason}")))?;
            }
        }
        DiscoveryKind::Files => {
            if job.path.is_none() || !job.targets.is_empty() {
                return bad("path", "a `files` job names a path and no targets".into());
            }
        }
    }
    Ok(())
}

/// The shape of a TLS discovery target: `host:port`, `[IPv6]:port` or `CIDR:port` with at
/// most 4096 addresses.
fn check_discovery_target(target: &str) -> Result<(), &'static str> {
    let (host, port) = match target.strip_prefix('[') {
        Some(rest) => rest
            .split_once("]:")
            .ok_or("write IPv6 targets as [address]:port")?,
        None => target.rsplit_once(':').ok_or("missing :port")?,
    };
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err("the port must be 1 to 65535");
    }
    if host.is_empty() || (!target.starts_with('[') && host.contains(':')) {
        return Err("write IPv6 targets as [address]:port");
    }
    if host.contains('/') {
        let net: IpNet = host.parse().map_err(|_| "not a CIDR range")?;
        if net.max_prefix_len() - net.prefix_len() > 12 {
            return Err("ranges may hold at most 4096 addresses");
        }
    }
    Ok(())
}

/// Checks one `[delivery.targets.<name>]`; the error is (key suffix, reason).
fn validate_delivery_target(
    name: &str,
    target: &DeliveryTargetConfig,
) -> Result<(), (String, String)> {
    let bad = |k: &str, reason: &str| Err((format!(".{k}"), reason.to_string()));
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err((
            String::new(),
            "target names may use letters, digits, - and _".into(),
        ));
    }
    if !target.directory.is_absolute() {
        return bad("directory", "must be an absolute path");
    }
    let mut files = vec![
        ("cert_file", &target.cert_file),
        ("chain_file", &target.chain_file),
        ("fullchain_file", &target.fullchain_file),
        ("key_file", &target.key_file),
    ];
    if let Some(pkcs12) = &target.pkcs12_file {
        files.push(("pkcs12_file", pkcs12));
    }
    for (i, (key, file)) in files.iter().enumerate() {
        if file.is_empty()
            || *file == "."
            || *file == ".."
            || file.contains('/')
            || file.contains('\0')
        {
            return bad(key, "must be a plain file name (no directory part)");
        }
        if let Some((other, _)) = files[..i].iter().find(|(_, f)| f == file) {
            return bad(key, &format!("`{file}` is already used by {other}"));
        }
    }
    match (&target.pkcs12_file, &target.pkcs12_password_env) {
        (Some(_), None) => {
            return bad(
                "pkcs12_password_env",
                "must name the environment variable holding the PKCS#12 password",
            )
        }
        (None, Some(_)) => {
            return bad(
                "pkcs12_password_env",
                "goes with pkcs12_file, which is not set",
            )
        }
        (Some(_), Some(var)) => {
            let mut bytes = var.bytes();
            let valid = bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return bad(
                    "pkcs12_password_env",
                    "must be an environment variable name (letters, digits and _), not the password",
                );
            }
        }
        (None, None) => {}
    }
    if target
        .reload_command
        .first()
        .is_some_and(|program| program.trim().is_empty())
    {
        return bad(
            "reload_command",
            "the program (first element) must not be empty",
        );
    }
    if !(1..=3600).contains(&target.reload_timeout_seconds) {
        return bad("reload_timeout_seconds", "must be between 1 and 3600");
    }
    if target.file_mode > 0o777 || target.file_mode & 0o002 != 0 {
        return bad(
            "file_mode",
            "must be a permission mode up to 0o777 that others cannot write",
        );
    }
    Ok(())
}

/// A DNS name pattern: `**` (any name), `name` (exactly), `*.zone` (exactly one label
/// below zone) or `**.zone` (any depth below zone). Parsed once, when the config loads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsNamePattern {
    text: String,
}

impl DnsNamePattern {
    /// Whether `name` (lower case, no trailing dot) is covered by the pattern.
    /// A wildcard *request* (`*.zone`) is covered only by patterns that cover every name
    /// one label below zone: `*.zone`, `**.zone` and `**`.
    pub fn matches(&self, name: &str) -> bool {
        let text = self.text.as_str();
        if text == "**" {
            return true;
        }
        if let Some(zone) = text.strip_prefix("**.") {
            let below = name
                .strip_suffix(zone)
                .and_then(|rest| rest.strip_suffix('.'));
            return below.is_some_and(|labels| !labels.is_empty());
        }
        if let Some(zone) = text.strip_prefix("*.") {
            let below = name
                .strip_suffix(zone)
                .and_then(|rest| rest.strip_suffix('.'));
            return below.is_some_and(|label| !label.is_empty() && !label.contains('.'));
        }
        name == text
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for DnsNamePattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        validate_dns_pattern(&text).map_err(|reason| format!("DNS pattern `{text}`: {reason}"))?;
        Ok(Self { text })
    }
}

impl From<DnsNamePattern> for String {
    fn from(pattern: DnsNamePattern) -> Self {
        pattern.text
    }
}

fn validate_dns_pattern(pattern: &str) -> Result<(), &'static str> {
    if pattern == "**" {
        return Ok(());
    }
    let rest = pattern
        .strip_prefix("**.")
        .or_else(|| pattern.strip_prefix("*."))
        .unwrap_or(pattern);
    if rest.is_empty() {
        return Err("empty name");
    }
    if rest.contains('*') {
        return Err("a wildcard may only be the whole first label (`*.` or `**.`)");
    }
    if rest != rest.to_ascii_lowercase() {
        return Err("patterns are lower case");
    }
    for label in rest.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("every label must have 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("labels may hold only letters, digits and hyphens");
        }
    }
    Ok(())
}

fn line_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

fn one_line_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let kind = e.kind.to_string();
            let from = if e
                .metadata
                .as_ref()
                .is_some_and(|m| m.name.contains("environment"))
            {
                format!(
                    " (from environment variable {ENV_PREFIX}{})",
                    e.path.join("__").to_uppercase()
                )
            } else {
                String::new()
            };
            if key.is_empty() {
                format!("{kind}{from}")
            } else {
                format!("`{key}`: {kind}{from}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Env {
        Env::prefixed("RAMPART_TEST_UNSET_PREFIX__").split("__")
    }

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rampart.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_with_env(Some(&path), no_env())
    }

    #[test]
    fn embedded_defaults_parse_and_validate() {
        let config = Config::load_with_env(None, no_env()).unwrap();
        assert_eq!(config.api.listen, "127.0.0.1:9000".parse().unwrap());
        assert!(config.templates.contains_key("server"));
        assert!(config.roles["admin"].manage);
    }

    #[test]
    fn every_file_in_config_dir_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load_with_env(Some(&path), no_env())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 1);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_text("[api]\nlisten_addr = \"127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_addr"), "{err}");
        let err = load_text("[nosuch]\nx = 1\n").unwrap_err().to_string();
        assert!(err.contains("nosuch"), "{err}");
    }

    #[test]
    fn limits_have_defaults_and_are_validated() {
        let config = load_text("[api]\nlisten = \"127.0.0.1:19000\"\n").unwrap();
        assert_eq!(config.limits, LimitsConfig::default());
        let config = load_text(
            "[server]\ntrusted_proxies = [\"10.0.0.5/32\"]\nproxy_protocol = [\"est\", \"acme\"]\n",
        )
        .unwrap();
        assert_eq!(
            config.server.proxy_protocol,
            vec![Listener::Est, Listener::Acme]
        );
        assert_eq!(
            config.server.forwarded_header,
            ForwardedHeader::XForwardedFor
        );
        let config = load_text("[server]\nforwarded_header = \"forwarded\"\n").unwrap();
        assert_eq!(config.server.forwarded_header, ForwardedHeader::Forwarded);
        let config = load_text("[limits]\nper_ip_requests_per_minute = 0\n").unwrap();
        assert_eq!(config.limits.per_ip_requests_per_minute, 0);
        assert_eq!(config.limits.max_connections_per_listener, 1024);
        for (text, key) in [
            (
                "[limits]\nmax_connections_per_listener = 0\n",
                "limits.max_connections_per_listener",
            ),
            (
                "[limits]\nheader_read_timeout_seconds = 0\n",
                "limits.header_read_timeout_seconds",
            ),
            (
                "[limits]\nidle_timeout_seconds = 100000\n",
                "limits.idle_timeout_seconds",
            ),
            ("[limits]\nmax_body = 1\n", "max_body"),
            (
                "[acme]\nvalidation_retry_ms = [1000, 300001]\n",
                "acme.validation_retry_ms",
            ),
            (
                "[acme]\nvalidation_retry_ms = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n",
                "acme.validation_retry_ms",
            ),
            (
                "[server]\nproxy_protocol = [\"est\"]\n",
                "server.proxy_protocol",
            ),
            (
                "[server]\nforwarded_header = \"x-real-ip\"\n",
                "forwarded_header",
            ),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.5/32\"]\nproxy_protocol = [\"ldap\"]\n",
                "proxy_protocol",
            ),
        ] {
            let err = load_text(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn wrong_type_is_named() {
        let err = load_text("[api]\nmax_body_bytes = \"big\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.max_body_bytes"), "{err}");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = load_text("[api]\n\nlisten = \n").unwrap_err().to_string();
        assert!(
            err.contains("rampart.toml") && err.contains("line 3"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_file_is_named() {
        let err = Config::load_with_env(Some(Path::new("/nonexistent/r.toml")), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/r.toml"), "{err}");
    }

    #[test]
    fn partial_file_keeps_defaults_and_policy_tables_replace_demo() {
        let config = load_text("[api]\nlisten = \"127.0.0.1:19000\"\n").unwrap();
        assert_eq!(config.api.listen.port(), 19000);
        assert_eq!(config.api.max_body_bytes, 65536);
        assert!(config.roles.contains_key("admin"));

        let config = load_text(
            "[templates.web]\ndescription='w'\nextended_key_usages=['serverAuth']\nkey_types=['ecdsa-p256']\n\
             min_rsa_bits=2048\nmax_rsa_bits=4096\ndefault_validity_days=30\nmax_validity_days=30\nmax_sans=5\n\
             [roles.web]\ntemplates=['web']\ndns_names=['*.example.com']\nip_ranges=[]\nmanage=false\n\
             [acme.profiles.default]\ntemplate='web'\n[est.profiles.default]\ntemplate='web'\n",
        )
        .unwrap();
        assert_eq!(config.templates.keys().collect::<Vec<_>>(), ["web"]);
        assert_eq!(config.roles.keys().collect::<Vec<_>>(), ["web"]);
        // The demo's anonymous ACME role and SCEP profile left with the demo policy.
        assert_eq!(config.acme.profiles["default"].anonymous_role, "");
        assert!(!config.scep.enabled && config.scep.profiles.is_empty());
    }

    #[test]
    fn role_referencing_unknown_template_is_refused() {
        let err =
            load_text("[roles.x]\ntemplates=['nope']\ndns_names=[]\nip_ranges=[]\nmanage=false\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("roles.x.templates") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn dns_patterns_match_as_documented() {
        let p = |t: &str| DnsNamePattern::try_from(t.to_string()).unwrap();
        assert!(p("*.a.example").matches("www.a.example"));
        assert!(!p("*.a.example").matches("x.www.a.example"));
        assert!(!p("*.a.example").matches("a.example"));
        assert!(p("**.a.example").matches("x.www.a.example"));
        assert!(!p("**.a.example").matches("evila.example"));
        assert!(p("**.a.example").matches("*.a.example"));
        assert!(p("host.example").matches("host.example"));
        assert!(!p("host.example").matches("www.host.example"));
        assert!(p("**").matches("anything.at.all"));
        let err = load_text(
            "[roles.admin]\ntemplates=[]\ndns_names=['a.*.b']\nip_ranges=[]\nmanage=false\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("roles.admin.dns_names") && err.contains("a.*.b"),
            "{err}"
        );
    }

    #[test]
    fn bad_dns_pattern_is_refused() {
        for pattern in ["a.*.b", "*", "Upper.example", "a..b"] {
            assert!(validate_dns_pattern(pattern).is_err(), "{pattern}");
        }
        for pattern in ["**", "*.a.b", "**.a", "host.example"] {
            assert!(validate_dns_pattern(pattern).is_ok(), "{pattern}");
        }
    }

    #[test]
    fn delivery_targets_parse_with_defaults_and_are_validated() {
        assert!(Config::load_with_env(None, no_env())
            .unwrap()
            .delivery
            .targets
            .is_empty());
        let base = "[delivery.targets.web]\nkind = \"filesystem\"\ndirectory = \"/srv/tls\"\n";
        let target = &load_text(base).unwrap().delivery.targets["web"];
        assert_eq!(target.kind, DeliveryKind::Filesystem);
        assert_eq!(
            (
                target.cert_file.as_str(),
                target.chain_file.as_str(),
                target.fullchain_file.as_str(),
                target.key_file.as_str()
            ),
            ("cert.pem", "chain.pem", "fullchain.pem", "key.pem")
        );
        assert_eq!(
            (target.reload_timeout_seconds, target.file_mode),
            (30, 0o644)
        );
        assert!(target.reload_command.is_empty() && target.pkcs12_file.is_none());
        let with_p12 = format!(
            "{base}pkcs12_file = \"web.p12\"\npkcs12_password_env = \"WEB_P12\"\nfile_mode = 0o640\n\
             reload_command = [\"systemctl\", \"reload\", \"nginx\"]\n"
        );
        assert_eq!(
            load_text(&with_p12).unwrap().delivery.targets["web"].file_mode,
            0o640
        );
        for (extra, key) in [
            ("", "delivery.targets.web.directory"),
            (
                "pkcs12_file = \"web.p12\"\n",
                "delivery.targets.web.pkcs12_password_env",
            ),
            (
                "pkcs12_file = \"web.p12\"\npkcs12_password_env = \"hunter2!\"\n",
                "delivery.targets.web.pkcs12_password_env",
            ),
            (
                "key_file = \"../key.pem\"\n",
                "delivery.targets.web.key_file",
            ),
            (
                "chain_file = \"cert.pem\"\n",
                "delivery.targets.web.chain_file",
            ),
            (
                "reload_timeout_seconds = 0\n",
                "delivery.targets.web.reload_timeout_seconds",
            ),
            (
                "reload_command = [\"\"]\n",
                "delivery.targets.web.reload_command",
            ),
            ("file_mode = 0o666\n", "delivery.targets.web.file_mode"),
        ] {
            let text = if extra.is_empty() {
                base.replace("/srv/tls", "srv/tls")
            } else {
                format!("{base}{extra}")
            };
            let err = load_text(&text).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{extra}: {err}");
        }
        let err = load_text(&format!("{base}password = \"x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("password"), "{err}");
        let err = load_text("[delivery.targets.web]\nkind = \"ftp\"\ndirectory = \"/srv\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ftp"), "{err}");
    }

    #[test]
    fn key_algorithms_use_the_documented_names() {
        for (name, algorithm) in [
            ("ecdsa-p256", KeyAlgorithm::EcdsaP256),
            ("ecdsa-p384", KeyAlgorithm::EcdsaP384),
            ("rsa-3072", KeyAlgorithm::Rsa3072),
        ] {
            let config = load_text(&format!("[ca]\nkey_algorithm = \"{name}\"\n")).unwrap();
            assert_eq!(config.ca.key_algorithm, algorithm);
            assert_eq!(config.ca.rsa_signature, RsaSignature::Pkcs1v15);
        }
    }

    #[test]
    fn rsa_pss_is_for_rsa_keys_only() {
        let config =
            load_text("[ca]\nkey_algorithm = \"rsa-3072\"\nrsa_signature = \"pss\"\n").unwrap();
        assert_eq!(config.ca.rsa_signature, RsaSignature::Pss);
        let err = load_text("[ca]\nkey_algorithm = \"ecdsa-p256\"\nrsa_signature = \"pss\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.rsa_signature"), "{err}");
        assert!(load_text("[ca]\nrsa_signature = \"pkcs1\"\n").is_err());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail signature, not ours
    fn environment_overrides_apply() {
        // A private prefix, so that other tests running in parallel never see these.
        let env = || Env::prefixed("RAMPART_TEST_ENV__").split("__");
        figment::Jail::expect_with(|jail| {
            jail.set_env("RAMPART_TEST_ENV__API__LISTEN", "127.0.0.1:14000");
            jail.set_env("RAMPART_TEST_ENV__TEMPLATES__SERVER__MAX_SANS", "7");
            let config = Config::load_with_env(None, env()).expect("loads");
            assert_eq!(config.api.listen.port(), 14000);
            assert_eq!(config.templates["server"].max_sans, 7);
            jail.set_env("RAMPART_TEST_ENV__API__MAX_BODY_BYTES", "lots");
            let err = Config::load_with_env(None, env()).unwrap_err().to_string();
            assert!(
                err.contains("api.max_body_bytes") && err.contains("environment variable"),
                "{err}"
            );
            Ok(())
        });
    }
}
