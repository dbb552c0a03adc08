//! Policy layer 3, resource binding: ownership from a TOML registry and an HTTP CMDB
//! (cached; unknown resources, failures and timeouts deny), names mapped to resources by
//! pattern, and environments that restrict templates or require approval.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rampart::clock::SystemClock;
use rampart::config::{EnvironmentConfig, ResourceMappingConfig, RoleConfig};
use serde_json::{json, Value};

async fn cmdb(State(hits): State<Arc<AtomicUsize>>, Path(resource): Path<String>) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    match resource.as_str() {
        "web-01" => Json(json!({"owner": "web", "environment": "dev"})).into_response(),
        "pay" => Json(json!({"owner": "payments", "environment": "prod"})).into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Json(json!({"owner": "web"})).into_response()
        }
        "broken" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn role(templates: &[&str]) -> RoleConfig {
    RoleConfig {
        templates: templates.iter().map(|t| t.to_string()).collect(),
        dns_names: vec!["**.test".to_string().try_into().unwrap()],
        ip_ranges: vec![],
        email_domains: vec![],
        uri_prefixes: vec![],
        manage: false,
        dns_checks: None,
    }
}

/// POST as another API key.
async fn post_as(d: &common::TestDaemon, token: &str, path: &str, body: Value) -> (u16, Value) {
    let response = d
        .http
        .post(format!("{}{path}", d.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn resources_must_belong_to_the_requesters_team() {
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cmdb_url = format!("http://{}/res", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/res/{resource}", get(cmdb))
        .with_state(hits.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("resources.toml");
    std::fs::write(&registry, "[db-01]\nowner = \"dba\"\n").unwrap();
    let mut config = common::config_for(dir.path());
    config.resources.registry_file = Some(registry);
    config.resources.cmdb_url = Some(cmdb_url);
    config.resources.cmdb_timeout_ms = 300;
    config.resources.mappings.push(ResourceMappingConfig {
        pattern: "**.pay.test".to_string().try_into().unwrap(),
        resource: "pay".into(),
    });
    config.resources.environments.insert(
        "prod".into(),
        EnvironmentConfig {
            templates: vec!["server".into()],
            approval_required: true,
        },
    );
    config
        .roles
        .insert("web".into(), role(&["server", "client"]));
    config
        .roles
        .insert("payments".into(), role(&["server", "client"]));
    let d = common::start_with(config, Arc::new(SystemClock), None).await;
    let mut tokens = std::collections::HashMap::new();
    for team in ["web", "payments"] {
        let token = d.new_api_key(&format!("{team}-bot"), &[team]).await;
        tokens.insert(team, token);
    }
    let enroll = |name: &str, template: &str, resource: Option<&str>| {
        json!({"csr": common::csr(&common::p256(), Some(name), &[name]),
               "template": template, "resource": resource})
    };
    let web = &tokens["web"];

    // The web team's own server (CMDB): issued; the answer is cached.
    let (status, body) = post_as(
        &d,
        web,
        "/api/v1/enrollments",
        enroll("w1.test", "server", Some("web-01")),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = post_as(
        &d,
        web,
        "/api/v1/enrollments",
        enroll("w2.test", "server", Some("web-01")),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the second look-up came from the cache"
    );

    // Someone else's, unknown, failing or slow resources: denied by layer 3, with the rule.
    for (resource, rule) in [
        ("pay", "not_resource_owner"),
        ("db-01", "not_resource_owner"),
        ("missing", "unknown_resource"),
        ("broken", "resource_lookup_failed"),
        ("slow", "resource_lookup_failed"),
    ] {
        let started = std::time::Instant::now();
        let (status, body) = post_as(
            &d,
            web,
            "/api/v1/enrollments",
            enroll("x.test", "server", Some(resource)),
        )
        .await;
        assert_eq!(status, 403, "{resource}: {body}");
        assert_eq!(body["layer"], "resource", "{body}");
        assert_eq!(body["rule"], rule, "{resource}: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{resource} waited for the CMDB"
        );
    }

    // Names mapped to a prod resource: only its owners, only on `server`, with approval.
    let (status, body) = post_as(
        &d,
        web,
        "/api/v1/enrollments",
        enroll("api.pay.test", "server", None),
    )
    .await;
    assert_eq!(
        (status, body["rule"].clone()),
        (403, json!("not_resource_owner")),
        "{body}"
    );
    let payments = &tokens["payments"];
    let (status, body) = post_as(
        &d,
        payments,
        "/api/v1/enrollments",
        enroll("api.pay.test", "client", None),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["rule"], "template_not_allowed_in_environment");
    let (status, body) = post_as(
        &d,
        payments,
        "/api/v1/enrollments",
        enroll("api.pay.test", "server", None),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert!(body["reason"].as_str().unwrap().contains("prod"), "{body}");

    // The dry run shows layer 3 and spends nothing.
    let (status, check) = post_as(
        &d,
        web,
        "/api/v1/policy/check",
        json!({"csr": common::csr(&common::p256(), None, &["w3.test"]), "template": "server", "resource": "web-01"}),
    )
    .await;
    assert_eq!(status, 200, "{check}");
    assert_eq!(check["decision"], "approved");
    assert!(check["trace"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["layer"] == "resource" && s["detail"].as_str().unwrap().contains("web-01")));
    d.daemon.shutdown().await;
}
