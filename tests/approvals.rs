//! Approvals: a template that requires one holds every request; a manager who is not the
//! requester approves (issued now) or denies it; the protocols answer in their own way
//! while waiting — API `202`, ACME `processing`, EST `202` — and deliver once approved.

mod common;

use std::sync::Arc;

use common::{config_for, csr, p256, start_with};
use rampart::clock::SystemClock;
use rampart::model::{Credential, Identity};
use rampart::store::{AuditAction, RequestState};
use serde_json::{json, Value};

fn bob() -> Identity {
    Identity {
        name: "bob".into(),
        roles: vec!["admin".into()],
        credential: Credential::System,
    }
}

/// Outcome and client address of each audit entry of `action` about `request_id`.
fn audited(
    d: &common::TestDaemon,
    request_id: uuid::Uuid,
    action: AuditAction,
) -> Vec<(String, Value)> {
    d.daemon
        .pipeline
        .store()
        .audit_records(0, 1000)
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.request_id == Some(request_id) && r.entry.action == action)
        .map(|r| (r.entry.outcome, r.entry.details["client"].clone()))
        .collect()
}

async fn daemon(dir: &std::path::Path) -> common::TestDaemon {
    let mut config = config_for(dir);
    for template in config.templates.values_mut() {
        template.approval_required = true;
    }
    start_with(config, Arc::new(SystemClock), None).await
}

#[tokio::test]
async fn api_requests_wait_for_a_second_person() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path()).await;
    let (status, held) = d
        .enroll(&csr(&p256(), None, &["held.example"]), "server")
        .await;
    assert_eq!(
        (status, held["state"].as_str()),
        (202, Some("pending")),
        "{held}"
    );
    let id = held["request_id"].as_str().unwrap().to_string();
    let (_, list) = d.get("/api/v1/approvals").await;
    assert_eq!(list["items"][0]["request_id"], id.as_str());
    // The approver sees where the request came from.
    assert_eq!(list["items"][0]["client"], "127.0.0.1", "{list}");
    let (_, shown) = d.get(&format!("/api/v1/approvals/{id}")).await;
    assert_eq!(shown["client"], "127.0.0.1", "{shown}");

    // Four eyes: the requester (admin) cannot approve their own request.
    let (status, answer) = d
        .post(&format!("/api/v1/approvals/{id}/approve"), json!({}))
        .await;
    assert_eq!(status, 403, "{answer}");
    // Another manager can.
    let record = d
        .daemon
        .pipeline
        .approve(id.parse().unwrap(), &bob())
        .await
        .unwrap();
    assert_eq!(record.metadata["approved_by"], "bob");
    assert_eq!(record.owner, "admin");
    // Both decisions on it, held and approved, name the requester's address.
    let decisions = audited(&d, record.request_id, AuditAction::Decision);
    assert_eq!(
        decisions,
        [
            ("pending".to_string(), json!("127.0.0.1")),
            ("approved".to_string(), json!("127.0.0.1"))
        ]
    );
    // So do the request's events, for the webhooks that tell approvers.
    let events: Vec<_> = d
        .daemon
        .pipeline
        .store()
        .events(0, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.data["request_id"] == json!(record.request_id))
        .map(|e| (e.kind.as_str().to_string(), e.data["client"].clone()))
        .collect();
    assert!(
        events.contains(&("request_pending".into(), json!("127.0.0.1")))
            && events.contains(&("request_approved".into(), json!("127.0.0.1")))
            && events.contains(&("certificate_issued".into(), json!("127.0.0.1"))),
        "{events:?}"
    );
    // And the issuance's audit entry.
    assert_eq!(
        audited(&d, record.request_id, AuditAction::Issued),
        [("ok".to_string(), json!("127.0.0.1"))]
    );
    let (status, _) = d
        .post(&format!("/api/v1/approvals/{id}/approve"), json!({}))
        .await;
    assert_eq!(status, 409, "no longer pending");

    // A denial is final and recorded with its reason.
    let (_, held) = d
        .enroll(&csr(&p256(), None, &["denied.example"]), "server")
        .await;
    let id: uuid::Uuid = held["request_id"].as_str().unwrap().parse().unwrap();
    d.daemon
        .pipeline
        .reject(id, &bob(), "not this week")
        .await
        .unwrap();
    let state = d.daemon.pipeline.request_state(id).await.unwrap().unwrap();
    assert!(
        matches!(state, RequestState::Denied { ref reason } if reason.contains("not this week")),
        "{state:?}"
    );
    let (_, list) = d.get("/api/v1/approvals").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn acme_orders_stay_processing_until_approved() {
    use instant_acme::{
        Account, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path());
    config.acme.allow_private_targets = true;
    for template in config.templates.values_mut() {
        template.approval_required = true;
    }
    // An IP identifier needs no DNS; the http-01 responder answers on 127.0.0.1.
    let tokens: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let served = tokens.clone();
    let http = rampart_acme::validation::test_support::HttpResponder::start(move |path: &str| {
        let token = path.trim_start_matches("/.well-known/acme-challenge/");
        match served.lock().unwrap().iter().find(|(t, _)| t == token) {
            Some((_, k)) => rampart_acme::validation::test_support::HttpReply::ok(k.clone()),
            None => rampart_acme::validation::test_support::HttpReply::status(404),
        }
    })
    .await;
    config.acme.http01_port = http.port;
    let d = start_with(config, Arc::new(SystemClock), None).await;
    let (account, _) = Account::builder_with_root(&d.daemon.ca_bundle)
        .unwrap()
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            d.daemon.acme_url.clone().unwrap(),
            None,
        )
        .await
        .unwrap();
    let mut order = account
        .new_order(&NewOrder::new(&[Identifier::Ip(
            "127.0.0.1".parse().unwrap(),
        )]))
        .await
        .unwrap();
    {
        let mut authorizations = order.authorizations();
        let mut authz = authorizations.next().await.unwrap().unwrap();
        let mut challenge = authz.challenge(ChallengeType::Http01).unwrap();
        tokens.lock().unwrap().push((
            challenge.token.clone(),
            challenge.key_authorization().as_str().to_string(),
        ));
        challenge.set_ready().await.unwrap();
    }
    let retries = RetryPolicy::new()
        .initial_delay(std::time::Duration::from_millis(20))
        .timeout(std::time::Duration::from_secs(10));
    assert_eq!(
        order.poll_ready(&retries).await.unwrap(),
        OrderStatus::Ready
    );
    order.finalize().await.unwrap();
    assert_eq!(order.state().status, OrderStatus::Processing);
    assert_eq!(
        order.refresh().await.unwrap().status,
        OrderStatus::Processing
    );

    approve_the_one_pending(&d).await;
    let chain = order.poll_certificate(&retries).await.unwrap();
    assert!(chain.contains("BEGIN CERTIFICATE"));
    d.daemon.shutdown().await;
}

