//! Writes the seed corpus: a handful of small, valid inputs per target, made with the
//! project's own encoders and the fixed keys in `keys/`.
//!
//! ```sh
//! cargo run --example gen_corpus --target-dir ~/.cache/rampart-fuzz-target
//! ```
//!
//! Seeds are written as `seed-<name>` (the P-384 and Ed25519 CSRs with fresh keys each
//! time); the minimised finds of the long runs (`min-*`) and crash reproducers
//! (`regression-*`) are left alone.

use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use der::{Decode, Encode};
use rampart_scep::client;
use rampart_scep::crypto::{ContentCipher, Digest};
use rampart_scep::pkimessage;
use rampart_scep::reply::{cert_rep, Reply};
use rampart_scep::request::ReplyTo;
use rampart_scep::wire::{FailInfo, MessageType};
use serde_json::{json, Value};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed written");
}

fn b64u(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

const ACCOUNT_URL: &str = "https://acme.test/acme/default/account/fuzz";
const NEW_ACCOUNT_URL: &str = "https://acme.test/acme/default/new-account";

/// How a JWS is signed.
enum Signer<'a> {
    P256,
    Rsa(&'a RsaKeyPair),
    Ed25519(&'a Ed25519KeyPair),
}

fn rsa_jwk(key: &RsaKeyPair) -> Value {
    use aws_lc_rs::signature::RsaSubjectPublicKey;
    let public: &RsaSubjectPublicKey = key.public_key();
    let spki_key = public.as_ref();
    let rsa = pkcs1::RsaPublicKey::from_der(spki_key).expect("an RSA public key");
    json!({
        "kty": "RSA",
        "n": b64u(rsa.modulus.as_bytes()),
        "e": b64u(rsa.public_exponent.as_bytes()),
    })
}

/// A flattened JWS over `payload` (empty = POST-as-GET).
fn jws(signer: &Signer<'_>, kid: bool, url: &str, payload: &[u8]) -> Vec<u8> {
    let (alg, jwk) = match signer {
        Signer::P256 => ("ES256", Value::Object(rampart_fuzz::p256_jwk())),
        Signer::Rsa(key) => ("RS256", rsa_jwk(key)),
        Signer::Ed25519(key) => (
            "EdDSA",
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64u(key.public_key().as_ref())}),
        ),
    };
    let mut header = json!({"alg": alg, "nonce": "bm9uY2U", "url": url});
    if kid {
        header["kid"] = ACCOUNT_URL.into();
    } else {
        header["jwk"] = jwk;
    }
    let protected = b64u(header.to_string().as_bytes());
    let payload = b64u(payload);
    let input = format!("{protected}.{payload}");
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let signature = match signer {
        Signer::P256 => rampart_fuzz::p256_jws()
            .sign(&rng, input.as_bytes())
            .expect("ES256")
            .as_ref()
            .to_vec(),
        Signer::Rsa(key) => {
            let mut out = vec![0; key.public_modulus_len()];
            key.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut out)
                .expect("RS256");
            out
        }
        Signer::Ed25519(key) => key.sign(input.as_bytes()).as_ref().to_vec(),
    };
    json!({"protected": protected, "payload": payload, "signature": b64u(&signature)})
        .to_string()
        .into_bytes()
}

/// An external account binding (HS256) over the P-256 account key.
fn eab() -> Value {
    let protected = b64u(
        json!({"alg": "HS256", "kid": "eab-key-1", "url": NEW_ACCOUNT_URL})
            .to_string()
            .as_bytes(),
    );
    let payload = b64u(
        Value::Object(rampart_fuzz::p256_jwk())
            .to_string()
            .as_bytes(),
    );
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        b"0123456789abcdef0123456789abcdef",
    );
    let tag = aws_lc_rs::hmac::sign(&key, format!("{protected}.{payload}").as_bytes());
    json!({"protected": protected, "payload": payload, "signature": b64u(tag.as_ref())})
}

