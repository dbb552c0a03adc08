//! Reading a client's pkiMessage on the server (RFC 8894 §3.2–3.3): verify the signature,
//! open the envelope with the RA key, and decode what the message type carries. What
//! cannot be read at all is answered with HTTP 400; everything readable enough to be
//! answered gets a signed CertRep FAILURE with the matching failInfo.

use cms::cert::IssuerAndSerialNumber;
use der::{Decode, Sequence};
use x509_cert::name::Name;

use crate::crypto::{ContentCipher, CryptoError, Digest};
use crate::pkimessage::{self, OpenError, SignedMessage};
use crate::wire::{oid, FailInfo, MessageType};
use crate::{Profile, Ra};
use std::time::SystemTime;

/// What a reply must echo (§3.2.1.1, §3.2.1.5) and how it is signed.
#[derive(Debug, Clone)]
pub struct ReplyTo {
    /// The request's transactionID.
    pub transaction_id: String,
    /// The request's senderNonce (the reply's recipientNonce).
    pub sender_nonce: Vec<u8>,
    /// The digest the reply is signed with.
    pub digest: Digest,
}

/// `IssuerAndSubject` (§3.3.3): what a CertPoll names.
#[derive(Debug, Clone, Sequence)]
pub struct IssuerAndSubject {
    /// The CA's name.
    pub issuer: Name,
    /// The requested subject.
    pub subject: Name,
}

/// The decrypted content of a request.
#[derive(Debug, Clone)]
pub enum Content {
    /// PKCSReq / RenewalReq: the PKCS#10 request, DER.
    Csr(Vec<u8>),
    /// CertPoll: the issuer and subject of the pending request.
    Poll(IssuerAndSubject),
    /// GetCert / GetCRL: a certificate by issuer and serial number.
    Certificate(IssuerAndSerialNumber),
}

/// A verified, decrypted request.
#[derive(Debug, Clone)]
pub struct Request {
    /// What is asked.
    pub message_type: MessageType,
    /// What the reply echoes.
    pub reply_to: ReplyTo,
    /// The content cipher the client used (the reply uses the same).
    pub cipher: ContentCipher,
    /// The signer's certificate (self-signed for PKCSReq, the current one for renewal).
    pub signer: crate::loose::RequesterCertificate,
    /// The content.
    pub content: Content,
}

/// Why a request is not served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// Not a pkiMessage anyone could answer (no transactionID or nonce to echo).
    #[error("{0}")]
    Unreadable(String),
    /// The RA key could not be used (its HSM failed): the server's fault, not the
    /// message's; answered with HTTP 503, as a CertRep could not be signed either.
    #[error("{0}")]
    KeyUnavailable(String),
    /// Answered with a signed CertRep FAILURE.
    #[error("{fail_info}: {reason}")]
    Refused {
        /// Echoed fields.
        reply_to: ReplyTo,
        /// The failInfo.
        fail_info: FailInfo,
        /// Why (logged and audited, not sent: SCEP has no text field).
        reason: String,
    },
}

/// Read `message` with the RA's key, under `profile`'s algorithm and clock rules.
pub fn read(
    message: &[u8],
    ra: &Ra,
    profile: Profile,
    now: SystemTime,
) -> Result<Request, ReadError> {
    let legacy_allowed = profile.legacy_algorithms;
    let signed = SignedMessage::parse(message).map_err(|e| ReadError::Unreadable(e.to_string()))?;
    let (Some(transaction_id), Some(sender_nonce)) = (
        signed.text(oid::TRANSACTION_ID),
        signed.octets(oid::SENDER_NONCE),
    ) else {
        return Err(ReadError::Unreadable(
            "the pkiMessage has no transactionID or senderNonce".into(),
        ));
    };
    let reply_to = ReplyTo {
        transaction_id,
        sender_nonce,
        digest: signed
            .digest
            .clone()
            .map(Digest::for_reply)
            .unwrap_or(Digest::Sha256),
    };
    let refuse = |fail_info, reason: String| ReadError::Refused {
        reply_to: reply_to.clone(),
        fail_info,
        reason,
    };
    let digest = signed
        .digest
        .clone()
        .map_err(|e| refuse(FailInfo::BadAlg, format!("digest: {e}")))?;
    if digest.is_legacy() && !legacy_allowed {
        return Err(refuse(
            FailInfo::BadAlg,
            "SHA-1 is refused on this profile".into(),
        ));
    }
    signed.verify().map_err(|e| match e {
        CryptoError::BadSignature => refuse(
            FailInfo::BadMessageCheck,
            "the pkiMessage signature does not verify".into(),
        ),
        other => refuse(FailInfo::BadAlg, format!("signature: {other}")),
    })?;
    if let (Some(skew), Some(signed_at)) = (profile.max_clock_skew, signed.signing_time()) {
        let off = signed_at
            .duration_since(now)
            .or_else(|_| now.duration_since(signed_at))
            .unwrap_or_default();
        if off > skew {
            return Err(refuse(
                FailInfo::BadTime,
                format!(
                    "signingTime is {}s away from the server's clock",
                    off.as_secs()
                ),
            ));
        }
    }
    let message_type = signed
        .text(oid::MESSAGE_TYPE)
        .and_then(|t| MessageType::parse(&t))
        .ok_or_else(|| refuse(FailInfo::BadRequest, "unknown messageType".into()))?;
    let envelope = signed
        .content
        .as_deref()
        .ok_or_else(|| refuse(FailInfo::BadRequest, "no pkcsPKIEnvelope".into()))?;
    let (content, cipher) =
        pkimessage::open(envelope, &ra.certificate, &*ra.key).map_err(|e| match e {
            OpenError::Algorithm(reason) => refuse(FailInfo::BadAlg, reason),
            OpenError::Decrypt(reason) => refuse(FailInfo::BadMessageCheck, reason),
            OpenError::Format(reason) => refuse(FailInfo::BadRequest, reason.to_string()),
            OpenError::KeyUnavailable(reason) => ReadError::KeyUnavailable(reason),
        })?;
    if cipher.is_legacy() && !legacy_allowed {
        return Err(refuse(
            FailInfo::BadAlg,
            "single DES is refused on this profile".into(),
        ));
    }
    let malformed =
        |what: &str, e: der::Error| refuse(FailInfo::BadRequest, format!("{what}: {e}"));
    let content = match message_type {
        MessageType::PkcsReq | MessageType::RenewalReq => Content::Csr(content),
        MessageType::CertPoll => Content::Poll(
            IssuerAndSubject::from_der(&content).map_err(|e| malformed("IssuerAndSubject", e))?,
        ),
        MessageType::GetCert | MessageType::GetCrl => Content::Certificate(
            IssuerAndSerialNumber::from_der(&content)
                .map_err(|e| malformed("IssuerAndSerialNumber", e))?,
        ),
        MessageType::CertRep => {
            return Err(refuse(
                FailInfo::BadRequest,
                "a CertRep is a reply, not a request".into(),
            ))
        }
    };
    Ok(Request {
        message_type,
        reply_to,
        cipher,
        signer: signed.signer,
        content,
    })
}
