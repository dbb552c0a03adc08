//! Template rules beyond key and lifetime: rate limits over a rolling day (persisted, not
//! spent by dry runs), approval for wildcards and long lifetimes, approver roles per
//! template, and expiry of requests nobody decides on.

mod common;

use std::sync::Arc;

use common::{config_for, csr, p256, start_with};
use rampart::clock::{ManualClock, SystemClock};
use rampart::config::RoleConfig;
use rampart::model::{Credential, Identity};
use rampart::pipeline::ApprovalError;
use rampart::store::RequestState;
use serde_json::json;
use time::Duration;

fn identity(name: &str, role: &str) -> Identity {
    Identity {
        name: name.into(),
        roles: vec![role.into()],
        credential: Credential::System,
    }
}

/// The test configuration with the `server` template limited to `limit` a day.
fn server_limited_to(dir: &std::path::Path, limit: u32) -> rampart::config::Config {
    let mut config = config_for(dir);
    config
        .templates
        .get_mut("server")
        .unwrap()
        .rate_limit_per_day = Some(limit);
    config
}

#[tokio::test]
async fn rate_limits_count_a_rolling_day_and_dry_runs_spend_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = server_limited_to(dir.path(), 2);
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let d = start_with(config, Arc::new(clock.clone()), None).await;

    let request = |name: &str| csr(&p256(), Some(name), &[name]);
    for _ in 0..3 {
        let (status, check) = d
            .post(
                "/api/v1/policy/check",
                json!({"csr": request("dry.test"), "template": "server"}),
            )
            .await;
        assert_eq!(status, 200, "{check}");
        assert_eq!(check["decision"], "approved", "{check}");
    }
    for name in ["r1.test", "r2.test"] {
        let (status, body) = d.enroll(&request(name), "server").await;
        assert_eq!(status, 201, "dry runs spent the limit: {body}");
    }
    let (status, body) = d.enroll(&request("r3.test"), "server").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["rule"], "rate_limited");
    assert!(
        body["message"].as_str().unwrap().contains("2 of 2"),
        "{body}"
    );
    // The audit log explains it: filtered by decision, by name and by identity.
    let (status, page) = d.get("/api/v1/audit?decision=denied").await;
    assert_eq!(status, 200, "{page}");
    let denials = page["items"].as_array().unwrap();
    assert_eq!(denials.len(), 1, "{page}");
    assert_eq!(denials[0]["entry"]["rule"], "rate_limited");
    let (_, by_name) = d.get("/api/v1/audit?name=R3.TEST").await;
    assert_eq!(by_name["items"].as_array().unwrap().len(), 1, "{by_name}");
    let (_, by_name) = d.get("/api/v1/audit?name=r1.test&action=issued").await;
    assert_eq!(by_name["items"].as_array().unwrap().len(), 1, "{by_name}");
    let (_, nobody) = d.get("/api/v1/audit?identity=mallory").await;
    assert_eq!(nobody["items"], json!([]));
    let (_, first) = d.get("/api/v1/audit?limit=1").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let after = first["next_after"].as_u64().unwrap();
    let (_, second) = d.get(&format!("/api/v1/audit?limit=1&after={after}")).await;
    assert!(second["items"][0]["seq"].as_u64().unwrap() > after);
    let (status, _) = d.get("/api/v1/audit?limit=x").await;
    assert_eq!(status, 400);
    // Other templates and other identities are not affected.
    let (status, _) = d.enroll(&request("c1.test"), "client").await;
    assert_eq!(status, 201);

    // A day later the window has moved on.
    clock.advance(Duration::hours(25));
    let (status, check) = d
        .post(
            "/api/v1/policy/check",
            json!({"csr": request("r4.test"), "template": "server"}),
        )
        .await;
    assert_eq!(status, 200);
    let template_step = check["trace"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["layer"] == "template")
        .unwrap()
        .clone();
    assert!(
        template_step["detail"]
            .as_str()
            .unwrap()
            .contains("1 of 2 today"),
        "{check}"
    );
    let (status, body) = d.enroll(&request("r4.test"), "server").await;
    assert_eq!(status, 201, "{body}");
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_of_one_identity_cannot_pass_its_limit_together() {
    let dir = tempfile::tempdir().unwrap();
    let config = server_limited_to(dir.path(), 5);
    let d = Arc::new(start_with(config.clone(), Arc::new(SystemClock), None).await);

    // 16 at once: exactly 5 are issued, whatever the interleaving; the others are refused
    // with the limit's rule.
    let requests: Vec<_> = (0..16)
        .map(|n| {
            let d = d.clone();
            let name = format!("c{n}.test");
            let csr = csr(&p256(), Some(&name), &[&name]);
            tokio::spawn(async move { d.enroll(&csr, "server").await })
        })
        .collect();
    let mut issued = 0;
    for request in requests {
        let (status, body) = request.await.unwrap();
        match status {
            201 => issued += 1,
            429 => assert_eq!(body["rule"], "rate_limited", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(issued, 5);
    // Another identity has its own count.
    let token = d.new_api_key("ci", &["admin"]).await;
    let status = d
        .http
        .post(format!("{}/api/v1/enrollments", d.url))
        .bearer_auth(token)
        .json(&json!({"csr": csr(&p256(), Some("o.test"), &["o.test"]), "template": "server"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 201);

    // The count is kept across a restart.
    let d = Arc::into_inner(d).expect("no request left");
    let key = d.key.clone();
    d.daemon.shutdown().await;
    let d = start_with(config, Arc::new(SystemClock), Some(key)).await;
    let (status, body) = d
        .enroll(&csr(&p256(), Some("r.test"), &["r.test"]), "server")
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("5 of 5"),
        "{body}"
    );
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn wildcards_and_long_lifetimes_wait_for_the_templates_approvers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path());
    let server = config.templates.get_mut("server").unwrap();
    server.approval_for_wildcards = true;
    server.approval_above_days = Some(100);
    server.approvers = vec!["security".into()];
    config.roles.insert(
        "security".into(),
        RoleConfig {
            templates: vec![],
            dns_names: vec![],
            ip_ranges: vec![],
            email_domains: vec![],
            uri_prefixes: vec![],
            manage: false,
            dns_checks: None,
        },
    );
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let d = start_with(config, Arc::new(clock.clone()), None).await;
    let pipeline = d.daemon.pipeline.clone();

    // Plain names with the default lifetime: issued at once.
    let (status, _) = d
        .enroll(&csr(&p256(), Some("plain.test"), &["plain.test"]), "server")
        .await;
    assert_eq!(status, 201);
    // A wildcard waits.
    let (status, wildcard) = d.enroll(&csr(&p256(), None, &["*.w.test"]), "server").await;
    assert_eq!(status, 202, "{wildcard}");
    assert!(wildcard["reason"].as_str().unwrap().contains("wildcard"));
    // So does a lifetime above the threshold.
    let (status, long) = d
        .post(
            "/api/v1/enrollments",
            json!({"csr": csr(&p256(), None, &["long.test"]), "template": "server", "validity_days": 200}),
        )
        .await;
    assert_eq!(status, 202, "{long}");
    assert!(long["reason"].as_str().unwrap().contains("200 days"));

    // What waits can be inspected.
    let wildcard_id = wildcard["request_id"].as_str().unwrap().parse().unwrap();
    let (status, shown) = d.get(&format!("/api/v1/approvals/{wildcard_id}")).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["state"]["state"], "pending");
    assert_eq!(shown["identifiers"][0]["value"], "*.w.test");
    assert!(shown["csr"]
        .as_str()
        .unwrap()
        .contains("CERTIFICATE REQUEST"));
    let (status, _) = d.get("/api/v1/approvals/not-a-uuid").await;
    assert_eq!(status, 404);
    // A manager without the template's approver role cannot approve; a security officer can.
    let (status, answer) = d
        .post(
            &format!("/api/v1/approvals/{wildcard_id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(status, 403, "{answer}");
    assert!(matches!(
        pipeline
            .approve(wildcard_id, &identity("carol", "admin"))
            .await,
        Err(ApprovalError::NotAnApprover)
    ));
    let issued = pipeline
        .approve(wildcard_id, &identity("sam", "security"))
        .await
        .unwrap();
    assert_eq!(issued.metadata["approved_by"], "sam");

    // Nobody decides on the long one: after pending_expiry_hours (72) it is denied.
    let long_id = long["request_id"].as_str().unwrap().parse().unwrap();
    clock.advance(Duration::hours(73));
    assert_eq!(pipeline.expire_pending().await.unwrap(), 1);
    let state = pipeline.request_state(long_id).await.unwrap().unwrap();
    assert!(
        matches!(&state, RequestState::Denied { reason } if reason.contains("72 hours")),
        "{state:?}"
    );
    assert!(matches!(
        pipeline
            .approve(long_id, &identity("sam", "security"))
            .await,
        Err(ApprovalError::NotPending)
    ));
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn email_and_uri_names_follow_the_roles_domains_and_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path());
    let admin = config.roles.get_mut("admin").unwrap();
    admin.email_domains = vec!["example.test".into(), ".staff.example.test".into()];
    admin.uri_prefixes = vec!["spiffe://prod.example.test/".into()];
    let d = start_with(
        config,
        Arc::new(ManualClock::new(time::OffsetDateTime::now_utc())),
        None,
    )
    .await;
    let request = |sans: Vec<rcgen::SanType>| {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = sans;
        params.serialize_request(&p256()).unwrap().pem().unwrap()
    };
    let email = |a: &str| rcgen::SanType::Rfc822Name(a.try_into().unwrap());
    let uri = |u: &str| rcgen::SanType::URI(u.try_into().unwrap());

    let (status, body) = d
        .enroll(
            &request(vec![
                email("alice@example.test"),
                email("bob@it.staff.example.test"),
            ]),
            "client",
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let pem = body["certificate"].as_str().unwrap();
    let der = rampart::pkix::pem::decode_certificates(pem)
        .unwrap()
        .remove(0);
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    use der::Encode;
    let san = cert
        .tbs_certificate
        .extensions
        .unwrap()
        .into_iter()
        .find(|e| e.extn_id.to_string() == "2.5.29.17")
        .unwrap();
    let names = x509_cert::ext::pkix::SubjectAltName::from_der(san.extn_value.as_bytes()).unwrap();
    assert!(
        matches!(&names.0[0], x509_cert::ext::pkix::name::GeneralName::Rfc822Name(a) if a.as_str() == "alice@example.test"),
        "{:?}",
        names.0[0].to_der()
    );
    assert_eq!(body["sans"][0]["type"], "email", "{body}");

    let (status, body) = d
        .enroll(
            &request(vec![uri("spiffe://prod.example.test/ns/web/sa/api")]),
            "client",
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["sans"][0]["value"],
        "spiffe://prod.example.test/ns/web/sa/api"
    );

    for sans in [
        vec![email("mallory@example.org")],
        vec![email("eve@staff.example.test")],
        vec![uri("spiffe://dev.example.test/ns/web")],
    ] {
        let (status, body) = d.enroll(&request(sans), "client").await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["rule"], "identifier_not_allowed", "{body}");
    }
    d.daemon.shutdown().await;
}
