//! Admin API handlers: thin translations between HTTP and `pipeline` / `lifecycle` /
//! `store`, with access checks from `policy`.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{Caller, ClientAddress, JsonBody};
use super::wire::{
    CertificateDetail, CertificatePage, CertificateView, EnrollmentBody, EnrollmentResponse,
    RevokeBody,
};
use super::AppState;
use crate::lifecycle::renewal::{self, KeySource, Managed};
use crate::lifecycle::revocation::{self, may_access};
use crate::model::{
    CertificateRecord, CertificateStatus, EnrollmentRequest, Identifier, Protocol, RevocationReason,
};
use crate::pipeline::submission::Wait;
use crate::pipeline::Outcome;
use crate::pkix::keygen;
use crate::pkix::{pem, pkcs7};
use crate::policy::identity::may_manage;
use crate::store::CertificateQuery;

/// `GET /healthz`: 200 when the store answers, the built-in CA can sign and the SCEP RA key
/// can be used; 503 with the failure in `ca` / `scep_ra` (a PKCS#11 token that stopped
/// answering, a PIN it refused) when one cannot.
pub async fn healthz(State(state): State<AppState>) -> Result<Response, ApiError> {
    state
        .pipeline
        .with_store(|store| store.api_key_count())
        .await?;
    let mut body = serde_json::json!({"status": "ok"});
    if let Err(reason) = state.pipeline.ca().health().await {
        body["ca"] = reason.into();
    }
    if let Some(scep) = &state.scep {
        if let Err(reason) = scep.health().await {
            body["scep_ra"] = reason.into();
        }
    }
    if body.get("ca").is_some() || body.get("scep_ra").is_some() {
        body["status"] = "unavailable".into();
        return Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response());
    }
    Ok(Json(body).into_response())
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.pipeline.metrics().render();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// `POST /api/v1/enrollments`: a CSR, or names with `generate_key`; optionally managed
/// by rampart afterwards (`auto_renew`, `delivery_targets`).
pub async fn enroll(
    State(state): State<AppState>,
    Caller(identity): Caller,
    ClientAddress(client): ClientAddress,
    JsonBody(body): JsonBody<EnrollmentBody>,
) -> Result<Response, ApiError> {
    let config = state.pipeline.config();
    if let Some(unknown) = body
        .delivery_targets
        .iter()
        .find(|t| !config.delivery.targets.contains_key(*t))
    {
        return Err(ApiError::bad_request(
            "unknown_delivery_target",
            format!("no delivery target `{unknown}` under [delivery.targets]"),
        ));
    }
    let (csr_der, generated, key_source) = match (&body.csr, &body.generate_key) {
        (Some(csr), None) => {
            if !body.names.is_empty() || body.common_name.is_some() {
                return Err(ApiError::bad_request(
                    "bad_request",
                    "`names` and `common_name` go with `generate_key`; a CSR names itself",
                ));
            }
            let der = csr_from_pem(csr)?;
            let source = KeySource::Csr {
                csr_der: der.clone(),
            };
            (der, None, source)
        }
        (None, Some(key_type)) => {
            if config
                .templates
                .get(&body.template)
                .is_some_and(|t| t.approval_required)
            {
                return Err(ApiError::bad_request(
                    "bad_request",
                    "generate_key is not offered on a template that requires approval; send a CSR",
                ));
            }
            let key_type = keygen::parse_key_type(key_type)
                .map_err(|e| ApiError::bad_request("bad_key_type", e))?;
            let identifiers = parse_names(&body.names)?;
            let common_name = body
                .common_name
                .clone()
                .or_else(|| identifiers.first().map(Identifier::value));
            let generated = crate::pipeline::keygen::generate(key_type, common_name, identifiers)
                .await
                .map_err(|e| ApiError::bad_request("bad_request", e))?;
            let der = generated.csr_der.clone();
            (der, Some(generated), KeySource::Generated { key_type })
        }
        _ => {
            return Err(ApiError::bad_request(
                "bad_request",
                "give exactly one of `csr` and `generate_key`",
            ))
        }
    };
    let managed = (body.auto_renew || !body.delivery_targets.is_empty()).then(|| {
        let csr = crate::pkix::csr::VerifiedCsr::parse(&csr_der).ok();
        Managed {
            identity: identity.clone(),
            template: body.template.clone(),
            key: key_source,
            common_name: csr.as_ref().and_then(|c| c.common_name.clone()),
            identifiers: csr.map(|c| c.identifiers).unwrap_or_default(),
            validity_days: body.validity_days,
            resource: body.resource.clone(),
            metadata: body.metadata.clone(),
            auto_renew: body.auto_renew,
            delivery_targets: body.delivery_targets.clone(),
            renewed_by: None,
            pending_renewal: None,
            failed_attempts: 0,
            retry_after: None,
        }
    });
    let request = EnrollmentRequest {
        request_id: Uuid::now_v7(),
        protocol: Protocol::Api,
        identity,
        csr_der,
        template: body.template,
        requested_identifiers: None,
        validity_days: body.validity_days,
        resource: body.resource,
        metadata: body.metadata,
        renews: None,
        client,
    };
    // As a task of its own, waited for to the end: a client that hangs up does not cut the
    // issuance short.
    let submitted = state
        .pipeline
        .submit_within(request, None, Wait::ToTheEnd)
        .await;
    match submitted.or_pending()? {
        Outcome::Denied { request_id, denial } => Err(ApiError::Denied { request_id, denial }),
        Outcome::Pending { request_id, reason } => {
            let body =
                serde_json::json!({"request_id": request_id, "state": "pending", "reason": reason});
            Ok((StatusCode::ACCEPTED, Json(body)).into_response())
        }
        Outcome::Issued(record) => {
            let key = generated.as_ref().map(|g| &g.pkcs8[..]);
            let deliveries = match &managed {
                Some(managed) => renewal::adopt(&state.pipeline, &record, managed, key)
                    .await
                    .map_err(ApiError::Storage)?,
                None => Vec::new(),
            };
            let now = state.pipeline.clock().now();
            let location = format!("/api/v1/certificates/{}", record.serial);
            let body = EnrollmentResponse {
                request_id: record.request_id,
                state: "issued",
                certificate: CertificateDetail::new(&record, now),
                private_key: key.map(|k| pem::encode("PRIVATE KEY", k)),
                deliveries,
            };
            let mut response = (StatusCode::CREATED, Json(body)).into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            Ok(response)
        }
    }
}

