//! The admin API end to end: a daemon in-process on 127.0.0.1:0 with a temp data dir,
//! driven over HTTP.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use common::{config_for, csr, fixture, p256, start, start_with};
use der::{Decode, Encode};
use rampart::clock::{ManualClock, SystemClock};
use rampart::model::{CertificateStatus, Identifier};
use rampart::store::{AuditAction, AuditVerification, CertificateQuery, RequestState};
use rcgen::KeyPair;
use serde_json::{json, Value};
use x509_cert::Certificate;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn all_certificates(d: &common::TestDaemon) -> Vec<rampart::model::CertificateRecord> {
    // rampart's own listener certificate is in the inventory too (owner `rampart`).
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
}

#[tokio::test]
async fn first_start_creates_the_ca_and_one_admin_key_and_a_restart_reuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = start(&data).await;
    assert!(first.key.starts_with("rpk_"));
    for key in [
        "ca/root.key.pem",
        "ca/issuing.key.pem",
        "tls/listener.key.pem",
    ] {
        assert_eq!(mode(&data.join(key)), 0o600, "{key}");
    }
    assert_eq!(mode(&data), 0o700);
    let bundle = std::fs::read(data.join("ca-bundle.pem")).unwrap();
    // The secret is stored only as a hash.
    let (key_id, secret) = first
        .key
        .strip_prefix("rpk_")
        .unwrap()
        .split_once('_')
        .unwrap();
    let record = first
        .daemon
        .pipeline
        .store()
        .api_key(key_id)
        .unwrap()
        .unwrap();
    assert_ne!(record.secret_sha256, secret);
    assert_eq!(first.get("/healthz").await.0, 200);
    let key = first.key.clone();
    first.daemon.shutdown().await;

    let second = start_with(config_for(&data), Arc::new(SystemClock), Some(key)).await;
    assert!(second.daemon.new_admin_key.is_none(), "no second admin key");
    assert_eq!(std::fs::read(data.join("ca-bundle.pem")).unwrap(), bundle);
    assert_eq!(
        second.get("/api/v1/certificates").await.0,
        200,
        "the first key still works"
    );
    let audit = second
        .daemon
        .pipeline
        .store()
        .audit_records(0, 100)
        .unwrap();
    let actions: Vec<_> = audit.iter().map(|r| r.entry.action).collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == AuditAction::CaCreated)
            .count(),
        1
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == AuditAction::ApiKeyCreated)
            .count(),
        1
    );
    second.daemon.shutdown().await;
}

