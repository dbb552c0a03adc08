//! [`rampart_scep::ScepBackend`] for the daemon: the RA identity (an RSA key and a
//! certificate from the CA, kept in `<data_dir>/ca/`, or with `[scep] ra_key` the key in a
//! PKCS#11 token that signs and decrypts there, see [`ensure_ra`]), challenge passwords (a
//! profile's static one, argon2-hashed in the config, and one-time challenges minted over
//! the API, stored hashed and consumed on use), renewals signed by a certificate rampart
//! issued, transactions remembered so a re-sent or polled transactionID gets the same
//! answer, and enrollment through the one pipeline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use der::{Decode, Encode};
use rampart_scep::crypto::{CryptoError, Digest, RsaPrivateKey};
use rampart_scep::{Answer, CertificateId, Enrollment, FailInfo, MessageType, Ra, ScepBackend};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::ca::pkcs11::{
    KeyUsage, NewKeyPair, PinSource, Pkcs11Error, Pkcs11Key, RsaHash, TokenKeySpec,
};
use crate::config::{Config, ScepProfileConfig};
use crate::files;
use crate::gateway::passwords::PasswordChecker;
use crate::lifecycle::crl::Crls;
use crate::model::{
    CertificateStatus, Credential, EnrollmentRequest, Identifier, Identity, KeyType, Protocol,
};
use crate::pipeline::submission::{Wait, STILL_ISSUING};
use crate::pipeline::{Claimant, InternalPurpose, Outcome, Pipeline, PipelineError};
use crate::pkix::csr::VerifiedCsr;
use crate::pkix::{pem, sha256_hex};
use crate::store::{AuditAction, AuditEntry, RequestState, StoreError};

/// Protocol-state namespace: transaction → [`Transaction`].
pub(crate) const TRANSACTIONS: &str = "scep.tx";

/// What a transaction became, and for which request.
#[derive(Debug, Serialize, Deserialize)]
struct Transaction {
    request_id: Uuid,
    /// SHA-256 (hex) of the PKCS#10 the transaction carried.
    csr_sha256: String,
    /// SHA-256 (hex) of the certificate that signed it (absent in records written before
    /// it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signer_sha256: Option<String>,
}

/// The request of a stored [`Transaction`] (for [`super::retention`]).
pub(crate) fn transaction_request(bytes: &[u8]) -> Option<Uuid> {
    serde_json::from_slice::<Transaction>(bytes)
        .ok()
        .map(|t| t.request_id)
}

/// The pkiMessage a PKCSReq or RenewalReq came in, to tell a re-send from a new request.
struct Resent<'a> {
    csr_der: &'a [u8],
    signer_der: &'a [u8],
}
/// Protocol-state namespace: SHA-256 of a one-time challenge → [`OneTimeChallenge`].
const CHALLENGES: &str = "scep.challenge";

/// RA key and certificate files in the CA directory.
fn ra_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("ca");
    (dir.join("scep-ra.cert.pem"), dir.join("scep-ra.key.pem"))
}

/// With the RA key in a PKCS#11 token: which token key is the RA's now.
fn ra_record_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ca").join("scep-ra.json")
}

/// The RA key rampart generates: RSA-2048, which every SCEP client encrypts to.
const RA_KEY_BITS: u32 = 2048;

/// Label stem of rotated token keys when `[scep] ra_key` names its key by `id` only.
const DEFAULT_RA_LABEL: &str = "scep-ra";

/// `<data_dir>/ca/scep-ra.json`, written when the RA key is in a token: the `[scep] ra_key`
/// it follows, and the key in use — that URI itself at first, a rotated
/// `<object>-<unix time>` after [`rotate_ra`]. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TokenRaRecord {
    /// `[scep] ra_key` when the key was chosen.
    configured: String,
    /// The `pkcs11:` URI of the current RA key.
    key: String,
}

/// Why the RA could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RaError {
    /// Reading or writing its files.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The files do not hold a usable RA.
    #[error("{0}")]
    Invalid(String),
    /// Issuing its certificate failed.
    #[error("issuing the SCEP RA certificate: {0}")]
    Issue(#[from] PipelineError),
    /// The PKCS#11 token that holds (or is to hold) the RA key failed or refused it.
    #[error("SCEP RA key in the PKCS#11 token: {0}")]
    Token(#[from] Pkcs11Error),
    /// The RA key does not work as the RA certificate's key (or could not be reached).
    #[error("SCEP RA key: {0}")]
    Key(#[from] CryptoError),
    /// The blocking task that used the key did not finish (it panicked).
    #[error("the SCEP RA key task failed: {0}")]
    Task(String),
}

/// The RA key in a PKCS#11 token as the SCEP crate's [`RsaPrivateKey`]: the token signs
/// CertReps and decrypts the requester's content-encryption key; every call blocks, so the
/// SCEP handlers make it on a blocking thread.
#[derive(Debug)]
struct TokenRaKey(Pkcs11Key);

impl RsaPrivateKey for TokenRaKey {
    fn sign(&self, digest: Digest, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let hash = match digest {
            Digest::Sha256 => RsaHash::Sha256,
            Digest::Sha384 => RsaHash::Sha384,
            Digest::Sha512 => RsaHash::Sha512,
            Digest::Sha1 => return Err(CryptoError::UnsupportedAlgorithm("SHA-1 signing".into())),
        };
        self.0
            .sign_rsa(hash, message)
            .map_err(|e| CryptoError::KeyUnavailable(e.to_string()))
    }

    fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.0.decrypt(ciphertext).map_err(|e| match e {
            Pkcs11Error::Undecryptable(_) => CryptoError::Decrypt,
            e => CryptoError::KeyUnavailable(e.to_string()),
        })
    }

    fn blocks(&self) -> bool {
        true
    }

    fn check(&self) -> Result<(), CryptoError> {
        self.0
            .check()
            .map_err(|e| CryptoError::KeyUnavailable(e.to_string()))
    }
}

/// Where `[scep] ra_key` puts the RA key: `None` for the key file, else the token key
/// (module and PIN from `[ca]`: one token configuration for the daemon).
fn ra_token_spec(config: &Config) -> Result<Option<TokenKeySpec>, RaError> {
    let uri = &config.scep.ra_key;
    if uri.is_empty() {
        return Ok(None);
    }
    if config.ca.pkcs11_module.is_empty() {
        return Err(RaError::Invalid(format!(
            "scep.ra_key is {uri}: set [ca] pkcs11_module to the token's PKCS#11 library"
        )));
    }
    Ok(Some(TokenKeySpec {
        module: PathBuf::from(&config.ca.pkcs11_module),
        uri: uri.parse().map_err(Pkcs11Error::Uri)?,
        pin: PinSource::from_config(&config.ca.pin_file),
    }))
}

/// Token calls block: run them off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RaError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RaError::Task(e.to_string()))
}

