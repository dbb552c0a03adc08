//! The requester's side of a pkiMessage exchange, for tests and `rampart bench scep`:
//! build a signed, enveloped request, and read (verify, decrypt) the CertRep.

use cms::cert::IssuerAndSerialNumber;
use der::{Decode, Encode};
use x509_cert::name::Name;
use x509_cert::Certificate;

use crate::crypto::{ContentCipher, CryptoError, Digest, RsaKey};
use crate::loose::RequesterCertificate;
use crate::pkimessage::{self, octets_attribute, printable_attribute, BuildError, SignedMessage};
use crate::request::IssuerAndSubject;
use crate::wire::{oid, FailInfo, MessageType, PkiStatus};

/// A requester: its certificate (self-signed before its first enrollment) and RSA key.
#[derive(Debug)]
pub struct Requester {
    /// The certificate that signs requests (any serial length).
    pub certificate: RequesterCertificate,
    /// Its key.
    pub key: RsaKey,
}

impl Requester {
    /// From a certificate (DER) and its PKCS#8 RSA key.
    pub fn new(certificate_der: &[u8], key_pkcs8: &[u8]) -> Result<Self, CryptoError> {
        Ok(Requester {
            certificate: RequesterCertificate::from_der(certificate_der)
                .map_err(|e| CryptoError::BadKey(e.to_string()))?,
            key: RsaKey::from_pkcs8(key_pkcs8)?,
        })
    }

    /// The conventional transactionID (§3.2.1.1): hex SHA-256 of the public key.
    pub fn transaction_id(&self) -> String {
        let spki = self
            .certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap_or_default();
        Digest::Sha256
            .digest(&spki)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// A request ready to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The pkiMessage, DER.
    pub message: Vec<u8>,
    /// Its senderNonce (the reply must echo it).
    pub sender_nonce: Vec<u8>,
}

/// Build a pkiMessage of `message_type` carrying `content` (a CSR, IssuerAndSubject or
/// IssuerAndSerialNumber, DER) sealed for `recipient` (the RA certificate), signed at
/// `signed_at`.
#[allow(clippy::too_many_arguments)]
pub fn request<P: x509_cert::certificate::Profile>(
    requester: &Requester,
    recipient: &x509_cert::certificate::CertificateInner<P>,
    message_type: MessageType,
    transaction_id: &str,
    content: &[u8],
    cipher: ContentCipher,
    digest: Digest,
    signed_at: std::time::SystemTime,
) -> Result<Outgoing, BuildError> {
    let envelope = pkimessage::seal(content, recipient, cipher)?;
    let mut nonce = vec![0u8; 16];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CryptoError::Operation("randomness"))?;
    let attributes = vec![
        printable_attribute(oid::TRANSACTION_ID, transaction_id)?,
        printable_attribute(oid::MESSAGE_TYPE, &message_type.code().to_string())?,
        octets_attribute(oid::SENDER_NONCE, &nonce)?,
    ];
    let message = pkimessage::sign(
        Some(&envelope),
        &requester.certificate,
        &requester.key,
        digest,
        attributes,
        signed_at,
    )?;
    Ok(Outgoing {
        message,
        sender_nonce: nonce,
    })
}

/// CertPoll's content: the CA's name and the requested subject.
pub fn issuer_and_subject(issuer: &Name, subject: &Name) -> Result<Vec<u8>, der::Error> {
    IssuerAndSubject {
        issuer: issuer.clone(),
        subject: subject.clone(),
    }
    .to_der()
}

/// GetCert's and GetCRL's content: a certificate's issuer and serial number.
pub fn issuer_and_serial(certificate: &Certificate) -> Result<Vec<u8>, der::Error> {
    IssuerAndSerialNumber {
        issuer: certificate.tbs_certificate.issuer.clone(),
        serial_number: certificate.tbs_certificate.serial_number.clone(),
    }
    .to_der()
}

/// A CertRep as read by the requester.
#[derive(Debug, Clone)]
pub struct CertRep {
    /// Who signed it.
    pub signer: Certificate,
    /// pkiStatus.
    pub status: PkiStatus,
    /// failInfo on FAILURE.
    pub fail_info: Option<FailInfo>,
    /// The echoed transactionID.
    pub transaction_id: String,
    /// The echoed nonce.
    pub recipient_nonce: Vec<u8>,
    /// The certificates delivered on SUCCESS, DER.
    pub certificates: Vec<Vec<u8>>,
    /// The CRLs delivered on SUCCESS, DER.
    pub crls: Vec<Vec<u8>>,
}

/// Why a CertRep could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// Structure.
    #[error(transparent)]
    Format(#[from] pkimessage::FormatError),
    /// Signature.
    #[error("CertRep signature: {0}")]
    Signature(CryptoError),
    /// Envelope.
    #[error("CertRep envelope: {0}")]
    Envelope(#[from] pkimessage::OpenError),
    /// A required attribute is missing or wrong.
    #[error("CertRep: {0}")]
    Attribute(&'static str),
}

/// Verify and read a CertRep, decrypting its content with the requester's key.
pub fn read_reply(der_bytes: &[u8], requester: &Requester) -> Result<CertRep, ReplyError> {
    let signed = SignedMessage::parse(der_bytes)?;
    signed.verify().map_err(ReplyError::Signature)?;
    // A CA's certificate: RFC 5280's profile applies.
    let ra_certificate = signed
        .signer
        .to_der()
        .and_then(|der| Certificate::from_der(&der))
        .map_err(|e| pkimessage::FormatError::Malformed(format!("CertRep signer: {e}")))?;
    if signed
        .text(oid::MESSAGE_TYPE)
        .and_then(|t| MessageType::parse(&t))
        != Some(MessageType::CertRep)
    {
        return Err(ReplyError::Attribute("messageType is not CertRep"));
    }
    let status = signed
        .text(oid::PKI_STATUS)
        .and_then(|t| PkiStatus::parse(&t))
        .ok_or(ReplyError::Attribute("no pkiStatus"))?;
    let fail_info = signed
        .text(oid::FAIL_INFO)
        .and_then(|t| FailInfo::parse(&t));
    if status == PkiStatus::Failure && fail_info.is_none() {
        return Err(ReplyError::Attribute("FAILURE without failInfo"));
    }
    let transaction_id = signed
        .text(oid::TRANSACTION_ID)
        .ok_or(ReplyError::Attribute("no transactionID"))?;
    let recipient_nonce = signed
        .octets(oid::RECIPIENT_NONCE)
        .ok_or(ReplyError::Attribute("no recipientNonce"))?;
    signed
        .octets(oid::SENDER_NONCE)
        .ok_or(ReplyError::Attribute("no senderNonce"))?;
    let delivered = match (status, &signed.content) {
        (PkiStatus::Success, Some(envelope)) => {
            let (content, _) = pkimessage::open(envelope, &requester.certificate, &requester.key)?;
            pkimessage::certificates_of(&content)?
        }
        (PkiStatus::Success, None) => {
            return Err(ReplyError::Attribute("SUCCESS without pkcsPKIEnvelope"))
        }
        _ => pkimessage::CertsOnly::default(),
    };
    Ok(CertRep {
        signer: ra_certificate,
        status,
        fail_info,
        transaction_id,
        recipient_nonce,
        certificates: delivered.certificates,
        crls: delivered.crls,
    })
}
