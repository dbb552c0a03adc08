//! The server's CertRep (RFC 8894 §3.3.2): a SignedData signed by the RA carrying
//! transactionID, messageType 3, pkiStatus, failInfo, a fresh senderNonce and the
//! request's nonce as recipientNonce; on SUCCESS it encapsulates an EnvelopedData,
//! encrypted for the requester's key with the cipher the requester used, holding a
//! certificates-only SignedData with what was asked for.

use crate::crypto::ContentCipher;
use crate::pkimessage::{self, octets_attribute, printable_attribute, BuildError};
use crate::request::ReplyTo;
use crate::wire::{oid, FailInfo, MessageType, PkiStatus};
use crate::Ra;

/// What the CertRep says.
#[derive(Debug, Clone)]
pub enum Reply<'a> {
    /// Granted: `content` (a certificates-only SignedData) sealed for `recipient`.
    Success {
        /// The certificates-only SignedData, DER.
        content: Vec<u8>,
        /// Whose key the envelope is for.
        recipient: &'a crate::loose::RequesterCertificate,
        /// The content cipher.
        cipher: ContentCipher,
    },
    /// Waiting for approval.
    Pending,
    /// Refused.
    Failure(FailInfo),
}

/// Sign a CertRep answering `to`, at `now`.
pub fn cert_rep(
    ra: &Ra,
    to: &ReplyTo,
    reply: Reply<'_>,
    now: std::time::SystemTime,
) -> Result<Vec<u8>, BuildError> {
    let mut nonce = [0u8; 16];
    aws_lc_rs::rand::fill(&mut nonce)
        .map_err(|_| BuildError::Crypto(crate::crypto::CryptoError::Operation("randomness")))?;
    let (status, envelope, fail_info) = match reply {
        Reply::Success {
            content,
            recipient,
            cipher,
        } => (
            PkiStatus::Success,
            Some(pkimessage::seal(&content, recipient, cipher)?),
            None,
        ),
        Reply::Pending => (PkiStatus::Pending, None, None),
        Reply::Failure(fail_info) => (PkiStatus::Failure, None, Some(fail_info)),
    };
    let mut attributes = vec![
        printable_attribute(oid::TRANSACTION_ID, &to.transaction_id)?,
        printable_attribute(oid::MESSAGE_TYPE, &MessageType::CertRep.code().to_string())?,
        printable_attribute(oid::PKI_STATUS, &status.code().to_string())?,
        octets_attribute(oid::SENDER_NONCE, &nonce)?,
        octets_attribute(oid::RECIPIENT_NONCE, &to.sender_nonce)?,
    ];
    if let Some(fail_info) = fail_info {
        attributes.push(printable_attribute(
            oid::FAIL_INFO,
            &fail_info.code().to_string(),
        )?);
    }
    // RFC 8894 §3.3.2: PENDING and FAILURE carry no pkcsPKIEnvelope. It is left out as an
    // empty eContent rather than an absent one: OpenSSL's PKCS#7 verifier, which certmonger
    // and sscep read replies with, refuses a SignedData without content ("no content").
    pkimessage::sign(
        Some(envelope.as_deref().unwrap_or_default()),
        &ra.certificate,
        &*ra.key,
        to.digest,
        attributes,
        now,
    )
}
