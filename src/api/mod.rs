//! The admin REST API (`/api/v1/…`), `/healthz` and `/metrics`, as an axum router over the
//! pipeline. Handlers are thin; every error is JSON (`error`, `message`).
//!
//! Imports `pipeline`, `lifecycle`, `policy` (access checks), `store` (queries),
//! `apikeys`, `pkix` and `model`.

pub mod audit;
pub mod discovery;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod renewal;
pub mod webhooks;
pub mod wire;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::pipeline::Pipeline;

/// Shared handler state.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The pipeline (and through it config, store, CA, clock, metrics).
    pub pipeline: Pipeline,
    /// The SCEP front end, when its listener runs (RA rotation).
    pub scep: Option<std::sync::Arc<crate::gateway::scep::Backend>>,
    /// Webhook delivery (state and replays).
    pub webhooks: crate::lifecycle::webhooks::Webhooks,
    /// Where the configuration is read again on `POST /api/v1/reload`.
    pub config_source: crate::config::ConfigSource,
}

/// The router.
pub fn router(
    pipeline: Pipeline,
    scep: Option<std::sync::Arc<crate::gateway::scep::Backend>>,
    webhooks: crate::lifecycle::webhooks::Webhooks,
    config_source: crate::config::ConfigSource,
) -> Router {
    let state = AppState {
        pipeline,
        scep,
        webhooks,
        config_source,
    };
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/metrics", get(handlers::metrics))
        .route("/api/v1/enrollments", post(handlers::enroll))
        .route("/api/v1/certificates", get(handlers::list))
        .route("/api/v1/certificates/{serial}", get(handlers::show))
        .route(
            "/api/v1/certificates/{serial}/download",
            get(handlers::download),
        )
        .route(
            "/api/v1/certificates/{serial}/revoke",
            post(handlers::revoke),
        )
        .route(
            "/api/v1/certificates/{serial}/escrowed-key",
            get(handlers::escrowed_key),
        )
        .route("/api/v1/acme/eab-keys", post(handlers::create_eab_key))
        .route("/api/v1/api-keys", post(handlers::create_api_key))
        .route(
            "/api/v1/scep/challenges",
            post(handlers::create_scep_challenge),
        )
        .route("/api/v1/scep/ra/rotate", post(handlers::rotate_scep_ra))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/reload", post(handlers::reload))
        .route("/api/v1/audit/verify", get(handlers::verify_audit))
        .route("/api/v1/policy/check", post(handlers::policy_check))
        .route("/api/v1/approvals", get(handlers::list_approvals))
        .route(
            "/api/v1/approvals/{request_id}",
            get(handlers::show_approval),
        )
        .route(
            "/api/v1/approvals/{request_id}/approve",
            post(handlers::approve),
        )
        .route(
            "/api/v1/approvals/{request_id}/deny",
            post(handlers::deny_approval),
        )
        .route(
            "/api/v1/discovery",
            get(discovery::list).post(discovery::record),
        )
        .route(
            "/api/v1/certificates/{serial}/deliver",
            post(renewal::deliver),
        )
        .route("/api/v1/renewal", get(renewal::list))
        .route("/api/v1/renewal/scan", post(renewal::scan))
        .route("/api/v1/webhooks", get(webhooks::list))
        .route("/api/v1/webhooks/{endpoint}/replay", post(webhooks::replay))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        // Bodies are limited by our own extractor (JSON 413); disable axum's plain-text one.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}
