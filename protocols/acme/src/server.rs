//! The ACME server: state, the axum router and one handler per resource. Handlers check
//! the JWS, load records, apply the RFC 8555 state machine and call the backend; they
//! hold no policy of their own.

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};
use time::{Duration, OffsetDateTime};

use crate::backend::{AcmeBackend, CaaRefusal, Revoker};
use crate::jws::{self, Jws, KeyRef};
use crate::nonce::NonceStore;
use crate::problem::{Problem, ProblemType, Subproblem, SubproblemIdentifier};
use crate::records::{
    AccountRecord, AccountStatus, AuthzRecord, ChallengeRecord, OrderRecord, Records,
};
use crate::validation::{Target, ValidationError, Validator};
use crate::wire::{
    self, AccountUpdate, AuthzStatus, AuthzUpdate, ChallengeStatus, ChallengeType, Finalize,
    Identifier, KeyChange, NewAccount, NewOrder, OrderStatus, RevokeCert,
};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most identifiers in one order.
const MAX_IDENTIFIERS: usize = 100;
/// Lifetime of orders and pending authorizations.
const PENDING_LIFETIME: Duration = Duration::days(7);
/// Lifetime of a valid authorization (reused by later orders while valid).
const VALID_AUTHZ_LIFETIME: Duration = Duration::days(30);
/// Seconds clients are asked to wait before polling again.
const RETRY_AFTER_SECONDS: &str = "1";
/// How long a challenge response waits for its validation to finish.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
/// How often clients should re-check renewal information (6 hours).
const ARI_RETRY_AFTER_SECONDS: &str = "21600";
/// Seconds a client refused for too many pending orders is asked to wait when none of
/// them expires (all wait for an approval).
const PENDING_ORDERS_RETRY_AFTER_SECONDS: u64 = 3600;
/// RFC 5280 reasons a client may give (no CA/AA compromise, hold or removeFromCRL).
const ALLOWED_REASONS: [u8; 6] = [0, 1, 3, 4, 5, 9];

/// A clock.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The ACME server.
pub struct AcmeServer {
    backend: Arc<dyn AcmeBackend>,
    records: Records,
    nonces: NonceStore,
    validator: Arc<Validator>,
    clock: Clock,
    finalizing: Mutex<HashSet<String>>,
    verifiers: crate::jws::VerifierCache,
    /// Most orders one account may have pending, ready or processing; 0 = no limit.
    max_pending_orders: AtomicUsize,
}

impl std::fmt::Debug for AcmeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeServer").finish_non_exhaustive()
    }
}

impl AcmeServer {
    /// A server over `backend`, keeping records in `records`.
    pub fn new(
        backend: Arc<dyn AcmeBackend>,
        records: Records,
        validator: Validator,
        clock: Clock,
    ) -> Arc<Self> {
        Arc::new(AcmeServer {
            backend,
            records,
            nonces: NonceStore::new(100_000),
            validator: Arc::new(validator),
            clock,
            finalizing: Mutex::new(HashSet::new()),
            verifiers: crate::jws::VerifierCache::default(),
            max_pending_orders: AtomicUsize::new(0),
        })
    }

    fn now(&self) -> OffsetDateTime {
        (self.clock)().replace_nanosecond(0).expect("valid")
    }

    /// Refuse newOrder (`rateLimited`) for an account that already has `max` orders
    /// pending, ready or processing; 0 (the default) = no limit.
    pub fn set_max_pending_orders(&self, max: usize) {
        self.max_pending_orders.store(max, Ordering::Relaxed);
    }

    /// Remove orders that expired more than `retain` ago, and the authorizations no order
    /// still kept can list, with their index entries (§7.1.3 and §7.1.4 leave expired
    /// objects to the server; clients never come back for them). An order lists
    /// authorizations that had at least a day left when it was made, and expires
    /// [`PENDING_LIFETIME`] after it was made: an authorization is kept that much longer
    /// than orders, so it outlives every order that lists it.
    pub async fn prune_expired(&self, retain: Duration) -> Result<crate::records::Pruned, Problem> {
        let now = self.now();
        let orders_before = now - retain;
        self.records
            .prune_expired(orders_before, orders_before - PENDING_LIFETIME, now)
            .await
    }

    /// The answer for a request an embedder's rate limiter in front of [`router`] refused:
    /// a `rateLimited` problem (429) with `Retry-After`, carrying a fresh nonce, the
    /// directory link and `Cache-Control: no-store` like every other response.
    pub fn rate_limited(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        retry_after_seconds: u64,
        detail: &str,
    ) -> Response {
        let response = Problem::new(ProblemType::RateLimited, detail).into_response();
        let mut response = with_header(
            response,
            header::RETRY_AFTER,
            &retry_after_seconds.max(1).to_string(),
        );
        // Enrollment requests are POSTs: the answer carries a nonce.
        self.decorate(&mut response, index_link(headers, uri), true);
        response
    }

    /// Adds what every response carries, no-store and the index link, and a fresh nonce
    /// when `nonce`.
    fn decorate(&self, response: &mut Response, index: Option<String>, nonce: bool) {
        let headers = response.headers_mut();
        if let Some(Ok(nonce)) = nonce.then(|| HeaderValue::from_str(&self.nonces.issue())) {
            headers.insert("replay-nonce", nonce);
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(Ok(link)) = index.map(|l| HeaderValue::from_str(&l)) {
            headers.append(header::LINK, link);
        }
    }
}

/// The router: `/acme/<profile>/…`.
pub fn router(server: Arc<AcmeServer>) -> Router {
    Router::new()
        .route("/acme/{profile}/directory", get(directory))
        .route("/acme/{profile}/new-nonce", get(new_nonce).head(new_nonce))
        .route("/acme/{profile}/new-account", post(new_account))
        .route("/acme/{profile}/account/{id}", post(account))
        .route("/acme/{profile}/account/{id}/orders", post(account_orders))
        .route(
            "/acme/{profile}/account/{id}/orders/{after}",
            post(account_orders_after),
        )
        .route("/acme/{profile}/new-order", post(new_order))
        .route("/acme/{profile}/order/{id}", post(order))
        .route("/acme/{profile}/order/{id}/finalize", post(finalize))
        .route("/acme/{profile}/authz/{id}", post(authz))
        .route("/acme/{profile}/chall/{id}/{kind}", post(challenge))
        .route("/acme/{profile}/cert/{id}", post(certificate))
        .route("/acme/{profile}/revoke-cert", post(revoke_cert))
        .route("/acme/{profile}/key-change", post(key_change))
        .route("/acme/{profile}/new-authz", post(new_authz))
        .route("/acme/{profile}/renewal-info/{cert_id}", get(renewal_info))
        .fallback(|| async { Problem::not_found("resource") })
        // RFC 8555 §6.3: a GET where POST(-as-GET) is required is answered 405 (axum adds
        // the `Allow` header); errors are problem documents.
        .method_not_allowed_fallback(|method: Method| async move {
            Problem::malformed(format!("method {method} is not allowed on this resource"))
                .with_status(StatusCode::METHOD_NOT_ALLOWED)
        })
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            add_nonce,
        ))
        .with_state(server)
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// Every response carries a fresh nonce, the directory link and no-store.
async fn add_nonce(
    State(server): State<Arc<AcmeServer>>,
    request: Request,
    next: Next,
) -> Response {
    let index = index_link(request.headers(), request.uri());
    // RFC 8555 §6.5: a nonce on every answer to a POST (errors included) and from newNonce;
    // none on the other GETs (the directory, renewalInfo), as Boulder does: some clients
    // fail on a nonce they did not ask for (Ruby's acme-client before 2.0.16).
    let nonce = request.method() != Method::GET || request.uri().path().ends_with("/new-nonce");
    let mut response = next.run(request).await;
    server.decorate(&mut response, index, nonce);
    response
}

