//! Protocol-neutral domain types: who asks (identities), what they ask for (enrollment
//! requests and identifiers) and what rampart keeps (certificate records).
//!
//! Imports nothing from the daemon but `config` value types.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// The front door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The admin REST API.
    Api,
    /// ACME (RFC 8555).
    Acme,
    /// EST (RFC 7030).
    Est,
    /// SCEP (RFC 8894).
    Scep,
    /// rampart itself (its own listener certificate).
    Internal,
}

impl Protocol {
    /// Lower-case name used in metrics labels and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Api => "api",
            Protocol::Acme => "acme",
            Protocol::Est => "est",
            Protocol::Scep => "scep",
            Protocol::Internal => "internal",
        }
    }
}

/// How an identity proved itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credential {
    /// An API key, by its public id.
    ApiKey {
        /// The key's public id (never the secret).
        key_id: String,
    },
    /// An ACME account, by its id.
    AcmeAccount {
        /// Account id.
        account_id: String,
    },
    /// An EST HTTP Basic user.
    EstUser {
        /// User name.
        user: String,
    },
    /// A TLS client certificate rampart issued, by serial.
    ClientCertificate {
        /// Its serial.
        serial: String,
    },
    /// A SCEP challenge password.
    ScepChallenge {
        /// The SCEP profile.
        profile: String,
        /// The one-time challenge's id, or none for the profile's static challenge.
        one_time: Option<String>,
    },
    /// rampart acting on its own behalf.
    System,
}

/// An authenticated requester.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Stable name (owner of what it gets issued).
    pub name: String,
    /// Roles from the configuration's `[roles]`.
    pub roles: Vec<String>,
    /// How it authenticated.
    pub credential: Credential,
}

impl Identity {
    /// rampart itself.
    pub fn system() -> Self {
        Identity {
            name: "rampart".into(),
            roles: Vec::new(),
            credential: Credential::System,
        }
    }
}

/// A name a certificate is for (RFC 5280 GeneralName subset rampart issues).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum Identifier {
    /// dNSName, lower case, no trailing dot; may start with `*.`.
    Dns(String),
    /// iPAddress.
    Ip(IpAddr),
    /// rfc822Name (S/MIME): `local@domain`, the domain lower-cased.
    Email(String),
    /// uniformResourceIdentifier (SPIFFE IDs, URNs…), as given.
    Uri(String),
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identifier::Dns(name) => write!(f, "dns:{name}"),
            Identifier::Ip(ip) => write!(f, "ip:{ip}"),
            Identifier::Email(address) => write!(f, "email:{address}"),
            Identifier::Uri(uri) => write!(f, "uri:{uri}"),
        }
    }
}

impl Identifier {
    /// A DNS identifier from a requested name: lower-cased, syntax checked (LDH labels of
    /// 1–63 characters, 253 characters in all, a wildcard only as the whole first label).
    pub fn dns(name: &str) -> Result<Identifier, String> {
        let lower = name.to_ascii_lowercase();
        let base = lower.strip_prefix("*.").unwrap_or(&lower);
        if lower.is_empty() || lower.len() > 253 {
            return Err(format!("DNS name `{name}` must have 1 to 253 characters"));
        }
        let valid_labels = base.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
        if !valid_labels {
            return Err(format!("`{name}` is not a valid DNS name"));
        }
        if base.parse::<IpAddr>().is_ok() {
            return Err(format!(
                "`{name}` is an IP address; request it as an IP identifier"
            ));
        }
        Ok(Identifier::Dns(lower))
    }

    /// An email identifier: one `@`, a non-empty printable ASCII local part, a valid DNS
    /// domain (lower-cased).
    pub fn email(address: &str) -> Result<Identifier, String> {
        let (local, domain) = address
            .rsplit_once('@')
            .ok_or_else(|| format!("`{address}` is not an email address"))?;
        let printable = |c: char| c.is_ascii_graphic() && c != '@';
        if local.is_empty() || local.len() > 64 || !local.chars().all(printable) {
            return Err(format!("`{address}` has an invalid local part"));
        }
        let Identifier::Dns(domain) = Identifier::dns(domain)? else {
            unreachable!("dns() returns DNS identifiers")
        };
        if domain.starts_with("*.") {
            return Err(format!("`{address}` has a wildcard domain"));
        }
        Ok(Identifier::Email(format!("{local}@{domain}")))
    }