fn p256_csr(names: &[&str]) -> Vec<u8> {
    let key = rcgen::KeyPair::try_from(rampart_fuzz::P256_KEY).expect("P-256 key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("names");
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().copied().unwrap_or("device"),
    );
    params
        .serialize_request(&key)
        .expect("a CSR")
        .der()
        .to_vec()
}

fn acme(dir: &Path, csr: &[u8]) {
    let rsa = RsaKeyPair::from_pkcs8(rampart_fuzz::REQUESTER_KEY).expect("RSA key");
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519");
    let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).expect("Ed25519");
    let payloads: Vec<(&str, Value)> = vec![
        (
            "new-account",
            json!({"termsOfServiceAgreed": true, "contact": ["mailto:ops@example.test"]}),
        ),
        (
            "new-account-eab",
            json!({"termsOfServiceAgreed": true, "externalAccountBinding": eab()}),
        ),
        (
            "new-order",
            json!({"identifiers": [
                {"type": "dns", "value": "app.test"},
                {"type": "dns", "value": "*.Example.TEST."},
                {"type": "ip", "value": "::1"}
            ], "profile": "default", "replaces": "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"}),
        ),
        (
            "new-authz",
            json!({"identifier": {"type": "dns", "value": "app.test"}}),
        ),
        ("finalize", json!({"csr": b64u(csr)})),
        (
            "revoke",
            json!({"certificate": b64u(rampart_fuzz::RA_CERT), "reason": 4}),
        ),
        (
            "account-update",
            json!({"contact": ["mailto:new@example.test"], "status": "deactivated"}),
        ),
        ("authz-update", json!({"status": "deactivated"})),
    ];
    for (name, payload) in &payloads {
        let bytes = payload.to_string().into_bytes();
        let kid = !name.starts_with("new-account") && *name != "revoke";
        let url = if name.starts_with("new-account") {
            NEW_ACCOUNT_URL.to_string()
        } else {
            format!("https://acme.test/acme/default/{name}")
        };
        write(
            dir,
            &format!("jws-{name}"),
            &jws(&Signer::P256, kid, &url, &bytes),
        );
        write(dir, &format!("payload-{name}"), &bytes);
    }
    write(
        dir,
        "jws-post-as-get",
        &jws(&Signer::P256, true, ACCOUNT_URL, b""),
    );
    let account = json!({"contact": ["mailto:ops@example.test"]})
        .to_string()
        .into_bytes();
    write(
        dir,
        "jws-rs256-new-account",
        &jws(&Signer::Rsa(&rsa), false, NEW_ACCOUNT_URL, &account),
    );
    write(
        dir,
        "jws-eddsa-new-account",
        &jws(&Signer::Ed25519(&ed), false, NEW_ACCOUNT_URL, &account),
    );
    // keyChange: the inner JWS, signed by the new key, names the account and the old key.
    let inner = jws(
        &Signer::Rsa(&rsa),
        false,
        "https://acme.test/acme/default/key-change",
        json!({"account": ACCOUNT_URL, "oldKey": Value::Object(rampart_fuzz::p256_jwk())})
            .to_string()
            .as_bytes(),
    );
    write(
        dir,
        "jws-key-change",
        &jws(
            &Signer::P256,
            true,
            "https://acme.test/acme/default/key-change",
            &inner,
        ),
    );
}