/// The `Link: <…/directory>;rel="index"` value for a request under a profile.
fn index_link(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    profile_of(uri.path()).map(|profile| {
        format!(
            "<{}/acme/{profile}/directory>;rel=\"index\"",
            base_url(headers, uri)
        )
    })
}

fn profile_of(path: &str) -> Option<&str> {
    path.strip_prefix("/acme/")?
        .split('/')
        .next()
        .filter(|p| !p.is_empty())
}

/// `https://<host>` as the client addressed us.
fn base_url(headers: &HeaderMap, uri: &Uri) -> String {
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "localhost".into());
    format!("https://{host}")
}

/// URLs of one profile.
struct Urls {
    base: String,
}

impl Urls {
    fn new(headers: &HeaderMap, uri: &Uri, profile: &str) -> Self {
        Urls {
            base: format!("{}/acme/{profile}", base_url(headers, uri)),
        }
    }
    fn at(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }
    fn account(&self, id: &str) -> String {
        self.at(&format!("account/{id}"))
    }
    fn order(&self, id: &str) -> String {
        self.at(&format!("order/{id}"))
    }
    fn authz(&self, id: &str) -> String {
        self.at(&format!("authz/{id}"))
    }
    fn challenge(&self, authz: &str, kind: ChallengeType) -> String {
        self.at(&format!("chall/{authz}/{}", kind.as_str()))
    }
}

/// A new account, order or authorization id: 48 bits of milliseconds since the Unix epoch,
/// then 80 random bits, base64url (22 characters). Ids made close in time share their first
/// characters, so the store's entries for a busy period sit in a few B-tree leaves instead
/// of one random leaf each, and fewer pages are read back in per order; the random part
/// keeps ids unique and unguessable.
fn new_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    id_from(millis, rand::random())
}

/// base64 over the URL-safe characters taken in ASCII order ("-", digits, capitals, "_",
/// small letters): ids then sort as their bytes do, that is by time, in the stores' key
/// order and in the orders list (base64url's own alphabet puts digits, "-" and "_" after
/// the letters).
const SORTABLE_ID: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &match base64::alphabet::Alphabet::new(
        "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz",
    ) {
        Ok(alphabet) => alphabet,
        Err(_) => panic!("64 distinct URL-safe characters"),
    },
    base64::engine::general_purpose::NO_PAD,
);

/// The id of a time (its low 48 bits, big-endian) and ten random bytes.
fn id_from(millis: u64, random: [u8; 10]) -> String {
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    id[6..].copy_from_slice(&random);
    SORTABLE_ID.encode(id)
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

fn reply(status: StatusCode, body: Value, location: Option<String>) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(Ok(value)) = location.map(|l| HeaderValue::from_str(&l)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn with_header(mut response: Response, name: header::HeaderName, value: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(name, value);
    }
    response
}

// ---------------------------------------------------------------------------------------
// Request authentication
// ---------------------------------------------------------------------------------------

/// A verified request.
struct Signed {
    jws: Jws,
    urls: Urls,
    /// The account, for `kid` requests.
    account: Option<AccountRecord>,
    /// The client's address (the listener's `ConnectInfo`), for the backend's records.
    client: Option<IpAddr>,
}

impl Signed {
    /// The signing account (present on every `kid` request).
    fn account(&self) -> &AccountRecord {
        self.account
            .as_ref()
            .expect("kid requests carry their account")
    }
}

/// Which key forms an endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyForm {
    Jwk,
    Kid,
    Either,
}

impl AcmeServer {
    async fn authenticate(
        &self,
        profile: &str,
        headers: &HeaderMap,
        uri: &Uri,
        body: &Bytes,
        form: KeyForm,
        client: Option<IpAddr>,
    ) -> Result<Signed, Problem> {
        if self.backend.profile(profile).is_none() {
            return Err(Problem::not_found("ACME profile"));
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/jose+json") {
            return Err(
                Problem::malformed("Content-Type must be application/jose+json")
                    .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            );
        }
        let jws = Jws::parse(body)?;
        let urls = Urls::new(headers, uri, profile);
        let expected = format!("{}{}", base_url(headers, uri), uri.path());
        if jws.url != expected {
            return Err(Problem::unauthorized(format!(
                "JWS url `{}` is not the request URL `{expected}`",
                jws.url
            )));
        }
        let account = match (&jws.key, form) {
            (KeyRef::Jwk(_), KeyForm::Kid) => {
                return Err(Problem::malformed(
                    "this request must identify its account with `kid`",
                ))
            }
            (KeyRef::Kid(_), KeyForm::Jwk) => {
                return Err(Problem::malformed("this request must carry a `jwk`"))
            }
            (KeyRef::Jwk(_), _) => None,
            (KeyRef::Kid(kid), _) => {
                let id = kid
                    .strip_prefix(&urls.at("account/"))
                    .filter(|id| !id.contains('/'))
                    .ok_or_else(|| {
                        Problem::new(
                            ProblemType::AccountDoesNotExist,
                            format!("`{kid}` is not an account URL of this profile"),
                        )
                    })?;
                let account = self
                    .records
                    .account(id)
                    .await?
                    .filter(|a| a.profile == profile)
                    .ok_or_else(|| {
                        Problem::new(ProblemType::AccountDoesNotExist, "no such account")
                    })?;
                Some(account)
            }
        };
        match (&account, &jws.key) {
            // The account's key, and its thumbprint as recorded with it.
            (Some(account), _) => {
                jws.verify_cached(&account.jwk, Some(&account.thumbprint), &self.verifiers)?
            }
            (None, KeyRef::Jwk(jwk)) => jws.verify_cached(jwk, None, &self.verifiers)?,
            (None, KeyRef::Kid(_)) => return Err(Problem::internal("kid request without account")),
        }
        let nonce = jws
            .nonce
            .as_deref()
            .ok_or_else(|| Problem::new(ProblemType::BadNonce, "JWS header lacks `nonce`"))?;
        if !self.nonces.consume(nonce) {
            return Err(Problem::new(
                ProblemType::BadNonce,
                "the nonce is unknown or was already used",
            ));
        }
        if let Some(account) = &account {
            if account.status != AccountStatus::Valid {
                return Err(Problem::unauthorized(
                    format!("the account is {:?}", account.status).to_lowercase(),
                ));
            }
        }
        Ok(Signed {
            jws,
            urls,
            account,
            client,
        })
    }
}

async fn read_body(request: Request) -> Result<(HeaderMap, Uri, Bytes), Problem> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            Problem::malformed(format!("request body larger than {MAX_BODY_BYTES} bytes"))
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        })?;
    Ok((parts.headers, parts.uri, bytes))
}

/// How an endpoint wants its key named (a type, so that it can pick the extractor).
trait KeyPolicy: Send {
    const FORM: KeyForm;
}

/// `kid` requests: an existing account.
struct ByKid;
impl KeyPolicy for ByKid {
    const FORM: KeyForm = KeyForm::Kid;
}

/// `jwk` requests: newAccount.
struct ByJwk;
impl KeyPolicy for ByJwk {
    const FORM: KeyForm = KeyForm::Jwk;
}

/// Either: revokeCert.
struct ByEither;
impl KeyPolicy for ByEither {
    const FORM: KeyForm = KeyForm::Either;
}