/// Whether the RA certificate has at least a third of its life left.
fn fresh(pipeline: &Pipeline, ra: &Ra) -> bool {
    let validity = &ra.certificate.tbs_certificate.validity;
    let (from, to) = (
        validity.not_before.to_unix_duration().as_secs() as i64,
        validity.not_after.to_unix_duration().as_secs() as i64,
    );
    let now = pipeline.clock().now().unix_timestamp();
    to > now && (to - now) * 3 > (to - from)
}

fn read_record(data_dir: &Path) -> Result<Option<TokenRaRecord>, RaError> {
    let path = ra_record_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RaError::Invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RaError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// The first certificate of the RA certificate file, if there is one.
fn read_ra_certificate(cert_path: &Path) -> Option<Vec<u8>> {
    let text = std::fs::read_to_string(cert_path).ok()?;
    pem::decode_certificates(&text).ok()?.into_iter().next()
}

/// Load the RA, or make one (RSA-2048 key, certificate from the CA) when there is none, or
/// when its certificate has less than a third of its life left. With `[scep] ra_key`
/// unset the key is `<data_dir>/ca/scep-ra.key.pem`; with a `pkcs11:` URI it is in the
/// token, generated there on first use, and no key file is written.
pub async fn ensure_ra(pipeline: &Pipeline, data_dir: &Path) -> Result<Ra, RaError> {
    let token = ra_token_spec(&pipeline.config())?;
    match token {
        None => ensure_file_ra(pipeline, data_dir).await,
        Some(spec) => ensure_token_ra(pipeline, data_dir, spec).await,
    }
}

async fn ensure_file_ra(pipeline: &Pipeline, data_dir: &Path) -> Result<Ra, RaError> {
    let (cert_path, key_path) = ra_paths(data_dir);
    // An RA key others can read is refused, not silently replaced: the operator decides.
    files::check_secret_permissions_if_present(&key_path)
        .map_err(|e| RaError::Invalid(e.to_string()))?;
    if ra_record_path(data_dir).exists() {
        // The certificate is a token key's: the RA moves (back) to a key file.
        tracing::info!(
            "[scep] ra_key is empty: the SCEP RA moves from the PKCS#11 token to a key file"
        );
        return rotate_ra(pipeline, data_dir, "rampart").await;
    }
    if let (Ok(chain), Ok(key)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) {
        let ra = read_ra(&chain, &key)
            .map_err(|e| RaError::Invalid(format!("{}: {e}", cert_path.display())))?;
        if fresh(pipeline, &ra) {
            return Ok(ra);
        }
    }
    rotate_ra(pipeline, data_dir, "rampart").await
}

/// The RA with its key in the token: the key `scep-ra.json` names when it follows the
/// configured `ra_key`, else the configured key itself (generated when the token holds
/// none); a certificate is issued when the one on disk is not that key's or is stale.
async fn ensure_token_ra(
    pipeline: &Pipeline,
    data_dir: &Path,
    spec: TokenKeySpec,
) -> Result<Ra, RaError> {
    let (cert_path, key_path) = ra_paths(data_dir);
    if key_path.exists() {
        tracing::warn!(path = %key_path.display(),
            "the SCEP RA key is in the PKCS#11 token ([scep] ra_key); this key file is no longer used and may be deleted");
    }
    let configured = spec.uri.to_string();
    let current = read_record(data_dir)?
        .filter(|record| record.configured == configured)
        .map(|record| record.key.parse().map_err(Pkcs11Error::Uri))
        .transpose()?;
    let Some(current) = current else {
        // First use of this `ra_key`: its key, generated in the token when it holds none.
        let (key, generated) = blocking(move || {
            Pkcs11Key::open_or_generate(
                &spec,
                NewKeyPair::Rsa { bits: RA_KEY_BITS },
                KeyUsage::SignAndDecrypt,
            )
        })
        .await??;
        tracing::info!(uri = %configured, generated, "SCEP RA key in the PKCS#11 token");
        let new = NewRaKey::Token {
            key: Arc::new(TokenRaKey(key)),
            configured,
            previous: None,
        };
        return install_ra(pipeline, data_dir, "rampart", new).await;
    };
    let current_spec = TokenKeySpec {
        uri: current,
        ..spec
    };
    let key = match blocking(move || Pkcs11Key::open(&current_spec, KeyUsage::SignAndDecrypt))
        .await?
    {
        Ok(key) => key,
        Err(error @ Pkcs11Error::NoKey { .. }) => {
            let record = ra_record_path(data_dir);
            return Err(RaError::Invalid(format!(
                "{error}, which {} names as the current SCEP RA key; delete {} to start over from [scep] ra_key",
                record.display(),
                record.display()
            )));
        }
        Err(error) => return Err(error.into()),
    };
    let key = Arc::new(TokenRaKey(key));
    if let Some(certificate) = read_ra_certificate(&cert_path) {
        let probe = key.clone();
        match blocking(move || Ra::with_key(certificate, probe)).await? {
            Ok(ra) if fresh(pipeline, &ra) => return Ok(ra),
            Ok(_) => return rotate_ra(pipeline, data_dir, "rampart").await,
            Err(error @ CryptoError::KeyUnavailable(_)) => return Err(error.into()),
            // A start interrupted between recording a new key and writing its certificate.
            Err(error) => tracing::warn!(%error, path = %cert_path.display(),
                "the SCEP RA certificate is not the token key's: issuing one for it"),
        }
    }
    let new = NewRaKey::Token {
        key,
        configured,
        previous: None,
    };
    install_ra(pipeline, data_dir, "rampart", new).await
}

fn read_ra(chain_pem: &str, key_pem: &str) -> Result<Ra, String> {
    let certificate = pem::decode_certificates(chain_pem)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("no certificate")?;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| e.to_string())?;
    Ra::new(certificate, &key.serialize_der()).map_err(|e| e.to_string())
}