fn csr(dir: &Path, root: &Path, p256: &[u8]) {
    for fixture in ["rsa1024.csr.pem", "bad-signature.csr.pem"] {
        let text =
            std::fs::read_to_string(root.join("fixtures/csr").join(fixture)).expect("CSR fixture");
        let name = fixture.trim_end_matches(".csr.pem");
        write(dir, &format!("{name}.pem"), text.as_bytes());
        let der = rampart::pkix::pem::decode(&text, &[rampart::pkix::pem::CERTIFICATE_REQUEST])
            .expect("PEM CSR");
        write(
            dir,
            &fixture.replace(".pem", ".der").replace('.', "-"),
            &der,
        );
    }
    write(dir, "p256-san.der", p256);
    write(
        dir,
        "p256-san.pem",
        rampart::pkix::pem::encode(rampart::pkix::pem::NEW_CERTIFICATE_REQUEST, p256).as_bytes(),
    );
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let keys = [
        (
            "p384",
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384"),
        ),
        (
            "ed25519",
            rcgen::KeyPair::try_from(
                Ed25519KeyPair::generate_pkcs8(&rng)
                    .expect("Ed25519")
                    .as_ref(),
            )
            .expect("Ed25519"),
        ),
        (
            "rsa2048",
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
                &rampart_fuzz::REQUESTER_KEY.into(),
                &rcgen::PKCS_RSA_SHA256,
            )
            .expect("RSA"),
        ),
    ];
    for (name, key) in keys {
        let mut params = rcgen::CertificateParams::new(vec![
            "device.internal".to_string(),
            "10.0.0.1".to_string(),
        ])
        .expect("names");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "rampart");
        // PKCS#9 challengePassword, a PrintableString.
        let password = rcgen::Attribute {
            oid: &[1, 2, 840, 113549, 1, 9, 7],
            values: vec![0x31, 0x08, 0x13, 0x06, b's', b'3', b'c', b'r', b'e', b't'],
        };
        let der = params
            .serialize_request_with_attributes(&key, vec![password])
            .expect("a CSR")
            .der()
            .to_vec();
        write(dir, &format!("{name}-challenge.der"), &der);
    }
}

/// DER as a BER sender writes it: indefinite lengths on every constructed value, long
/// OCTET STRINGs (and, in an EnvelopedData, the `[0]` encrypted content) as constructed
/// strings of 32-byte segments. Primitive contents (eContent, extension values) are kept.
fn to_ber(der: &[u8]) -> Vec<u8> {
    fn element(input: &[u8], out: &mut Vec<u8>) -> usize {
        let identifier = input[0];
        assert_ne!(
            identifier & 0x1f,
            0x1f,
            "no high tag numbers in our messages"
        );
        let (length, header) = match input[1] {
            short if short & 0x80 == 0 => (usize::from(short), 2),
            long => {
                let count = usize::from(long & 0x7f);
                let length = input[2..2 + count]
                    .iter()
                    .fold(0usize, |n, b| (n << 8) | usize::from(*b));
                (length, 2 + count)
            }
        };
        let content = &input[header..header + length];
        if identifier & 0x20 != 0 {
            out.extend_from_slice(&[identifier, 0x80]);
            let mut at = 0;
            while at < content.len() {
                at += element(&content[at..], out);
            }
            out.extend_from_slice(&[0, 0]);
        } else if (identifier == 0x04 || identifier == 0x80) && content.len() > 32 {
            out.extend_from_slice(&[if identifier == 0x04 { 0x24 } else { 0xa0 }, 0x80]);
            for segment in content.chunks(32) {
                out.push(0x04);
                out.push(segment.len() as u8);
                out.extend_from_slice(segment);
            }
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&input[..header + length]);
        }
        header + length
    }
    let mut out = Vec::new();
    element(der, &mut out);
    out
}

