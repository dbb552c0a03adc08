//! Admin API for certificates rampart manages after issuance: the managed list, an
//! immediate renewal scan, and delivery to targets on demand (managing roles only). Thin
//! over `lifecycle::renewal`.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use super::AppState;
use crate::lifecycle::renewal::{self, DeliveryOutcome, ManagedView, ScanReport, Scheduler};
use crate::model::Identity;
use crate::policy::identity::may_manage;

fn check_manager(state: &AppState, caller: &Identity, what: &str) -> Result<(), ApiError> {
    if may_manage(&state.pipeline.config(), caller) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("{what} needs a managing role")))
    }
}

/// `GET /api/v1/renewal`: managed certificates with their windows and renewal state.
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<ManagedView>>, ApiError> {
    check_manager(&state, &caller, "listing managed certificates")?;
    Ok(Json(renewal::managed(&state.pipeline).await?))
}

/// `POST /api/v1/renewal/scan`: run the renewal scheduler's scan now.
pub async fn scan(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<ScanReport>, ApiError> {
    check_manager(&state, &caller, "running a renewal scan")?;
    let report = Scheduler::new(state.pipeline.clone()).scan().await?;
    tracing::info!(by = %caller.name, due = report.due, renewed = report.renewed.len(), "renewal scan on request");
    Ok(Json(report))
}

/// `POST /api/v1/certificates/{serial}/deliver` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverBody {
    /// `[delivery.targets.<name>]` to write to.
    targets: Vec<String>,
}

/// `POST /api/v1/certificates/{serial}/deliver`: write a certificate (and its escrowed
/// key) to delivery targets now.
pub async fn deliver(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(serial): Path<String>,
    JsonBody(body): JsonBody<DeliverBody>,
) -> Result<Json<Vec<DeliveryOutcome>>, ApiError> {
    check_manager(&state, &caller, "delivering certificates")?;
    let config = state.pipeline.config();
    if body.targets.is_empty() {
        return Err(ApiError::bad_request("bad_request", "`targets` is empty"));
    }
    if let Some(unknown) = body
        .targets
        .iter()
        .find(|t| !config.delivery.targets.contains_key(*t))
    {
        return Err(ApiError::bad_request(
            "unknown_delivery_target",
            format!("no delivery target `{unknown}` under [delivery.targets]"),
        ));
    }
    match renewal::redeliver(&state.pipeline, &serial, &body.targets).await {
        Ok(Some(outcomes)) => Ok(Json(outcomes)),
        Ok(None) => Err(ApiError::NotFound(format!("no certificate {serial}"))),
        Err(reason) => Err(ApiError::Storage(reason)),
    }
}
