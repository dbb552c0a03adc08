//! CRLs: signed by the issuing CA, listing revoked certificates with time and reason,
//! re-signed (with a higher number) after a revocation, cached otherwise.

mod common;

use der::{Decode, Encode};
use serde_json::json;
use x509_cert::crl::CertificateList;

fn verify(crl: &CertificateList, issuing_der: &[u8]) {
    let issuing = x509_cert::Certificate::from_der(issuing_der).unwrap();
    common::assert_crl_signed_by(crl, &issuing);
}

fn number(crl: &CertificateList) -> Vec<u8> {
    let ext = crl
        .tbs_cert_list
        .crl_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_CRL_NUMBER)
        .expect("a CRL number");
    ext.extn_value.as_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn crl_lists_revoked_certificates_and_is_renewed_after_a_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let d = common::start(dir.path()).await;
    let crls = rampart::lifecycle::crl::Crls::new(d.daemon.pipeline.clone());
    let issuing = d.daemon.pipeline.ca().chain()[0].clone();

    let empty = CertificateList::from_der(&crls.current().await.unwrap()).unwrap();
    verify(&empty, &issuing);
    assert!(empty.tbs_cert_list.revoked_certificates.is_none());
    assert!(empty.tbs_cert_list.next_update.is_some());
    // Nothing changed: the same CRL, not a new signature per request.
    assert_eq!(
        crls.current().await.unwrap(),
        empty.to_der().unwrap(),
        "cached while nothing is revoked"
    );

    let mut serials = Vec::new();
    for name in ["a.test", "b.test"] {
        let (status, body) = d
            .enroll(&common::csr(&common::p256(), Some(name), &[name]), "server")
            .await;
        assert_eq!(status, 201, "{body}");
        serials.push(body["serial"].as_str().unwrap().to_string());
    }
    let (status, body) = d
        .post(
            &format!("/api/v1/certificates/{}/revoke", serials[0]),
            json!({"reason": "keyCompromise"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let after = CertificateList::from_der(&crls.current().await.unwrap()).unwrap();
    verify(&after, &issuing);
    assert!(number(&after) > number(&empty), "the CRL number grows");
    let revoked = after.tbs_cert_list.revoked_certificates.unwrap();
    assert_eq!(revoked.len(), 1);
    let entry = &revoked[0];
    assert_eq!(
        rampart_acme::ari::serial_hex(entry.serial_number.as_bytes()),
        serials[0]
    );
    // Reason code extension: keyCompromise (1) as an ENUMERATED.
    let reason = entry
        .crl_entry_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_CRL_REASONS)
        .expect("a reason code");
    assert_eq!(reason.extn_value.as_bytes(), [0x0a, 0x01, 0x01]);
}