/// Names for a generated key's CSR: IP literals become IP identifiers, the rest DNS names.
fn parse_names(names: &[String]) -> Result<Vec<Identifier>, ApiError> {
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "bad_request",
            "`generate_key` needs at least one entry in `names`",
        ));
    }
    names
        .iter()
        .map(|name| match name.parse() {
            Ok(ip) => Ok(Identifier::Ip(ip)),
            Err(_) => Identifier::dns(name).map_err(|e| ApiError::bad_request("bad_name", e)),
        })
        .collect()
}

fn csr_from_pem(text: &str) -> Result<Vec<u8>, ApiError> {
    pem::decode(
        text,
        &[pem::CERTIFICATE_REQUEST, pem::NEW_CERTIFICATE_REQUEST],
    )
    .map_err(|e| {
        ApiError::bad_request(
            "bad_csr",
            format!("`csr` must be a PEM certificate request: {e}"),
        )
    })
}

/// `POST /api/v1/policy/check`: the decision and its trace for an enrollment, without
/// issuing, recording or auditing anything.
pub async fn policy_check(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody(body): JsonBody<super::wire::PolicyCheckBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let identity = match body.identity {
        None => caller,
        Some(name) => {
            if !may_manage(&state.pipeline.config(), &caller) {
                return Err(ApiError::Forbidden(
                    "checking for another identity needs a managing role".into(),
                ));
            }
            crate::model::Identity {
                name,
                roles: body.roles,
                credential: caller.credential,
            }
        }
    };
    let request = EnrollmentRequest {
        request_id: Uuid::now_v7(),
        protocol: Protocol::Api,
        identity,
        csr_der: csr_from_pem(&body.csr)?,
        template: body.template,
        requested_identifiers: None,
        validity_days: body.validity_days,
        resource: body.resource,
        metadata: Default::default(),
        renews: None,
        client: None,
    };
    let assessment = state.pipeline.assess(&request).await;
    let mut answer = serde_json::json!({
        "identity": request.identity.name,
        "template": request.template,
        "identifiers": assessment.identifiers,
        "trace": assessment.evaluation.trace,
    });
    match assessment.evaluation.decision {
        crate::policy::Decision::Approved(approval) => {
            answer["decision"] = "approved".into();
            answer["validity_days"] = approval.validity_days.into();
        }
        crate::policy::Decision::Denied(denial) => {
            answer["decision"] = "denied".into();
            answer["layer"] = serde_json::to_value(denial.layer).expect("serializes");
            answer["rule"] = denial.rule.into();
            answer["reason"] = denial.reason.into();
        }
    }
    Ok(Json(answer))
}