/// Make a new RA key and certificate; audited. With the key in a token, the new key is
/// generated there under `<object>-<unix time>` (the configured `ra_key`'s label, or
/// `scep-ra`) and recorded as current in `scep-ra.json`; the previous key stays in the
/// token, for the operator to delete.
pub async fn rotate_ra(pipeline: &Pipeline, data_dir: &Path, actor: &str) -> Result<Ra, RaError> {
    let token = ra_token_spec(&pipeline.config())?;
    let new = match token {
        None => {
            let key = blocking(|| {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            })
            .await?
            .map_err(|e| RaError::Invalid(e.to_string()))?;
            NewRaKey::File(key)
        }
        Some(spec) => {
            let configured = spec.uri.to_string();
            let previous = read_record(data_dir)?
                .filter(|record| record.configured == configured)
                .map(|record| record.key);
            let now = pipeline.clock().now().unix_timestamp();
            let key = blocking(move || generate_rotated(&spec, now)).await??;
            NewRaKey::Token {
                key: Arc::new(TokenRaKey(key)),
                configured,
                previous,
            }
        }
    };
    install_ra(pipeline, data_dir, actor, new).await
}

/// A fresh RA key in the token, labelled `<object>-<now>` (`-<n>` appended when a rotation
/// in the same second took that label).
fn generate_rotated(spec: &TokenKeySpec, now: i64) -> Result<Pkcs11Key, Pkcs11Error> {
    let stem = spec
        .uri
        .object
        .clone()
        .unwrap_or_else(|| DEFAULT_RA_LABEL.to_string());
    let mut n = 0;
    loop {
        let label = match n {
            0 => format!("{stem}-{now}"),
            n => format!("{stem}-{now}-{n}"),
        };
        let candidate = TokenKeySpec {
            uri: spec.uri.with_label(&label),
            ..spec.clone()
        };
        match Pkcs11Key::generate(
            &candidate,
            NewKeyPair::Rsa { bits: RA_KEY_BITS },
            KeyUsage::SignAndDecrypt,
        ) {
            Err(Pkcs11Error::KeyExists { .. }) if n < 7 => n += 1,
            other => return other,
        }
    }
}

/// The key a new RA certificate is issued for.
enum NewRaKey {
    /// A key generated now, to be written to `scep-ra.key.pem`.
    File(rcgen::KeyPair),
    /// A key in the token, to be recorded in `scep-ra.json` as current for `configured`.
    Token {
        key: Arc<TokenRaKey>,
        configured: String,
        /// The key it replaces (audited; it stays in the token).
        previous: Option<String>,
    },
}

