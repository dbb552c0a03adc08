//! Degenerate "certs-only" PKCS#7 / CMS SignedData (RFC 5652 §5, RFC 8894 §3.4, RFC 7030
//! §4.1.3): a SignedData with no signers whose `certificates` field carries a chain.
//!
//! ```text
//! SignedData ::= SEQUENCE {
//!   version CMSVersion,                       -- v1
//!   digestAlgorithms DigestAlgorithmIdentifiers,  -- empty
//!   encapContentInfo EncapsulatedContentInfo, -- id-data, no content
//!   certificates [0] IMPLICIT CertificateSet OPTIONAL,
//!   crls [1] IMPLICIT RevocationInfoChoices OPTIONAL,
//!   signerInfos SignerInfos }                 -- empty
//! ```
//!
//! EST (`/cacerts`, `/simpleenroll`), SCEP and the API answer with the same message: it is
//! built in one place, the SCEP crate ([`rampart_scep::pkimessage::certs_only`]), which
//! carries the certificates as the DER they are.

/// Build a certs-only SignedData in a ContentInfo, DER encoded.
pub fn certs_only(certificates: &[Vec<u8>]) -> Result<Vec<u8>, der::Error> {
    rampart_scep::pkimessage::certs_only(certificates, &[])
}
