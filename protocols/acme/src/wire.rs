//! RFC 8555 objects as they appear on the wire: identifiers, statuses, request payloads.
//! Resource bodies are built by the handlers from records, with URLs.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::problem::{Problem, ProblemType};

/// An ACME identifier (`dns` per RFC 8555, `ip` per RFC 8738).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    /// `dns` or `ip`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Name or address.
    pub value: String,
}

impl Identifier {
    /// A DNS identifier.
    pub fn dns(value: impl Into<String>) -> Self {
        Identifier {
            kind: "dns".into(),
            value: value.into(),
        }
    }

    /// An IP identifier.
    pub fn ip(ip: IpAddr) -> Self {
        Identifier {
            kind: "ip".into(),
            value: ip.to_string(),
        }
    }

    /// Validate and normalise a requested identifier: lower-case DNS names with LDH labels
    /// and an optional leading `*.`; IP addresses in canonical text form.
    pub fn normalize(&self) -> Result<Identifier, Problem> {
        match self.kind.as_str() {
            "dns" => {
                let name = self.value.trim_end_matches('.').to_ascii_lowercase();
                let base = name.strip_prefix("*.").unwrap_or(&name);
                let labels_ok = !base.is_empty()
                    && name.len() <= 253
                    && base.split('.').count() >= 1
                    && base.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                            && !l.starts_with('-')
                            && !l.ends_with('-')
                    });
                if !labels_ok || base.parse::<IpAddr>().is_ok() {
                    return Err(rejected(self, "is not a valid DNS name"));
                }
                Ok(Identifier::dns(name))
            }
            "ip" => self
                .value
                .parse::<IpAddr>()
                .map(Identifier::ip)
                .map_err(|_| rejected(self, "is not an IP address")),
            other => Err(Problem::new(
                ProblemType::UnsupportedIdentifier,
                format!("identifier type `{other}` is not supported (use dns or ip)"),
            )),
        }
    }

    /// Whether this is a wildcard name.
    pub fn is_wildcard(&self) -> bool {
        self.kind == "dns" && self.value.starts_with("*.")
    }

    /// Without the wildcard label: what is authorized.
    pub fn base(&self) -> Identifier {
        Identifier {
            kind: self.kind.clone(),
            value: self
                .value
                .strip_prefix("*.")
                .unwrap_or(&self.value)
                .to_string(),
        }
    }
}

fn rejected(identifier: &Identifier, why: &str) -> Problem {
    Problem::new(
        ProblemType::RejectedIdentifier,
        format!("`{}` {why}", identifier.value),
    )
}

/// Order status (RFC 8555 §7.1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Authorizations outstanding.
    Pending,
    /// Ready to finalize.
    Ready,
    /// Being issued.
    Processing,
    /// Issued.
    Valid,
    /// Failed.
    Invalid,
}

/// Authorization status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthzStatus {
    /// Waiting for a challenge.
    Pending,
    /// Proven.
    Valid,
    /// A challenge failed.
    Invalid,
    /// Deactivated by the client.
    Deactivated,
    /// Past its expiry.
    Expired,
    /// Revoked by the server.
    Revoked,
}

/// Challenge status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChallengeStatus {
    /// Not attempted.
    Pending,
    /// Validation running.
    Processing,
    /// Succeeded.
    Valid,
    /// Failed.
    Invalid,
}

/// Challenge types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChallengeType {
    /// RFC 8555 §8.3.
    #[serde(rename = "http-01")]
    Http01,
    /// RFC 8555 §8.4.
    #[serde(rename = "dns-01")]
    Dns01,
    /// RFC 8737.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl ChallengeType {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeType::Http01 => "http-01",
            ChallengeType::Dns01 => "dns-01",
            ChallengeType::TlsAlpn01 => "tls-alpn-01",
        }
    }

    /// From the wire name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            ChallengeType::Http01,
            ChallengeType::Dns01,
            ChallengeType::TlsAlpn01,
        ]
        .into_iter()
        .find(|t| t.as_str() == text)
    }

    /// The challenges offered for an identifier: wildcards only dns-01 (§7.1.3), IP
    /// addresses no dns-01 (RFC 8738 §7).
    pub fn offered_for(identifier: &Identifier, wildcard: bool) -> Vec<ChallengeType> {
        if wildcard {
            vec![ChallengeType::Dns01]
        } else if identifier.kind == "ip" {
            vec![ChallengeType::Http01, ChallengeType::TlsAlpn01]
        } else {
            vec![
                ChallengeType::Http01,
                ChallengeType::Dns01,
                ChallengeType::TlsAlpn01,
            ]
        }
    }
}