/// Have the CA issue the RA certificate for `new`, check the key against it, then write
/// the files (the key file or the token record, then the certificate) and audit.
async fn install_ra(
    pipeline: &Pipeline,
    data_dir: &Path,
    actor: &str,
    new: NewRaKey,
) -> Result<Ra, RaError> {
    use rcgen::PublicKeyData;
    let public_key = match &new {
        NewRaKey::File(key) => key.der_bytes().to_vec(),
        NewRaKey::Token { key, .. } => key.0.der_bytes().to_vec(),
    };
    let bits = {
        use der::Decode as _;
        pkcs1::RsaPublicKey::from_der(&public_key)
            .map(|key| key.modulus.as_bytes().len() * 8)
            .map_err(|e| RaError::Invalid(format!("the RA public key: {e}")))?
    };
    let record = pipeline
        .issue_internal(
            InternalPurpose::ScepRa,
            public_key,
            KeyType::Rsa { bits: bits as u32 },
            pipeline.config().scep.ra_validity_days,
        )
        .await?;
    let (cert_path, key_path) = ra_paths(data_dir);
    let record_path = ra_record_path(data_dir);
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| RaError::Io { path, source }
    };
    let (ra, details) = match new {
        NewRaKey::File(key) => {
            let ra = Ra::new(record.der.clone(), &key.serialize_der())?;
            files::write_secret(&key_path, key.serialize_pem().as_bytes())
                .map_err(io(&key_path))?;
            if record_path.exists() {
                std::fs::remove_file(&record_path).map_err(io(&record_path))?;
            }
            (ra, json!({ "certificate": cert_path, "key": key_path }))
        }
        NewRaKey::Token {
            key,
            configured,
            previous,
        } => {
            let uri = key.0.uri().to_string();
            let der = record.der.clone();
            let ra = blocking(move || Ra::with_key(der, key)).await??;
            let text = serde_json::to_string_pretty(&TokenRaRecord {
                configured,
                key: uri.clone(),
            })
            .expect("the record serializes");
            files::write_public(&record_path, text.as_bytes()).map_err(io(&record_path))?;
            (
                ra,
                json!({ "certificate": cert_path, "key": uri, "previous_key": previous }),
            )
        }
    };
    let mut chain = vec![record.der.as_slice()];
    chain.extend(record.chain.iter().map(Vec::as_slice));
    files::write_public(&cert_path, pem::encode_certificates(chain).as_bytes())
        .map_err(io(&cert_path))?;
    let audit = AuditEntry {
        time: pipeline.clock().now(),
        request_id: None,
        actor: actor.to_string(),
        action: AuditAction::RaRotated,
        outcome: "ok".into(),
        layer: None,
        rule: None,
        reason: "SCEP RA key and certificate issued".into(),
        subject: Some(record.serial.clone()),
        details,
    };
    pipeline
        .with_store(move |store| store.append_audit(&audit))
        .await
        .map_err(|e| RaError::Invalid(e.to_string()))?;
    tracing::info!(serial = %record.serial, "issued the SCEP RA certificate");
    Ok(ra)
}

/// A one-time challenge as stored (under the SHA-256 of its text, never the text).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OneTimeChallenge {
    /// Its public id (for audit).
    pub id: String,
    /// The SCEP profile it is valid on.
    pub profile: String,
    /// The identity the device enrolls as.
    pub identity: String,
    /// The only names the device may request.
    pub names: Vec<Identifier>,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Who minted it.
    pub created_by: String,
}

/// Why a challenge could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// Store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Mint a one-time challenge for `identity` on `profile`, for exactly `names`, valid for
/// `valid_for` seconds; returns the challenge text (shown once) and the stored record.
pub async fn mint_challenge(
    pipeline: &Pipeline,
    actor: &Identity,
    profile: &str,
    identity: &str,
    names: Vec<Identifier>,
    valid_for: u32,
) -> Result<(String, OneTimeChallenge), MintError> {
    if !pipeline.config().scep.profiles.contains_key(profile) {
        return Err(MintError::Invalid(format!("no SCEP profile `{profile}`")));
    }
    if identity.trim().is_empty() {
        return Err(MintError::Invalid("identity must not be empty".into()));
    }
    if names.is_empty() {
        return Err(MintError::Invalid(
            "name at least one DNS name or IP address the device may request".into(),
        ));
    }
    if !(60..=30 * 86_400).contains(&valid_for) {
        return Err(MintError::Invalid(
            "valid_for_seconds must be between 60 and 2592000".into(),
        ));
    }
    // Hex: every client can carry it, including in a PrintableString challengePassword.
    let mut secret = [0u8; 20];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| MintError::Invalid("no randomness".into()))?;
    let text = hex::encode(secret);
    let now = pipeline.clock().now();
    let record = OneTimeChallenge {
        id: Uuid::now_v7().to_string(),
        profile: profile.to_string(),
        identity: identity.to_string(),
        names,
        expires_at: now + time::Duration::seconds(valid_for.into()),
        created_by: actor.name.clone(),
    };
    let value = serde_json::to_vec(&record).expect("serializes");
    let key = sha256_hex(text.as_bytes());
    let audit = AuditEntry {
        time: now,
        request_id: None,
        actor: actor.name.clone(),
        action: AuditAction::ChallengeCreated,
        outcome: "ok".into(),
        layer: None,
        rule: None,
        reason: format!("one-time SCEP challenge for {identity} on profile {profile}"),
        subject: Some(record.id.clone()),
        details: json!({
            "profile": profile,
            "identity": identity,
            "names": record.names,
            "expires_at": record.expires_at.unix_timestamp(),
        }),
    };
    pipeline
        .with_store(move |store| {
            store.protocol_put(CHALLENGES, &key, &value, true)?;
            store.append_audit(&audit)
        })
        .await?;
    Ok((text, record))
}

