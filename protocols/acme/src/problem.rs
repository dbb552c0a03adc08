//! ACME problem documents (RFC 8555 §6.7, RFC 7807): one error type for the whole crate,
//! turned into `application/problem+json` in one place.

use axum::http::StatusCode;
use serde::Serialize;

/// The `urn:ietf:params:acme:error:*` types rampart uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// The account is not known (by key or URL).
    AccountDoesNotExist,
    /// The CSR is unacceptable.
    BadCsr,
    /// The nonce is unknown, used or missing.
    BadNonce,
    /// The public key is unacceptable.
    BadPublicKey,
    /// The revocation reason is not allowed.
    BadRevocationReason,
    /// The JWS algorithm is not supported.
    BadSignatureAlgorithm,
    /// CAA forbids issuance.
    Caa,
    /// A connection to the validation target failed.
    Connection,
    /// DNS problem during validation.
    Dns,
    /// External account binding is required.
    ExternalAccountRequired,
    /// The validation response was not what was expected.
    IncorrectResponse,
    /// A contact URL is invalid.
    InvalidContact,
    /// The request is malformed.
    Malformed,
    /// The request is not allowed in the object's current state.
    OrderNotReady,
    /// Too many requests.
    RateLimited,
    /// The server will not issue for this identifier.
    RejectedIdentifier,
    /// Internal failure.
    ServerInternal,
    /// TLS problem during validation.
    Tls,
    /// The client lacks authorization.
    Unauthorized,
    /// A contact scheme is not supported.
    UnsupportedContact,
    /// An identifier type is not supported.
    UnsupportedIdentifier,
    /// The account must agree to the terms of service.
    UserActionRequired,
    /// The certificate is already revoked.
    AlreadyRevoked,
    /// The certificate named in `replaces` was already replaced (RFC 9773).
    AlreadyReplaced,
    /// The requested certificate profile does not exist.
    InvalidProfile,
}

impl ProblemType {
    /// The URN.
    pub fn urn(self) -> &'static str {
        match self {
            ProblemType::AccountDoesNotExist => "urn:ietf:params:acme:error:accountDoesNotExist",
            ProblemType::BadCsr => "urn:ietf:params:acme:error:badCSR",
            ProblemType::BadNonce => "urn:ietf:params:acme:error:badNonce",
            ProblemType::BadPublicKey => "urn:ietf:params:acme:error:badPublicKey",
            ProblemType::BadRevocationReason => "urn:ietf:params:acme:error:badRevocationReason",
            ProblemType::BadSignatureAlgorithm => {
                "urn:ietf:params:acme:error:badSignatureAlgorithm"
            }
            ProblemType::Caa => "urn:ietf:params:acme:error:caa",
            ProblemType::Connection => "urn:ietf:params:acme:error:connection",
            ProblemType::Dns => "urn:ietf:params:acme:error:dns",
            ProblemType::ExternalAccountRequired => {
                "urn:ietf:params:acme:error:externalAccountRequired"
            }
            ProblemType::IncorrectResponse => "urn:ietf:params:acme:error:incorrectResponse",
            ProblemType::InvalidContact => "urn:ietf:params:acme:error:invalidContact",
            ProblemType::Malformed => "urn:ietf:params:acme:error:malformed",
            ProblemType::OrderNotReady => "urn:ietf:params:acme:error:orderNotReady",
            ProblemType::RateLimited => "urn:ietf:params:acme:error:rateLimited",
            ProblemType::RejectedIdentifier => "urn:ietf:params:acme:error:rejectedIdentifier",
            ProblemType::ServerInternal => "urn:ietf:params:acme:error:serverInternal",
            ProblemType::Tls => "urn:ietf:params:acme:error:tls",
            ProblemType::Unauthorized => "urn:ietf:params:acme:error:unauthorized",
            ProblemType::UnsupportedContact => "urn:ietf:params:acme:error:unsupportedContact",
            ProblemType::UnsupportedIdentifier => {
                "urn:ietf:params:acme:error:unsupportedIdentifier"
            }
            ProblemType::UserActionRequired => "urn:ietf:params:acme:error:userActionRequired",
            ProblemType::AlreadyRevoked => "urn:ietf:params:acme:error:alreadyRevoked",
            ProblemType::AlreadyReplaced => "urn:ietf:params:acme:error:alreadyReplaced",
            ProblemType::InvalidProfile => "urn:ietf:params:acme:error:invalidProfile",
        }
    }

    /// The HTTP status a problem of this type is sent with.
    pub fn status(self) -> StatusCode {
        match self {
            // §7.3.1: an unknown account is a 400.
            ProblemType::AccountDoesNotExist => StatusCode::BAD_REQUEST,
            ProblemType::Unauthorized | ProblemType::UserActionRequired => StatusCode::FORBIDDEN,
            ProblemType::OrderNotReady => StatusCode::FORBIDDEN,
            ProblemType::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProblemType::AlreadyReplaced => StatusCode::CONFLICT,
            ProblemType::ServerInternal => StatusCode::INTERNAL_SERVER_ERROR,
            ProblemType::RejectedIdentifier | ProblemType::Caa => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The type for a validation failure kind name (`dns`, `connection`, …).
    pub fn from_validation(kind: &str) -> ProblemType {
        match kind {
            "dns" => ProblemType::Dns,
            "connection" => ProblemType::Connection,
            "unauthorized" => ProblemType::Unauthorized,
            "incorrectResponse" => ProblemType::IncorrectResponse,
            "tls" => ProblemType::Tls,
            "caa" => ProblemType::Caa,
            _ => ProblemType::ServerInternal,
        }
    }
}

/// An identifier in a subproblem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SubproblemIdentifier {
    /// `dns` or `ip`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The value.
    pub value: String,
}