/// A request whose JWS verified, its nonce consumed and its account loaded.
struct Verified<P>(Signed, std::marker::PhantomData<P>);

impl<P: KeyPolicy> axum::extract::FromRequest<Arc<AcmeServer>> for Verified<P> {
    type Rejection = Problem;

    async fn from_request(request: Request, server: &Arc<AcmeServer>) -> Result<Self, Problem> {
        let profile = profile_of(request.uri().path())
            .ok_or_else(|| Problem::not_found("ACME profile"))?
            .to_string();
        let client = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip());
        let (headers, uri, body) = read_body(request).await?;
        let signed = server
            .authenticate(&profile, &headers, &uri, &body, P::FORM, client)
            .await?;
        Ok(Verified(signed, std::marker::PhantomData))
    }
}

// ---------------------------------------------------------------------------------------
// Directory and nonces
// ---------------------------------------------------------------------------------------

async fn directory(
    State(server): State<Arc<AcmeServer>>,
    Path(profile): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, Problem> {
    let info = server
        .backend
        .profile(&profile)
        .ok_or_else(|| Problem::not_found("ACME profile"))?;
    let urls = Urls::new(&headers, &uri, &profile);
    let body = json!({
        "newNonce": urls.at("new-nonce"),
        "newAccount": urls.at("new-account"),
        "newOrder": urls.at("new-order"),
        "revokeCert": urls.at("revoke-cert"),
        "keyChange": urls.at("key-change"),
        "newAuthz": urls.at("new-authz"),
        "renewalInfo": urls.at("renewal-info"),
        "meta": Value::Object(directory_meta(info)),
    });
    Ok(reply(StatusCode::OK, body, None))
}

fn directory_meta(info: &crate::backend::Profile) -> Map<String, Value> {
    let mut meta = info.meta.clone();
    if !info.caa_identities.is_empty() {
        meta.insert("caaIdentities".into(), json!(info.caa_identities));
    }
    if !info.certificate_profiles.is_empty() {
        meta.insert("profiles".into(), json!(info.certificate_profiles));
    }
    meta
}

/// `GET renewal-info/<certID>` (RFC 9773 §4.2): the suggested renewal window.
async fn renewal_info(
    State(server): State<Arc<AcmeServer>>,
    Path((profile, cert_id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    if server.backend.profile(&profile).is_none() {
        return Err(Problem::not_found("ACME profile"));
    }
    let id = crate::ari::CertId::parse(&cert_id)?;
    let certificate = server
        .backend
        .certificate(&id.serial)
        .await?
        .filter(|c| id.names(c))
        .ok_or_else(|| Problem::not_found("certificate"))?;
    let (start, end) = crate::ari::suggested_window(&certificate, server.now());
    let body = json!({ "suggestedWindow": { "start": rfc3339(start), "end": rfc3339(end) } });
    Ok(with_header(
        reply(StatusCode::OK, body, None),
        header::RETRY_AFTER,
        ARI_RETRY_AFTER_SECONDS,
    ))
}

async fn new_nonce(
    State(server): State<Arc<AcmeServer>>,
    Path(profile): Path<String>,
    method: Method,
) -> Response {
    if server.backend.profile(&profile).is_none() {
        return Problem::not_found("ACME profile").into_response();
    }
    // The nonce itself is added by the middleware.
    let status = if method == Method::HEAD {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    };
    status.into_response()
}

// ---------------------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------------------

fn account_body(account: &AccountRecord, urls: &Urls) -> Value {
    json!({
        "status": account.status,
        "contact": account.contact,
        "orders": format!("{}/orders", urls.account(&account.id)),
        "createdAt": rfc3339(account.created_at),
    })
}

async fn new_account(
    State(server): State<Arc<AcmeServer>>,
    Path(profile): Path<String>,
    Verified(signed, _): Verified<ByJwk>,
) -> Result<Response, Problem> {
    let KeyRef::Jwk(jwk) = &signed.jws.key else {
        unreachable!("KeyForm::Jwk")
    };
    let payload: NewAccount = signed.jws.json()?;
    let thumbprint = jws::thumbprint(jwk)?;
    if let Some(existing) = server
        .records
        .account_by_thumbprint(&profile, &thumbprint)
        .await?
    {
        // §7.3.6: a deactivated account's key authorizes nothing any more.
        if existing.status != AccountStatus::Valid {
            return Err(Problem::unauthorized(
                "an account with this key exists but is deactivated",
            ));
        }
        let body = account_body(&existing, &signed.urls);
        return Ok(reply(
            StatusCode::OK,
            body,
            Some(signed.urls.account(&existing.id)),
        ));
    }
    if payload.only_return_existing {
        return Err(Problem::new(
            ProblemType::AccountDoesNotExist,
            "no account exists for this key",
        ));
    }
    let info = server
        .backend
        .profile(&profile)
        .ok_or_else(|| Problem::not_found("ACME profile"))?;
    if info.meta.contains_key("termsOfService") && !payload.terms_of_service_agreed {
        return Err(Problem::new(
            ProblemType::UserActionRequired,
            "the terms of service must be agreed to",
        ));
    }
    wire::validate_contacts(&payload.contact)?;
    let id = new_id();
    // Who the account acts as: the identity behind its external account key, or an
    // anonymous identity with the profile's anonymous roles.
    let (identity, roles, eab_key_id) = match &payload.external_account_binding {
        Some(binding) => {
            let binding = crate::jws::ExternalAccountBinding::parse(binding, jwk, &signed.jws.url)?;
            let checked = async {
                let key = server
                    .backend
                    .external_account_key(&binding.key_id)
                    .await?
                    .ok_or_else(|| Problem::unauthorized("unknown external account key id"))?;
                if key.bound_account.is_some() {
                    return Err(Problem::unauthorized(
                        "this external account key is already bound to an account",
                    ));
                }
                binding.verify(&key.mac_key)?;
                Ok(key)
            }
            .await;
            let key = match checked {
                Ok(key) => key,
                Err(problem) => {
                    if problem.kind == ProblemType::Unauthorized {
                        server
                            .backend
                            .external_account_refused(
                                &profile,
                                &binding.key_id,
                                &problem.detail,
                                signed.client,
                            )
                            .await;
                    }
                    return Err(problem);
                }
            };
            (key.identity, key.roles, Some(binding.key_id))
        }
        None => {
            let roles = info.anonymous_roles.clone().ok_or_else(|| {
                Problem::new(
                    ProblemType::ExternalAccountRequired,
                    "this profile requires external account binding",
                )
            })?;
            (format!("acme:{id}"), roles, None)
        }
    };
    let account = AccountRecord {
        identity,
        id,
        profile,
        jwk: jwk.clone(),
        thumbprint,
        contact: payload.contact,
        status: AccountStatus::Valid,
        roles,
        created_at: server.now(),
    };
    if let Some(key_id) = &eab_key_id {
        server
            .backend
            .bind_external_account_key(key_id, &account.id)
            .await?;
    }
    server.records.put_account(&account).await?;
    tracing::info!(account = %account.id, "ACME account created");
    let body = account_body(&account, &signed.urls);
    Ok(reply(
        StatusCode::CREATED,
        body,
        Some(signed.urls.account(&account.id)),
    ))
}

fn own_account(signed: &Signed, id: &str) -> Result<AccountRecord, Problem> {
    let account = signed
        .account
        .clone()
        .expect("kid requests carry the account");
    if account.id != id {
        return Err(Problem::unauthorized(
            "the request is signed by another account",
        ));
    }
    Ok(account)
}

async fn account(
    State(server): State<Arc<AcmeServer>>,
    Path((_, id)): Path<(String, String)>,
    Verified(signed, _): Verified<ByKid>,
) -> Result<Response, Problem> {
    let mut account = own_account(&signed, &id)?;
    if !signed.jws.is_post_as_get() {
        let update: AccountUpdate = signed.jws.json()?;
        if let Some(contact) = update.contact {
            wire::validate_contacts(&contact)?;
            account.contact = contact;
        }
        match update.status.as_deref() {
            None => {}
            Some("deactivated") => {
                account.status = AccountStatus::Deactivated;
                tracing::info!(account = %account.id, "ACME account deactivated");
            }
            Some(other) => {
                return Err(Problem::malformed(format!(
                    "cannot set account status to `{other}`"
                )))
            }
        }
        server.records.put_account(&account).await?;
    }
    Ok(reply(
        StatusCode::OK,
        account_body(&account, &signed.urls),
        Some(signed.urls.account(&account.id)),
    ))
}

/// Orders an account's orders list looks at per page (RFC 8555 §7.1.2.1).
const ORDERS_PAGE: usize = 100;

async fn account_orders(
    State(server): State<Arc<AcmeServer>>,
    Path((_, id)): Path<(String, String)>,
    Verified(signed, _): Verified<ByKid>,
) -> Result<Response, Problem> {
    orders_page(&server, &signed, &id, None).await
}

async fn account_orders_after(
    State(server): State<Arc<AcmeServer>>,
    Path((_, id, after)): Path<(String, String, String)>,
    Verified(signed, _): Verified<ByKid>,
) -> Result<Response, Problem> {
    orders_page(&server, &signed, &id, Some(&after)).await
}

/// RFC 8555 §7.1.2.1: the account's orders [`ORDERS_PAGE`] at a time in the order of
/// their ids, without the invalid ones (a SHOULD), and while more may follow a `Link` with
/// `rel="next"` to `…/orders/<last order looked at>`.
async fn orders_page(
    server: &AcmeServer,
    signed: &Signed,
    id: &str,
    after: Option<&str>,
) -> Result<Response, Problem> {
    let account = own_account(signed, id)?;
    let ids = server
        .records
        .order_ids_after(&account.id, after, ORDERS_PAGE)
        .await?;
    let mut urls = Vec::new();
    for order_id in &ids {
        let Some(order) = server.records.order(order_id).await? else {
            continue;
        };
        if server.order_view(&order).await?.0 != OrderStatus::Invalid {
            urls.push(signed.urls.order(order_id));
        }
    }
    let response = reply(StatusCode::OK, json!({ "orders": urls }), None);
    Ok(match ids.last().filter(|_| ids.len() == ORDERS_PAGE) {
        Some(last) => with_header(
            response,
            header::LINK,
            &format!(
                "<{}/orders/{last}>;rel=\"next\"",
                signed.urls.account(&account.id)
            ),
        ),
        None => response,
    })
}

async fn key_change(
    State(server): State<Arc<AcmeServer>>,
    Verified(signed, _): Verified<ByKid>,
) -> Result<Response, Problem> {
    let mut account = signed.account().clone();
    let inner = Jws::parse(&signed.jws.payload)?;
    let KeyRef::Jwk(new_key) = &inner.key else {
        return Err(Problem::malformed(
            "the inner keyChange JWS must carry the new key as `jwk`",
        ));
    };
    inner.verify(new_key)?;
    if inner.url != signed.jws.url {
        return Err(Problem::malformed(
            "the inner JWS url differs from the outer one",
        ));
    }
    if inner.nonce.is_some() {
        return Err(Problem::malformed(
            "the inner keyChange JWS must not carry a nonce",
        ));
    }
    let change: KeyChange = inner.json()?;
    if change.account != signed.urls.account(&account.id) {
        return Err(Problem::malformed(
            "keyChange `account` is not the signing account",
        ));
    }
    if jws::thumbprint(&change.old_key)? != account.thumbprint {
        return Err(Problem::unauthorized(
            "keyChange `oldKey` is not the account's current key",
        ));
    }
    let thumbprint = jws::thumbprint(new_key)?;
    if let Some(other) = server
        .records
        .account_by_thumbprint(&account.profile, &thumbprint)
        .await?
    {
        let problem = Problem::malformed("the new key already belongs to an account")
            .with_status(StatusCode::CONFLICT);
        return Ok(with_header(
            problem.into_response(),
            header::LOCATION,
            &signed.urls.account(&other.id),
        ));
    }
    account.jwk = new_key.clone();
    account.thumbprint = thumbprint;
    server.records.put_account(&account).await?;
    tracing::info!(account = %account.id, "ACME account key rolled over");
    Ok(reply(
        StatusCode::OK,
        account_body(&account, &signed.urls),
        Some(signed.urls.account(&account.id)),
    ))
}

// ---------------------------------------------------------------------------------------
// Orders
// ---------------------------------------------------------------------------------------

impl AcmeServer {
    /// The order's status now, derived from its authorizations while not finalized, with
    /// those authorizations (none are read for an order past `ready`: its status is stored).
    async fn order_view(
        &self,
        order: &OrderRecord,
    ) -> Result<(OrderStatus, Vec<AuthzRecord>), Problem> {
        if !matches!(order.status, OrderStatus::Pending | OrderStatus::Ready) {
            return Ok((order.status, Vec::new()));
        }
        let now = self.now();
        let mut authzs = Vec::new();
        for id in &order.authz_ids {
            authzs.push(
                self.records
                    .authz(id)
                    .await?
                    .ok_or_else(|| Problem::internal("order without its authorization"))?,
            );
        }
        let statuses: Vec<_> = authzs.iter().map(|a| a.status_at(now)).collect();
        let status = if now >= order.expires
            || statuses
                .iter()
                .any(|s| !matches!(s, AuthzStatus::Pending | AuthzStatus::Valid))
        {
            OrderStatus::Invalid
        } else if statuses.iter().all(|s| *s == AuthzStatus::Valid) {
            OrderStatus::Ready
        } else {
            OrderStatus::Pending
        };
        Ok((status, authzs))
    }

    async fn order_response(
        &self,
        order: &OrderRecord,
        urls: &Urls,
        status_code: StatusCode,
    ) -> Result<Response, Problem> {
        let (status, _) = self.order_view(order).await?;
        let mut body = json!({
            "status": status,
            "expires": rfc3339(order.expires),
            "identifiers": order.identifiers,
            "authorizations": order.authz_ids.iter().map(|id| urls.authz(id)).collect::<Vec<_>>(),
            "finalize": format!("{}/finalize", urls.order(&order.id)),
        });
        if order.certificate_serial.is_some() {
            body["certificate"] = json!(urls.at(&format!("cert/{}", order.id)));
        }
        if let Some(error) = &order.error {
            body["error"] = error.clone();
        }
        if !order.certificate_profile.is_empty() {
            body["profile"] = json!(order.certificate_profile);
        }
        if let Some(replaces) = &order.replaces {
            body["replaces"] = json!(replaces);
        }
        let response = reply(status_code, body, Some(urls.order(&order.id)));
        Ok(if status == OrderStatus::Processing {
            with_header(response, header::RETRY_AFTER, RETRY_AFTER_SECONDS)
        } else {
            response
        })
    }

    /// An order held for approval becomes valid or invalid once the approver decided.
    async fn settle_pending(&self, order: &mut OrderRecord) -> Result<(), Problem> {
        let Some(request_id) = order.pending_request.clone() else {
            return Ok(());
        };
        if order.status != OrderStatus::Processing {
            return Ok(());
        }
        match self.backend.pending_status(&request_id).await? {
            crate::backend::PendingStatus::Waiting => return Ok(()),
            crate::backend::PendingStatus::Issued { serial } => {
                order.status = OrderStatus::Valid;
                order.certificate_serial = Some(serial);
            }
            crate::backend::PendingStatus::Refused(problem) => {
                order.status = OrderStatus::Invalid;
                order.error = Some(problem.body());
            }
        }
        order.pending_request = None;
        self.records.put_order(order, false).await
    }

    async fn owned_order(&self, signed: &Signed, id: &str) -> Result<OrderRecord, Problem> {
        let account = signed.account();
        self.records
            .order(id)
            .await?
            .filter(|o| o.account_id == account.id)
            .ok_or_else(|| Problem::not_found("order"))
    }
}

impl AcmeServer {
    /// A `rateLimited` answer when `account` already has as many orders in progress
    /// (pending, ready or processing) as allowed; `None` when it may order.
    async fn pending_orders_refusal(
        &self,
        account: &AccountRecord,
    ) -> Result<Option<Response>, Problem> {
        let max = self.max_pending_orders.load(Ordering::Relaxed);
        if max == 0 {
            return Ok(None);
        }
        let now = self.now();
        let mut in_progress = 0;
        // The soonest moment one of them stops counting by itself (expiry).
        let mut soonest: Option<OffsetDateTime> = None;
        for (id, expires) in self.records.open_orders(&account.id).await? {
            // Cheap first: an expired order is invalid whatever its authorizations say.
            let order = match now < expires {
                true => self.records.order(&id).await?,
                false => None,
            };
            let Some(order) = order else {
                self.records.close_order(&account.id, &id).await?;
                continue;
            };
            let counts = match order.status {
                OrderStatus::Processing => true,
                OrderStatus::Pending | OrderStatus::Ready => {
                    let (status, _) = self.order_view(&order).await?;
                    if matches!(status, OrderStatus::Pending | OrderStatus::Ready) {
                        soonest = Some(soonest.map_or(order.expires, |s| s.min(order.expires)));
                        true
                    } else {
                        false
                    }
                }
                OrderStatus::Valid | OrderStatus::Invalid => false,
            };
            if !counts {
                // Done, or failed authorizations made it invalid: it never counts again.
                self.records.close_order(&account.id, &id).await?;
            }
            if counts {
                in_progress += 1;
                if in_progress >= max {
                    break;
                }
            }
        }
        if in_progress < max {
            return Ok(None);
        }
        let retry_after = soonest.map_or(PENDING_ORDERS_RETRY_AFTER_SECONDS, |at| {
            u64::try_from((at - now).whole_seconds()).unwrap_or(1)
        });
        tracing::info!(account = %account.id, max, "ACME newOrder refused: too many pending orders");
        let problem = Problem::new(
            ProblemType::RateLimited,
            format!(
                "the account has {max} orders pending, ready or processing (the most allowed): finalize one, or deactivate its authorizations, first"
            ),
        );
        Ok(Some(with_header(
            problem.into_response(),
            header::RETRY_AFTER,
            &retry_after.max(1).to_string(),
        )))
    }

    /// A valid authorization of `account` for `identifier` that lasts at least another day,
    /// or a new pending one.
    async fn authorization_for(
        &self,
        account: &AccountRecord,
        identifier: &Identifier,
        now: OffsetDateTime,
    ) -> Result<AuthzRecord, Problem> {
        let base = identifier.base();
        let wildcard = identifier.is_wildcard();
        let reusable = self
            .records
            .authzs_for(&account.id, &base)
            .await?
            .into_iter()
            .find(|a| {
                a.wildcard == wildcard
                    && a.status_at(now) == AuthzStatus::Valid
                    && a.expires > now + Duration::days(1)
            });
        Ok(match reusable {
            Some(authz) => authz,
            None => {
                let authz = AuthzRecord {
                    id: new_id(),
                    account_id: account.id.clone(),
                    challenges: ChallengeType::offered_for(&base, wildcard)
                        .into_iter()
                        .map(|kind| ChallengeRecord {
                            kind,
                            token: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()),
                            status: ChallengeStatus::Pending,
                            validated: None,
                            error: None,
                        })
                        .collect(),
                    identifier: base,
                    wildcard,
                    status: AuthzStatus::Pending,
                    expires: now + PENDING_LIFETIME,
                };
                self.records.put_authz(&authz, true).await?;
                authz
            }
        })
    }
}

/// `newAuthz` (§7.4.1): prove control of a name before ordering. Wildcards cannot be
/// pre-authorized (the authorization names exactly what is proven).
async fn new_authz(
    State(server): State<Arc<AcmeServer>>,
    Path(profile): Path<String>,
    Verified(signed, _): Verified<ByKid>,
) -> Result<Response, Problem> {
    let account = signed.account().clone();
    let payload: crate::wire::NewAuthz = signed.jws.json()?;
    let identifier = payload.identifier.normalize()?;
    if identifier.is_wildcard() {
        return Err(Problem::malformed(
            "wildcard names cannot be pre-authorized; order them with dns-01",
        ));
    }
    let info = server
        .backend
        .profile(&profile)
        .ok_or_else(|| Problem::not_found("ACME profile"))?;
    if let Err(refused) = server
        .backend
        .check_identifiers(
            &account,
            &info.default_certificate_profile,
            std::slice::from_ref(&identifier),
            signed.client,
        )
        .await
    {
        let subproblems = refused
            .iter()
            .map(|(i, reason)| subproblem(i, reason))
            .collect::<Vec<_>>();
        let detail = subproblems
            .first()
            .map_or_else(|| "identifier refused".to_string(), |p| p.detail.clone());
        return Err(
            Problem::new(ProblemType::RejectedIdentifier, detail).with_subproblems(subproblems)
        );
    }
    let authz = server
        .authorization_for(&account, &identifier, server.now())
        .await?;
    let mut response = server.authz_response(&authz, &signed.urls);
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

async fn new_order(
    State(server): State<Arc<AcmeServer>>,
    Path(profile): Path<String>,
    Verified(signed, _): Verified<ByKid>,
) -> Result<Response, Problem> {
    let account = signed.account().clone();
    let payload: NewOrder = signed.jws.json()?;
    if payload.not_before.is_some() || payload.not_after.is_some() {
        return Err(Problem::malformed(
            "notBefore/notAfter are not supported; the template sets the lifetime",
        ));
    }
    if payload.identifiers.is_empty() || payload.identifiers.len() > MAX_IDENTIFIERS {
        return Err(Problem::malformed(format!(
            "an order needs 1 to {MAX_IDENTIFIERS} identifiers"
        )));
    }
    if let Some(refusal) = server.pending_orders_refusal(&account).await? {
        return Ok(refusal);
    }
    let mut identifiers = BTreeSet::new();
    let mut subproblems = Vec::new();
    for identifier in &payload.identifiers {
        match identifier.normalize() {
            Ok(normalized) => {
                identifiers.insert(normalized);
            }
            Err(problem) if problem.kind == ProblemType::UnsupportedIdentifier => {
                return Err(problem)
            }
            Err(problem) => subproblems.push(subproblem(identifier, &problem.detail)),
        }
    }
    let identifiers: Vec<Identifier> = identifiers.into_iter().collect();
    let info = server
        .backend
        .profile(&profile)
        .ok_or_else(|| Problem::not_found("ACME profile"))?;
    let certificate_profile = match payload.profile {
        None => info.default_certificate_profile.clone(),
        Some(name)
            if name == info.default_certificate_profile
                || info.certificate_profiles.contains_key(&name) =>
        {
            name
        }
        Some(name) => {
            return Err(Problem::new(
                ProblemType::InvalidProfile,
                format!(
                    "there is no certificate profile `{name}` (see the directory's meta.profiles)"
                ),
            ))
        }
    };
    if let Err(refused) = server
        .backend
        .check_identifiers(&account, &certificate_profile, &identifiers, signed.client)
        .await
    {
        subproblems.extend(
            refused
                .iter()
                .map(|(identifier, reason)| subproblem(identifier, reason)),
        );
    }
    if !subproblems.is_empty() {
        let detail = if subproblems.len() == 1 {
            subproblems[0].detail.clone()
        } else {
            format!("{} identifiers were refused", subproblems.len())
        };
        return Err(
            Problem::new(ProblemType::RejectedIdentifier, detail).with_subproblems(subproblems)
        );
    }
    let replaced_serial = match &payload.replaces {
        Some(cert_id) => Some(server.replaced_certificate(&account, cert_id).await?),
        None => None,
    };
    let now = server.now();
    let mut authz_ids = Vec::new();
    for identifier in &identifiers {
        authz_ids.push(
            server
                .authorization_for(&account, identifier, now)
                .await?
                .id,
        );
    }
    let order = OrderRecord {
        id: new_id(),
        account_id: account.id.clone(),
        profile: profile.clone(),
        status: OrderStatus::Pending,
        identifiers,
        authz_ids,
        expires: now + PENDING_LIFETIME,
        error: None,
        certificate_serial: None,
        certificate_profile,
        replaces: payload.replaces.clone(),
        pending_request: None,
        created_at: now,
    };
    if let Some(serial) = &replaced_serial {
        if !server.records.claim_replacement(serial, &order.id).await? {
            return Err(Problem::new(
                ProblemType::AlreadyReplaced,
                format!("certificate {serial} was already replaced by another order"),
            ));
        }
    }
    server.records.put_order(&order, true).await?;
    server
        .order_response(&order, &signed.urls, StatusCode::CREATED)
        .await
}

fn subproblem(identifier: &Identifier, detail: &str) -> Subproblem {
    Subproblem {
        kind: ProblemType::RejectedIdentifier.urn().to_string(),
        detail: detail.to_string(),
        identifier: SubproblemIdentifier {
            kind: identifier.kind.clone(),
            value: identifier.value.clone(),
        },
    }
}

async fn order(
    State(server): State<Arc<AcmeServer>>,
    Path((_, id)): Path<(String, String)>,
    Verified(signed, _): Verified<ByKid>,
) -> Result<Response, Problem> {
    let mut order = server.owned_order(&signed, &id).await?;
    server.settle_pending(&mut order).await?;
    server
        .order_response(&order, &signed.urls, StatusCode::OK)
        .await
}

/// Removes an order id from the in-flight set when finalize ends, however it ends.
struct FinalizeGuard<'a>(&'a Mutex<HashSet<String>>, String);

impl Drop for FinalizeGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().expect("lock").remove(&self.1);
    }
}

