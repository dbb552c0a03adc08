//! Request extractors: the authenticated identity (Bearer API key), the client's address
//! and a size-limited JSON body, failures answered with the API's JSON errors.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::apikeys;
use crate::model::Identity;

/// The caller, authenticated by `Authorization: Bearer rpk_…`.
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthenticated(
                "missing Authorization: Bearer <API key>",
            ))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(ApiError::Unauthenticated(
                "the Authorization header must be `Bearer <API key>`",
            ))?;
        let client = client_of(parts);
        let refused = |claimed: String, reason: &'static str, key_id: Option<&str>| {
            refused(state, claimed, client, reason, key_id.map(str::to_string))
        };
        let Some((key_id, secret)) = apikeys::parse_token(token.trim()) else {
            return Err(refused("unknown".into(), "not an API key", None).await);
        };
        let owned = key_id.to_string();
        let record = state
            .pipeline
            .with_store(move |store| store.api_key(&owned))
            .await?;
        match record {
            Some(record) if apikeys::verify(&record, secret) => {
                Ok(Caller(apikeys::identity(&record)))
            }
            Some(record) => {
                Err(refused(record.identity, "wrong API key secret", Some(key_id)).await)
            }
            None => Err(refused("unknown".into(), "unknown API key id", Some(key_id)).await),
        }
    }
}

/// Audit a presented API key that was refused (never the token itself) and answer 401.
async fn refused(
    state: &AppState,
    claimed: String,
    client: Option<IpAddr>,
    reason: &str,
    key_id: Option<String>,
) -> ApiError {
    state
        .pipeline
        .audit_refused_credentials(
            crate::pipeline::Claimant {
                protocol: crate::model::Protocol::Api,
                name: claimed,
                client,
            },
            reason.to_string(),
            serde_json::json!({ "key_id": key_id }),
        )
        .await;
    ApiError::Unauthenticated("invalid API key")
}

/// The client's address as the listener recorded it (the TCP peer, or the client a trusted
/// proxy names), if known.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub Option<IpAddr>);

impl<S: Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(client_of(parts)))
    }
}

fn client_of(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip())
}

/// A JSON body no larger than `api.max_body_bytes`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.pipeline.config().api.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(ApiError::TooLarge(limit));
        }
        let bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|_| ApiError::TooLarge(limit))?;
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(
                "bad_json",
                format!("request body is not the expected JSON: {e}"),
            )
        })?;
        Ok(JsonBody(value))
    }
}
