//! Admin API over the audit log: filtered listing (managing roles only). Verification is in
//! `handlers::verify_audit`.

use std::net::IpAddr;

use axum::extract::{Query, State};
use axum::Json;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::Caller;
use super::AppState;
use crate::policy::identity::may_manage;
use crate::store::AuditQuery;

/// Most records one page holds.
const MAX_LIMIT: usize = 1000;

/// Query string of `GET /api/v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    identity: Option<String>,
    name: Option<String>,
    decision: Option<String>,
    action: Option<String>,
    client: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/v1/audit?identity=&name=&decision=&action=&client=&after=&limit=`: audit
/// records in order, filtered (`client`: an address or a network, `203.0.113.0/24`);
/// `next_after` continues the listing.
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !may_manage(&state.pipeline.config(), &caller) {
        return Err(ApiError::Forbidden(
            "reading the audit log needs a managing role".into(),
        ));
    }
    let Query(params) = params.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let limit = params.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let client = params
        .client
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ApiError::bad_request(
                        "bad_query",
                        format!("`client` must be an address or a network, not `{text}`"),
                    )
                })
        })
        .transpose()?;
    let query = AuditQuery {
        identity: params.identity,
        name: params.name,
        outcome: params.decision,
        action: params.action,
        client,
    };
    let start = params.after.map_or(0, |after| after + 1);
    let (items, next_after) = state
        .pipeline
        .with_store(move |store| {
            let mut items = Vec::new();
            let mut from = start;
            loop {
                let batch = store.audit_records(from, 1024)?;
                let Some(last) = batch.last() else {
                    return Ok((items, None));
                };
                from = last.seq + 1;
                for record in batch {
                    if query.matches(&record.entry) {
                        let seq = record.seq;
                        items.push(record);
                        if items.len() == limit {
                            return Ok((items, Some(seq)));
                        }
                    }
                }
            }
        })
        .await?;
    Ok(Json(json!({ "items": items, "next_after": next_after })))
}