async fn finalize(
    State(server): State<Arc<AcmeServer>>,
    Path((_, id)): Path<(String, String)>,
    Verified(signed, _): Verified<ByKid>,
) -> Result<Response, Problem> {
    let account = signed.account().clone();
    if !server.finalizing.lock().expect("lock").insert(id.clone()) {
        return Err(Problem::new(
            ProblemType::OrderNotReady,
            "the order is being finalized",
        ));
    }
    let _guard = FinalizeGuard(&server.finalizing, id.clone());
    let mut order = server.owned_order(&signed, &id).await?;
    let (status, authzs) = server.order_view(&order).await?;
    if status != OrderStatus::Ready {
        return Err(Problem::new(
            ProblemType::OrderNotReady,
            format!("the order is {status:?}, not ready").to_lowercase(),
        ));
    }
    let payload: Finalize = signed.jws.json()?;
    let csr_der = URL_SAFE_NO_PAD
        .decode(payload.csr.trim_end_matches('='))
        .map_err(|_| Problem::new(ProblemType::BadCsr, "`csr` is not base64url"))?;
    let facts = crate::csr::read(&csr_der)?;
    let wanted: BTreeSet<Identifier> = order.identifiers.iter().cloned().collect();
    if facts.identifiers != wanted {
        let extra: Vec<_> = facts
            .identifiers
            .difference(&wanted)
            .map(|i| i.value.clone())
            .collect();
        let missing: Vec<_> = wanted
            .difference(&facts.identifiers)
            .map(|i| i.value.clone())
            .collect();
        return Err(Problem::new(
            ProblemType::BadCsr,
            format!("the CSR's names must be exactly the order's (extra: {extra:?}, missing: {missing:?})"),
        ));
    }
    if jws::same_public_key(&account.jwk, &facts.spki_der) {
        return Err(Problem::new(
            ProblemType::BadCsr,
            "the certificate key must not be the account key",
        ));
    }
    // CAA again at issuance time (RFC 8659 §3: records may have changed since validation).
    let caa = CaaContext::of(&server, &signed);
    for authz in &authzs {
        let method = authz
            .challenges
            .iter()
            .find(|c| c.status == ChallengeStatus::Valid)
            .map_or(ChallengeType::Http01, |c| c.kind);
        if let Err(error) = caa.check(&server, authz, method, true).await {
            let problem = Problem::new(
                ProblemType::from_validation(error.acme_type()),
                error.to_string(),
            );
            order.status = OrderStatus::Invalid;
            order.error = Some(problem.body());
            server.records.put_order(&order, false).await?;
            return Err(problem);
        }
    }
    order.status = OrderStatus::Processing;
    server.records.put_order(&order, false).await?;
    match server
        .backend
        .issue(&account, &order, csr_der, signed.client)
        .await
    {
        Ok(crate::backend::Issuance::Issued { serial }) => {
            order.status = OrderStatus::Valid;
            order.certificate_serial = Some(serial);
            server.records.put_order(&order, false).await?;
            server
                .order_response(&order, &signed.urls, StatusCode::OK)
                .await
        }
        Ok(crate::backend::Issuance::Pending { request_id }) => {
            // Stays `processing` (with Retry-After) until an approver decides.
            order.pending_request = Some(request_id);
            server.records.put_order(&order, false).await?;
            server
                .order_response(&order, &signed.urls, StatusCode::OK)
                .await
        }
        Err(problem) => {
            order.status = OrderStatus::Invalid;
            order.error = Some(problem.body());
            server.records.put_order(&order, false).await?;
            Err(problem)
        }
    }
}