    /// A URI identifier: an absolute URI (`scheme:rest`, RFC 3986 scheme), printable ASCII,
    /// at most 2048 characters.
    pub fn uri(text: &str) -> Result<Identifier, String> {
        let (scheme, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}` is not an absolute URI"))?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if !scheme_ok
            || rest.is_empty()
            || text.len() > 2048
            || !text.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(format!("`{text}` is not an absolute URI"));
        }
        Ok(Identifier::Uri(text.to_string()))
    }

    /// Whether this is a wildcard DNS name (`*.zone`).
    pub fn is_wildcard(&self) -> bool {
        matches!(self, Identifier::Dns(name) if name.starts_with("*."))
    }

    /// The bare value (name or address) without its type prefix.
    pub fn value(&self) -> String {
        match self {
            Identifier::Dns(name) => name.clone(),
            Identifier::Ip(ip) => ip.to_string(),
            Identifier::Email(address) => address.clone(),
            Identifier::Uri(uri) => uri.clone(),
        }
    }
}

/// Public key type of a CSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum KeyType {
    /// RSA with its modulus size.
    Rsa {
        /// Modulus length in bits.
        bits: u32,
    },
    /// ECDSA P-256.
    EcdsaP256,
    /// ECDSA P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::Rsa { bits } => write!(f, "rsa-{bits}"),
            KeyType::EcdsaP256 => f.write_str("ecdsa-p256"),
            KeyType::EcdsaP384 => f.write_str("ecdsa-p384"),
            KeyType::Ed25519 => f.write_str("ed25519"),
        }
    }
}

/// What a protocol front end hands to the pipeline.
#[derive(Debug, Clone)]
pub struct EnrollmentRequest {
    /// Correlates logs, the audit trail and the response.
    pub request_id: Uuid,
    /// Front door.
    pub protocol: Protocol,
    /// Authenticated requester.
    pub identity: Identity,
    /// DER PKCS#10.
    pub csr_der: Vec<u8>,
    /// Template name.
    pub template: String,
    /// Identifiers the protocol authorized (ACME order); `None` = take them from the CSR.
    pub requested_identifiers: Option<Vec<Identifier>>,
    /// Requested lifetime in days; `None` = the template's default.
    pub validity_days: Option<u32>,
    /// Target resource the certificate is for (server, namespace…), if named.
    pub resource: Option<String>,
    /// Free-form labels kept with the record.
    pub metadata: BTreeMap<String, String>,
    /// Serial of the certificate this one replaces (a renewal: EST re-enroll, SCEP
    /// RenewalReq, rampart's own renewal), if any.
    pub renews: Option<String>,
    /// The client's address (the TCP peer, or the client a trusted proxy names); `None` for
    /// requests rampart makes itself (renewals).
    pub client: Option<IpAddr>,
}

/// Lifecycle state of an issued certificate as stored (expiry is derived from time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoredStatus {
    /// Issued and not revoked.
    Valid,
    /// Revoked.
    Revoked,
}

/// Status as users see it: stored status plus expiry at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificateStatus {
    /// Valid now.
    Valid,
    /// Past not-after.
    Expired,
    /// Revoked.
    Revoked,
}

impl std::str::FromStr for CertificateStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "valid" => Ok(Self::Valid),
            "expired" => Ok(Self::Expired),
            "revoked" => Ok(Self::Revoked),
            other => Err(format!(
                "unknown status `{other}` (valid, expired, revoked)"
            )),
        }
    }
}

/// RFC 5280 §5.3.1 CRLReason (value 7 is unused by the RFC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RevocationReason {
    /// unspecified (0)
    Unspecified,
    /// keyCompromise (1)
    KeyCompromise,
    /// cACompromise (2)
    #[serde(rename = "cACompromise")]
    CaCompromise,
    /// affiliationChanged (3)
    AffiliationChanged,
    /// superseded (4)
    Superseded,
    /// cessationOfOperation (5)
    CessationOfOperation,
    /// certificateHold (6)
    CertificateHold,
    /// removeFromCRL (8)
    #[serde(rename = "removeFromCRL")]
    RemoveFromCrl,
    /// privilegeWithdrawn (9)
    PrivilegeWithdrawn,
    /// aACompromise (10)
    #[serde(rename = "aACompromise")]
    AaCompromise,
}

impl RevocationReason {
    /// The RFC 5280 code.
    pub fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::CaCompromise => 2,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
            Self::CertificateHold => 6,
            Self::RemoveFromCrl => 8,
            Self::PrivilegeWithdrawn => 9,
            Self::AaCompromise => 10,
        }
    }

    /// Parse the RFC name (`keyCompromise`) or the numeric code (`1`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let all = [
            Self::Unspecified,
            Self::KeyCompromise,
            Self::CaCompromise,
            Self::AffiliationChanged,
            Self::Superseded,
            Self::CessationOfOperation,
            Self::CertificateHold,
            Self::RemoveFromCrl,
            Self::PrivilegeWithdrawn,
            Self::AaCompromise,
        ];
        all.into_iter()
            .find(|r| r.name() == text || r.code().to_string() == text)
            .ok_or_else(|| {
                format!(
                    "unknown revocation reason `{text}` (RFC 5280 names: {})",
                    all.map(|r| r.name()).join(", ")
                )
            })
    }

    /// The RFC 5280 name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "keyCompromise",
            Self::CaCompromise => "cACompromise",
            Self::AffiliationChanged => "affiliationChanged",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
            Self::CertificateHold => "certificateHold",
            Self::RemoveFromCrl => "removeFromCRL",
            Self::PrivilegeWithdrawn => "privilegeWithdrawn",
            Self::AaCompromise => "aACompromise",
        }
    }
}

/// When and why a certificate was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Revocation time.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// RFC 5280 reason.
    pub reason: RevocationReason,
    /// Who revoked it.
    pub revoked_by: String,
}

/// A certificate rampart issued, as kept in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// Serial number, lower-case hex of the DER INTEGER's minimal positive encoding.
    pub serial: String,
    /// The request that produced it.
    pub request_id: Uuid,
    /// Front door of that request.
    pub protocol: Protocol,
    /// Identity that requested it.
    pub owner: String,
    /// Template it was issued on.
    pub template: String,
    /// CA adapter id that signed it.
    pub issuer: String,
    /// Subject DN as text (RFC 4514).
    pub subject: String,
    /// Subject alternative names.
    pub sans: Vec<Identifier>,
    /// Public key type.
    pub key_type: KeyType,
    /// Validity start.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// Validity end.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub sha256_fingerprint: String,
    /// Target resource, if the request named one.
    pub resource: Option<String>,
    /// Request labels.
    pub metadata: BTreeMap<String, String>,
    /// Stored status.
    pub status: StoredStatus,
    /// Set once revoked.
    pub revocation: Option<Revocation>,
    /// The certificate, DER.
    #[serde(with = "crate::model::base64_bytes")]
    pub der: Vec<u8>,
    /// The issuer chain (issuing CA first, up to but excluding the root), DER.
    #[serde(with = "crate::model::base64_vec")]
    pub chain: Vec<Vec<u8>>,
}

impl CertificateRecord {
    /// Status at `now`.
    pub fn status_at(&self, now: OffsetDateTime) -> CertificateStatus {
        match self.status {
            StoredStatus::Revoked => CertificateStatus::Revoked,
            StoredStatus::Valid if now > self.not_after => CertificateStatus::Expired,
            StoredStatus::Valid => CertificateStatus::Valid,
        }
    }
}

/// Serde helper: bytes as standard base64.
pub mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// Deserialize.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// Serde helper: a list of byte strings as base64.
pub mod base64_vec {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize.
    pub fn serialize<S: Serializer>(items: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            items
                .iter()
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
        )
    }

    /// Deserialize.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|t| {
                base64::engine::general_purpose::STANDARD
                    .decode(t)
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_identifiers_are_normalised_and_checked() {
        assert_eq!(
            Identifier::dns("WWW.Example.TEST").unwrap(),
            Identifier::Dns("www.example.test".into())
        );
        assert!(Identifier::dns("*.example.test").unwrap().is_wildcard());
        for bad in [
            "",
            "a..b",
            "-a.b",
            "a_b.c",
            "*.*.b",
            "a.*.b",
            "192.0.2.1",
            "x.",
            &"a".repeat(64),
        ] {
            assert!(Identifier::dns(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn email_and_uri_identifiers_are_checked() {
        assert_eq!(
            Identifier::email("Alice.B@Example.TEST").unwrap(),
            Identifier::Email("Alice.B@example.test".into())
        );
        for bad in [
            "alice",
            "@example.test",
            "a@",
            "a b@example.test",
            "a@*.example.test",
            "a@-x.test",
        ] {
            assert!(Identifier::email(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Identifier::uri("spiffe://prod.example/ns/web")
                .unwrap()
                .to_string(),
            "uri:spiffe://prod.example/ns/web"
        );
        for bad in ["/relative", "no-scheme", "1x:y", "x:", "spiffe://a b"] {
            assert!(Identifier::uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn revocation_reasons_round_trip_by_name_and_code() {
        for text in ["keyCompromise", "1", "removeFromCRL", "8", "aACompromise"] {
            let reason = RevocationReason::parse(text).unwrap();
            assert!(reason.name() == text || reason.code().to_string() == text);
        }
        assert!(RevocationReason::parse("7").is_err());
        assert!(RevocationReason::parse("stolen")
            .unwrap_err()
            .contains("keyCompromise"));
        let json = serde_json::to_string(&RevocationReason::CaCompromise).unwrap();
        assert_eq!(json, "\"cACompromise\"");
    }
}
