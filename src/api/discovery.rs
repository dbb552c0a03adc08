//! Discovery endpoints (managing roles only): `POST /api/v1/discovery` records certificates
//! a scan found at one location, `GET /api/v1/discovery[?external=true]` lists the
//! discovered inventory. Answers leave out the DER (`der`) to stay small.

use axum::extract::{Query, State};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use super::AppState;
use crate::lifecycle::discovery::{
    self as inventory, DiscoveredCertificate, DiscoveryError, Source,
};
use crate::model::Identity;
use crate::policy::identity::may_manage;

/// Most certificates one request may carry.
pub const MAX_CERTIFICATES_PER_REQUEST: usize = 256;

/// `POST /api/v1/discovery` body: what a scan saw at one place.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryBody {
    /// `tls` or `file`.
    pub source: Source,
    /// Where: `10.0.0.5:443 (sni www.example)` or a file path.
    pub location: String,
    /// The certificates, base64 DER.
    pub certificates: Vec<String>,
}

/// `GET /api/v1/discovery` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryParams {
    /// Only certificates rampart did not issue.
    #[serde(default)]
    pub external: Option<bool>,
}

fn require_manage(state: &AppState, identity: &Identity) -> Result<(), ApiError> {
    if may_manage(&state.pipeline.config(), identity) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "discovery needs a managing role".into(),
        ))
    }
}

/// A record as answered: everything but the DER.
fn view(record: &DiscoveredCertificate) -> Value {
    let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
    if let Some(fields) = value.as_object_mut() {
        fields.remove("der");
    }
    value
}

/// `POST /api/v1/discovery`: record certificates seen at one location; answers the records
/// as stored (`items`).
pub async fn record(
    State(state): State<AppState>,
    Caller(identity): Caller,
    JsonBody(body): JsonBody<DiscoveryBody>,
) -> Result<Json<Value>, ApiError> {
    require_manage(&state, &identity)?;
    if body.certificates.len() > MAX_CERTIFICATES_PER_REQUEST {
        return Err(ApiError::bad_request(
            "too_many_certificates",
            format!("at most {MAX_CERTIFICATES_PER_REQUEST} certificates per request"),
        ));
    }
    let certificates = body
        .certificates
        .iter()
        .enumerate()
        .map(|(index, text)| {
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| {
                    ApiError::bad_request(
                        "bad_certificate",
                        format!("certificates[{index}] is not base64: {e}"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let now = state.pipeline.clock().now();
    let records = inventory::record(
        &state.pipeline,
        body.source,
        &body.location,
        certificates,
        now,
    )
    .await
    .map_err(|error| match error {
        DiscoveryError::Store(e) => e.into(),
        DiscoveryError::NotACertificate { .. } => {
            ApiError::bad_request("bad_certificate", error.to_string())
        }
        DiscoveryError::BadLocation => ApiError::bad_request("bad_location", error.to_string()),
    })?;
    tracing::info!(
        by = %identity.name,
        source = body.source.as_str(),
        location = %body.location,
        "discovery reported"
    );
    Ok(Json(
        json!({ "items": records.iter().map(view).collect::<Vec<_>>() }),
    ))
}

/// `GET /api/v1/discovery[?external=true]`: discovered certificates, soonest expiry first.
pub async fn list(
    State(state): State<AppState>,
    Caller(identity): Caller,
    params: Result<Query<DiscoveryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require_manage(&state, &identity)?;
    let Query(params) = params.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let records = inventory::list(&state.pipeline, params.external.unwrap_or(false)).await?;
    Ok(Json(
        json!({ "items": records.iter().map(view).collect::<Vec<_>>() }),
    ))
}