async fn certificate(
    State(server): State<Arc<AcmeServer>>,
    Path((_, id)): Path<(String, String)>,
    Verified(signed, _): Verified<ByKid>,
) -> Result<Response, Problem> {
    let mut order = server.owned_order(&signed, &id).await?;
    server.settle_pending(&mut order).await?;
    let serial = order
        .certificate_serial
        .ok_or_else(|| Problem::not_found("certificate"))?;
    let chain = server
        .backend
        .certificate_chain(&serial)
        .await?
        .ok_or_else(|| Problem::not_found("certificate"))?;
    let mut response = (StatusCode::OK, chain).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/pem-certificate-chain"),
    );
    Ok(response)
}

// ---------------------------------------------------------------------------------------
// Authorizations and challenges
// ---------------------------------------------------------------------------------------

fn challenge_body(authz: &AuthzRecord, challenge: &ChallengeRecord, urls: &Urls) -> Value {
    let mut body = json!({
        "type": challenge.kind,
        "url": urls.challenge(&authz.id, challenge.kind),
        "token": challenge.token,
        "status": challenge.status,
    });
    if let Some(validated) = challenge.validated {
        body["validated"] = json!(rfc3339(validated));
    }
    if let Some(error) = &challenge.error {
        body["error"] = error.clone();
    }
    body
}