/// `newAccount` payload (§7.3).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewAccount {
    /// Contact URLs.
    #[serde(default)]
    pub contact: Vec<String>,
    /// Terms agreed.
    #[serde(default)]
    pub terms_of_service_agreed: bool,
    /// Only look up.
    #[serde(default)]
    pub only_return_existing: bool,
    /// EAB JWS.
    #[serde(default)]
    pub external_account_binding: Option<Value>,
}

/// Account update payload (§7.3.2, §7.3.6).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountUpdate {
    /// New contacts.
    pub contact: Option<Vec<String>>,
    /// `deactivated` to deactivate.
    pub status: Option<String>,
}

/// `newOrder` payload (§7.4).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewOrder {
    /// Identifiers.
    pub identifiers: Vec<Identifier>,
    /// Requested notBefore (not supported: must be absent).
    pub not_before: Option<String>,
    /// Requested notAfter (not supported: must be absent).
    pub not_after: Option<String>,
    /// Certificate profile (`meta.profiles` key).
    pub profile: Option<String>,
    /// RFC 9773 certificate identifier of the certificate this order replaces.
    pub replaces: Option<String>,
}

/// `newAuthz` payload (§7.4.1).
#[derive(Debug, Deserialize)]
pub struct NewAuthz {
    /// The identifier to pre-authorize.
    pub identifier: Identifier,
}

/// Finalize payload.
#[derive(Debug, Deserialize)]
pub struct Finalize {
    /// base64url DER CSR.
    pub csr: String,
}

/// Authorization update (deactivation).
#[derive(Debug, Deserialize)]
pub struct AuthzUpdate {
    /// `deactivated`.
    pub status: Option<String>,
}

/// `revokeCert` payload (§7.6).
#[derive(Debug, Deserialize)]
pub struct RevokeCert {
    /// base64url DER certificate.
    pub certificate: String,
    /// RFC 5280 reason code.
    pub reason: Option<u8>,
}

/// `keyChange` inner JWS payload (§7.3.5).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyChange {
    /// Account URL.
    pub account: String,
    /// The old key.
    pub old_key: Map<String, Value>,
}

/// Check contacts: `mailto:` only, one address each, no hfields (§7.3).
pub fn validate_contacts(contacts: &[String]) -> Result<(), Problem> {
    for contact in contacts {
        let Some(address) = contact.strip_prefix("mailto:") else {
            return Err(Problem::new(
                ProblemType::UnsupportedContact,
                format!("contact `{contact}`: only mailto: URLs are supported"),
            ));
        };
        let valid = !address.contains(['?', ',', ' ', '<', '>'])
            && address.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
        if !valid {
            return Err(Problem::new(
                ProblemType::InvalidContact,
                format!("contact `{contact}` is not a valid email address"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_normalise_and_reject() {
        assert_eq!(
            Identifier::dns("WWW.Example.TEST.").normalize().unwrap(),
            Identifier::dns("www.example.test")
        );
        assert!(Identifier::dns("*.example.test")
            .normalize()
            .unwrap()
            .is_wildcard());
        assert_eq!(
            Identifier::dns("a..b").normalize().unwrap_err().kind,
            ProblemType::RejectedIdentifier
        );
        assert_eq!(
            Identifier::dns("1.2.3.4").normalize().unwrap_err().kind,
            ProblemType::RejectedIdentifier
        );
        assert_eq!(
            Identifier {
                kind: "ip".into(),
                value: "::0001".into()
            }
            .normalize()
            .unwrap(),
            Identifier::ip("::1".parse().unwrap())
        );
        let email = Identifier {
            kind: "email".into(),
            value: "a@b".into(),
        };
        assert_eq!(
            email.normalize().unwrap_err().kind,
            ProblemType::UnsupportedIdentifier
        );
    }

    #[test]
    fn contacts_are_mailto_only() {
        validate_contacts(&["mailto:ops@example.org".into()]).unwrap();
        assert_eq!(
            validate_contacts(&["tel:+1".into()]).unwrap_err().kind,
            ProblemType::UnsupportedContact
        );
        assert_eq!(
            validate_contacts(&["mailto:a@b?x=y".into()])
                .unwrap_err()
                .kind,
            ProblemType::InvalidContact
        );
        assert_eq!(
            validate_contacts(&["mailto:nobody".into()])
                .unwrap_err()
                .kind,
            ProblemType::InvalidContact
        );
    }
}