/// The HTTP client for challenge webhooks: 5 s overall, no redirects, and for HTTPS only
/// rampart's own root trusted (an MDM endpoint with a rampart-issued certificate).
fn webhook_client(anchors: &[Vec<u8>]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none());
    for der in anchors {
        if let Ok(cert) = reqwest::Certificate::from_der(der) {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().unwrap_or_default()
}

/// The daemon as a SCEP backend.
pub struct Backend {
    pipeline: Pipeline,
    crls: Arc<Crls>,
    data_dir: PathBuf,
    ra: RwLock<Arc<Ra>>,
    /// Static challenges against their argon2 hashes, remembered once verified.
    static_challenges: PasswordChecker,
    /// Client for challenge webhooks (5 s timeout; rampart's root trusted for HTTPS).
    webhook: reqwest::Client,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("scep::Backend").finish_non_exhaustive()
    }
}

/// Who a request proved to be and, for one-time challenges, the only names it may request.
struct Authenticated {
    identity: Identity,
    allowed_names: Option<Vec<Identifier>>,
}

/// Why a requester was not authenticated.
enum Refusal {
    /// Its challenge or renewal signer was refused: audited, answered FAILURE.
    Credentials { fail_info: FailInfo, reason: String },
    /// The store could not tell: answered, not audited.
    Unavailable(Answer),
}

impl Refusal {
    fn bad_request(reason: impl Into<String>) -> Self {
        Refusal::Credentials {
            fail_info: FailInfo::BadRequest,
            reason: reason.into(),
        }
    }

    fn bad_cert_id(reason: impl Into<String>) -> Self {
        Refusal::Credentials {
            fail_info: FailInfo::BadCertId,
            reason: reason.into(),
        }
    }

    fn unavailable(e: StoreError) -> Self {
        Refusal::Unavailable(unavailable(e))
    }
}

impl Backend {
    /// Over `pipeline` with the CA's CRLs and the RA from [`ensure_ra`] (files in `data_dir`).
    pub fn new(pipeline: Pipeline, crls: Arc<Crls>, ra: Ra, data_dir: PathBuf) -> Self {
        let pipeline_anchors = pipeline.ca().trust_anchors();
        Backend {
            pipeline,
            crls,
            data_dir,
            ra: RwLock::new(Arc::new(ra)),
            static_challenges: PasswordChecker::default(),
            webhook: webhook_client(&pipeline_anchors),
        }
    }

