//! The API's one error type and its JSON wire form: `{"error": code, "message": text}`
//! plus, for policy denials, the deciding `layer`, `rule` and `request_id`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use uuid::Uuid;

use crate::lifecycle::revocation::RevokeError;
use crate::pipeline::PipelineError;
use crate::policy::{Denial, Layer};
use crate::store::StoreError;

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No, or no valid, credentials.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// The request body or parameters are invalid.
    #[error("{message}")]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// The body is larger than `api.max_body_bytes`.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The resource is in a state that forbids the action.
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// A policy decision refused the request.
    #[error("{}", denial.reason)]
    Denied {
        /// Request id (in the audit log).
        request_id: Uuid,
        /// Why.
        denial: Denial,
    },
    /// The CA failed after approval.
    #[error("{0}")]
    CaUnavailable(String),
    /// Storage failed.
    #[error("{0}")]
    Storage(String),
    /// The endpoint exists but not with this method (the router adds `Allow`).
    #[error("method {0} is not allowed on this endpoint")]
    MethodNotAllowed(axum::http::Method),
}

impl ApiError {
    /// A 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "store failure");
        ApiError::Storage("the certificate store failed; see the server log".into())
    }
}

impl From<PipelineError> for ApiError {
    fn from(error: PipelineError) -> Self {
        match error {
            PipelineError::Store(e) => e.into(),
            PipelineError::Ca(e) => ApiError::CaUnavailable(e.to_string()),
            PipelineError::Aborted(e) => {
                tracing::error!(error = %e, "submission aborted");
                ApiError::Storage("the request ended without an outcome; see the server log".into())
            }
        }
    }
}

impl From<RevokeError> for ApiError {
    fn from(error: RevokeError) -> Self {
        match error {
            RevokeError::NotFound(_) => ApiError::NotFound(error.to_string()),
            RevokeError::AlreadyRevoked { .. } => ApiError::Conflict {
                code: "already_revoked",
                message: error.to_string(),
            },
            RevokeError::ReasonNotAllowed(message) => ApiError::bad_request("bad_reason", message),
            RevokeError::Ca { .. } => ApiError::CaUnavailable(error.to_string()),
            RevokeError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, body) = match &self {
            ApiError::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "unauthorized", "message": message}),
            ),
            ApiError::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                json!({"error": "forbidden", "message": message}),
            ),
            ApiError::BadRequest { code, .. } => (
                StatusCode::BAD_REQUEST,
                json!({"error": code, "message": message}),
            ),
            ApiError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "body_too_large", "message": message}),
            ),
            ApiError::NotFound(_) => (
                StatusCode::NOT_FOUND,
                json!({"error": "not_found", "message": message}),
            ),
            ApiError::Conflict { code, .. } => (
                StatusCode::CONFLICT,
                json!({"error": code, "message": message}),
            ),
            ApiError::Denied { request_id, denial } => {
                let (status, code) = match (denial.layer, denial.rule) {
                    (Layer::Input, _) => (StatusCode::BAD_REQUEST, "bad_csr"),
                    (_, "rate_limited") => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
                    _ => (StatusCode::FORBIDDEN, "policy_denied"),
                };
                let body = json!({
                    "error": code,
                    "message": message,
                    "layer": denial.layer,
                    "rule": denial.rule,
                    "request_id": request_id,
                });
                (status, body)
            }
            ApiError::CaUnavailable(_) => (
                StatusCode::BAD_GATEWAY,
                json!({"error": "ca_failed", "message": message}),
            ),
            ApiError::Storage(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "storage_failed", "message": message}),
            ),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method_not_allowed", "message": message}),
            ),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rampart\""),
            );
        }
        response
    }
}
