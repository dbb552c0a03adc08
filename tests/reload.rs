//! Policy hot reload: a changed file takes effect without a restart, an invalid one
//! changes nothing (the running policy stays), sections that need a restart are named,
//! and every reload is audited.

mod common;

use std::sync::Arc;

use rampart::clock::SystemClock;
use rampart::config::{Config, ConfigSource};
use serde_json::json;

fn policy_file(dir: &std::path::Path, dns_names: &str, api_listen: &str, extra: &str) -> String {
    format!(
        r#"
[server]
data_dir = "{data}"
[api]
listen = "{api_listen}"
[acme]
listen = "127.0.0.1:0"
[est]
enabled = false
listen = "127.0.0.1:0"
[scep]
listen = "127.0.0.1:0"
[publish]
listen = "127.0.0.1:0"
[templates.server]
description = "TLS server"
extended_key_usages = ["serverAuth"]
key_types = ["ecdsa-p256"]
min_rsa_bits = 2048
max_rsa_bits = 4096
default_validity_days = 30
max_validity_days = 90
max_sans = 10
[roles.admin]
templates = ["server"]
dns_names = [{dns_names}]
ip_ranges = []
manage = true
{extra}
"#,
        data = dir.join("data").display()
    )
}

#[tokio::test]
async fn a_changed_policy_applies_without_restart_and_a_bad_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rampart.toml");
    std::fs::write(
        &path,
        policy_file(dir.path(), r#""**.test""#, "127.0.0.1:0", ""),
    )
    .unwrap();
    let config = Config::load(Some(&path)).unwrap();
    let source = ConfigSource::Loaded(Some(path.clone()));
    let daemon = rampart::server::start_from(config, Arc::new(SystemClock), source)
        .await
        .unwrap();
    let d = common::TestDaemon::attach(daemon, None);

    let csr = |name: &str| common::csr(&common::p256(), Some(name), &[name]);
    let (status, _) = d.enroll(&csr("a.test"), "server").await;
    assert_eq!(status, 201);
    let (status, body) = d.enroll(&csr("b.other"), "server").await;
    assert_eq!(status, 403, "{body}");

    // The file grows a pattern: reloaded, applied at once.
    std::fs::write(
        &path,
        policy_file(dir.path(), r#""**.test", "**.other""#, "127.0.0.1:0", ""),
    )
    .unwrap();
    let (status, answer) = d.post("/api/v1/reload", json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["needs_restart"], json!([]));
    let (status, body) = d.enroll(&csr("b.other"), "server").await;
    assert_eq!(status, 201, "{body}");

    // An invalid file (a role naming a template that does not exist) changes nothing.
    std::fs::write(
        &path,
        policy_file(
            dir.path(),
            r#""**.test""#,
            "127.0.0.1:0",
            "[roles.web]\ntemplates = [\"nope\"]\ndns_names = []\nip_ranges = []\nmanage = false\n",
        ),
    )
    .unwrap();
    let (status, answer) = d.post("/api/v1/reload", json!({})).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "invalid_config");
    assert!(
        answer["message"].as_str().unwrap().contains("nope"),
        "{answer}"
    );
    let (status, _) = d.enroll(&csr("c.other"), "server").await;
    assert_eq!(status, 201, "the previous policy stays in force");
    // So does a file that is not TOML.
    std::fs::write(&path, "[server\n").unwrap();
    let (status, _) = d.post("/api/v1/reload", json!({})).await;
    assert_eq!(status, 400);

    // Listener changes are reported as needing a restart; the policy part still applies.
    std::fs::write(
        &path,
        policy_file(dir.path(), r#""**.test""#, "127.0.0.1:1", ""),
    )
    .unwrap();
    let (status, answer) = d.post("/api/v1/reload", json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["needs_restart"], json!(["api"]));
    assert_eq!(
        d.daemon.pipeline.config().api.listen.to_string(),
        "127.0.0.1:0",
        "the running listener settings stay"
    );
    let (status, _) = d.enroll(&csr("d.other"), "server").await;
    assert_eq!(status, 403, "the narrowed policy applies");

    let (_, audit) = d.get("/api/v1/audit?action=policy_reloaded").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn an_in_memory_configuration_has_nothing_to_reload() {
    let dir = tempfile::tempdir().unwrap();
    let d = common::start(dir.path()).await;
    let (status, answer) = d.post("/api/v1/reload", json!({})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("in memory"));
    d.daemon.shutdown().await;
}
