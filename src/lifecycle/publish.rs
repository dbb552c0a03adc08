//! The publication endpoint relying parties reach without credentials, over plain HTTP as
//! RFC 5280 distribution points are: `GET /crl/local.crl` (the built-in CA's current CRL,
//! DER, `application/pkix-crl`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::crl::Crls;

/// The publish listener's routes.
pub fn router(crls: Arc<Crls>) -> Router {
    Router::new()
        .route("/crl/local.crl", get(crl))
        .with_state(crls)
}

async fn crl(State(crls): State<Arc<Crls>>) -> Response {
    match crls.current().await {
        Ok(der) => (
            [
                (header::CONTENT_TYPE, "application/pkix-crl"),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            der,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot produce the CRL");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the CRL is not available: {e}\n"),
            )
                .into_response()
        }
    }
}