#[tokio::test]
async fn enroll_then_list_show_download_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path()).await;

    // Three key types, three names.
    let keys = [
        (p256(), "ecdsa-p256"),
        (
            KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
            "ed25519",
        ),
        (
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap(),
            "rsa-2048",
        ),
    ];
    let mut serials = Vec::new();
    for (i, (key, key_type)) in keys.iter().enumerate() {
        let name = format!("host{i}.example");
        let (status, body) = d
            .enroll(&csr(key, Some(&name), &[&name, "127.0.0.1"]), "server")
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["key_type"], *key_type);
        assert_eq!(body["state"], "issued");
        assert_eq!(body["owner"], "admin");
        let leaf =
            rampart::pkix::pem::decode(body["certificate"].as_str().unwrap(), &["CERTIFICATE"])
                .unwrap();
        let cert = Certificate::from_der(&leaf).unwrap();
        assert_eq!(
            cert.tbs_certificate.subject.to_string(),
            format!("CN={name}")
        );
        let chain =
            rampart::pkix::pem::decode_certificates(body["chain"].as_str().unwrap()).unwrap();
        assert_eq!(chain.len(), 1);
        assert_eq!(
            cert.tbs_certificate.issuer,
            Certificate::from_der(&chain[0])
                .unwrap()
                .tbs_certificate
                .subject
        );
        assert_eq!(
            body["full_chain"].as_str().unwrap(),
            format!(
                "{}{}",
                body["certificate"].as_str().unwrap(),
                body["chain"].as_str().unwrap()
            )
        );
        serials.push(body["serial"].as_str().unwrap().to_string());
    }

    // Show.
    let (status, shown) = d.get(&format!("/api/v1/certificates/{}", serials[0])).await;
    assert_eq!(status, 200);
    assert_eq!(
        shown["sans"],
        json!([{"type": "dns", "value": "host0.example"}, {"type": "ip", "value": "127.0.0.1"}])
    );

    // Filters and pagination.
    let count = |v: &Value| v["items"].as_array().unwrap().len();
    assert_eq!(count(&d.get("/api/v1/certificates?san=host1").await.1), 1);
    assert_eq!(
        count(
            &d.get("/api/v1/certificates?template=server&issuer=local&owner=admin")
                .await
                .1
        ),
        3
    );
    assert_eq!(
        count(&d.get("/api/v1/certificates?template=client").await.1),
        0
    );
    assert_eq!(
        count(
            &d.get("/api/v1/certificates?expiring_within=91d&owner=admin")
                .await
                .1
        ),
        3
    );
    assert_eq!(
        count(&d.get("/api/v1/certificates?expiring_within=30d").await.1),
        0
    );
    let mut seen = Vec::new();
    let mut path = "/api/v1/certificates?limit=1&template=server".to_string();
    loop {
        let (status, page) = d.get(&path).await;
        assert_eq!(status, 200, "{page}");
        assert!(count(&page) <= 1);
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["serial"].as_str().unwrap().to_string()),
        );
        match page["next_after"].as_str() {
            Some(next) => {
                path = format!("/api/v1/certificates?limit=1&template=server&after={next}")
            }
            None => break,
        }
    }
    let mut expected = serials.clone();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(d.get("/api/v1/certificates?limit=0").await.0, 400);
    assert_eq!(d.get("/api/v1/certificates?status=bogus").await.0, 400);
    assert_eq!(d.get("/api/v1/certificates?colour=red").await.0, 400);

    // Downloads.
    let download = |format: &str| {
        let url = format!(
            "{}/api/v1/certificates/{}/download?format={format}",
            d.url, serials[0]
        );
        let request = d.http.get(url).bearer_auth(&d.key);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_string();
            (
                status,
                content_type,
                response.bytes().await.unwrap().to_vec(),
            )
        }
    };
    let (status, content_type, pem) = download("pem").await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/pem-certificate-chain")
    );
    let chain =
        rampart::pkix::pem::decode_certificates(std::str::from_utf8(&pem).unwrap()).unwrap();
    assert_eq!(chain.len(), 2);
    let (_, content_type, der) = download("der").await;
    assert_eq!(content_type, "application/pkix-cert");
    assert_eq!(der, chain[0]);
    let (_, content_type, p7b) = download("p7b").await;
    assert!(content_type.starts_with("application/pkcs7-mime"));
    let info = cms::content_info::ContentInfo::from_der(&p7b).unwrap();
    let signed: cms::signed_data::SignedData = info.content.decode_as().unwrap();
    let mut certs: Vec<Vec<u8>> = signed
        .certificates
        .unwrap()
        .0
        .iter()
        .map(|c| match c {
            cms::cert::CertificateChoices::Certificate(c) => c.to_der().unwrap(),
            _ => panic!("unexpected choice"),
        })
        .collect();
    // A SET OF: DER sorts it, so compare as sets.
    certs.sort();
    let mut sorted_chain = chain.clone();
    sorted_chain.sort();
    assert_eq!(certs, sorted_chain);
    assert_eq!(download("zip").await.0, 400);

    // Revocation.
    let d = &d;
    let revoke = |serial: &str, body: Value| {
        let path = format!("/api/v1/certificates/{serial}/revoke");
        async move { d.post(&path, body).await }
    };
    assert_eq!(
        revoke(&serials[1], json!({"reason": "certificateHold"}))
            .await
            .0,
        400
    );
    assert_eq!(
        revoke(&serials[1], json!({"reason": "sunspots"})).await.0,
        400
    );
    let (status, revoked) = revoke(&serials[1], json!({"reason": "keyCompromise"})).await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revocation"]["reason"], "keyCompromise");
    assert_eq!(revoked["revocation"]["reason_code"], 1);
    let (status, again) = revoke(&serials[1], json!({"reason": "superseded"})).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (409, Some("already_revoked"))
    );
    assert_eq!(revoke("00ff", json!({})).await.0, 404);
    let (_, page) = d.get("/api/v1/certificates?status=revoked").await;
    assert_eq!(page["items"][0]["serial"], serials[1].as_str());
    assert_eq!(
        count(
            &d.get("/api/v1/certificates?status=valid&owner=admin")
                .await
                .1
        ),
        2
    );
    assert_eq!(d.get("/api/v1/certificates/00ff").await.0, 404);

    let store = d.daemon.pipeline.store();
    let records = store.audit_records(0, 1000).unwrap().len() as u64;
    assert!(
        matches!(store.verify_audit().unwrap(), AuditVerification::Intact { records: n, .. } if n == records)
    );
}