/// Query string of `GET /api/v1/certificates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    san: Option<String>,
    status: Option<String>,
    expiring_within: Option<String>,
    issuer: Option<String>,
    template: Option<String>,
    owner: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// Parse `30d`, `12h`, `90m`, `45s` or a bare number of days.
fn parse_duration(text: &str) -> Option<time::Duration> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 'd'),
    };
    let n: i64 = number.parse().ok().filter(|n| *n >= 0)?;
    match unit {
        'd' => Some(time::Duration::days(n)),
        'h' => Some(time::Duration::hours(n)),
        'm' => Some(time::Duration::minutes(n)),
        's' => Some(time::Duration::seconds(n)),
        _ => None,
    }
}

/// `GET /api/v1/certificates`.
pub async fn list(
    State(state): State<AppState>,
    Caller(identity): Caller,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CertificatePage>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let api = &state.pipeline.config().api;
    let limit = params.limit.unwrap_or(api.default_page_size);
    if limit == 0 || limit > api.max_page_size {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("limit must be between 1 and {}", api.max_page_size),
        ));
    }
    let status = params
        .status
        .as_deref()
        .map(str::parse::<CertificateStatus>)
        .transpose()
        .map_err(|e| ApiError::bad_request("bad_query", e))?;
    let expiring_within = params
        .expiring_within
        .as_deref()
        .map(|t| parse_duration(t).ok_or(t))
        .transpose()
        .map_err(|t| {
            ApiError::bad_request(
                "bad_query",
                format!("expiring_within `{t}`: use e.g. 30d, 12h, 90m"),
            )
        })?;
    // Identities that do not manage see only their own certificates.
    let owner = if may_manage(&state.pipeline.config(), &identity) {
        params.owner
    } else {
        Some(identity.name.clone())
    };
    let query = CertificateQuery {
        san_contains: params.san.map(|s| s.to_ascii_lowercase()),
        status,
        expiring_within,
        issuer: params.issuer,
        template: params.template,
        owner,
        after: params.after,
        limit,
    };
    let now = state.pipeline.clock().now();
    let page = state
        .pipeline
        .with_store(move |store| store.list_certificates(&query, now))
        .await?;
    Ok(Json(CertificatePage {
        items: page
            .items
            .iter()
            .map(|r| CertificateView::new(r, now))
            .collect(),
        next_after: page.next_after,
    }))
}

