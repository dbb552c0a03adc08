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
}

/// Key algorithm of a key rampart generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256.
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcdsaP384,
    /// RSA 3072 with PKCS#1 v1.5 SHA-256 signatures.
    #[serde(rename = "rsa-3072")]
    Rsa3072,
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
}

/// `[est.bootstrap.<name>]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstBootstrapConfig {
    /// PEM file with the manufacturer's CA certificate(s).
    pub ca_file: PathBuf,
    /// Roles of devices authenticated this way; a device enrolls as `<name>:<subject CN>`.
    pub roles: Vec<String>,
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
    /// `[scep.profiles.<name>]`; `default` serves `/scep`.
    pub profiles: BTreeMap<String, ScepProfileConfig>,
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
        let text = self.dns_resolver.trim();
        if text.is_empty() {
            return None;
        }
        text.parse().ok().or_else(|| {
            text.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
    }
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
    /// May manage every certificate and API keys.
    pub manage: bool,
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
        if self.api.max_body_bytes < 1024 {
            return Err(bad("api.max_body_bytes".into(), "must be at least 1024"));
        }
        if self.api.default_page_size == 0 || self.api.default_page_size > self.api.max_page_size {
            return Err(bad(
                "api.default_page_size".into(),
                "must be between 1 and api.max_page_size",
            ));
        }
        for (name, t) in &self.templates {
            let key = |k: &str| format!("templates.{name}.{k}");
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
        Ok(())
    }
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
    fn key_algorithms_use_the_documented_names() {
        for (name, algorithm) in [
            ("ecdsa-p256", KeyAlgorithm::EcdsaP256),
            ("ecdsa-p384", KeyAlgorithm::EcdsaP384),
            ("rsa-3072", KeyAlgorithm::Rsa3072),
        ] {
            let config = load_text(&format!("[ca]\nkey_algorithm = \"{name}\"\n")).unwrap();
            assert_eq!(config.ca.key_algorithm, algorithm);
        }
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
