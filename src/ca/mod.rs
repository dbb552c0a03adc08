//! Certificate authorities behind one small trait. The pipeline hands an approved
//! [`IssuanceOrder`] — built from the template, never copied from the CSR — to a
//! [`CaAdapter`], which signs it. `local` is the built-in CA; `upstream_acme` forwards the
//! requester's CSR to an upstream ACME CA, proving the names with dns-01 records that
//! `dns01` publishes.
//! The built-in CA's issuing key may be held by a PKCS#11 token (`pkcs11`); its RSA keys may
//! sign RSASSA-PSS (`rsa_pss`).
//!
//! Imports `model`, `pkix`, `config`, `files` and (for the upstream account) `store`.

pub mod dns01;
pub mod lint;
pub mod local;
pub mod pkcs11;
pub mod rsa_pss;
pub mod upstream_acme;

use std::fmt;

use time::OffsetDateTime;

use crate::config::ExtendedKeyUsage;
use crate::model::{Identifier, KeyType};

/// A serial number: 16 bytes, as a positive DER INTEGER — 48 bits of milliseconds since the
/// Unix epoch, then 80 random bits (more than the 64 bits of CSPRNG output the CA/Browser
/// Forum's Baseline Requirements ask for, §7.1).
#[derive(Clone, PartialEq, Eq)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A fresh serial. The time prefix makes serials issued close together neighbours in
    /// the store's serial-keyed trees: an issuance writes to the leaf its predecessors
    /// wrote to, instead of a random leaf that sled may first have to read back from disk.
    pub fn generate() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        aws_lc_rs::rand::fill(&mut bytes[6..]).expect("system randomness");
        // Leading zero bytes are not part of a minimal DER INTEGER; drop them so that the hex
        // form is exactly what the certificate carries.
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(15);
        Serial(bytes[start..].to_vec())
    }

    /// Big-endian magnitude.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

/// What to issue: everything decided, nothing left to the CSR but its public key.
#[derive(Debug, Clone)]
pub struct IssuanceOrder {
    /// Serial, reserved in the store before signing.
    pub serial: Serial,
    /// The requester's SubjectPublicKeyInfo contents (BIT STRING bytes).
    pub public_key: Vec<u8>,
    /// Its type.
    pub key_type: KeyType,
    /// Subject common name (one of the SANs), if any.
    pub common_name: Option<String>,
    /// Subject alternative names.
    pub sans: Vec<Identifier>,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end (the CA may shorten it to its own not-after).
    pub not_after: OffsetDateTime,
    /// Extended key usages from the template.
    pub extended_key_usages: Vec<ExtendedKeyUsage>,
    /// Key usage keyEncipherment besides digitalSignature (RSA keys that receive
    /// encrypted keys: TLS servers with RSA key exchange, the SCEP RA).
    pub key_encipherment: bool,
    /// The requester's CSR, DER (empty for rampart's own certificates). Adapters that
    /// forward requests to another CA send it; the built-in CA signs from the fields above.
    pub csr_der: Vec<u8>,
}

/// A signed certificate.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// Its serial number as rampart records it (hex of the big-endian magnitude): the
    /// order's for the built-in CA, the upstream's choice for others.
    pub serial: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Issuer chain (issuing CA first, root excluded), DER.
    pub chain: Vec<Vec<u8>>,
    /// Subject DN text.
    pub subject: String,
    /// Actual validity start.
    pub not_before: OffsetDateTime,
    /// Actual validity end.
    pub not_after: OffsetDateTime,
}

/// A CA failure.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The order cannot be signed as asked (bad name, key…).
    #[error("the CA refused the order: {0}")]
    Refused(String),
    /// The CA's key or storage failed.
    #[error("CA failure: {0}")]
    Internal(String),
    /// An upstream CA failed or refused; the text carries its problem detail.
    #[error("upstream CA: {0}")]
    Upstream(String),
    /// The certificate would break a profile rule ([`lint`]); nothing was signed. The text
    /// starts with the rule's name.
    #[error("pre-issuance lint failed: {0}")]
    Lint(String),
}