/// A per-identifier problem (RFC 8555 §6.7.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Subproblem {
    /// URN.
    #[serde(rename = "type")]
    pub kind: String,
    /// Explanation.
    pub detail: String,
    /// The identifier concerned.
    pub identifier: SubproblemIdentifier,
}

/// A problem document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", kind.urn())]
pub struct Problem {
    /// Type.
    pub kind: ProblemType,
    /// Explanation for humans.
    pub detail: String,
    /// Per-identifier problems.
    pub subproblems: Vec<Subproblem>,
    /// Status override (e.g. 404 for unknown resources, 405, 415).
    pub status: Option<StatusCode>,
    /// Supported algorithms, for `badSignatureAlgorithm`.
    pub algorithms: Option<Vec<&'static str>>,
}

impl Problem {
    /// A problem of `kind`.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            detail: detail.into(),
            subproblems: Vec::new(),
            status: None,
            algorithms: None,
        }
    }

    /// `malformed`.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Malformed, detail)
    }

    /// `unauthorized`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Unauthorized, detail)
    }

    /// `serverInternal` (details go to the log, not to the client).
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "ACME internal error");
        Self::new(
            ProblemType::ServerInternal,
            "internal error; see the server log",
        )
    }

    /// A `malformed` 404 for an unknown resource.
    pub fn not_found(what: &str) -> Self {
        let mut problem = Self::malformed(format!("no such {what}"));
        problem.status = Some(StatusCode::NOT_FOUND);
        problem
    }

    /// With an explicit status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// With subproblems.
    pub fn with_subproblems(mut self, subproblems: Vec<Subproblem>) -> Self {
        self.subproblems = subproblems;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.kind.status())
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "type": self.kind.urn(),
            "detail": self.detail,
            "status": self.status().as_u16(),
        });
        if !self.subproblems.is_empty() {
            body["subproblems"] = serde_json::to_value(&self.subproblems).expect("serializable");
        }
        if let Some(algorithms) = &self.algorithms {
            body["algorithms"] = serde_json::json!(algorithms);
        }
        body
    }
}