impl AcmeServer {
    fn authz_response(&self, authz: &AuthzRecord, urls: &Urls) -> Response {
        let status = authz.status_at(self.now());
        let mut body = json!({
            "identifier": authz.identifier,
            "status": status,
            "expires": rfc3339(authz.expires),
            "challenges": authz.challenges.iter().map(|c| challenge_body(authz, c, urls)).collect::<Vec<_>>(),
        });
        if authz.wildcard {
            body["wildcard"] = json!(true);
        }
        let response = reply(StatusCode::OK, body, Some(urls.authz(&authz.id)));
        if status == AuthzStatus::Pending {
            with_header(response, header::RETRY_AFTER, RETRY_AFTER_SECONDS)
        } else {
            response
        }
    }

    async fn owned_authz(&self, signed: &Signed, id: &str) -> Result<AuthzRecord, Problem> {
        let account = signed.account();
        self.records
            .authz(id)
            .await?
            .filter(|a| a.account_id == account.id)
            .ok_or_else(|| Problem::not_found("authorization"))
    }
}

async fn authz(
    State(server): State<Arc<AcmeServer>>,
    Path((_, id)): Path<(String, String)>,
    Verified(signed, _): Verified<ByKid>,
) -> Result<Response, Problem> {
    let mut authz = server.owned_authz(&signed, &id).await?;
    if !signed.jws.is_post_as_get() {
        let update: AuthzUpdate = signed.jws.json()?;
        match update.status.as_deref() {
            Some("deactivated") => {
                if !matches!(
                    authz.status_at(server.now()),
                    AuthzStatus::Pending | AuthzStatus::Valid
                ) {
                    return Err(Problem::malformed(
                        "only pending or valid authorizations can be deactivated",
                    ));
                }
                authz.status = AuthzStatus::Deactivated;
                server.records.put_authz(&authz, false).await?;
            }
            _ => {
                return Err(Problem::malformed(
                    "an authorization can only be updated to status `deactivated`",
                ))
            }
        }
    }
    Ok(server.authz_response(&authz, &signed.urls))
}

