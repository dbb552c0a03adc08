//! The publication endpoint relying parties reach without credentials, over plain HTTP as
//! RFC 5280 distribution points and RFC 6960 responders are: `GET /crl/local.crl` (the
//! built-in CA's current CRL, DER, `application/pkix-crl`) and OCSP at `/ocsp` (POST with
//! `application/ocsp-request`, or GET `/ocsp/<base64 request>`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::crl::Crls;
use super::ocsp::Responder;

/// Largest OCSP request accepted.
const MAX_OCSP_REQUEST: usize = 8 * 1024;

/// What the publish listener serves.
#[derive(Debug, Clone)]
pub struct Published {
    /// The CA's CRLs.
    pub crls: Arc<Crls>,
    /// The CA's OCSP responder.
    pub ocsp: Arc<Responder>,
}

/// The publish listener's routes.
pub fn router(published: Published) -> Router {
    Router::new()
        .route("/crl/local.crl", get(crl))
        .route("/ocsp", axum::routing::post(ocsp_post))
        .route("/ocsp/{*request}", get(ocsp_get))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_OCSP_REQUEST))
        .with_state(published)
}

fn ocsp_response(der: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/ocsp-response")], der).into_response()
}

async fn ocsp_post(State(published): State<Published>, body: Bytes) -> Response {
    ocsp_response(published.ocsp.respond(&body).await)
}

async fn ocsp_get(State(published): State<Published>, Path(request): Path<String>) -> Response {
    use base64::Engine;
    // §A.1: url-encoded base64 of the DER request ('+' may arrive as a space).
    let text = request.replace(' ', "+");
    match base64::engine::general_purpose::STANDARD.decode(text.trim_end_matches('/')) {
        Ok(der) => ocsp_response(published.ocsp.respond(&der).await),
        // Not base64: answered as the OCSP malformedRequest it is.
        Err(_) => ocsp_response(published.ocsp.respond(&[]).await),
    }
}

async fn crl(State(published): State<Published>) -> Response {
    let crls = &published.crls;
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
