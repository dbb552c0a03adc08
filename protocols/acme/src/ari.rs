//! ACME Renewal Information (RFC 9773): certificate identifiers and suggested renewal
//! windows.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use der::Decode;
use time::{Duration, OffsetDateTime};
use x509_cert::ext::pkix::AuthorityKeyIdentifier;

use crate::backend::KnownCertificate;
use crate::problem::Problem;

/// id-ce-authorityKeyIdentifier.
const AUTHORITY_KEY_IDENTIFIER: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("2.5.29.35");

/// A parsed certificate identifier: `base64url(AKI keyIdentifier) "." base64url(serial)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertId {
    /// The issuer's key identifier.
    pub key_identifier: Vec<u8>,
    /// The serial, lower-case hex without leading zero bytes.
    pub serial: String,
}

/// Serial bytes (DER INTEGER contents) as rampart writes serials: hex, no leading zeros.
pub fn serial_hex(bytes: &[u8]) -> String {
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes[start..].iter().map(|b| format!("{b:02x}")).collect()
}

impl CertId {
    /// Parse the textual form.
    pub fn parse(text: &str) -> Result<CertId, Problem> {
        let bad = || {
            Problem::malformed(format!(
                "`{text}` is not an RFC 9773 certificate identifier"
            ))
        };
        let (aki, serial) = text.split_once('.').ok_or_else(bad)?;
        let key_identifier = URL_SAFE_NO_PAD
            .decode(aki.trim_end_matches('='))
            .map_err(|_| bad())?;
        let serial = URL_SAFE_NO_PAD
            .decode(serial.trim_end_matches('='))
            .map_err(|_| bad())?;
        if key_identifier.is_empty() || serial.is_empty() {
            return Err(bad());
        }
        Ok(CertId {
            key_identifier,
            serial: serial_hex(&serial),
        })
    }

    /// Whether `certificate` is the one this identifier names (serial and issuer key).
    pub fn names(&self, certificate: &KnownCertificate) -> bool {
        certificate.serial == self.serial
            && authority_key_id(&certificate.der).is_some_and(|k| k == self.key_identifier)
    }
}

/// The authority key identifier of a DER certificate.
pub fn authority_key_id(der_bytes: &[u8]) -> Option<Vec<u8>> {
    let cert = x509_cert::Certificate::from_der(der_bytes).ok()?;
    let extension = cert
        .tbs_certificate
        .extensions?
        .into_iter()
        .find(|e| e.extn_id == AUTHORITY_KEY_IDENTIFIER)?;
    let aki = AuthorityKeyIdentifier::from_der(extension.extn_value.as_bytes()).ok()?;
    aki.key_identifier.map(|k| k.as_bytes().to_vec())
}

/// The suggested renewal window: the embedder's when it gives one, else the last third of
/// the lifetime, starting a little before two thirds in; for a revoked certificate, now.
pub fn suggested_window(
    certificate: &KnownCertificate,
    now: OffsetDateTime,
) -> (OffsetDateTime, OffsetDateTime) {
    if certificate.revoked {
        return (now - Duration::hours(1), now);
    }
    if let Some(window) = certificate.renewal_window {
        return window;
    }
    let lifetime = certificate.not_after - certificate.not_before;
    let start = certificate.not_before + lifetime * 2 / 3;
    let end = certificate.not_before + lifetime * 5 / 6;
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_ids_parse_like_rfc_9773_examples() {
        // RFC 9773 §4.1 example: keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4
        // and serial 00:87:65:43:21.
        let id = CertId::parse("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE").unwrap();
        assert_eq!(
            hex_of(&id.key_identifier),
            "69885b6b87464041e1b37b847ba0ae2cde01c8d4"
        );
        assert_eq!(id.serial, "87654321");
        assert!(CertId::parse("nodot").is_err());
        assert!(CertId::parse(".AIdlQyE").is_err());
    }

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
