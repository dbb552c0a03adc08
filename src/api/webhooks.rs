//! Admin API for webhook delivery: endpoint state and dead letters, and replays
//! (managing roles only). Thin over `lifecycle::webhooks`.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use super::AppState;
use crate::lifecycle::webhooks::{EndpointStatus, Replay, WebhookError, Webhooks};
use crate::model::Identity;
use crate::policy::identity::may_manage;

fn managed<'a>(state: &'a AppState, caller: &Identity) -> Result<&'a Webhooks, ApiError> {
    if !may_manage(&state.pipeline.config(), caller) {
        return Err(ApiError::Forbidden(
            "managing webhooks needs a managing role".into(),
        ));
    }
    Ok(&state.webhooks)
}

fn api_error(error: WebhookError) -> ApiError {
    match error {
        WebhookError::NoSuchEndpoint(_) => ApiError::NotFound(error.to_string()),
        WebhookError::BadReplay(message) => ApiError::bad_request("bad_replay", message),
        WebhookError::Store(e) => ApiError::Storage(e.to_string()),
        other => ApiError::Storage(other.to_string()),
    }
}

/// `GET /api/v1/webhooks`: every endpoint with its cursor, backlog, retry and dead letters.
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<EndpointStatus>>, ApiError> {
    let webhooks = managed(&state, &caller)?.clone();
    let status = tokio::task::spawn_blocking(move || webhooks.status())
        .await
        .map_err(|e| ApiError::Storage(e.to_string()))?
        .map_err(api_error)?;
    Ok(Json(status))
}

/// `POST /api/v1/webhooks/{endpoint}/replay` body: exactly one of the fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// One event by outbox position.
    seq: Option<u64>,
    /// Every dead letter.
    #[serde(default)]
    dead_letters: bool,
    /// Everything from this outbox position on.
    from: Option<u64>,
}

/// `POST /api/v1/webhooks/{endpoint}/replay`: queue events to be sent again.
pub async fn replay(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(endpoint): Path<String>,
    JsonBody(body): JsonBody<ReplayBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let webhooks = managed(&state, &caller)?.clone();
    let what = match (body.seq, body.dead_letters, body.from) {
        (Some(seq), false, None) => Replay::Event(seq),
        (None, true, None) => Replay::DeadLetters,
        (None, false, Some(from)) => Replay::From(from),
        _ => {
            return Err(ApiError::bad_request(
                "bad_request",
                "give exactly one of `seq`, `dead_letters: true` or `from`",
            ))
        }
    };
    let name = endpoint.clone();
    let queued = tokio::task::spawn_blocking(move || webhooks.replay(&name, what))
        .await
        .map_err(|e| ApiError::Storage(e.to_string()))?
        .map_err(api_error)?;
    tracing::info!(%endpoint, queued, by = %caller.name, "webhook replay queued");
    Ok(Json(json!({ "endpoint": endpoint, "queued": queued })))
}
