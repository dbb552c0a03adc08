//! A request built by the client side, read by the server side, answered with a CertRep and
//! read back: every cipher, the failure paths that depend only on the message.

use der::{Decode, Encode};
use rampart_scep::client::{self, Requester};
use rampart_scep::crypto::{ContentCipher, Digest};
use rampart_scep::reply::{cert_rep, Reply};
use rampart_scep::request::{self, Content, ReadError};
use rampart_scep::wire::{FailInfo, MessageType, PkiStatus};
use rampart_scep::{Profile, Ra};
use std::time::{Duration, SystemTime};

const LEGACY: Profile = Profile {
    legacy_algorithms: true,
    max_clock_skew: Some(Duration::from_secs(86_400)),
};
const STRICT: Profile = Profile {
    legacy_algorithms: false,
    max_clock_skew: Some(Duration::from_secs(86_400)),
};

fn rsa_identity(cn: &str) -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.self_signed(&key).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

fn csr_for(key_der: &[u8]) -> Vec<u8> {
    let key = rcgen::KeyPair::try_from(key_der).unwrap();
    let params = rcgen::CertificateParams::new(vec!["device.test".to_string()]).unwrap();
    params.serialize_request(&key).unwrap().der().to_vec()
}

#[test]
fn request_and_reply_round_trip_with_every_cipher() {
    let (ra_cert, ra_key) = rsa_identity("RA");
    let ra = Ra::new(ra_cert.clone(), &ra_key).unwrap();
    let (req_cert, req_key) = rsa_identity("requester");
    let requester = Requester::new(&req_cert, &req_key).unwrap();
    let csr = csr_for(&req_key);
    for cipher in [
        ContentCipher::DesCbc,
        ContentCipher::DesEde3Cbc,
        ContentCipher::Aes128Cbc,
        ContentCipher::Aes256Cbc,
    ] {
        let tid = requester.transaction_id();
        let out = client::request(
            &requester,
            &ra.certificate,
            MessageType::PkcsReq,
            &tid,
            &csr,
            cipher,
            Digest::Sha256,
            SystemTime::now(),
        )
        .unwrap();
        let read = request::read(&out.message, &ra, LEGACY, SystemTime::now()).unwrap();
        assert_eq!(read.message_type, MessageType::PkcsReq);
        assert_eq!(read.cipher, cipher);
        assert_eq!(read.reply_to.transaction_id, tid);
        assert_eq!(read.reply_to.sender_nonce, out.sender_nonce);
        let Content::Csr(got) = &read.content else {
            panic!("not a CSR")
        };
        assert_eq!(got, &csr);
        // The reply carries "a certificate" (any DER certificate will do for the codec).
        let content =
            rampart_scep::pkimessage::certs_only(std::slice::from_ref(&ra_cert), &[]).unwrap();
        let reply = cert_rep(
            &ra,
            &read.reply_to,
            Reply::Success {
                content,
                recipient: &read.signer,
                cipher,
            },
            SystemTime::now(),
        )
        .unwrap();
        let rep = client::read_reply(&reply, &requester).unwrap();
        assert_eq!(rep.status, PkiStatus::Success);
        assert_eq!(rep.transaction_id, tid);
        assert_eq!(rep.recipient_nonce, out.sender_nonce);
        assert_eq!(rep.certificates, vec![ra_cert.clone()]);
        assert_eq!(rep.signer.to_der().unwrap(), ra_cert);
    }
}

#[test]
fn refusals_name_their_fail_info() {
    let (ra_cert, ra_key) = rsa_identity("RA");
    let ra = Ra::new(ra_cert, &ra_key).unwrap();
    let (req_cert, req_key) = rsa_identity("requester");
    let requester = Requester::new(&req_cert, &req_key).unwrap();
    let build_at = |cipher, recipient: &x509_cert::Certificate, signed_at| {
        client::request(
            &requester,
            recipient,
            MessageType::PkcsReq,
            "tid-1",
            &csr_for(&req_key),
            cipher,
            Digest::Sha256,
            signed_at,
        )
        .unwrap()
        .message
    };
    let build =
        |cipher, recipient: &x509_cert::Certificate| build_at(cipher, recipient, SystemTime::now());
    let fail =
        |message: &[u8], profile| match request::read(message, &ra, profile, SystemTime::now()) {
            Err(ReadError::Refused {
                fail_info,
                reply_to,
                ..
            }) => {
                assert_eq!(reply_to.transaction_id, "tid-1");
                fail_info
            }
            other => panic!("expected a refusal, got {other:?}"),
        };
    // Single DES on a profile that refuses legacy algorithms.
    assert_eq!(
        fail(&build(ContentCipher::DesCbc, &ra.certificate), STRICT),
        FailInfo::BadAlg
    );
    // A flipped byte in the signature.
    let mut tampered = build(ContentCipher::Aes128Cbc, &ra.certificate);
    let at = tampered.len() - 10;
    tampered[at] ^= 1;
    assert_eq!(fail(&tampered, LEGACY), FailInfo::BadMessageCheck);
    // Sealed for someone else's key.
    let (other_cert, _) = rsa_identity("not the RA");
    let other = x509_cert::Certificate::from_der(&other_cert).unwrap();
    assert_eq!(
        fail(&build(ContentCipher::Aes128Cbc, &other), LEGACY),
        FailInfo::BadMessageCheck
    );
    // Signed a day and a half ago, on a profile that allows a day of clock skew.
    let stale = SystemTime::now() - Duration::from_secs(36 * 3600);
    assert_eq!(
        fail(
            &build_at(ContentCipher::Aes128Cbc, &ra.certificate, stale),
            LEGACY
        ),
        FailInfo::BadTime
    );
    let lenient = Profile {
        max_clock_skew: None,
        ..LEGACY
    };
    assert!(request::read(
        &build_at(ContentCipher::Aes128Cbc, &ra.certificate, stale),
        &ra,
        lenient,
        SystemTime::now()
    )
    .is_ok());
    // Garbage is not answerable at all.
    assert!(matches!(
        request::read(b"\x30\x03\x02\x01\x00", &ra, LEGACY, SystemTime::now()),
        Err(ReadError::Unreadable(_))
    ));
}

#[test]
fn an_ra_key_that_is_not_the_certificates_is_refused() {
    let (ra_cert, _) = rsa_identity("RA");
    let (_, other_key) = rsa_identity("other");
    assert!(Ra::new(ra_cert, &other_key).is_err());
}