/// RFC 7030 §4.2.3: 202 while the request waits, the certificate once approved, again for a
/// client that lost that answer; an hour later the same CSR is a new enrollment (a device
/// with a fixed CSR renewing), never the old certificate again.
#[tokio::test]
async fn est_answers_202_then_delivers_the_same_request_once_approved() {
    let lab = EstLab::start(|_| {}).await;
    let (d, clock) = (&lab.d, &lab.clock);
    let body = EstLab::body("waiting.test");
    let first = lab.send(&body).await;
    assert_eq!(first.status().as_u16(), 202);
    assert!(first.headers().contains_key("retry-after"));
    assert_eq!(
        lab.send(&body).await.status().as_u16(),
        202,
        "still waiting"
    );
    let pending = d.daemon.pipeline.store().pending_requests().unwrap();
    assert_eq!(
        pending.len(),
        1,
        "the re-send did not make a second request"
    );
    d.daemon
        .pipeline
        .approve(pending[0].request_id, &bob())
        .await
        .unwrap();
    let delivered = lab.send(&body).await;
    assert_eq!(delivered.status().as_u16(), 200);
    let delivered = delivered.bytes().await.unwrap();
    clock.advance(time::Duration::minutes(59));
    let again = lab.send(&body).await;
    assert_eq!(again.status().as_u16(), 200, "a lost answer is given again");
    assert_eq!(again.bytes().await.unwrap(), delivered);
    assert!(d
        .daemon
        .pipeline
        .store()
        .pending_requests()
        .unwrap()
        .is_empty());

    clock.advance(time::Duration::minutes(2));
    let renewal = lab.send(&body).await;
    assert_eq!(
        renewal.status().as_u16(),
        202,
        "a new enrollment, held again"
    );
    approve_the_one_pending(d).await;
    let renewed = lab.send(&body).await;
    assert_eq!(renewed.status().as_u16(), 200);
    assert_ne!(
        renewed.bytes().await.unwrap(),
        delivered,
        "not the old certificate"
    );
    lab.d.daemon.shutdown().await;
}