/// A certificate authority rampart forwards approved orders to.
#[async_trait::async_trait]
pub trait CaAdapter: Send + Sync + fmt::Debug {
    /// Short id recorded as the certificate's issuer (`local`, …).
    fn id(&self) -> &str;

    /// The issuer chain returned with every certificate (issuing CA first, root excluded).
    fn chain(&self) -> Vec<Vec<u8>>;

    /// The trust anchors clients must trust (the root), DER.
    fn trust_anchors(&self) -> Vec<Vec<u8>>;

    /// Sign the order.
    async fn issue(&self, order: &IssuanceOrder) -> Result<IssuedCertificate, CaError>;

    /// Revoke a certificate it issued (`der`) with an RFC 5280 reason code, before rampart
    /// records the revocation. The built-in CA has nothing to do here: its CRL and OCSP
    /// answers come from rampart's own records. Upstream CAs are told.
    async fn revoke(&self, der: &[u8], reason: u8) -> Result<(), CaError> {
        let _ = (der, reason);
        Ok(())
    }

    /// Whether the CA can sign now; the error says why not (a PKCS#11 token that stopped
    /// answering, a PIN the token refused…). Reported by `/healthz`. May probe the CA.
    async fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// Sign a CRL (RFC 5280 §5) for the certificates this CA issued. CAs whose CRLs
    /// someone else publishes refuse.
    async fn sign_crl(&self, crl: &CrlOrder) -> Result<Vec<u8>, CaError> {
        let _ = crl;
        Err(CaError::Refused(format!(
            "the `{}` CA does not sign CRLs through rampart",
            self.id()
        )))
    }

    /// Sign an OCSP ResponseData (DER, RFC 6960 §4.2.1) with the issuing CA's key. CAs
    /// whose status someone else answers refuse.
    async fn sign_ocsp(&self, response_data: &[u8]) -> Result<CaSignature, CaError> {
        let _ = response_data;
        Err(CaError::Refused(format!(
            "the `{}` CA does not answer OCSP through rampart",
            self.id()
        )))
    }
}

/// A signature by the issuing CA's key over bytes rampart built (an OCSP response).
#[derive(Debug, Clone)]
pub struct CaSignature {
    /// The signature algorithm identifier.
    pub algorithm: spki::AlgorithmIdentifierOwned,
    /// The signature (as it goes into a BIT STRING).
    pub signature: Vec<u8>,
}

/// What a CRL lists.
#[derive(Debug, Clone)]
pub struct CrlOrder {
    /// The CRL number (monotonic).
    pub number: u64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
    /// Revoked certificates: serial (big-endian magnitude), time, RFC 5280 reason code.
    pub revoked: Vec<(Vec<u8>, OffsetDateTime, u8)>,
}

#[cfg(test)]
mod tests {
    use super::Serial;

    fn millis_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64
    }

    #[test]
    fn serials_begin_with_their_time_and_end_in_eighty_random_bits() {
        let before = millis_now();
        let serials = [Serial::generate(), Serial::generate()];
        let after = millis_now();
        for serial in &serials {
            let bytes = serial.as_bytes();
            // 16 bytes, positive without a leading zero byte (true from 2005 to the year 6429).
            assert_eq!(bytes.len(), 16, "{serial}");
            assert!(bytes[0] != 0 && bytes[0] < 0x80, "{serial}");
            let mut millis = [0u8; 8];
            millis[2..].copy_from_slice(&bytes[..6]);
            let millis = u64::from_be_bytes(millis);
            assert!(
                before <= millis && millis <= after,
                "{millis} not in {before}..={after}"
            );
        }
        assert_ne!(serials[0].as_bytes()[6..], serials[1].as_bytes()[6..]);
    }
}