async fn challenge(
    State(server): State<Arc<AcmeServer>>,
    Path((_, id, kind)): Path<(String, String, String)>,
    Verified(signed, _): Verified<ByKid>,
) -> Result<Response, Problem> {
    let account = signed.account().clone();
    let mut authz = server.owned_authz(&signed, &id).await?;
    let kind = ChallengeType::parse(&kind).ok_or_else(|| Problem::not_found("challenge"))?;
    let index = authz
        .challenges
        .iter()
        .position(|c| c.kind == kind)
        .ok_or_else(|| Problem::not_found("challenge"))?;
    let start = !signed.jws.is_post_as_get()
        && authz.challenges[index].status == ChallengeStatus::Pending
        && authz.status_at(server.now()) == AuthzStatus::Pending
        && !authz
            .challenges
            .iter()
            .any(|c| c.status == ChallengeStatus::Processing);
    if start {
        authz.challenges[index].status = ChallengeStatus::Processing;
        server.records.put_authz(&authz, false).await?;
        let key_authorization = format!("{}.{}", authz.challenges[index].token, account.thumbprint);
        let validation = tokio::spawn(validate(
            server.clone(),
            CaaContext::of(&server, &signed),
            authz.id.clone(),
            kind,
            key_authorization,
        ));
        // Most validations settle within milliseconds: answer with the outcome when it is
        // there in time, sparing the client a polling round; otherwise `processing` (the
        // validation goes on in the background).
        if tokio::time::timeout(SETTLE_WAIT, validation).await.is_ok() {
            if let Some(settled) = server.records.authz(&authz.id).await? {
                authz = settled;
            }
        }
    }
    let challenge = &authz.challenges[index];
    let mut response = reply(
        StatusCode::OK,
        challenge_body(&authz, challenge, &signed.urls),
        None,
    );
    response = with_header(
        response,
        header::LINK,
        &format!("<{}>;rel=\"up\"", signed.urls.authz(&authz.id)),
    );
    if challenge.status == ChallengeStatus::Processing {
        response = with_header(response, header::RETRY_AFTER, RETRY_AFTER_SECONDS);
    }
    Ok(response)
}

/// What a CAA check needs to know about the requester (RFC 8657 parameters).
#[derive(Debug, Clone)]
struct CaaContext {
    /// The profile's `caaIdentities`; empty = CAA not checked.
    issuer_domains: Vec<String>,
    /// The account URL (`accounturi`).
    account_url: String,
    /// The account, for the backend's record of a refusal.
    account: AccountRecord,
    /// The address of the request that led to the check, for the same record.
    client: Option<IpAddr>,
}

impl CaaContext {
    /// For a `kid` request (a challenge response or a finalize).
    fn of(server: &AcmeServer, signed: &Signed) -> Self {
        let account = signed.account();
        let issuer_domains = server
            .backend
            .profile(&account.profile)
            .map(|p| p.caa_identities.clone())
            .unwrap_or_default();
        CaaContext {
            issuer_domains,
            account_url: signed.urls.account(&account.id),
            account: account.clone(),
            client: signed.client,
        }
    }

    /// CAA check of an authorization's name for validation `method`, at validation or
    /// (`at_finalize`) again before issuance; a failure is reported to the backend.
    async fn check(
        &self,
        server: &AcmeServer,
        authz: &AuthzRecord,
        method: ChallengeType,
        at_finalize: bool,
    ) -> Result<(), ValidationError> {
        if authz.identifier.kind != "dns" {
            return Ok(());
        }
        let checked = server
            .validator
            .caa(
                &authz.identifier.value,
                authz.wildcard,
                &self.issuer_domains,
                &self.account_url,
                method.as_str(),
            )
            .await;
        if let Err(error) = &checked {
            server
                .backend
                .caa_refused(CaaRefusal {
                    account: &self.account,
                    name: &authz.identifier.value,
                    wildcard: authz.wildcard,
                    method: method.as_str(),
                    at_finalize,
                    problem_type: error.acme_type(),
                    reason: &error.to_string(),
                    client: self.client,
                })
                .await;
        }
        checked
    }
}

/// Run one validation and record its outcome.
async fn validate(
    server: Arc<AcmeServer>,
    caa: CaaContext,
    authz_id: String,
    kind: ChallengeType,
    key_authorization: String,
) {
    let Ok(Some(authz)) = server.records.authz(&authz_id).await else {
        return;
    };
    let target = match authz.identifier.kind.as_str() {
        "ip" => match authz.identifier.value.parse() {
            Ok(ip) => Target::Ip(ip),
            Err(_) => return,
        },
        _ => Target::Dns(authz.identifier.value.clone()),
    };
    let token = key_authorization
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let attempt = || async {
        match kind {
            ChallengeType::Http01 => {
                server
                    .validator
                    .http01(&target, &token, &key_authorization)
                    .await
            }
            ChallengeType::Dns01 => {
                server
                    .validator
                    .dns01(&authz.identifier.value, &key_authorization)
                    .await
            }
            ChallengeType::TlsAlpn01 => {
                server
                    .validator
                    .tlsalpn01(&target, &key_authorization)
                    .await
            }
        }
    };
    // RFC 8555 §8.2: a failed first query is tried again after some time (a responder, a
    // DNS record or a file may still be on its way); the challenge stays `processing`.
    let mut outcome = attempt().await;
    for delay in &server.validator.settings().retry_delays {
        let Err(error) = &outcome else { break };
        tracing::debug!(authz = %authz_id, challenge = kind.as_str(), %error, retry_in_ms = delay.as_millis() as u64, "ACME validation failed; trying again");
        tokio::time::sleep(*delay).await;
        outcome = attempt().await;
    }
    // RFC 8659: CAA is checked once control is proven (and again at finalize).
    let outcome = match outcome {
        Ok(()) => caa.check(&server, &authz, kind, false).await,
        failed => failed,
    };
    if let Err(error) = server.record_validation(&authz_id, kind, outcome).await {
        tracing::error!(authz = %authz_id, %error, "cannot record a validation result");
    }
}

