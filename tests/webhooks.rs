//! Webhooks: events from the outbox reach a local receiver signed per Standard Webhooks,
//! failures are retried and dead-lettered, replays re-send, and events queued while the
//! receiver was unreachable arrive after a restart. Events past their retention leave the
//! outbox once delivered, never before.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::hmac;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};

use rampart::clock::{ManualClock, SystemClock};
use rampart::config::{Config, WebhookEndpointConfig};
use rampart::lifecycle::webhooks::Webhooks;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Debug, Clone)]
struct Received {
    id: String,
    body: Value,
}

/// A receiver that checks every signature itself and answers 500 while `failures` > 0.
#[derive(Debug, Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    attempts: Arc<Mutex<HashMap<String, u32>>>,
    failures: Arc<Mutex<u32>>,
}

/// Standard Webhooks verification, written out from the specification.
fn signature_valid(headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return false;
    };
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    if (time::OffsetDateTime::now_utc().unix_timestamp() - ts).abs() > 300 {
        return false;
    }
    let key_bytes = base64::engine::general_purpose::STANDARD
        .decode(SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
    let mut message = format!("{id}.{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, &message));
    signatures
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    assert!(signature_valid(&headers, &body), "bad webhook signature");
    let id = headers["webhook-id"].to_str().unwrap().to_string();
    *receiver
        .attempts
        .lock()
        .unwrap()
        .entry(id.clone())
        .or_default() += 1;
    {
        let mut failures = receiver.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    receiver.received.lock().unwrap().push(Received {
        id,
        body: serde_json::from_slice(&body).unwrap(),
    });
    StatusCode::NO_CONTENT
}

async fn start_receiver(receiver: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

fn config_with_hook(dir: &std::path::Path, url: &str, max_attempts: u32) -> Config {
    let mut config = common::config_for(dir);
    let secret_file = dir.join("hook.whsec");
    rampart::files::write_secret(&secret_file, SECRET.as_bytes()).unwrap();
    config.webhooks.initial_backoff_ms = 20;
    config.webhooks.max_backoff_seconds = 1;
    config.webhooks.max_attempts = max_attempts;
    config.webhooks.endpoints.insert(
        "hook".into(),
        WebhookEndpointConfig {
            url: url.into(),
            secret_file: Some(secret_file),
            secret_env: None,
            events: vec![],
            templates: vec![],
        },
    );
    config
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Enroll `name` with the `server` template; its serial.
async fn enroll_server(d: &common::TestDaemon, name: &str) -> String {
    let (status, body) = d
        .enroll(&common::csr(&common::p256(), Some(name), &[name]), "server")
        .await;
    assert_eq!(status, 201, "{body}");
    body["serial"].as_str().unwrap().to_string()
}

/// [`Webhooks::prune_outbox`] until it removes something (the worker records its cursor
/// just after the 2xx, so the first tries may find the delivered events still ahead of it);
/// how many it removed.
async fn prune_once_delivered(webhooks: &Webhooks) -> usize {
    for _ in 0..100 {
        let removed = webhooks.prune_outbox().unwrap();
        if removed > 0 {
            return removed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    0
}

/// Replay endpoint `hook`'s dead letters through the API: `queued` of them, after which the
/// receiver has `received` events in all.
async fn replay_dead_letters(
    d: &common::TestDaemon,
    receiver: &Receiver,
    queued: usize,
    received: usize,
) {
    let (status, answer) = d
        .post(
            "/api/v1/webhooks/hook/replay",
            json!({"dead_letters": true}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["queued"], queued);
    wait_for("the replayed events", || {
        receiver.received.lock().unwrap().len() == received
    })
    .await;
}

fn of_type(receiver: &Receiver, kind: &str) -> Vec<Received> {
    receiver
        .received
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.body["type"] == kind)
        .cloned()
        .collect()
}

#[tokio::test]
async fn events_are_signed_retried_and_carry_what_pipelines_need() {
    let receiver = Receiver::default();
    *receiver.failures.lock().unwrap() = 2;
    let url = start_receiver(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let d = common::start_with(
        config_with_hook(dir.path(), &url, 10),
        Arc::new(SystemClock),
        None,
    )
    .await;

    let serial = enroll_server(&d, "hook.test").await;
    let (status, _) = d
        .post(
            &format!("/api/v1/certificates/{serial}/revoke"),
            json!({"reason": "superseded"}),
        )
        .await;
    assert_eq!(status, 200);

    wait_for("issued and revoked events", || {
        !of_type(&receiver, "certificate_revoked").is_empty()
    })
    .await;
    let issued = of_type(&receiver, "certificate_issued");
    let ours: Vec<_> = issued
        .iter()
        .filter(|r| r.body["data"]["serial"] == serial.as_str())
        .collect();
    assert_eq!(ours.len(), 1, "delivered once after the retries");
    let data = &ours[0].body["data"];
    assert_eq!(data["subject"], "CN=hook.test");
    assert_eq!(data["sans"], json!(["dns:hook.test"]));
    assert_eq!(data["template"], "server");
    assert_eq!(data["requester"], "admin");
    assert_eq!(data["thumbprint_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(data["thumbprint_sha1"].as_str().unwrap().len(), 40);
    assert!(data["not_after"].as_str().unwrap().ends_with('Z'));
    // The first delivery failed twice (500) and was retried with the same webhook-id.
    let first_id = &receiver.received.lock().unwrap()[0].id.clone();
    assert_eq!(receiver.attempts.lock().unwrap()[first_id], 3);
    let revoked = of_type(&receiver, "certificate_revoked");
    assert_eq!(revoked[0].body["data"]["reason"], "superseded");
    assert_eq!(revoked[0].body["data"]["serial"], serial.as_str());

    let (status, list) = d.get("/api/v1/webhooks").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list[0]["name"], "hook");
    assert_eq!(list[0]["dead_letters"], json!([]));
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn dead_letters_are_kept_and_replayed() {
    let receiver = Receiver::default();
    *receiver.failures.lock().unwrap() = 1000;
    let url = start_receiver(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let d = common::start_with(
        config_with_hook(dir.path(), &url, 2),
        Arc::new(SystemClock),
        None,
    )
    .await;
    enroll_server(&d, "dead.test").await;
    let mut dead = Vec::new();
    for _ in 0..200 {
        let (_, list) = d.get("/api/v1/webhooks").await;
        dead = list[0]["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if list[0]["backlog"] == 0 && !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!dead.is_empty(), "events were dead-lettered");
    assert!(dead.iter().all(|l| l["attempts"] == 2));
    assert!(dead[0]["last_error"].as_str().unwrap().contains("500"));
    assert!(receiver.received.lock().unwrap().is_empty());

    // The receiver recovers; the operator replays the dead letters.
    *receiver.failures.lock().unwrap() = 0;
    replay_dead_letters(&d, &receiver, dead.len(), dead.len()).await;
    let (_, list) = d.get("/api/v1/webhooks").await;
    assert_eq!(list[0]["dead_letters"], json!([]));

    // Bad replays are refused with 4xx.
    let (status, _) = d
        .post("/api/v1/webhooks/hook/replay", json!({"seq": 99999}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = d
        .post("/api/v1/webhooks/nope/replay", json!({"from": 0}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = d
        .post("/api/v1/webhooks/hook/replay", json!({"from": 0, "seq": 1}))
        .await;
    assert_eq!(status, 400);
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn events_queued_while_the_receiver_is_down_arrive_after_a_restart() {
    // Nothing listens at first: every attempt fails with a connection error.
    let placeholder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = placeholder.local_addr().unwrap().port();
    drop(placeholder);
    let url = format!("http://127.0.0.1:{port}/hook");
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_hook(dir.path(), &url, 1000);
    let d = common::start_with(config.clone(), Arc::new(SystemClock), None).await;
    let key = d.key.clone();
    let mut serials = Vec::new();
    for name in ["r1.test", "r2.test", "r3.test"] {
        serials.push(enroll_server(&d, name).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.daemon.shutdown().await;

    // The receiver comes up on that port; the daemon restarts on the same store.
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let d = common::start_with(config, Arc::new(SystemClock), Some(key)).await;
    wait_for("every certificate_issued event", || {
        let delivered: Vec<String> = of_type(&receiver, "certificate_issued")
            .iter()
            .filter_map(|r| r.body["data"]["serial"].as_str().map(str::to_string))
            .collect();
        serials.iter().all(|s| delivered.contains(s))
    })
    .await;
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn delivered_events_leave_the_outbox_after_their_retention_and_undelivered_ones_stay() {
    let receiver = Receiver::default();
    let url = start_receiver(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_hook(dir.path(), &url, 1000);
    assert_eq!(config.webhooks.retain_events_days, 30, "the default");
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let d = common::start_with(config, Arc::new(clock.clone()), None).await;
    let store = d.daemon.pipeline.store().clone();
    let webhooks = Webhooks::new(d.daemon.pipeline.clone()).unwrap();
    let in_outbox = || -> Vec<String> {
        store
            .events(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.data["serial"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let delivered = |serial: &str| {
        of_type(&receiver, "certificate_issued")
            .iter()
            .any(|r| r.body["data"]["serial"] == serial)
    };

    // The daemon's own listener certificates come first, then ours.
    let first = enroll_server(&d, "old.test").await;
    wait_for("the first event", || delivered(&first)).await;
    let old = in_outbox();
    assert_eq!(old.last(), Some(&first));
    assert_eq!(webhooks.prune_outbox().unwrap(), 0, "younger than 30 days");
    assert_eq!(in_outbox(), old);

    // A month later the receiver is down when the second certificate is issued.
    clock.advance(time::Duration::days(31));
    *receiver.failures.lock().unwrap() = 1_000_000;
    let second = enroll_server(&d, "new.test").await;
    assert_eq!(
        webhooks.prune_outbox().unwrap(),
        old.len(),
        "the delivered month-old events"
    );
    assert_eq!(in_outbox(), std::slice::from_ref(&second));

    // Another month: the second event is old, but its endpoint has not got past it.
    clock.advance(time::Duration::days(31));
    assert_eq!(webhooks.prune_outbox().unwrap(), 0);
    assert_eq!(in_outbox(), std::slice::from_ref(&second));

    // The receiver recovers; once delivered, the event goes too. Numbering goes on.
    *receiver.failures.lock().unwrap() = 0;
    wait_for("the second event", || delivered(&second)).await;
    let next = store.outbox_next().unwrap();
    prune_once_delivered(&webhooks).await;
    assert!(in_outbox().is_empty());
    assert_eq!(store.outbox_next().unwrap(), next);
    let (status, list) = d.get("/api/v1/webhooks").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list[0]["backlog"], 0);
    let third = enroll_server(&d, "later.test").await;
    wait_for("the third event", || delivered(&third)).await;
    let key = d.key.clone();
    let config = d.daemon.pipeline.config().as_ref().clone();
    drop((store, webhooks));
    d.daemon.shutdown().await;

    // The daemon prunes by itself when it starts (and hourly).
    clock.advance(time::Duration::days(31));
    let d = common::start_with(config, Arc::new(clock.clone()), Some(key)).await;
    let store = d.daemon.pipeline.store().clone();
    wait_for("the start's pruning", || {
        store
            .events(0, 100)
            .unwrap()
            .iter()
            .all(|e| e.data["serial"] != third.as_str())
    })
    .await;
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn a_dead_lettered_event_outlives_its_retention_until_it_is_replayed() {
    let receiver = Receiver::default();
    *receiver.failures.lock().unwrap() = 1000;
    let url = start_receiver(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let d = common::start_with(
        config_with_hook(dir.path(), &url, 2),
        Arc::new(clock.clone()),
        None,
    )
    .await;
    let store = d.daemon.pipeline.store().clone();
    let webhooks = Webhooks::new(d.daemon.pipeline.clone()).unwrap();
    let in_outbox = || -> Vec<u64> {
        store
            .events(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    };
    let dead_letters = || {
        let d = &d;
        async move {
            let (_, list) = d.get("/api/v1/webhooks").await;
            let dead: Vec<u64> = list[0]["dead_letters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["seq"].as_u64().unwrap())
                .collect();
            (list[0]["backlog"] == 0, dead)
        }
    };

    // Every event so far is dead-lettered while the receiver fails.
    enroll_server(&d, "dead.test").await;
    let mut dead = Vec::new();
    for _ in 0..200 {
        let (caught_up, letters) = dead_letters().await;
        dead = letters;
        if caught_up && !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!dead.is_empty(), "events were dead-lettered");
    assert_eq!(in_outbox(), dead);

    // The receiver recovers and gets the next event; a month later that one goes, the
    // dead-lettered ones stay, however old.
    *receiver.failures.lock().unwrap() = 0;
    let delivered = enroll_server(&d, "ok.test").await;
    wait_for("the delivered event", || {
        of_type(&receiver, "certificate_issued")
            .iter()
            .any(|r| r.body["data"]["serial"] == delivered.as_str())
    })
    .await;
    clock.advance(time::Duration::days(31));
    let removed = prune_once_delivered(&webhooks).await;
    assert_eq!(removed, 1, "the delivered event");
    assert_eq!(in_outbox(), dead, "the dead-lettered events stay");
    assert_eq!(webhooks.prune_outbox().unwrap(), 0);

    // Replayed and delivered, they go too.
    replay_dead_letters(&d, &receiver, dead.len(), dead.len() + 1).await;
    // Each replay leaves its queue just after its 2xx.
    for _ in 0..100 {
        if in_outbox().is_empty() {
            break;
        }
        webhooks.prune_outbox().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(in_outbox().is_empty(), "left: {:?}", in_outbox());
    assert_eq!(dead_letters().await.1, Vec::<u64>::new());
    drop((store, webhooks));
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn a_world_readable_secret_or_unknown_event_type_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_hook(dir.path(), "http://127.0.0.1:9/hook", 3);
    std::fs::set_permissions(
        dir.path().join("hook.whsec"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let error = rampart::server::start(config.clone(), Arc::new(SystemClock))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("chmod 600"), "{error}");

    std::fs::set_permissions(
        dir.path().join("hook.whsec"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mut config = config;
    config.webhooks.endpoints.get_mut("hook").unwrap().events = vec!["cert_issued".into()];
    let error = loop {
        match rampart::server::start(config.clone(), Arc::new(SystemClock)).await {
            Err(rampart::server::ServerError::Store(rampart::store::StoreError::Locked {
                ..
            })) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(other) => break other.to_string(),
            Ok(_) => panic!("started with an unknown event type"),
        }
    };
    assert!(
        error.contains("unknown event type `cert_issued`"),
        "{error}"
    );
}