    /// Make a new RA and serve with it from now on; returns its certificate's serial.
    pub async fn rotate(&self, actor: &str) -> Result<String, RaError> {
        let ra = rotate_ra(&self.pipeline, &self.data_dir, actor).await?;
        let serial =
            rampart_acme::ari::serial_hex(ra.certificate.tbs_certificate.serial_number.as_bytes());
        *self.ra.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ra);
        Ok(serial)
    }

    /// Whether the RA key can be used now: a key in a PKCS#11 token is probed (re-opening
    /// the session and logging in again when needed, as an enrollment would); a key file
    /// always can. Reported by `/healthz`.
    pub async fn health(&self) -> Result<(), String> {
        let ra = rampart_scep::ScepBackend::ra(self);
        if !ra.key.blocks() {
            return ra.key.check().map_err(|e| e.to_string());
        }
        tokio::task::spawn_blocking(move || ra.key.check())
            .await
            .map_err(|e| format!("the SCEP RA key probe failed: {e}"))?
            .map_err(|e| e.to_string())
    }

    fn profile_config(&self, profile: &str) -> Option<ScepProfileConfig> {
        self.pipeline.config().scep.profiles.get(profile).cloned()
    }

    /// The current RA certificate, DER.
    pub fn ra_certificate(&self) -> Vec<u8> {
        rampart_scep::ScepBackend::ra(self).certificate_der.clone()
    }

    /// Whether `issuer_der` (a Name) is the issuing CA's subject.
    fn is_our_issuer(&self, issuer_der: &[u8]) -> bool {
        let issuing = self.pipeline.ca().chain();
        let ours = issuing.first().and_then(|der| {
            x509_cert::Certificate::from_der(der)
                .ok()
                .and_then(|c| c.tbs_certificate.subject.to_der().ok())
        });
        ours.as_deref() == Some(issuer_der)
    }

    /// Transactions are per profile, transactionID and signer key: another device re-using
    /// a transactionID starts its own.
    fn transaction_key(profile: &str, transaction_id: &str, signer_der: &[u8]) -> String {
        // A requester's own certificate: any serial length (certmonger's is 32 octets).
        let spki = rampart_scep::loose::RequesterCertificate::from_der(signer_der)
            .ok()
            .and_then(|c| c.tbs_certificate.subject_public_key_info.to_der().ok())
            .unwrap_or_default();
        sha256_hex(format!("{profile}\n{transaction_id}\n{}", hex::encode(spki)).as_bytes())
    }

    /// The answer for a known transaction, `None` when it is unknown or failed (a failed
    /// one may be tried again). With `resent`, only a re-send of the same request counts:
    /// the same CSR and, once the transaction is decided, the same requester certificate.
    /// A new request under an old transactionID is a new one: a renewal by the same key,
    /// or a device run again with its key and CSR files (sscep), which signs with a new
    /// self-signed certificate or the one it was issued. A request still waiting for
    /// approval is answered PENDING whichever certificate signs the re-send.
    async fn transaction_answer(
        &self,
        key: &str,
        resent: Option<Resent<'_>>,
    ) -> Result<Option<Answer>, StoreError> {
        // Reads and unflushed writes of the store are in-memory work of microseconds: they
        // run on this task, as in the ACME gateway.
        let store = self.pipeline.store();
        let Some(bytes) = store.protocol_get(TRANSACTIONS, key)? else {
            return Ok(None);
        };
        let Ok(transaction) = serde_json::from_slice::<Transaction>(&bytes) else {
            return Ok(None);
        };
        if resent
            .as_ref()
            .is_some_and(|r| sha256_hex(r.csr_der) != transaction.csr_sha256)
        {
            return Ok(None);
        }
        let request_id = transaction.request_id;
        let state = self.pipeline.request_state(request_id).await?;
        let decided = matches!(
            state,
            Some(RequestState::Issued { .. } | RequestState::Denied { .. })
        );
        let other_signer = || match (&resent, &transaction.signer_sha256) {
            (Some(r), Some(signer)) => sha256_hex(r.signer_der) != *signer,
            _ => false,
        };
        if decided && other_signer() {
            return Ok(None);
        }
        Ok(match state {
            Some(RequestState::Issued { serial }) => store
                .certificate(&serial)?
                .map(|record| Answer::Certificate(record.der)),
            Some(RequestState::Pending { .. }) => Some(Answer::Pending(format!(
                "request {request_id} waits for approval"
            ))),
            Some(RequestState::Issuing { .. }) => Some(Answer::Pending(format!(
                "request {request_id}: {STILL_ISSUING}"
            ))),
            Some(RequestState::Denied { reason }) => Some(Answer::Failure(
                FailInfo::BadRequest,
                format!("{reason} (request {request_id})"),
            )),
            Some(RequestState::Failed { .. }) | None => None,
        })
    }

    /// The challenge password decides who the device is.
    async fn challenge_identity(
        &self,
        profile: &str,
        config: &ScepProfileConfig,
        csr: &VerifiedCsr,
        transaction_id: &str,
    ) -> Result<Authenticated, Refusal> {
        let challenge = csr.challenge_password.clone();
        let refused = |why: &str| Refusal::bad_request(why);
        let Some(challenge) = challenge.filter(|c| !c.is_empty()) else {
            return Err(refused("the CSR carries no challengePassword"));
        };
        // One-time challenges first: a hit consumes it, whatever happens next. Most
        // enrollments carry a static challenge instead, so look first (a read, on this task)
        // and pay the durable take on the blocking pool only for a hit; of two requests
        // racing for one challenge, the take gives it to one.
        let key = sha256_hex(challenge.as_bytes());
        let present = self
            .pipeline
            .store()
            .protocol_get(CHALLENGES, &key)
            .map_err(Refusal::unavailable)?
            .is_some();
        let taken = match present {
            true => self
                .pipeline
                .with_store(move |store| store.protocol_take(CHALLENGES, &key))
                .await
                .map_err(Refusal::unavailable)?,
            false => None,
        };
        if let Some(bytes) = taken {
            let record: OneTimeChallenge = serde_json::from_slice(&bytes)
                .map_err(|_| refused("unreadable one-time challenge record"))?;
            if record.profile != profile {
                return Err(refused("the one-time challenge belongs to another profile"));
            }
            if record.expires_at <= self.pipeline.clock().now() {
                return Err(refused("the one-time challenge has expired"));
            }
            return Ok(Authenticated {
                identity: Identity {
                    name: record.identity,
                    roles: config.roles.clone(),
                    credential: Credential::ScepChallenge {
                        profile: profile.to_string(),
                        one_time: Some(record.id),
                    },
                },
                allowed_names: Some(record.names),
            });
        }
        if let Some(hash) = &config.challenge_hash {
            if self
                .static_challenges
                .verify(profile, hash, &challenge)
                .await
            {
                return Ok(Authenticated {
                    identity: Identity {
                        name: config.identity.clone(),
                        roles: config.roles.clone(),
                        credential: Credential::ScepChallenge {
                            profile: profile.to_string(),
                            one_time: None,
                        },
                    },
                    allowed_names: None,
                });
            }
        }
        if let Some(url) = &config.challenge_webhook {
            let identity = self
                .webhook_identity(url, profile, &challenge, csr, transaction_id)
                .await
                .map_err(|why| refused(&why))?;
            return Ok(Authenticated {
                identity: Identity {
                    name: identity.unwrap_or_else(|| config.identity.clone()),
                    roles: config.roles.clone(),
                    credential: Credential::ScepChallenge {
                        profile: profile.to_string(),
                        one_time: None,
                    },
                },
                allowed_names: None,
            });
        }
        Err(refused(if config.challenge_hash.is_some() {
            "wrong challenge password"
        } else {
            "unknown or already used challenge"
        }))
    }

    /// Ask the MDM's challenge webhook: POST JSON {profile, challenge, transaction_id,
    /// subject, names}; it answers 200 {"allow": bool, "identity"?: str, "reason"?: str}.
    /// Anything else — other status, malformed answer, timeout — is a refusal. Returns the
    /// identity the webhook names, if any.
    async fn webhook_identity(
        &self,
        url: &str,
        profile: &str,
        challenge: &str,
        csr: &VerifiedCsr,
        transaction_id: &str,
    ) -> Result<Option<String>, String> {
        #[derive(Deserialize)]
        struct Verdict {
            allow: bool,
            #[serde(default)]
            identity: Option<String>,
            #[serde(default)]
            reason: Option<String>,
        }
        let body = json!({
            "profile": profile,
            "challenge": challenge,
            "transaction_id": transaction_id,
            "subject": csr.subject,
            "names": crate::pipeline::csr_identifiers(csr).iter().map(Identifier::value).collect::<Vec<_>>(),
        });
        let response = self
            .webhook
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("challenge webhook unreachable: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("challenge webhook answered {}", response.status()));
        }
        let verdict: Verdict = response
            .json()
            .await
            .map_err(|e| format!("challenge webhook answer unreadable: {e}"))?;
        if !verdict.allow {
            return Err(format!(
                "challenge refused by the webhook: {}",
                verdict.reason.as_deref().unwrap_or("no reason given")
            ));
        }
        Ok(verdict.identity.filter(|i| !i.trim().is_empty()))
    }

    /// RenewalReq: signed by a valid certificate rampart issued; the renewal keeps its names.
    async fn renewal_identity(
        &self,
        config: &ScepProfileConfig,
        signer_der: &[u8],
        csr: &VerifiedCsr,
    ) -> Result<Authenticated, Refusal> {
        let record = self
            .pipeline
            .issued_record(signer_der)
            .await
            .map_err(Refusal::unavailable)?
            .ok_or_else(|| {
                Refusal::bad_cert_id("RenewalReq must be signed by a certificate rampart issued")
            })?;
        let serial = record.serial.clone();
        match record.status_at(self.pipeline.clock().now()) {
            CertificateStatus::Valid => {}
            status => {
                return Err(Refusal::bad_cert_id(
                    format!("the certificate to renew is {status:?}").to_lowercase(),
                ))
            }
        }
        let requested: BTreeSet<Identifier> =
            crate::pipeline::csr_identifiers(csr).into_iter().collect();
        let current: BTreeSet<Identifier> = record.sans.iter().cloned().collect();
        if requested != current {
            return Err(Refusal::bad_request(
                "a renewal must request the names of the certificate it renews",
            ));
        }
        Ok(Authenticated {
            identity: Identity {
                name: record.owner.clone(),
                roles: config.roles.clone(),
                credential: Credential::ClientCertificate { serial },
            },
            allowed_names: None,
        })
    }
}