impl AcmeServer {
    async fn record_validation(
        &self,
        authz_id: &str,
        kind: ChallengeType,
        outcome: Result<(), ValidationError>,
    ) -> Result<(), Problem> {
        let mut authz = self
            .records
            .authz(authz_id)
            .await?
            .ok_or_else(|| Problem::not_found("authorization"))?;
        let now = self.now();
        let Some(challenge) = authz.challenges.iter_mut().find(|c| c.kind == kind) else {
            return Ok(());
        };
        match outcome {
            Ok(()) => {
                challenge.status = ChallengeStatus::Valid;
                challenge.validated = Some(now);
                if authz.status == AuthzStatus::Pending {
                    authz.status = AuthzStatus::Valid;
                    authz.expires = now + VALID_AUTHZ_LIFETIME;
                }
                tracing::info!(authz = %authz_id, identifier = %authz.identifier.value, challenge = kind.as_str(), "ACME challenge valid");
            }
            Err(error) => {
                let problem = Problem::new(
                    ProblemType::from_validation(error.acme_type()),
                    error.to_string(),
                );
                challenge.status = ChallengeStatus::Invalid;
                challenge.error = Some(problem.body());
                if authz.status == AuthzStatus::Pending {
                    authz.status = AuthzStatus::Invalid;
                }
                tracing::info!(authz = %authz_id, identifier = %authz.identifier.value, challenge = kind.as_str(), %error, "ACME challenge failed");
            }
        }
        self.records.put_authz(&authz, false).await
    }
}

// ---------------------------------------------------------------------------------------
// Revocation
// ---------------------------------------------------------------------------------------

async fn revoke_cert(
    State(server): State<Arc<AcmeServer>>,
    Verified(signed, _): Verified<ByEither>,
) -> Result<Response, Problem> {
    let payload: RevokeCert = signed.jws.json()?;
    let reason = payload.reason.unwrap_or(0);
    if !ALLOWED_REASONS.contains(&reason) {
        return Err(Problem::new(
            ProblemType::BadRevocationReason,
            format!("reason code {reason} is not accepted (use one of {ALLOWED_REASONS:?})"),
        ));
    }
    let der = URL_SAFE_NO_PAD
        .decode(payload.certificate.trim_end_matches('='))
        .map_err(|_| Problem::malformed("`certificate` is not base64url"))?;
    let known = server
        .certificate_by_der(&der)
        .await?
        .ok_or_else(|| Problem::not_found("certificate"))?;
    if known.revoked {
        return Err(Problem::new(
            ProblemType::AlreadyRevoked,
            "the certificate is already revoked",
        ));
    }
    let revoker = match (&signed.jws.key, &signed.account) {
        (KeyRef::Jwk(jwk), _) => {
            if !jws::same_public_key(jwk, &known.spki_der) {
                return Err(Problem::unauthorized(
                    "the JWS key is not the certificate's key",
                ));
            }
            Revoker::CertificateKey
        }
        (KeyRef::Kid(_), Some(account)) => {
            if account.identity != known.owner
                && !server
                    .holds_authorizations(account, &known.identifiers)
                    .await?
            {
                return Err(Problem::unauthorized(
                    "the account neither requested this certificate nor holds valid authorizations for all its names",
                ));
            }
            Revoker::Account(account.identity.clone())
        }
        (KeyRef::Kid(_), None) => return Err(Problem::internal("kid request without account")),
    };
    server
        .backend
        .revoke(&known.serial, reason, revoker)
        .await?;
    Ok(StatusCode::OK.into_response())
}

impl AcmeServer {
    /// A certificate the backend issued, found by the serial inside `der` and compared whole.
    async fn certificate_by_der(
        &self,
        der_bytes: &[u8],
    ) -> Result<Option<crate::backend::KnownCertificate>, Problem> {
        use der::Decode;
        let cert = x509_cert::Certificate::from_der(der_bytes)
            .map_err(|_| Problem::malformed("`certificate` is not a DER certificate"))?;
        let serial = crate::ari::serial_hex(cert.tbs_certificate.serial_number.as_bytes());
        Ok(self
            .backend
            .certificate(&serial)
            .await?
            .filter(|known| known.der == der_bytes))
    }

    /// The serial of the certificate a newOrder's `replaces` names, if the account may
    /// replace it (it requested it or holds authorizations for all its names).
    async fn replaced_certificate(
        &self,
        account: &AccountRecord,
        cert_id: &str,
    ) -> Result<String, Problem> {
        let id = crate::ari::CertId::parse(cert_id)?;
        let known = self
            .backend
            .certificate(&id.serial)
            .await?
            .filter(|c| id.names(c))
            .ok_or_else(|| Problem::malformed("`replaces` names no certificate issued here"))?;
        if account.identity != known.owner
            && !self
                .holds_authorizations(account, &known.identifiers)
                .await?
        {
            return Err(Problem::unauthorized(
                "the account may not replace a certificate it has no authority over",
            ));
        }
        Ok(known.serial)
    }

    async fn holds_authorizations(
        &self,
        account: &AccountRecord,
        identifiers: &[Identifier],
    ) -> Result<bool, Problem> {
        let now = self.now();
        for identifier in identifiers {
            let authzs = self
                .records
                .authzs_for(&account.id, &identifier.base())
                .await?;
            if !authzs
                .iter()
                .any(|a| a.status_at(now) == AuthzStatus::Valid)
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The JWK object type, for embedders.
pub type JwkMap = Map<String, Value>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_their_time_then_their_random_bytes_and_neighbours_in_time_share_a_prefix() {
        let id = id_from(0x0123_4567_89ab, [0xff; 10]);
        assert_eq!(id.len(), 22);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let bytes = SORTABLE_ID.decode(&id).expect("the id alphabet");
        assert_eq!(bytes[..6], [0x01, 0x23, 0x45, 0x67, 0x89, 0xab]);
        assert_eq!(bytes[6..], [0xff; 10]);
        let (earlier, later) = (
            id_from(1_764_806_400_000, [0; 10]),
            id_from(1_764_806_400_001, [0xff; 10]),
        );
        assert_eq!(earlier[..7], later[..7]);
        assert_ne!(new_id(), new_id());
    }

    #[test]
    fn ids_sort_by_their_time_then_their_random_bytes() {
        // Times one apart across every character boundary of the first 8 (6 bits each),
        // and random parts from all-zero to all-one.
        let mut times: Vec<u64> = (0..48).map(|bit| 1u64 << bit).collect();
        times.extend(times.clone().iter().map(|t| t - 1));
        times.extend([0, 0xffff_ffff_ffff, 1_764_806_400_000]);
        times.sort_unstable();
        times.dedup();
        let mut ids = Vec::new();
        for time in times {
            for random in [[0; 10], [0x7f; 10], [0xff; 10]] {
                ids.push(id_from(time, random));
            }
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