fn scep(dir: &Path, csr: &[u8]) {
    let ra = rampart_fuzz::ra();
    let requester = rampart_fuzz::requester();
    let now = rampart_fuzz::now();
    let tid = requester.transaction_id();
    let poll = client::issuer_and_subject(
        &ra.certificate.tbs_certificate.subject,
        &requester.certificate.tbs_certificate.subject,
    )
    .expect("IssuerAndSubject");
    let serial = client::issuer_and_serial(&requester.certificate).expect("IssuerAndSerial");
    let messages = [
        (
            "pkcsreq-aes128",
            MessageType::PkcsReq,
            csr,
            ContentCipher::Aes128Cbc,
            Digest::Sha256,
        ),
        (
            "pkcsreq-des",
            MessageType::PkcsReq,
            csr,
            ContentCipher::DesCbc,
            Digest::Sha256,
        ),
        (
            "renewal-3des-sha512",
            MessageType::RenewalReq,
            csr,
            ContentCipher::DesEde3Cbc,
            Digest::Sha512,
        ),
        (
            "certpoll-aes256",
            MessageType::CertPoll,
            &poll[..],
            ContentCipher::Aes256Cbc,
            Digest::Sha256,
        ),
        (
            "getcert",
            MessageType::GetCert,
            &serial[..],
            ContentCipher::Aes192Cbc,
            Digest::Sha384,
        ),
        (
            "getcrl",
            MessageType::GetCrl,
            &serial[..],
            ContentCipher::Aes128Cbc,
            Digest::Sha256,
        ),
    ];
    let code = |t: MessageType| match t {
        MessageType::PkcsReq => 0u8,
        MessageType::RenewalReq => 1,
        MessageType::CertPoll => 2,
        MessageType::GetCert => 3,
        MessageType::GetCrl => 4,
        MessageType::CertRep => 5,
    };
    for (name, message_type, content, cipher, digest) in messages {
        let out = client::request(
            requester,
            &ra.certificate,
            message_type,
            &tid,
            content,
            cipher,
            digest,
            now,
        )
        .expect("a pkiMessage");
        write(
            dir,
            &format!("whole-{name}"),
            &[&[0u8][..], &out.message].concat(),
        );
        let envelope =
            pkimessage::seal(content, &ra.certificate, cipher).expect("an EnvelopedData");
        write(
            dir,
            &format!("envelope-{name}"),
            &[&[1u8, code(message_type)][..], &envelope].concat(),
        );
        write(
            dir,
            &format!("content-{name}"),
            &[&[2u8, code(message_type)][..], content].concat(),
        );
    }
    // BER as Windows / BouncyCastle / Go's PKCS#7 send it, under the strict profile.
    let envelope = to_ber(
        &pkimessage::seal(csr, &ra.certificate, ContentCipher::Aes128Cbc).expect("envelope"),
    );
    let attributes = vec![
        pkimessage::printable_attribute(rampart_scep::wire::oid::TRANSACTION_ID, &tid)
            .expect("attribute"),
        pkimessage::printable_attribute(rampart_scep::wire::oid::MESSAGE_TYPE, "19")
            .expect("attribute"),
        pkimessage::octets_attribute(rampart_scep::wire::oid::SENDER_NONCE, &[9; 16])
            .expect("attribute"),
    ];
    let signed = pkimessage::sign(
        Some(&envelope),
        &requester.certificate,
        &requester.key,
        Digest::Sha256,
        attributes,
        now,
    )
    .expect("a pkiMessage");
    let ber = to_ber(&signed);
    assert!(rampart_scep::request::read(&ber, ra, rampart_fuzz::PROFILES[1], now).is_ok());
    write(dir, "whole-pkcsreq-ber", &[&[4u8][..], &ber].concat());
    write(dir, "ber-pkcsreq", &[&[3u8][..], &ber].concat());
    // A CertRep, for the client side's reader.
    let reply_to = ReplyTo {
        transaction_id: tid.clone(),
        sender_nonce: vec![9; 16],
        digest: Digest::Sha256,
    };
    let content =
        pkimessage::certs_only(&[rampart_fuzz::REQUESTER_CERT.to_vec()], &[]).expect("certs-only");
    let success = cert_rep(
        ra,
        &reply_to,
        Reply::Success {
            content,
            recipient: &requester.certificate,
            cipher: ContentCipher::Aes128Cbc,
        },
        now,
    )
    .expect("a CertRep");
    write(
        dir,
        "whole-certrep-success",
        &[&[0u8][..], &success].concat(),
    );
    let failure =
        cert_rep(ra, &reply_to, Reply::Failure(FailInfo::BadRequest), now).expect("a CertRep");
    write(
        dir,
        "whole-certrep-failure",
        &[&[0u8][..], &failure].concat(),
    );
}