async fn visible_certificate(
    state: &AppState,
    caller: &Caller,
    serial: &str,
) -> Result<CertificateRecord, ApiError> {
    let owned = serial.to_ascii_lowercase();
    let record = state
        .pipeline
        .with_store(move |store| store.certificate(&owned))
        .await?;
    match record {
        Some(record) if may_access(&state.pipeline, &caller.0, &record) => Ok(record),
        _ => Err(ApiError::NotFound(format!(
            "no certificate with serial {serial}"
        ))),
    }
}

/// `GET /api/v1/certificates/{serial}`.
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(serial): Path<String>,
) -> Result<Json<CertificateDetail>, ApiError> {
    let record = visible_certificate(&state, &caller, &serial).await?;
    Ok(Json(CertificateDetail::new(
        &record,
        state.pipeline.clock().now(),
    )))
}

/// Query string of the download endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadParams {
    format: Option<String>,
}

/// `GET /api/v1/certificates/{serial}/download?format=pem|der|p7b`.
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(serial): Path<String>,
    params: Result<Query<DownloadParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let record = visible_certificate(&state, &caller, &serial).await?;
    let mut all = vec![record.der.clone()];
    all.extend(record.chain.iter().cloned());
    let (content_type, extension, body): (&str, &str, Vec<u8>) =
        match params.format.as_deref().unwrap_or("pem") {
            "pem" => (
                "application/pem-certificate-chain",
                "pem",
                pem::encode_certificates(all.iter().map(Vec::as_slice)).into_bytes(),
            ),
            "der" => ("application/pkix-cert", "cer", record.der.clone()),
            "p7b" => (
                "application/pkcs7-mime; smime-type=certs-only",
                "p7b",
                pkcs7::certs_only(&all)
                    .map_err(|e| ApiError::Storage(format!("cannot encode PKCS#7: {e}")))?,
            ),
            other => {
                return Err(ApiError::bad_request(
                    "bad_query",
                    format!("format `{other}`: use pem, der or p7b"),
                ));
            }
        };
    let disposition = format!("attachment; filename=\"{}.{extension}\"", record.serial);
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// `POST /api/v1/certificates/{serial}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(serial): Path<String>,
    JsonBody(body): JsonBody<RevokeBody>,
) -> Result<Json<CertificateDetail>, ApiError> {
    let reason = match body.reason.as_deref() {
        None => RevocationReason::Unspecified,
        Some(text) => {
            RevocationReason::parse(text).map_err(|e| ApiError::bad_request("bad_reason", e))?
        }
    };
    let record = revocation::revoke(
        &state.pipeline,
        &caller.0,
        &serial.to_ascii_lowercase(),
        reason,
    )
    .await?;
    Ok(Json(CertificateDetail::new(
        &record,
        state.pipeline.clock().now(),
    )))
}

/// Creating a credential for an identity: the caller manages, the identity is named and
/// its roles exist.
fn check_new_credential(
    state: &AppState,
    caller: &crate::model::Identity,
    what: &str,
    identity: &str,
    roles: &[String],
) -> Result<(), ApiError> {
    let config = state.pipeline.config();
    if !may_manage(&config, caller) {
        return Err(ApiError::Forbidden(format!(
            "creating {what} needs a managing role"
        )));
    }
    if identity.trim().is_empty() || roles.is_empty() {
        return Err(ApiError::bad_request(
            "bad_request",
            "`identity` and at least one role are required",
        ));
    }
    if let Some(unknown) = roles.iter().find(|r| !config.roles.contains_key(*r)) {
        return Err(ApiError::bad_request(
            "unknown_role",
            format!("role `{unknown}` is not defined under [roles]"),
        ));
    }
    Ok(())
}

/// `POST /api/v1/api-keys` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyBody {
    identity: String,
    roles: Vec<String>,
}

