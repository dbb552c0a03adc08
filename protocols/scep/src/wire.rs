//! SCEP's vocabulary (RFC 8894 §3.2.1): the authenticated attributes of a pkiMessage, the
//! message types, statuses and failure codes, and the object identifiers of the CMS
//! structures and algorithms SCEP uses. Plain data; no crypto, no I/O.

use std::fmt;

use const_oid::ObjectIdentifier;

/// Object identifiers.
pub mod oid {
    use const_oid::ObjectIdentifier as Oid;

    /// `id-messageType` (§3.2.1.2).
    pub const MESSAGE_TYPE: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.2");
    /// `id-pkiStatus` (§3.2.1.3).
    pub const PKI_STATUS: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.3");
    /// `id-failInfo` (§3.2.1.4).
    pub const FAIL_INFO: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.4");
    /// `id-senderNonce` (§3.2.1.5).
    pub const SENDER_NONCE: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.5");
    /// `id-recipientNonce` (§3.2.1.5).
    pub const RECIPIENT_NONCE: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.6");
    /// `id-transactionID` (§3.2.1.1).
    pub const TRANSACTION_ID: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.7");

    /// CMS `id-data`.
    pub const DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
    /// CMS `id-signedData`.
    pub const SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
    /// CMS `id-envelopedData`.
    pub const ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.3");
    /// CMS `contentType` attribute.
    pub const CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
    /// CMS `messageDigest` attribute.
    pub const MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
    /// CMS `signingTime` attribute.
    pub const SIGNING_TIME: Oid = Oid::new_unwrap("1.2.840.113549.1.9.5");

    /// `rsaEncryption` (key transport, and a signature algorithm in SignerInfo).
    pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    /// `sha1WithRSAEncryption`.
    pub const SHA1_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.5");
    /// `sha256WithRSAEncryption`.
    pub const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
    /// `sha384WithRSAEncryption`.
    pub const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
    /// `sha512WithRSAEncryption`.
    pub const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");

    /// SHA-1.
    pub const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
    /// SHA-256.
    pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
    /// SHA-384.
    pub const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
    /// SHA-512.
    pub const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");

    /// `desCBC` (OIW).
    pub const DES_CBC: Oid = Oid::new_unwrap("1.3.14.3.2.7");
    /// `des-ede3-cbc`.
    pub const DES_EDE3_CBC: Oid = Oid::new_unwrap("1.2.840.113549.3.7");
    /// `id-aes128-CBC`.
    pub const AES128_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.2");
    /// `id-aes192-CBC`.
    pub const AES192_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.22");
    /// `id-aes256-CBC`.
    pub const AES256_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.42");

    /// PKCS#9 `challengePassword`.
    pub const CHALLENGE_PASSWORD: Oid = Oid::new_unwrap("1.2.840.113549.1.9.7");
}

/// `messageType` (§3.2.1.2), carried as a PrintableString of its decimal value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Response to any request.
    CertRep,
    /// Renewal signed with the certificate being renewed.
    RenewalReq,
    /// Initial enrollment.
    PkcsReq,
    /// Poll for a pending enrollment (GetCertInitial).
    CertPoll,
    /// Fetch a certificate by issuer and serial.
    GetCert,
    /// Fetch the CRL covering a certificate.
    GetCrl,
}

impl MessageType {
    /// The decimal code.
    pub fn code(self) -> u8 {
        match self {
            MessageType::CertRep => 3,
            MessageType::RenewalReq => 17,
            MessageType::PkcsReq => 19,
            MessageType::CertPoll => 20,
            MessageType::GetCert => 21,
            MessageType::GetCrl => 22,
        }
    }

    /// From the attribute's text.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.trim() {
            "3" => MessageType::CertRep,
            "17" => MessageType::RenewalReq,
            "19" => MessageType::PkcsReq,
            "20" => MessageType::CertPoll,
            "21" => MessageType::GetCert,
            "22" => MessageType::GetCrl,
            _ => return None,
        })
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageType::CertRep => "CertRep",
            MessageType::RenewalReq => "RenewalReq",
            MessageType::PkcsReq => "PKCSReq",
            MessageType::CertPoll => "CertPoll",
            MessageType::GetCert => "GetCert",
            MessageType::GetCrl => "GetCRL",
        })
    }
}

/// `pkiStatus` (§3.2.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkiStatus {
    /// Granted.
    Success,
    /// Rejected; a `failInfo` says why.
    Failure,
    /// Waiting for an approval; poll with CertPoll.
    Pending,
}

impl PkiStatus {
    /// The decimal code.
    pub fn code(self) -> u8 {
        match self {
            PkiStatus::Success => 0,
            PkiStatus::Failure => 2,
            PkiStatus::Pending => 3,
        }
    }

    /// From the attribute's text.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.trim() {
            "0" => PkiStatus::Success,
            "2" => PkiStatus::Failure,
            "3" => PkiStatus::Pending,
            _ => return None,
        })
    }
}

/// `failInfo` (§3.2.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailInfo {
    /// Unrecognized or unsupported algorithm.
    BadAlg,
    /// Integrity check (signature) failed.
    BadMessageCheck,
    /// Transaction not permitted or supported.
    BadRequest,
    /// The signingTime attribute was not close enough to the system time.
    BadTime,
    /// No certificate could be identified matching the criteria.
    BadCertId,
}

impl FailInfo {
    /// The decimal code.
    pub fn code(self) -> u8 {
        match self {
            FailInfo::BadAlg => 0,
            FailInfo::BadMessageCheck => 1,
            FailInfo::BadRequest => 2,
            FailInfo::BadTime => 3,
            FailInfo::BadCertId => 4,
        }
    }

    /// From the attribute's text.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.trim() {
            "0" => FailInfo::BadAlg,
            "1" => FailInfo::BadMessageCheck,
            "2" => FailInfo::BadRequest,
            "3" => FailInfo::BadTime,
            "4" => FailInfo::BadCertId,
            _ => return None,
        })
    }
}

impl fmt::Display for FailInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailInfo::BadAlg => "badAlg",
            FailInfo::BadMessageCheck => "badMessageCheck",
            FailInfo::BadRequest => "badRequest",
            FailInfo::BadTime => "badTime",
            FailInfo::BadCertId => "badCertId",
        })
    }
}

/// Whether `oid` names one of the content types a pkiMessage nests.
pub fn is_cms_content(oid: &ObjectIdentifier) -> bool {
    [oid::DATA, oid::SIGNED_DATA, oid::ENVELOPED_DATA].contains(oid)
}
