//! SCEP pkiMessages (RFC 8894) as `PKIOperation` receives them: the BER normaliser, the
//! SignedData layer (`SignedMessage::parse`, its attributes, signature check), the
//! EnvelopedData layer (`pkimessage::open`, decryption with the RA key), the whole
//! `request::read`, and the CertRep the server then signs (FAILURE for refused requests,
//! SUCCESS for readable ones); plus the client side's `read_reply`.
//!
//! The first byte selects what the rest is:
//! - `xxxx_x?00`: a whole pkiMessage;
//! - `xxxx_x?01`: a messageType byte, then a pkcsPKIEnvelope that the target signs as the
//!   fixed requester (a mutated message never keeps a valid signature, so this is how
//!   the fuzzer reaches the envelope and content decoding behind the signature check);
//! - `xxxx_x?10`: a messageType byte, then the content itself (CSR, IssuerAndSubject,
//!   IssuerAndSerialNumber), sealed for the RA and signed;
//! - `xxxx_x?11`: raw BER for the normaliser alone (with its invariants checked).
//!
//! Bit 2 picks the profile (legacy algorithms and no clock check, or strict).
#![no_main]

use der::Encode;
use libfuzzer_sys::fuzz_target;
use rampart_scep::crypto::{ContentCipher, Digest};
use rampart_scep::pkimessage::{self, octets_attribute, printable_attribute, SignedMessage};
use rampart_scep::reply::{cert_rep, Reply};
use rampart_scep::request::{self, Content, ReadError};
use rampart_scep::wire::oid;
use rampart_scep::{ber, client, Profile};

const MESSAGE_TYPES: [&str; 6] = ["19", "17", "20", "21", "22", "3"];

fn whole(message: &[u8], profile: Profile) {
    let ra = rampart_fuzz::ra();
    let now = rampart_fuzz::now();
    match request::read(message, ra, profile, now) {
        Ok(request) => {
            // What `pki_operation` encodes from a request before and after the backend.
            let _ = request.signer.to_der();
            if let Content::Certificate(id) = &request.content {
                let _ = id.issuer.to_der();
                let _ = id.serial_number.as_bytes();
            }
            if let Ok(content) =
                pkimessage::certs_only(&[rampart_fuzz::REQUESTER_CERT.to_vec()], &[])
            {
                let reply = Reply::Success {
                    content,
                    recipient: &request.signer,
                    cipher: request.cipher,
                };
                let _ = cert_rep(ra, &request.reply_to, reply, now);
            }
            let _ = cert_rep(ra, &request.reply_to, Reply::Pending, now);
        }
        Err(ReadError::Refused {
            reply_to,
            fail_info,
            ..
        }) => {
            let _ = cert_rep(ra, &reply_to, Reply::Failure(fail_info), now);
        }
        Err(ReadError::Unreadable(_) | ReadError::KeyUnavailable(_)) => {}
    }
    // Each layer on its own, past the points where `read` stops.
    if let Ok(signed) = SignedMessage::parse(message) {
        for id in [
            oid::TRANSACTION_ID,
            oid::MESSAGE_TYPE,
            oid::PKI_STATUS,
            oid::FAIL_INFO,
        ] {
            let _ = signed.text(id);
        }
        let _ = signed.octets(oid::SENDER_NONCE);
        let _ = signed.signing_time();
        let _ = signed.verify();
        if let Some(content) = &signed.content {
            let _ = pkimessage::open(content, &ra.certificate, &ra.key);
            let _ = pkimessage::certificates_of(content);
        }
    }
    let _ = pkimessage::open(message, &ra.certificate, &ra.key);
    let _ = pkimessage::certificates_of(message);
    let _ = client::read_reply(message, rampart_fuzz::requester());
}

/// A pkiMessage around `envelope`, signed by the fixed requester.
fn signed(message_type: u8, envelope: &[u8]) -> Option<Vec<u8>> {
    let requester = rampart_fuzz::requester();
    let attributes = vec![
        printable_attribute(oid::TRANSACTION_ID, "fuzz-transaction").ok()?,
        printable_attribute(
            oid::MESSAGE_TYPE,
            MESSAGE_TYPES[usize::from(message_type) % MESSAGE_TYPES.len()],
        )
        .ok()?,
        octets_attribute(oid::SENDER_NONCE, &[7; 16]).ok()?,
    ];
    pkimessage::sign(
        Some(envelope),
        &requester.certificate,
        &requester.key,
        Digest::Sha256,
        attributes,
        rampart_fuzz::now(),
    )
    .ok()
}

/// The normaliser's contract: what it accepts comes out as one definite-length element
/// that normalises to itself.
fn ber_only(input: &[u8]) {
    if let Ok(normalized) = ber::normalize(input) {
        assert_eq!(
            ber::normalize(&normalized).as_ref(),
            Ok(&normalized),
            "normalising is idempotent"
        );
        let _ = ber::join_implicit_octets(&normalized);
    }
    let _ = ber::join_implicit_octets(input);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let profile = rampart_fuzz::PROFILES[usize::from(selector >> 2) & 1];
    match selector & 3 {
        0 => whole(rest, profile),
        1 => {
            if let Some((&message_type, envelope)) = rest.split_first() {
                if let Some(message) = signed(message_type, envelope) {
                    whole(&message, profile);
                }
            }
        }
        2 => {
            if let Some((&message_type, content)) = rest.split_first() {
                let ra = rampart_fuzz::ra();
                if let Ok(envelope) =
                    pkimessage::seal(content, &ra.certificate, ContentCipher::Aes128Cbc)
                {
                    if let Some(message) = signed(message_type, &envelope) {
                        whole(&message, profile);
                    }
                }
            }
        }
        _ => ber_only(rest),
    }
});