#[async_trait::async_trait]
impl ScepBackend for Backend {
    fn profile(&self, name: &str) -> Option<rampart_scep::Profile> {
        self.profile_config(name).map(|p| rampart_scep::Profile {
            legacy_algorithms: p.legacy_algorithms,
            max_clock_skew: (p.max_clock_skew_seconds > 0)
                .then(|| std::time::Duration::from_secs(p.max_clock_skew_seconds)),
        })
    }

    fn now(&self) -> std::time::SystemTime {
        self.pipeline.clock().now().into()
    }

    fn ra(&self) -> Arc<Ra> {
        self.ra.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn ca_certificates(&self) -> Vec<Vec<u8>> {
        let ca = self.pipeline.ca();
        let mut certificates = ca.chain();
        certificates.extend(ca.trust_anchors());
        certificates
    }

    async fn enroll(&self, profile: &str, enrollment: Enrollment) -> Answer {
        let Some(config) = self.profile_config(profile) else {
            return Answer::Failure(FailInfo::BadRequest, "no such profile".into());
        };
        let transaction =
            Self::transaction_key(profile, &enrollment.transaction_id, &enrollment.signer_der);
        // A re-sent transaction gets the answer it got before, never a second certificate.
        match self
            .transaction_answer(
                &transaction,
                Some(Resent {
                    csr_der: &enrollment.csr_der,
                    signer_der: &enrollment.signer_der,
                }),
            )
            .await
        {
            Ok(Some(answer)) => return answer,
            Ok(None) => {}
            Err(e) => return unavailable(e),
        }
        let csr = match VerifiedCsr::parse(&enrollment.csr_der) {
            Ok(csr) => csr,
            Err(e) => return Answer::Failure(FailInfo::BadRequest, e.to_string()),
        };
        let authenticated = match enrollment.message_type {
            MessageType::RenewalReq => {
                self.renewal_identity(&config, &enrollment.signer_der, &csr)
                    .await
            }
            _ => {
                self.challenge_identity(profile, &config, &csr, &enrollment.transaction_id)
                    .await
            }
        };
        let authenticated = authenticated.and_then(|a| match &a.allowed_names {
            Some(allowed) => match crate::pipeline::csr_identifiers(&csr)
                .iter()
                .find(|n| !allowed.contains(n))
            {
                Some(extra) => Err(Refusal::bad_request(format!(
                    "`{}` is not a name the one-time challenge allows",
                    extra.value()
                ))),
                None => Ok(a),
            },
            None => Ok(a),
        });
        let Authenticated { identity, .. } = match authenticated {
            Ok(a) => a,
            Err(Refusal::Unavailable(answer)) => return answer,
            Err(Refusal::Credentials { fail_info, reason }) => {
                let details = json!({
                    "profile": profile,
                    "message_type": enrollment.message_type.to_string(),
                    "transaction_id": enrollment.transaction_id,
                    "subject": csr.common_name,
                    "names": crate::pipeline::csr_identifiers(&csr)
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>(),
                });
                // A challenge claims the profile's identity; a renewal, its signer's.
                let claimed = match enrollment.message_type {
                    MessageType::RenewalReq => {
                        rampart_scep::loose::RequesterCertificate::from_der(&enrollment.signer_der)
                            .map_or_else(
                                |_| "unknown".to_string(),
                                |c| c.tbs_certificate.subject.to_string(),
                            )
                    }
                    _ => config.identity.clone(),
                };
                self.pipeline
                    .audit_refused_credentials(
                        Claimant {
                            protocol: Protocol::Scep,
                            name: claimed,
                            client: enrollment.client,
                        },
                        reason.clone(),
                        details,
                    )
                    .await;
                return Answer::Failure(fail_info, reason);
            }
        };
        // A RenewalReq authenticated by the certificate it replaces renews it.
        let renews = match (&enrollment.message_type, &identity.credential) {
            (MessageType::RenewalReq, Credential::ClientCertificate { serial }) => {
                Some(serial.clone())
            }
            _ => None,
        };
        let request = EnrollmentRequest {
            request_id: Uuid::now_v7(),
            protocol: Protocol::Scep,
            identity,
            csr_der: enrollment.csr_der,
            template: config.template.clone(),
            requested_identifiers: None,
            validity_days: None,
            resource: None,
            metadata: BTreeMap::from([
                ("scep_profile".to_string(), profile.to_string()),
                (
                    "scep_message_type".to_string(),
                    enrollment.message_type.to_string(),
                ),
                (
                    "scep_transaction_id".to_string(),
                    enrollment.transaction_id.clone(),
                ),
            ]),
            renews,
            client: enrollment.client,
        };
        // Remember the transaction before submitting: a crash in between leaves a request
        // the store marks failed, which the client may simply send again. Not flushed on
        // its own: the issuance's durable commit below flushes the whole log, this included.
        let record = serde_json::to_vec(&Transaction {
            request_id: request.request_id,
            csr_sha256: sha256_hex(&request.csr_der),
            signer_sha256: Some(sha256_hex(&enrollment.signer_der)),
        })
        .expect("serializes");
        let store = self.pipeline.store();
        let now = self.pipeline.clock().now();
        if let Err(e) = super::retention::file(store.as_ref(), TRANSACTIONS, &transaction, now)
            .and_then(|()| store.protocol_put(TRANSACTIONS, &transaction, &record, false))
        {
            return unavailable(e);
        }
        // A slow CA gets PENDING; the device polls (CertPoll) and is answered from the store.
        let wait = Wait::millis(self.pipeline.config().scep.issue_wait_ms);
        let submitted = self.pipeline.submit_within(request, Some(csr), wait).await;
        match submitted.or_pending() {
            Ok(Outcome::Issued(record)) => Answer::Certificate(record.der),
            Ok(Outcome::Pending { request_id, reason }) => {
                Answer::Pending(format!("{reason} (request {request_id})"))
            }
            // SCEP has one failInfo for every refusal of a well-formed request.
            Ok(Outcome::Denied { request_id, denial }) => Answer::Failure(
                FailInfo::BadRequest,
                format!(
                    "{} layer: {} (rule {}, request {request_id})",
                    denial.layer.as_str(),
                    denial.reason,
                    denial.rule
                ),
            ),
            Err(PipelineError::Ca(e)) => Answer::Failure(FailInfo::BadRequest, format!("CA: {e}")),
            Err(PipelineError::Store(e)) => unavailable(e),
            Err(e @ PipelineError::Aborted(_)) => {
                Answer::Failure(FailInfo::BadRequest, e.to_string())
            }
        }
    }

    async fn poll(&self, profile: &str, transaction_id: &str, signer_der: &[u8]) -> Answer {
        let key = Self::transaction_key(profile, transaction_id, signer_der);
        match self.transaction_answer(&key, None).await {
            Ok(Some(answer)) => answer,
            Ok(None) => Answer::Failure(
                FailInfo::BadCertId,
                format!("no transaction {transaction_id} from this requester"),
            ),
            Err(e) => Answer::Failure(FailInfo::BadRequest, format!("store: {e}")),
        }
    }

    async fn certificate(&self, _profile: &str, id: CertificateId) -> Answer {
        if !self.is_our_issuer(&id.issuer_der) {
            return Answer::Failure(FailInfo::BadCertId, "not issued by this CA".into());
        }
        let serial = rampart_acme::ari::serial_hex(&id.serial);
        let looked_up = serial.clone();
        match self
            .pipeline
            .with_store(move |store| store.certificate(&looked_up))
            .await
        {
            Ok(Some(record)) => Answer::Certificate(record.der),
            Ok(None) => Answer::Failure(FailInfo::BadCertId, format!("no certificate {serial}")),
            Err(e) => Answer::Failure(FailInfo::BadRequest, format!("store: {e}")),
        }
    }

    async fn crl(&self, _profile: &str, id: CertificateId) -> Answer {
        if !self.is_our_issuer(&id.issuer_der) {
            return Answer::Failure(FailInfo::BadCertId, "not issued by this CA".into());
        }
        match self.crls.current().await {
            Ok(der) => Answer::Crl(der),
            Err(e) => Answer::Failure(FailInfo::BadRequest, format!("CRL: {e}")),
        }
    }
}

/// The answer when the store fails: a SCEP enrollment has no "try later", so a failure that
/// names the cause.
fn unavailable(e: StoreError) -> Answer {
    Answer::Failure(FailInfo::BadRequest, format!("store: {e}"))
}