fn est(dir: &Path, csr: &[u8]) {
    let lines = |der: &[u8], eol: &str| {
        STANDARD
            .encode(der)
            .as_bytes()
            .chunks(64)
            .map(|l| String::from_utf8_lossy(l).into_owned() + eol)
            .collect::<String>()
    };
    let basic = b"Basic ZGV2OnMzY3JldA==";
    let seed = |route: u8, flags: u8, auth: &[u8], body: &[u8]| {
        [&[route, flags][..], auth, &[0], body].concat()
    };
    write(
        dir,
        "simpleenroll-basic",
        &seed(0, 4, basic, lines(csr, "\n").as_bytes()),
    );
    write(
        dir,
        "simpleenroll-crlf",
        &seed(6, 5, basic, lines(csr, "\r\n").as_bytes()),
    );
    write(
        dir,
        "simplereenroll-cert",
        &seed(1, 8, b"", STANDARD.encode(csr).as_bytes()),
    );
    write(
        dir,
        "serverkeygen-both",
        &seed(2, 12, basic, lines(csr, "\n").as_bytes()),
    );
    write(
        dir,
        "simpleenroll-binding",
        &seed(0, 20, basic, lines(csr, "\n").as_bytes()),
    );
    write(dir, "cacerts", &seed(0x83, 3, b"", b""));
    write(dir, "csrattrs-lab", &seed(0x88, 3, b"", b""));
    write(dir, "fullcmc", &seed(5, 0, b"", b""));
}

fn config(dir: &Path, root: &Path) {
    let full = std::fs::read(root.join("config/rampart.toml")).expect("config/rampart.toml");
    write(dir, "rampart.toml", &full);
    write(dir, "empty.toml", b"");
    write(
        dir,
        "policy.toml",
        br#"[server]
public_hostname = "ra.example.test"

[templates.web]
extended_key_usages = ["serverAuth"]
key_types = ["rsa", "ecdsa-p256"]
min_rsa_bits = 2048
default_validity_days = 30
max_validity_days = 90
max_sans = 4

[roles.web]
templates = ["web"]
dns_names = ["app.test", "*.example", "**.internal"]
ip_ranges = ["10.0.0.0/8", "::1/128"]
manage = false
"#,
    );
    write(
        dir,
        "protocols.toml",
        br#"[api]
listen = "127.0.0.1:19000"

[est.profiles.lab]
template = "client"
auth = "both"
require_pop_linking = true

[est.users.dev]
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
roles = ["admin"]

[scep.profiles.default]
template = "client"
identity = "scep-default"
roles = ["scep-demo"]
legacy_algorithms = false
max_clock_skew_seconds = 0
"#,
    );
}

fn main() {
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = fuzz_dir.parent().expect("the repository").to_path_buf();
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| fuzz_dir.join("corpus"));
    let p256 = p256_csr(&["app.test", "127.0.0.1"]);
    acme(&out.join("acme_jws"), &p256);
    csr(&out.join("csr"), &root, &p256);
    // SCEP requesters enroll with an RSA key.
    let rsa_key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &rampart_fuzz::REQUESTER_KEY.into(),
        &rcgen::PKCS_RSA_SHA256,
    )
    .expect("RSA");
    let mut params = rcgen::CertificateParams::new(vec!["device.test".to_string()]).expect("names");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "device.test");
    let rsa_csr = params
        .serialize_request(&rsa_key)
        .expect("a CSR")
        .der()
        .to_vec();
    scep(&out.join("scep_pkimessage"), &rsa_csr);
    est(&out.join("est_body"), &p256);
    config(&out.join("config"), &root);
    // Make sure every SCEP seed is what it claims to be.
    let _ = x509_cert::Certificate::from_der(rampart_fuzz::RA_CERT).expect("RA certificate");
    let _ = rampart_fuzz::ra().certificate.to_der().expect("encodes");
    println!("seed corpus written to {}", out.display());
}
