//! CRLs and OCSP. CRLs: signed by the issuing CA, listing revoked certificates with time and reason,
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

/// An OCSP request for `cert` issued by `issuing` (SHA-1 CertID, as openssl sends).
fn ocsp_request(cert: &x509_cert::Certificate, issuing: &x509_cert::Certificate) -> Vec<u8> {
    let sha1 = |data: &[u8]| {
        der::asn1::OctetString::new(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, data).as_ref(),
        )
        .unwrap()
    };
    let req_cert = x509_ocsp::CertId {
        hash_algorithm: spki::AlgorithmIdentifierOwned {
            oid: const_oid::ObjectIdentifier::new_unwrap("1.3.14.3.2.26"),
            parameters: Some(der::Any::null()),
        },
        issuer_name_hash: sha1(&issuing.tbs_certificate.subject.to_der().unwrap()),
        issuer_key_hash: sha1(
            issuing
                .tbs_certificate
                .subject_public_key_info
                .subject_public_key
                .raw_bytes(),
        ),
        serial_number: cert.tbs_certificate.serial_number.clone(),
    };
    x509_ocsp::OcspRequest {
        tbs_request: x509_ocsp::TbsRequest {
            version: x509_ocsp::Version::V1,
            requestor_name: None,
            request_list: vec![x509_ocsp::Request {
                req_cert,
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .unwrap()
}

/// The status in a successful OCSP response, after checking the CA's signature on it.
fn ocsp_status(response: &[u8], issuing: &x509_cert::Certificate) -> x509_ocsp::CertStatus {
    let response = x509_ocsp::OcspResponse::from_der(response).unwrap();
    assert_eq!(
        response.response_status,
        x509_ocsp::OcspResponseStatus::Successful
    );
    let bytes = response.response_bytes.unwrap();
    let basic = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
    let key = issuing
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        key,
    )
    .verify(
        &basic.tbs_response_data.to_der().unwrap(),
        basic.signature.raw_bytes(),
    )
    .expect("the OCSP response is signed by the issuing CA");
    basic.tbs_response_data.responses[0].cert_status
}

#[tokio::test(flavor = "multi_thread")]
async fn ocsp_answers_good_then_revoked_and_refuses_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let d = common::start(dir.path()).await;
    let responder = rampart::lifecycle::ocsp::Responder::new(d.daemon.pipeline.clone()).unwrap();
    let issuing = x509_cert::Certificate::from_der(&d.daemon.pipeline.ca().chain()[0]).unwrap();
    let (status, body) = d
        .enroll(
            &common::csr(&common::p256(), Some("o.test"), &["o.test"]),
            "server",
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let pem = body["certificate"].as_str().unwrap();
    let der = rampart::pkix::pem::decode_certificates(pem)
        .unwrap()
        .remove(0);
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    let request = ocsp_request(&cert, &issuing);
    assert_eq!(
        ocsp_status(&responder.respond(&request).await, &issuing),
        x509_ocsp::CertStatus::good()
    );
    let serial = body["serial"].as_str().unwrap();
    let (status, _) = d
        .post(
            &format!("/api/v1/certificates/{serial}/revoke"),
            json!({"reason": "superseded"}),
        )
        .await;
    assert_eq!(status, 200);
    match ocsp_status(&responder.respond(&request).await, &issuing) {
        x509_ocsp::CertStatus::Revoked(info) => assert_eq!(
            info.revocation_reason,
            Some(x509_cert::ext::pkix::CrlReason::Superseded)
        ),
        other => panic!("expected revoked, got {other:?}"),
    }
    let garbage = x509_ocsp::OcspResponse::from_der(&responder.respond(b"junk").await).unwrap();
    assert_eq!(
        garbage.response_status,
        x509_ocsp::OcspResponseStatus::MalformedRequest
    );
}