#[tokio::test]
async fn bad_input_gets_a_json_error_is_audited_and_stores_no_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path()).await;
    let key = p256();
    let good = csr(&key, Some("a.example"), &["a.example"]);

    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (
            json!({"csr": "garbage", "template": "server"}),
            400,
            "bad_csr",
            None,
        ),
        (
            json!({"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "template": "server"}),
            400,
            "bad_csr",
            Some("malformed_csr"),
        ),
        (
            json!({"csr": fixture("csr/bad-signature.csr.pem"), "template": "server"}),
            400,
            "bad_csr",
            Some("bad_csr_signature"),
        ),
        (
            json!({"csr": fixture("csr/rsa1024.csr.pem"), "template": "server"}),
            403,
            "policy_denied",
            Some("rsa_key_too_small"),
        ),
        (
            json!({"csr": good, "template": "nope"}),
            403,
            "policy_denied",
            Some("unknown_template"),
        ),
        (
            json!({"csr": csr(&key, None, &["example.com"]), "template": "server"}),
            403,
            "policy_denied",
            Some("identifier_not_allowed"),
        ),
        (
            json!({"csr": csr(&key, None, &["10.1.2.3"]), "template": "server"}),
            403,
            "policy_denied",
            Some("identifier_not_allowed"),
        ),
        (
            json!({"csr": csr(&key, Some("b.example"), &["a.example"]), "template": "server"}),
            403,
            "policy_denied",
            Some("common_name_not_in_sans"),
        ),
        (
            json!({"csr": csr(&key, None, &[]), "template": "server"}),
            403,
            "policy_denied",
            Some("no_identifiers"),
        ),
        (
            json!({"csr": good, "template": "server", "validity_days": 1000}),
            403,
            "policy_denied",
            Some("validity_not_allowed"),
        ),
        (json!({"csr": good}), 400, "bad_json", None),
        (
            json!({"csr": good, "template": "server", "colour": "red"}),
            400,
            "bad_json",
            None,
        ),
    ];
    for (body, status, error, rule) in &cases {
        let (got, answer) = d.post("/api/v1/enrollments", body.clone()).await;
        assert_eq!(got, *status, "{body} -> {answer}");
        assert_eq!(answer["error"], *error, "{answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
        if let Some(rule) = rule {
            assert_eq!(answer["rule"], *rule, "{answer}");
            let request_id: uuid::Uuid = answer["request_id"].as_str().unwrap().parse().unwrap();
            let request = d
                .daemon
                .pipeline
                .store()
                .request(request_id)
                .unwrap()
                .unwrap();
            assert!(matches!(request.state, RequestState::Denied { .. }));
        }
    }

    // Not JSON at all, and too large: JSON errors too.
    let raw = |body: Vec<u8>| {
        d.http
            .post(format!("{}/api/v1/enrollments", d.url))
            .bearer_auth(&d.key)
            .body(body)
            .send()
    };
    let response = raw(b"{not json".to_vec()).await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "bad_json");
    let response = raw(vec![b' '; 70_000]).await.unwrap();
    assert_eq!(response.status().as_u16(), 413);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "body_too_large"
    );

    // Authentication.
    let unauthenticated = d
        .http
        .get(format!("{}/api/v1/certificates", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);
    assert!(unauthenticated.headers().contains_key("www-authenticate"));
    assert_eq!(
        unauthenticated.json::<Value>().await.unwrap()["error"],
        "unauthorized"
    );
    let (id, _) = d.key.strip_prefix("rpk_").unwrap().split_once('_').unwrap();
    for bad in [
        format!("rpk_{id}_wrongsecret"),
        "rpk_000000000000_x".into(),
        "nonsense".into(),
    ] {
        // An X-Forwarded-For header is believed only from a trusted proxy (none here).
        let response = d
            .http
            .get(format!("{}/api/v1/certificates", d.url))
            .header("x-forwarded-for", "203.0.113.66")
            .bearer_auth(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
    }
    // The three presented keys are audited (the missing one is not), never their secrets.
    let refused = d.refused_credentials().await;
    let seen: Vec<(&str, &str, &Value)> = refused
        .iter()
        .map(|entry| {
            (
                entry["actor"].as_str().unwrap(),
                entry["reason"].as_str().unwrap(),
                &entry["details"]["key_id"],
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("admin", "wrong API key secret", &json!(id)),
            ("unknown", "unknown API key id", &json!("000000000000")),
            ("unknown", "not an API key", &Value::Null),
        ],
        "{refused:?}"
    );
    assert!(!serde_json::to_string(&refused)
        .unwrap()
        .contains("wrongsecret"));
    // Each from where it came: the TCP peer, whatever the header said.
    for entry in &refused {
        assert_eq!(entry["details"]["client"], "127.0.0.1", "{entry}");
    }
    assert_eq!(d.get("/api/v1/nothing-here").await.0, 404);
    // A known endpoint with the wrong method: 405, a JSON error and `Allow`.
    let response = d
        .http
        .delete(format!("{}/api/v1/enrollments", d.url))
        .bearer_auth(&d.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers().get("allow").unwrap(), "POST");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed", "{body}");

    // Nothing issued, every decision audited with its reason, chain intact.
    assert!(all_certificates(&d).await.is_empty());
    let store = d.daemon.pipeline.store();
    let denials: Vec<_> = store
        .audit_records(0, 1000)
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.action == AuditAction::Decision && r.entry.outcome == "denied")
        .collect();
    assert_eq!(
        denials.len(),
        cases.iter().filter(|c| c.3.is_some()).count()
    );
    assert!(denials
        .iter()
        .all(|r| r.entry.rule.is_some() && !r.entry.reason.is_empty()));
    assert!(
        denials
            .iter()
            .all(|r| r.entry.details["client"] == "127.0.0.1"),
        "{denials:?}"
    );
    assert!(matches!(
        store.verify_audit().unwrap(),
        AuditVerification::Intact { .. }
    ));

    let (_, metrics) = d.get("/metrics").await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(
            r#"rampart_policy_decisions_total{protocol="api",outcome="denied",layer="template"} 3"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"status="413""#));
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn identities_without_manage_see_and_revoke_only_their_own_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path());
    let mut dev = config.roles["admin"].clone();
    dev.manage = false;
    config.roles.insert("dev".into(), dev);
    let admin = start_with(config, Arc::new(SystemClock), None).await;
    let now = time::OffsetDateTime::now_utc();
    let dev_key = rampart::apikeys::generate("alice", vec!["dev".into()], now);
    admin
        .daemon
        .pipeline
        .store()
        .insert_api_key(
            &dev_key.record,
            &rampart::store::AuditEntry {
                time: now,
                request_id: None,
                actor: "test".into(),
                action: AuditAction::ApiKeyCreated,
                outcome: "ok".into(),
                layer: None,
                rule: None,
                reason: "test".into(),
                subject: None,
                details: json!({}),
            },
        )
        .unwrap();
    let alice = common::TestDaemon {
        daemon: admin.daemon,
        url: admin.url.clone(),
        key: dev_key.token,
        http: admin.http.clone(),
    };
    let admin_key = admin.key;
    let key = p256();
    let (status, mine) = alice
        .enroll(&csr(&key, None, &["alice.test"]), "client")
        .await;
    assert_eq!(status, 201, "{mine}");
    assert_eq!(mine["owner"], "alice");

    // An admin certificate alice must not see.
    let theirs = alice
        .http
        .post(format!("{}/api/v1/enrollments", alice.url))
        .bearer_auth(&admin_key)
        .json(&json!({"csr": csr(&key, None, &["admin.test"]), "template": "server"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let their_serial = theirs["serial"].as_str().unwrap();
    let (_, page) = alice.get("/api/v1/certificates?owner=admin").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["owner"], "alice");
    assert_eq!(
        alice
            .get(&format!("/api/v1/certificates/{their_serial}"))
            .await
            .0,
        404
    );
    assert_eq!(
        alice
            .post(
                &format!("/api/v1/certificates/{their_serial}/revoke"),
                json!({})
            )
            .await
            .0,
        404
    );
    let my_serial = mine["serial"].as_str().unwrap();
    assert_eq!(
        alice
            .post(
                &format!("/api/v1/certificates/{my_serial}/revoke"),
                json!({"reason": "superseded"})
            )
            .await
            .0,
        200
    );
    alice.daemon.shutdown().await;
}

#[tokio::test]
async fn the_api_can_be_served_over_https_with_the_listener_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path());
    config.api.tls = true;
    config.server.public_hostname = "ra.internal".into();
    let d = start_with(config, Arc::new(SystemClock), None).await;
    assert!(d.url.starts_with("https://localhost:"), "{}", d.url);
    let (status, body) = d.get("/healthz").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    // The listener certificate names the public hostname and loopback.
    let chain = std::fs::read_to_string(&d.daemon.listener_certificate).unwrap();
    let leaf = rampart::pkix::pem::decode_certificates(&chain)
        .unwrap()
        .remove(0);
    let serial = hex::encode(
        Certificate::from_der(&leaf)
            .unwrap()
            .tbs_certificate
            .serial_number
            .as_bytes(),
    );
    let record = d
        .daemon
        .pipeline
        .store()
        .certificate(serial.trim_start_matches("00"))
        .unwrap()
        .unwrap();
    assert!(record.sans.contains(&Identifier::Dns("ra.internal".into())));
    assert!(record
        .sans
        .contains(&Identifier::Ip("::1".parse().unwrap())));
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn expiry_is_derived_from_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let d = start_with(config_for(dir.path()), Arc::new(clock.clone()), None).await;
    let (status, body) = d.post("/api/v1/enrollments", json!({"csr": csr(&p256(), None, &["short.test"]), "template": "client", "validity_days": 2})).await;
    assert_eq!(status, 201, "{body}");
    clock.advance(time::Duration::days(3));
    let (_, page) = d.get("/api/v1/certificates?status=expired").await;
    assert_eq!(page["items"][0]["serial"], body["serial"]);
    let record = d
        .daemon
        .pipeline
        .store()
        .certificate(body["serial"].as_str().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(record.status_at(clock_now(&d)), CertificateStatus::Expired);
    d.daemon.shutdown().await;
}

fn clock_now(d: &common::TestDaemon) -> time::OffsetDateTime {
    d.daemon.pipeline.clock().now()
}

#[tokio::test]
async fn a_request_interrupted_while_signing_is_marked_failed_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let id = uuid::Uuid::now_v7();
    {
        std::fs::create_dir_all(dir.path().join("store")).unwrap();
        let store = rampart::store::sled_store::SledStore::open(&dir.path().join("store")).unwrap();
        use rampart::store::Store;
        let request = rampart::store::RequestRecord {
            request_id: id,
            protocol: rampart::model::Protocol::Api,
            identity: "admin".into(),
            template: "server".into(),
            identifiers: vec![],
            state: RequestState::Issuing {
                serial: "0abc".into(),
            },
            created_at: now,
            updated_at: now,
            pending: None,
            client: None,
        };
        let decision = rampart::store::AuditEntry {
            time: now,
            request_id: Some(id),
            actor: "admin".into(),
            action: rampart::store::AuditAction::Decision,
            outcome: "approved".into(),
            layer: None,
            rule: None,
            reason: "test".into(),
            subject: None,
            details: serde_json::json!({}),
        };
        assert!(store.begin_issuance(&request, &decision).unwrap());
    }
    let d = start(dir.path()).await;
    let request = d.daemon.pipeline.store().request(id).unwrap().unwrap();
    assert!(
        matches!(request.state, RequestState::Failed { .. }),
        "{request:?}"
    );
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn an_edited_or_truncated_audit_log_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path()).await;
    for name in ["a.example", "b.example"] {
        assert_eq!(
            d.enroll(&csr(&p256(), None, &[name]), "server").await.0,
            201
        );
    }
    let (status, verdict) = d.get("/api/v1/audit/verify").await;
    assert_eq!(
        (status, verdict["result"].as_str()),
        (200, Some("intact")),
        "{verdict}"
    );
    let records = verdict["records"].as_u64().unwrap();
    let key = d.key.clone();
    d.daemon.shutdown().await;

    // Edit one record's reason in place, as someone with file access might.
    let edit = |tamper: &dyn Fn(&sled::Tree)| {
        let db = sled::open(dir.path().join("store")).unwrap();
        tamper(&db.open_tree("audit").unwrap());
        db.flush().unwrap();
    };
    edit(&|tree| {
        // Record 2, stored alone or with the records appended with it.
        for item in tree.iter() {
            let (key, value) = item.unwrap();
            let mut stored: Value = serde_json::from_slice(&value).unwrap();
            let alone = stored["seq"] == 2;
            let record = match stored.as_array_mut() {
                Some(records) => records.iter_mut().find(|r| r["seq"] == 2),
                None => alone.then_some(&mut stored),
            };
            if let Some(record) = record {
                record["entry"]["reason"] = json!("nothing to see here");
                tree.insert(key, serde_json::to_vec(&stored).unwrap())
                    .unwrap();
                return;
            }
        }
        panic!("no audit record 2");
    });
    let d = start_with(
        config_for(dir.path()),
        Arc::new(SystemClock),
        Some(key.clone()),
    )
    .await;
    let (_, verdict) = d.get("/api/v1/audit/verify").await;
    assert_eq!(
        (verdict["result"].as_str(), verdict["seq"].as_u64()),
        (Some("broken"), Some(2)),
        "{verdict}"
    );
    d.daemon.shutdown().await;

    // Restore nothing, but cut the tail instead on a fresh copy: truncation is caught too.
    let dir2 = tempfile::tempdir().unwrap();
    let d = start(dir2.path()).await;
    assert_eq!(
        d.enroll(&csr(&p256(), None, &["c.example"]), "server")
            .await
            .0,
        201
    );
    let key2 = d.key.clone();
    let (_, before) = d.get("/api/v1/audit/verify").await;
    d.daemon.shutdown().await;
    {
        let db = sled::open(dir2.path().join("store")).unwrap();
        let tree = db.open_tree("audit").unwrap();
        let (last, _) = tree.last().unwrap().unwrap();
        tree.remove(last).unwrap();
        db.flush().unwrap();
    }
    let d = start_with(config_for(dir2.path()), Arc::new(SystemClock), Some(key2)).await;
    let (_, verdict) = d.get("/api/v1/audit/verify").await;
    assert_eq!(verdict["result"], "broken", "{verdict} (before: {before})");
    assert!(
        verdict["reason"].as_str().unwrap().contains("ends after"),
        "{verdict}"
    );
    assert!(records > 2);
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn policy_check_decides_without_issuing_or_recording() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path()).await;
    let store = d.daemon.pipeline.store().clone();
    let audit_before = store.audit_records(0, 1000).unwrap().len();

    let good = csr(&p256(), Some("ok.example"), &["ok.example"]);
    let (status, answer) = d
        .post(
            "/api/v1/policy/check",
            json!({"csr": good, "template": "server"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "approved");
    assert_eq!(answer["validity_days"], 90);
    let layers: Vec<_> = answer["trace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["layer"].clone())
        .collect();
    assert_eq!(
        layers,
        [
            json!("identity"),
            json!("names"),
            json!("resource"),
            json!("template")
        ]
    );

    let foreign = csr(&p256(), None, &["www.google.com"]);
    let (_, answer) = d
        .post(
            "/api/v1/policy/check",
            json!({"csr": foreign, "template": "server"}),
        )
        .await;
    assert_eq!(
        (answer["decision"].as_str(), answer["rule"].as_str()),
        (Some("denied"), Some("identifier_not_allowed"))
    );

    // For another identity and its roles (a manager may ask).
    let (_, answer) = d
        .post(
            "/api/v1/policy/check",
            json!({"csr": good, "template": "server", "identity": "bob", "roles": ["nobody"]}),
        )
        .await;
    assert_eq!(
        (answer["identity"].as_str(), answer["rule"].as_str()),
        (Some("bob"), Some("no_role"))
    );

    assert!(
        all_certificates(&d).await.is_empty(),
        "a dry run issued something"
    );
    assert_eq!(
        store.audit_records(0, 1000).unwrap().len(),
        audit_before,
        "a dry run was recorded"
    );
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn a_flood_of_refused_api_keys_is_audited_within_bounds_per_actor_and_per_minute_and_counted_in_full(
) {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let clock = ManualClock::new(
        now.replace_second(0)
            .unwrap()
            .replace_nanosecond(0)
            .unwrap(),
    );
    let d = start_with(config_for(dir.path()), Arc::new(clock.clone()), None).await;
    let (admin_key_id, _) = d.key.strip_prefix("rpk_").unwrap().split_once('_').unwrap();
    let refuse = |token: String| {
        let d = &d;
        async move {
            let response = d
                .http
                .get(format!("{}/api/v1/certificates", d.url))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 401);
        }
    };
    // A flood of guesses at unknown key ids takes its actor's share of the minute only:
    // the wrong secrets for the admin's real key that follow are all recorded.
    for _ in 0..70 {
        refuse("rpk_000000000000_guess".into()).await;
    }
    for _ in 0..5 {
        refuse(format!("rpk_{admin_key_id}_guess")).await;
    }
    let refused = d.refused_credentials().await;
    let actors = |entries: &[serde_json::Value]| {
        entries
            .iter()
            .map(|entry| entry["actor"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        actors(&refused),
        [
            vec!["unknown".to_string(); 10],
            vec!["admin".to_string(); 5]
        ]
        .concat()
    );
    // The first record after the flood tells what went unrecorded, and under whom.
    let first_after = &refused[10]["details"];
    assert_eq!(first_after["unrecorded_before"], 60, "{first_after}");
    assert_eq!(
        first_after["unrecorded_by_actor"],
        json!({ "unknown": 60 }),
        "{first_after}"
    );
    assert_eq!(
        refused
            .iter()
            .filter(|entry| entry["details"].get("unrecorded_before").is_some())
            .count(),
        1
    );
    // A new minute records the flooding actor again.
    clock.advance(time::Duration::minutes(1));
    refuse("rpk_000000000000_guess".into()).await;
    let refused = d.refused_credentials().await;
    assert_eq!(refused.len(), 16);
    assert_eq!(refused[15]["actor"], "unknown");
    let (_, metrics) = d.get("/metrics").await;
    assert!(
        metrics.as_str().unwrap().contains(
            r#"rampart_policy_decisions_total{protocol="api",outcome="denied",layer="identity"} 76"#
        ),
        "{metrics}"
    );
    assert!(matches!(
        d.daemon.pipeline.store().verify_audit().unwrap(),
        AuditVerification::Intact { .. }
    ));
    d.daemon.shutdown().await;
}
