//! Renewal automation driven by a test clock: a managed certificate (generated key,
//! auto_renew, a delivery target) is re-issued inside its window, delivered and linked;
//! client-driven certificates get one `certificate_expiring` event; failing renewals back
//! off and are reported; a delivery whose reload command fails is reported too.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use serde_json::json;
use time::Duration;

use rampart::clock::ManualClock;
use rampart::config::DeliveryTargetConfig;
use rampart::lifecycle::renewal::{self, Scheduler};
use rampart::store::{Event, EventKind};

fn target(directory: &std::path::Path, reload: &[&str]) -> DeliveryTargetConfig {
    let text = format!(
        "kind = \"filesystem\"\ndirectory = {:?}\nreload_command = {:?}\n",
        directory.to_str().unwrap(),
        reload
    );
    toml::from_str(&text).unwrap()
}

fn events(d: &common::TestDaemon, kind: EventKind) -> Vec<Event> {
    d.daemon
        .pipeline
        .store()
        .events(0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

fn leaf_serial(pem_path: &std::path::Path) -> String {
    let pem = std::fs::read_to_string(pem_path).unwrap();
    let der = rampart::pkix::pem::decode_certificates(&pem)
        .unwrap()
        .remove(0);
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    hex::encode(cert.tbs_certificate.serial_number.as_bytes())
        .trim_start_matches("00")
        .to_string()
}

#[tokio::test]
async fn managed_certificates_renew_in_their_window_and_others_are_announced() {
    let dir = tempfile::tempdir().unwrap();
    let web = tempfile::tempdir().unwrap();
    let broken = tempfile::tempdir().unwrap();
    let reload_log = web.path().join("reloads.log");
    let mut config = common::config_for(dir.path());
    config.renewal.enabled = false; // scans are driven by the test
    config.renewal.initial_backoff_seconds = 600;
    config.renewal.max_attempts = 2;
    config
        .templates
        .get_mut("server")
        .unwrap()
        .renew_before_days = Some(30);
    config.delivery.targets.insert(
        "web".into(),
        target(
            web.path(),
            &[
                "sh",
                "-c",
                &format!("echo reloaded >> {}", reload_log.display()),
            ],
        ),
    );
    config
        .delivery
        .targets
        .insert("broken".into(), target(broken.path(), &["false"]));
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let d = common::start_with(config, Arc::new(clock.clone()), None).await;
    let scheduler = Scheduler::new(d.daemon.pipeline.clone());

    // A managed certificate: rampart generates the key, delivers, renews.
    let (status, managed) = d
        .post(
            "/api/v1/enrollments",
            json!({"generate_key": "ecdsa-p256", "names": ["auto.test"], "template": "server",
                   "validity_days": 90, "auto_renew": true, "delivery_targets": ["web"]}),
        )
        .await;
    assert_eq!(status, 201, "{managed}");
    assert!(managed["private_key"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(managed["deliveries"][0]["delivered"], true, "{managed}");
    let first = managed["serial"].as_str().unwrap().to_string();
    assert_eq!(leaf_serial(&web.path().join("cert.pem")), first);
    let key_mode = std::fs::metadata(web.path().join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let first_key = std::fs::read(web.path().join("key.pem")).unwrap();

    // A client-driven certificate (the client renews it itself).
    let (status, plain) = d
        .enroll(
            &common::csr(&common::p256(), Some("plain.test"), &["plain.test"]),
            "server",
        )
        .await;
    assert_eq!(status, 201);
    let plain_serial = plain["serial"].as_str().unwrap().to_string();

    // A delivery whose reload command fails: reported, nothing left behind.
    let (status, failing) = d
        .post(
            "/api/v1/enrollments",
            json!({"generate_key": "ecdsa-p256", "names": ["broken.test"], "template": "server",
                   "delivery_targets": ["broken"]}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(failing["deliveries"][0]["delivered"], false);
    assert!(failing["deliveries"][0]["error"]
        .as_str()
        .unwrap()
        .contains("reload command"));
    assert_eq!(std::fs::read_dir(broken.path()).unwrap().count(), 0);
    let delivery_failed = events(&d, EventKind::DeliveryFailed);
    assert_eq!(delivery_failed.len(), 1);
    assert_eq!(delivery_failed[0].data["target"], "broken");

    // Bad requests are refused with 400.
    for body in [
        json!({"template": "server"}),
        json!({"generate_key": "rsa-512", "names": ["x.test"], "template": "server"}),
        json!({"generate_key": "ecdsa-p256", "names": [], "template": "server"}),
        json!({"generate_key": "ecdsa-p256", "names": ["x.test"], "template": "server",
               "delivery_targets": ["nowhere"]}),
    ] {
        let (status, answer) = d.post("/api/v1/enrollments", body).await;
        assert_eq!(status, 400, "{answer}");
    }

    // Before the window: nothing to do.
    let report = scheduler.scan().await.unwrap();
    assert_eq!(report.due, 0, "{report:?}");

    // 61 days later every 90-day certificate is inside its 30-day window.
    clock.advance(Duration::days(61));
    let report = scheduler.scan().await.unwrap();
    assert_eq!(report.renewed.len(), 1, "{report:?}");
    let (old, new) = report.renewed[0].clone();
    assert_eq!(old, first);
    assert!(report.expiring_events.contains(&plain_serial));
    assert!(!report.expiring_events.contains(&first));

    // The new certificate is delivered with a fresh key and linked to the old one.
    assert_eq!(leaf_serial(&web.path().join("cert.pem")), new);
    assert_ne!(
        std::fs::read(web.path().join("key.pem")).unwrap(),
        first_key
    );
    assert_eq!(
        std::fs::read_to_string(&reload_log)
            .unwrap()
            .lines()
            .count(),
        2
    );
    let (status, shown) = d.get(&format!("/api/v1/certificates/{new}")).await;
    assert_eq!(status, 200);
    assert_eq!(shown["metadata"]["renews"], old.as_str());
    let renewed = events(&d, EventKind::CertificateRenewed);
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0].data["old_serial"], old.as_str());
    assert_eq!(renewed[0].data["serial"], new.as_str());
    assert_eq!(
        renewed[0].data["old_thumbprint_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    let expiring = events(&d, EventKind::CertificateExpiring);
    assert!(expiring
        .iter()
        .any(|e| e.data["serial"] == plain_serial.as_str()));

    // Scanning again changes nothing: renewed once, announced once.
    let again = scheduler.scan().await.unwrap();
    assert!(
        again.renewed.is_empty() && again.expiring_events.is_empty(),
        "{again:?}"
    );
    assert_eq!(
        events(&d, EventKind::CertificateExpiring).len(),
        expiring.len()
    );

    // The ARI window sits inside the renew-before window.
    let record = d
        .daemon
        .pipeline
        .store()
        .certificate(&new)
        .unwrap()
        .unwrap();
    let (start, end) = renewal::suggested_window(&d.daemon.pipeline.config(), &record);
    assert_eq!(start, record.not_after - Duration::days(30));
    assert!(start < end && end < record.not_after);
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn failing_renewals_back_off_and_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config_for(dir.path());
    config.renewal.enabled = false;
    config.renewal.initial_backoff_seconds = 600;
    config.renewal.max_attempts = 2;
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let d = common::start_with(config, Arc::new(clock.clone()), None).await;
    let scheduler = Scheduler::new(d.daemon.pipeline.clone());
    let (status, body) = d
        .post(
            "/api/v1/enrollments",
            json!({"generate_key": "ecdsa-p256", "names": ["fail.test"], "template": "server",
                   "validity_days": 30, "auto_renew": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let serial = body["serial"].as_str().unwrap().to_string();

    // The requester lost its roles since: the pipeline refuses the renewal.
    let store = d.daemon.pipeline.store();
    let key = format!("managed/{serial}");
    let mut managed: renewal::Managed =
        serde_json::from_slice(&store.protocol_get("renewal", &key).unwrap().unwrap()).unwrap();
    managed.identity.roles.clear();
    renewal::register(&d.daemon.pipeline, &serial, &managed)
        .await
        .unwrap();

    // Default window: the last 33 % of 30 days, i.e. after day 20.
    clock.advance(Duration::days(21));
    let report = scheduler.scan().await.unwrap();
    assert_eq!(report.failed, vec![serial.clone()], "{report:?}");
    let failed = events(&d, EventKind::RenewalFailed);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].data["attempt"], 1);
    assert!(failed[0].data["reason"]
        .as_str()
        .unwrap()
        .contains("denied"));

    // Inside the backoff: no new attempt.
    clock.advance(Duration::seconds(300));
    assert!(scheduler.scan().await.unwrap().failed.is_empty());
    // After it: the second and last attempt.
    clock.advance(Duration::seconds(400));
    assert_eq!(scheduler.scan().await.unwrap().failed, vec![serial.clone()]);
    let failed = events(&d, EventKind::RenewalFailed);
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[1].data["next_attempt"], serde_json::Value::Null);
    // max_attempts reached: no more tries.
    clock.advance(Duration::days(2));
    assert!(scheduler.scan().await.unwrap().failed.is_empty());
    d.daemon.shutdown().await;
}
