//! RSASSA-PSS signatures (RFC 8017 §8.1, identified as RFC 4055 §3 says) on what the built-in
//! CA signs, for `[ca] rsa_signature = "pss"`.
//!
//! rcgen writes only `sha256WithRSAEncryption` for an RSA key, and the signature algorithm
//! sits inside the signed part, so a PSS document cannot be made by swapping the outer
//! identifier after rcgen signed. Instead rcgen encodes the certificate or CRL with an empty
//! signature (the CA key's rcgen signature is empty in PSS mode), and [`sign`] writes the
//! RSASSA-PSS identifier into both signature-algorithm fields and sign
//! the re-encoded to-be-signed part with the signer they are given (a key file or a PKCS#11
//! token). OCSP responses take [`algorithm_identifier`] and a signature directly.
//!
//! The parameters are SHA-256, MGF1 with SHA-256, a 32-byte salt and the default trailer,
//! encoded byte for byte as the CA/Browser Forum Baseline Requirements (§7.1.3.2.1) require.
//!
//! Imports only the ASN.1 crates and [`super::CaError`].

use const_oid::db::rfc5912::{ID_MGF_1, ID_RSASSA_PSS, ID_SHA_256};
use der::asn1::{AnyRef, BitString};
use der::{Any, Decode, Encode};
use pkcs1::{RsaPssParams, TrailerField};
use spki::{AlgorithmIdentifier, AlgorithmIdentifierOwned, AlgorithmIdentifierRef};
use x509_cert::crl::CertificateList;
use x509_cert::Certificate;

use super::CaError;

/// Salt length: the SHA-256 digest length (what aws-lc-rs and the BRs use).
pub const SALT_LENGTH: u8 = 32;

/// `id-RSASSA-PSS` with SHA-256, MGF1-SHA-256 and a 32-byte salt.
pub fn algorithm_identifier() -> AlgorithmIdentifierOwned {
    let sha256 = AlgorithmIdentifierRef {
        oid: ID_SHA_256,
        parameters: Some(AnyRef::NULL),
    };
    let parameters = RsaPssParams {
        hash: sha256,
        mask_gen: AlgorithmIdentifier {
            oid: ID_MGF_1,
            parameters: Some(sha256),
        },
        salt_len: SALT_LENGTH,
        trailer_field: TrailerField::BC,
    };
    let encoded = parameters
        .to_der()
        .expect("fixed RSASSA-PSS parameters encode");
    AlgorithmIdentifierOwned {
        oid: ID_RSASSA_PSS,
        parameters: Some(Any::from_der(&encoded).expect("just encoded")),
    }
}

/// A signed X.509 structure (a certificate, a CRL): its TBS part carries a copy of the
/// signature algorithm.
pub trait SignedStructure: for<'a> Decode<'a> + Encode {
    /// What it is, for errors.
    const WHAT: &'static str;
    /// Write `algorithm` into both signature-algorithm fields; the TBS part, encoded.
    fn set_algorithm(&mut self, algorithm: AlgorithmIdentifierOwned) -> der::Result<Vec<u8>>;
    /// The signature over the TBS part.
    fn set_signature(&mut self, signature: BitString);
}

impl SignedStructure for Certificate {
    const WHAT: &'static str = "certificate";
    fn set_algorithm(&mut self, algorithm: AlgorithmIdentifierOwned) -> der::Result<Vec<u8>> {
        self.tbs_certificate.signature = algorithm.clone();
        self.signature_algorithm = algorithm;
        self.tbs_certificate.to_der()
    }
    fn set_signature(&mut self, signature: BitString) {
        self.signature = signature;
    }
}

impl SignedStructure for CertificateList {
    const WHAT: &'static str = "CRL";
    fn set_algorithm(&mut self, algorithm: AlgorithmIdentifierOwned) -> der::Result<Vec<u8>> {
        self.tbs_cert_list.signature = algorithm.clone();
        self.signature_algorithm = algorithm;
        self.tbs_cert_list.to_der()
    }
    fn set_signature(&mut self, signature: BitString) {
        self.signature = signature;
    }
}

/// Sign the certificate or CRL `unsigned` (DER, any or no signature) with RSASSA-PSS: both
/// signature-algorithm fields become [`algorithm_identifier`], `sign` signs the TBS part.
pub fn sign<T: SignedStructure>(
    unsigned: &[u8],
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, CaError>,
) -> Result<Vec<u8>, CaError> {
    let malformed = |e: der::Error| {
        CaError::Internal(format!("re-encoding the {} for RSASSA-PSS: {e}", T::WHAT))
    };
    let mut structure = T::from_der(unsigned).map_err(malformed)?;
    let tbs = structure
        .set_algorithm(algorithm_identifier())
        .map_err(malformed)?;
    structure.set_signature(BitString::from_bytes(&sign(&tbs)?).map_err(malformed)?);
    structure.to_der().map_err(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identifier_is_the_baseline_requirements_encoding() {
        // BR §7.1.3.2.1, RSASSA-PSS with SHA-256, MGF-1 with SHA-256, salt length 32.
        let expected = "304106092a864886f70d01010a3034a00f300d0609608648016503040201\
                        0500a11c301a06092a864886f70d010108300d0609608648016503040201\
                        0500a203020120";
        let der = algorithm_identifier().to_der().unwrap();
        assert_eq!(hex::encode(der), expected);
    }
}