/// Approve the one request waiting (as bob), asserting it is the only one.
async fn approve_the_one_pending(d: &common::TestDaemon) {
    let pending = d.daemon.pipeline.store().pending_requests().unwrap();
    assert_eq!(pending.len(), 1, "one request waits");
    d.daemon
        .pipeline
        .approve(pending[0].request_id, &bob())
        .await
        .unwrap();
}

#[tokio::test]
async fn est_resend_records_go_after_their_retention_unless_their_request_still_waits() {
    // Requests wait for ever here: only the retention decides.
    let lab = EstLab::start(|config| config.approvals.pending_expiry_hours = 0).await;
    let d = &lab.d;
    // One request approved whose device never comes back, one still waiting.
    let (gone, waiting) = (EstLab::body("gone.test"), EstLab::body("waiting.test"));
    assert_eq!(lab.send(&gone).await.status().as_u16(), 202);
    approve_the_one_pending(d).await;
    assert_eq!(lab.send(&waiting).await.status().as_u16(), 202);
    let entries = || {
        d.daemon
            .pipeline
            .store()
            .protocol_scan("est.pending", "")
            .unwrap()
            .len()
    };
    assert_eq!(entries(), 2);
    let retain = time::Duration::days(30);
    let prune = || rampart::gateway::retention::prune(&d.daemon.pipeline, None, retain);
    assert_eq!(prune().await.unwrap().est_resends, 0, "none is old enough");

    lab.clock
        .advance(time::Duration::days(30) + time::Duration::minutes(1));
    assert_eq!(prune().await.unwrap().est_resends, 1);
    assert_eq!(entries(), 1);
    // The waiting request is still answered as such; the approved one, sent again after
    // its record went, is a new enrollment.
    assert_eq!(lab.send(&waiting).await.status().as_u16(), 202);
    assert_eq!(
        d.daemon.pipeline.store().pending_requests().unwrap().len(),
        1
    );
    assert_eq!(lab.send(&gone).await.status().as_u16(), 202);
    assert_eq!(
        d.daemon.pipeline.store().pending_requests().unwrap().len(),
        2
    );
    lab.d.daemon.shutdown().await;
}

/// A daemon on a manual clock where every template requires approval, with EST user
/// `dev` (password `pw`; admin role), and a client for its simpleenroll URL.
struct EstLab {
    d: common::TestDaemon,
    clock: rampart::clock::ManualClock,
    client: reqwest::Client,
    url: String,
    _dir: tempfile::TempDir,
}

impl EstLab {
    async fn start(adjust: impl FnOnce(&mut rampart::config::Config)) -> Self {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_for(dir.path());
        for template in config.templates.values_mut() {
            template.approval_required = true;
        }
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let hash = argon2::Argon2::default()
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        config.est.users.insert(
            "dev".into(),
            rampart::config::EstUserConfig {
                password_hash: hash,
                roles: vec!["admin".into()],
            },
        );
        adjust(&mut config);
        let clock = rampart::clock::ManualClock::new(time::OffsetDateTime::now_utc());
        let d = start_with(config, Arc::new(clock.clone()), None).await;
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        for cert in
            reqwest::Certificate::from_pem_bundle(&std::fs::read(&d.daemon.ca_bundle).unwrap())
                .unwrap()
        {
            builder = builder.add_root_certificate(cert);
        }
        let url = format!(
            "https://localhost:{}/.well-known/est/simpleenroll",
            d.daemon.est_addr.unwrap().port()
        );
        EstLab {
            d,
            clock,
            client: builder.build().unwrap(),
            url,
            _dir: dir,
        }
    }

    /// A simpleenroll body (base64 DER) for a fresh key and `name`.
    fn body(name: &str) -> String {
        use base64::Engine;
        let der =
            rampart::pkix::pem::decode(&csr(&p256(), None, &[name]), &["CERTIFICATE REQUEST"])
                .unwrap();
        base64::engine::general_purpose::STANDARD.encode(der)
    }

    /// simpleenroll with `body` as `dev`.
    async fn send(&self, body: &str) -> reqwest::Response {
        self.client
            .post(&self.url)
            .header("content-type", "application/pkcs10")
            .basic_auth("dev", Some("pw"))
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }
}
