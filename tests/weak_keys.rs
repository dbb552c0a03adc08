//! Weak keys end to end: CSRs whose keys are weak but validly signed (fixtures/weak-keys/),
//! an EC key off its curve and an operator-blocked key, submitted over the admin API, are
//! denied at the input layer with rule `weak_key`, audited, and nothing is signed.

mod common;

use std::sync::Arc;

use common::{config_for, csr, fixture, p256, start, start_with};
use rampart::clock::SystemClock;
use rampart::pkix::pem;
use rampart::store::{AuditAction, CertificateQuery};
use rcgen::PublicKeyData;
use serde_json::Value;

/// Certificates issued to the admin (rampart's own listener certificate is left out).
async fn admin_certificates(d: &common::TestDaemon) -> usize {
    let query = CertificateQuery {
        limit: 1000,
        owner: Some("admin".into()),
        ..Default::default()
    };
    d.daemon
        .pipeline
        .store()
        .list_certificates(&query, time::OffsetDateTime::now_utc())
        .unwrap()
        .items
        .len()
}

/// A P-256 CSR for `name` whose public point no longer lies on the curve (one bit of y
/// flipped after signing).
fn off_curve_csr(name: &str) -> String {
    let key = p256();
    let der = pem::decode(&csr(&key, Some(name), &[name]), &[pem::CERTIFICATE_REQUEST]).unwrap();
    let point = key.der_bytes();
    let at = der
        .windows(point.len())
        .position(|w| w == point)
        .expect("the CSR carries the point");
    let mut der = der;
    der[at + point.len() - 1] ^= 1;
    pem::encode(pem::CERTIFICATE_REQUEST, &der)
}

fn assert_weak_key(status: u16, body: &Value, says: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "bad_csr", "{body}");
    assert_eq!(body["layer"], "input", "{body}");
    assert_eq!(body["rule"], "weak_key", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(says), "`{says}` not in: {message}");
    assert!(body["request_id"].is_string(), "{body}");
}

#[tokio::test]
async fn weak_keys_are_denied_audited_and_never_signed() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path()).await;

    let cases = [
        (fixture("weak-keys/rsa-e3.csr.pem"), "exponent 3"),
        (fixture("weak-keys/roca.csr.pem"), "ROCA"),
        (fixture("weak-keys/close-primes.csr.pem"), "Fermat"),
        (off_curve_csr("curve.test"), "not a valid point"),
    ];
    for (csr, says) in &cases {
        let (status, body) = d.enroll(csr, "server").await;
        assert_weak_key(status, &body, says);
    }
    // RSA below 2048 bits never gets that far: every template's floor (at least 2048 bits,
    // enforced by config validation) refuses it first, with the more precise rule.
    let (status, body) = d.enroll(&fixture("csr/rsa1024.csr.pem"), "server").await;
    assert_eq!((status, &body["rule"]), (403, &"rsa_key_too_small".into()));

    // Nothing was signed; each weak key's denial is audited with its rule and reason.
    assert_eq!(admin_certificates(&d).await, 0);
    let records = d.daemon.pipeline.store().audit_records(0, 1000).unwrap();
    assert!(records
        .iter()
        .all(|r| r.entry.action != AuditAction::Issued || r.entry.actor != "admin"));
    let weak: Vec<_> = records
        .iter()
        .filter(|r| r.entry.action == AuditAction::Decision && r.entry.outcome == "denied")
        .filter(|r| r.entry.rule.as_deref() == Some("weak_key"))
        .collect();
    assert_eq!(weak.len(), cases.len());
    assert!(weak
        .iter()
        .all(|r| r.entry.layer.as_deref() == Some("input") && r.entry.reason.contains("weak")));

    // A sound key on the same daemon is issued, and what the CA signed passes the lint.
    let key = p256();
    let (status, body) = d
        .enroll(&csr(&key, Some("fine.test"), &["fine.test"]), "server")
        .await;
    assert_eq!(status, 201, "{body}");
    let leaf = pem::decode(body["certificate"].as_str().unwrap(), &[pem::CERTIFICATE]).unwrap();
    assert_eq!(rampart::ca::lint::lint_der(&leaf), Ok(()));
}

#[tokio::test]
async fn blocked_keys_are_denied() {
    let blocked = p256();
    let fingerprint = rampart::pkix::sha256_hex(&blocked.subject_public_key_info());

    // Entries must be SHA-256 in hex.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path());
    config.policy.blocked_spki_sha256 = vec!["not-a-digest".into()];
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("policy.blocked_spki_sha256"), "{error}");

    // Upper-case hex matches too.
    config.policy.blocked_spki_sha256 = vec![fingerprint.to_uppercase()];
    config.validate().unwrap();
    let d = start_with(config, Arc::new(SystemClock), None).await;
    let (status, body) = d
        .enroll(
            &csr(&blocked, Some("blocked.test"), &["blocked.test"]),
            "server",
        )
        .await;
    assert_weak_key(
        status,
        &body,
        &format!("blocked (SubjectPublicKeyInfo SHA-256 {fingerprint})"),
    );
    assert_eq!(admin_certificates(&d).await, 0);

    // Any other key is issued.
    let (status, body) = d
        .enroll(&csr(&p256(), Some("free.test"), &["free.test"]), "server")
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(admin_certificates(&d).await, 1);
}
