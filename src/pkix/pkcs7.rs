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

use cms::cert::CertificateChoices;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{CertificateSet, EncapsulatedContentInfo, SignedData, SignerInfos};
use const_oid::db::rfc5911::{ID_DATA, ID_SIGNED_DATA};
use der::asn1::SetOfVec;
use der::{Any, Decode, Encode};

/// Build a certs-only SignedData in a ContentInfo, DER encoded.
pub fn certs_only(certificates: &[Vec<u8>]) -> Result<Vec<u8>, der::Error> {
    let mut set = SetOfVec::new();
    for der in certificates {
        let cert = x509_cert::Certificate::from_der(der)?;
        set.insert(CertificateChoices::Certificate(cert))?;
    }
    let signed_data = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: None,
        },
        certificates: Some(CertificateSet(set)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::new()),
    };
    ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(&signed_data)?,
    }
    .to_der()
}