/// `POST /api/v1/api-keys`: a new API key for an identity (managers only); the token is in
/// this answer only, the store keeps its hash.
pub async fn create_api_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody(body): JsonBody<ApiKeyBody>,
) -> Result<Response, ApiError> {
    check_new_credential(&state, &caller, "API keys", &body.identity, &body.roles)?;
    let now = state.pipeline.clock().now();
    let key = crate::apikeys::generate(&body.identity, body.roles.clone(), now);
    let audit = crate::store::AuditEntry {
        time: now,
        request_id: None,
        actor: caller.name.clone(),
        action: crate::store::AuditAction::ApiKeyCreated,
        outcome: "ok".into(),
        layer: None,
        rule: None,
        reason: format!("API key for `{}`", body.identity),
        subject: Some(key.record.key_id.clone()),
        details: serde_json::json!({ "identity": body.identity, "roles": body.roles }),
    };
    let record = key.record.clone();
    state
        .pipeline
        .with_store(move |store| store.insert_api_key(&record, &audit))
        .await?;
    let answer = serde_json::json!({
        "key_id": key.record.key_id, "identity": key.record.identity, "roles": key.record.roles, "token": key.token,
    });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `POST /api/v1/acme/eab-keys`: an ACME external account key (managers only). The MAC
/// key is in the answer; configure the ACME client with `key_id` and `hmac_key`.
pub async fn create_eab_key(
    State(state): State<AppState>,
    Caller(identity): Caller,
    JsonBody(body): JsonBody<super::wire::EabKeyBody>,
) -> Result<Response, ApiError> {
    check_new_credential(
        &state,
        &identity,
        "ACME external account keys",
        &body.identity,
        &body.roles,
    )?;
    let key = crate::gateway::acme::create_eab_key(
        &state.pipeline,
        &identity.name,
        &body.identity,
        body.roles,
    )
    .await?;
    let answer = serde_json::json!({
        "key_id": key.key_id,
        "hmac_key": key.mac_key_b64,
        "identity": key.identity,
        "roles": key.roles,
    });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `POST /api/v1/scep/challenges`: a one-time SCEP challenge (managers only), shown once.
pub async fn create_scep_challenge(
    State(state): State<AppState>,
    Caller(identity): Caller,
    JsonBody(body): JsonBody<super::wire::ScepChallengeBody>,
) -> Result<Response, ApiError> {
    if !may_manage(&state.pipeline.config(), &identity) {
        return Err(ApiError::Forbidden(
            "minting SCEP challenges needs a managing role".into(),
        ));
    }
    let names = body
        .names
        .iter()
        .map(|name| match name.parse() {
            Ok(ip) => Ok(crate::model::Identifier::Ip(ip)),
            Err(_) => crate::model::Identifier::dns(name).map_err(|e| ApiError::BadRequest {
                code: "bad_name",
                message: format!("`{name}`: {e}"),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (challenge, record) = crate::gateway::scep::mint_challenge(
        &state.pipeline,
        &identity,
        &body.profile,
        &body.identity,
        names,
        body.valid_for_seconds,
    )
    .await
    .map_err(|e| match e {
        crate::gateway::scep::MintError::Invalid(message) => ApiError::BadRequest {
            code: "bad_challenge_request",
            message,
        },
        crate::gateway::scep::MintError::Store(e) => e.into(),
    })?;
    let answer = serde_json::json!({
        "challenge": challenge,
        "id": record.id,
        "profile": record.profile,
        "identity": record.identity,
        "names": record.names.iter().map(|n| n.value()).collect::<Vec<_>>(),
        "expires_at": record.expires_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
    });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `POST /api/v1/scep/ra/rotate`: a new RA key and certificate, served from now on
/// (managers only). Clients fetch it with GetCACert.
pub async fn rotate_scep_ra(
    State(state): State<AppState>,
    Caller(identity): Caller,
) -> Result<Response, ApiError> {
    if !may_manage(&state.pipeline.config(), &identity) {
        return Err(ApiError::Forbidden(
            "rotating the SCEP RA needs a managing role".into(),
        ));
    }
    let Some(scep) = &state.scep else {
        return Err(ApiError::NotFound(
            "the SCEP listener is not enabled".into(),
        ));
    };
    let serial = scep
        .rotate(&identity.name)
        .await
        .map_err(|e| ApiError::CaUnavailable(e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "serial": serial })),
    )
        .into_response())
}

/// `POST /api/v1/reload`: read the configuration again and apply its policy (managers
/// only). A configuration that does not validate changes nothing and answers 400.
pub async fn reload(
    State(state): State<AppState>,
    Caller(identity): Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !may_manage(&state.pipeline.config(), &identity) {
        return Err(ApiError::Forbidden(
            "reloading the policy needs a managing role".into(),
        ));
    }
    let source = state.config_source.clone();
    let pipeline = state.pipeline.clone();
    let actor = identity.name.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let config = source.read().map_err(|e| e.to_string())?;
        pipeline.reload_policy(config, &actor)
    })
    .await
    .map_err(|e| ApiError::Storage(e.to_string()))?;
    match outcome {
        Ok(needs_restart) => Ok(Json(
            serde_json::json!({ "reloaded": true, "needs_restart": needs_restart }),
        )),
        Err(reason) => {
            tracing::warn!(%reason, "reload refused; the running policy stays");
            Err(ApiError::bad_request("invalid_config", reason))
        }
    }
}

/// `GET /api/v1/audit/verify`: walk the hash-chained audit log (managers only).
pub async fn verify_audit(
    State(state): State<AppState>,
    Caller(identity): Caller,
) -> Result<Json<crate::store::AuditVerification>, ApiError> {
    if !may_manage(&state.pipeline.config(), &identity) {
        return Err(ApiError::Forbidden(
            "verifying the audit log needs a managing role".into(),
        ));
    }
    Ok(Json(
        state
            .pipeline
            .with_store(|store| store.verify_audit())
            .await?,
    ))
}

/// `GET /api/v1/approvals`: requests waiting for a person (managing roles only).
pub async fn list_approvals(
    State(state): State<AppState>,
    Caller(identity): Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !may_manage(&state.pipeline.config(), &identity) {
        return Err(ApiError::Forbidden(
            "listing approvals needs a managing role".into(),
        ));
    }
    let pending = state
        .pipeline
        .with_store(|store| store.pending_requests())
        .await?;
    let items: Vec<_> = pending
        .iter()
        .map(|r| {
            let reason = match &r.state {
                crate::store::RequestState::Pending { reason } => reason.clone(),
                _ => String::new(),
            };
            serde_json::json!({
                "request_id": r.request_id, "identity": r.identity, "protocol": r.protocol,
                "template": r.template, "identifiers": r.identifiers, "reason": reason,
                "client": r.client,
                "created_at": r.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "items": items })))
}

/// `GET /api/v1/approvals/{request_id}`: one request with what it asks for and where it
/// stands (managing roles only).
pub async fn show_approval(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(request_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !may_manage(&state.pipeline.config(), &identity) {
        return Err(ApiError::Forbidden(
            "reading requests needs a managing role".into(),
        ));
    }
    let id: Uuid = request_id
        .parse()
        .map_err(|_| ApiError::NotFound("no such request".into()))?;
    let record = state
        .pipeline
        .with_store(move |store| store.request(id))
        .await?
        .ok_or_else(|| ApiError::NotFound("no such request".into()))?;
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let mut body = serde_json::json!({
        "request_id": record.request_id,
        "identity": record.identity,
        "protocol": record.protocol,
        "template": record.template,
        "identifiers": record.identifiers,
        "state": record.state,
        "client": record.client,
        "created_at": rfc3339(record.created_at),
        "updated_at": rfc3339(record.updated_at),
    });
    if let Some(pending) = &record.pending {
        body["csr"] = pem::encode(pem::CERTIFICATE_REQUEST, &pending.csr_der).into();
        body["validity_days"] = pending.validity_days.into();
        body["common_name"] = pending.common_name.clone().into();
        body["roles"] = pending.identity.roles.clone().into();
        body["resource"] = pending.resource.clone().into();
        body["metadata"] = serde_json::to_value(&pending.metadata).unwrap_or_default();
    }
    Ok(Json(body))
}

fn approval_error(error: crate::pipeline::ApprovalError) -> ApiError {
    use crate::pipeline::ApprovalError;
    match error {
        ApprovalError::NotFound => ApiError::NotFound("no such request".into()),
        ApprovalError::Expired => ApiError::Conflict {
            code: "expired",
            message: error.to_string(),
        },
        ApprovalError::NotPending => ApiError::Conflict {
            code: "not_pending",
            message: error.to_string(),
        },
        ApprovalError::NotAnApprover | ApprovalError::OwnRequest => {
            ApiError::Forbidden(error.to_string())
        }
        ApprovalError::Unusable(message) => ApiError::bad_request("unusable_request", message),
        ApprovalError::Pipeline(error) => error.into(),
    }
}

/// `POST /api/v1/approvals/{request_id}/approve`: issue it now (four eyes).
pub async fn approve(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(request_id): Path<Uuid>,
) -> Result<Json<CertificateDetail>, ApiError> {
    let record = state
        .pipeline
        .approve(request_id, &identity)
        .await
        .map_err(approval_error)?;
    Ok(Json(CertificateDetail::new(
        &record,
        state.pipeline.clock().now(),
    )))
}

/// Body of a denial.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DenyBody {
    reason: Option<String>,
}

/// `POST /api/v1/approvals/{request_id}/deny`.
pub async fn deny_approval(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(request_id): Path<Uuid>,
    JsonBody(body): JsonBody<DenyBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let reason = body.reason.unwrap_or_else(|| "no reason given".into());
    state
        .pipeline
        .reject(request_id, &identity, &reason)
        .await
        .map_err(approval_error)?;
    Ok(Json(
        serde_json::json!({ "request_id": request_id, "state": "denied", "reason": reason }),
    ))
}

/// `GET /api/v1/certificates/{serial}/escrowed-key`: the escrowed private key of a
/// serverkeygen certificate, PEM PKCS#8 (managers only; audited).
pub async fn escrowed_key(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(serial): Path<String>,
) -> Result<Response, ApiError> {
    if !may_manage(&state.pipeline.config(), &identity) {
        return Err(ApiError::Forbidden(
            "recovering escrowed keys needs a managing role".into(),
        ));
    }
    let serial = serial.to_ascii_lowercase();
    let key = crate::lifecycle::escrow::withdraw(&state.pipeline, &serial)
        .await
        .map_err(|e| match e {
            crate::lifecycle::escrow::EscrowError::Store(e) => ApiError::from(e),
            other => ApiError::Storage(other.to_string()),
        })?;
    let Some(key) = key else {
        return Err(ApiError::NotFound(format!("no escrowed key for {serial}")));
    };
    let audit = crate::store::AuditEntry {
        time: state.pipeline.clock().now(),
        request_id: None,
        actor: identity.name.clone(),
        action: crate::store::AuditAction::KeyRecovered,
        outcome: "ok".into(),
        layer: None,
        rule: None,
        reason: "escrowed private key handed out".into(),
        subject: Some(serial.clone()),
        details: serde_json::json!({}),
    };
    state
        .pipeline
        .with_store(move |store| store.append_audit(&audit))
        .await?;
    Ok((
        [(header::CONTENT_TYPE, "application/pkcs8")],
        pem::encode("PRIVATE KEY", &key),
    )
        .into_response())
}

/// Anything else.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// An endpoint called with a method it does not have (405; the router adds `Allow`).
pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::MethodNotAllowed(method)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30d"), Some(time::Duration::days(30)));
        assert_eq!(parse_duration("7"), Some(time::Duration::days(7)));
        assert_eq!(parse_duration("12h"), Some(time::Duration::hours(12)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("-1d"), None);
        assert_eq!(parse_duration("5w"), None);
    }
}
