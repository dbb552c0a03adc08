//! CA keys held in a PKCS#11 token (an HSM, a smart card, SoftHSM): the key is addressed by
//! an RFC 7512 `pkcs11:` URI, created in the token or found there, and every signature is
//! made by the token — the private key never leaves it. [`Pkcs11Key`] implements rcgen's
//! [`SigningKey`], so the built-in CA signs certificates, CRLs and OCSP responses with it
//! exactly as with a key file.
//!
//! - [`Pkcs11Uri`]: the URI, RFC 7512 §2.3. Path attributes `token`, `manufacturer`,
//!   `model`, `serial`, `slot-id` pick the token; `object` (CKA_LABEL) and `id` (CKA_ID) the
//!   key; `type` may only say `private`. `pin-value` and `pin-source` are refused: the PIN
//!   comes from a file only its owner may read, or from the `RAMPART_PKCS11_PIN` environment
//!   variable ([`PinSource`]), never from the configuration itself.
//! - One logged-in session per key, behind a mutex. A call that fails because the session
//!   or the login is gone (the token was reset, someone logged the application out, the
//!   device hiccupped) closes it, opens a new one, logs in again — reading the PIN afresh —
//!   and retries, at most [`MAX_ATTEMPTS`] times. A PIN the token rejected is not offered
//!   again until the PIN source changes, so a health probe cannot lock the token.
//! - The last failure is kept for `/healthz` ([`Pkcs11Key::check`]).
//! - Signatures: ECDSA P-256 / P-384 as `CKM_ECDSA` over a SHA-256 / SHA-384 digest
//!   computed here (aws-lc-rs), returned DER-encoded (ECDSA-Sig-Value, RFC 3279 §2.2.3);
//!   RSA as `CKM_SHA256_RSA_PKCS` (PKCS#1 v1.5; SHA-384 / SHA-512 on request,
//!   [`Pkcs11Key::sign_rsa`]) or `CKM_SHA256_RSA_PKCS_PSS` ([`Pkcs11Key::sign_rsa_pss_sha256`]). Decryption, for an RSA key made to decrypt (the SCEP RA's,
//!   [`KeyUsage::SignAndDecrypt`]), as `CKM_RSA_PKCS` ([`Pkcs11Key::decrypt`]). Calls
//!   block: callers run them on a blocking thread.
//! - A module is loaded and initialised (`C_Initialize`) once per process ([`module`]) and
//!   shared by every key using it.
//!
//! The PIN is never logged, stored or put in an error; only a digest of a rejected PIN is
//! kept in memory, to recognise it.
//!
//! Imports `config` (the key algorithm), `files` (the PIN file check) and `rsa_pss` (the salt
//! length).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use der::{Decode, Encode};
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};

use crate::config::KeyAlgorithm;
use crate::files;

/// Environment variable the token PIN is read from when no PIN file is configured.
pub const PIN_ENV: &str = "RAMPART_PKCS11_PIN";

/// How many times one operation is tried when the session or the token fails under it.
pub const MAX_ATTEMPTS: u32 = 3;

/// Pause before the second attempt (doubled before each further one).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Smallest RSA key rampart signs with.
const MIN_RSA_BITS: usize = 2048;

// ---------------------------------------------------------------------------------------
// RFC 7512 URIs

/// Why a `pkcs11:` URI is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// It does not start with `pkcs11:`.
    #[error("not a PKCS#11 URI (it must start with `pkcs11:`)")]
    NotPkcs11,
    /// An attribute is not `name=value`.
    #[error("`{0}` is not an attribute (name=value)")]
    Malformed(String),
    /// A percent-encoding is broken, or text is not UTF-8.
    #[error("attribute `{0}`: bad percent-encoding or not UTF-8")]
    BadEncoding(String),
    /// The same attribute twice (RFC 7512 §2.3).
    #[error("attribute `{0}` appears more than once")]
    Duplicate(String),
    /// A PIN inside the URI: the configuration would hold the secret.
    #[error("`{0}` puts the PIN in the configuration; use [ca] pin_file or the {PIN_ENV} environment variable")]
    PinInUri(String),
    /// The module is named in the URI rather than in `[ca] pkcs11_module`.
    #[error("`{0}`: name the PKCS#11 module in [ca] pkcs11_module (or --pkcs11-module)")]
    ModuleInUri(String),
    /// An attribute rampart does not match on (RFC 7512 §3.3: such a URI matches nothing).
    #[error("attribute `{0}` is not supported (token, manufacturer, model, serial, slot-id, object, id, type)")]
    Unsupported(String),
    /// `type=` other than `private`.
    #[error("type=`{0}`: rampart addresses private keys (type=private, or no type)")]
    NotPrivateKey(String),
    /// `slot-id=` is not a decimal number.
    #[error("slot-id=`{0}` is not a decimal number")]
    BadSlotId(String),
    /// Neither `object` nor `id`: the key would be any key in the token.
    #[error("the URI names no key: add object=<label> (and/or id=<%xx bytes>)")]
    NoObject,
}

/// An RFC 7512 PKCS#11 URI naming one private key in one token, e.g.
/// `pkcs11:token=rampart;object=issuing-ca` or `pkcs11:serial=0123;id=%01%02`.
///
/// ```text
/// pk11-URI   = "pkcs11:" pk11-path [ "?" pk11-query ]
/// pk11-path  = [ pk11-pattr *(";" pk11-pattr) ]
/// pk11-query = [ pk11-qattr *("&" pk11-qattr) ]
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token`: CK_TOKEN_INFO label.
    pub token: Option<String>,
    /// `manufacturer`: CK_TOKEN_INFO manufacturerID.
    pub manufacturer: Option<String>,
    /// `model`: CK_TOKEN_INFO model.
    pub model: Option<String>,
    /// `serial`: CK_TOKEN_INFO serialNumber.
    pub serial: Option<String>,
    /// `slot-id`: the slot's CK_SLOT_ID.
    pub slot_id: Option<u64>,
    /// `object`: the key's CKA_LABEL.
    pub object: Option<String>,
    /// `id`: the key's CKA_ID.
    pub id: Option<Vec<u8>>,
    /// The URI as written (it holds no PIN: those are refused).
    text: String,
}

impl FromStr for Pkcs11Uri {
    type Err = UriError;

    fn from_str(text: &str) -> Result<Self, UriError> {
        let rest = text.strip_prefix("pkcs11:").ok_or(UriError::NotPkcs11)?;
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        let mut uri = Pkcs11Uri {
            token: None,
            manufacturer: None,
            model: None,
            serial: None,
            slot_id: None,
            object: None,
            id: None,
            text: text.to_string(),
        };
        let mut seen = Vec::new();
        for attribute in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attribute
                .split_once('=')
                .ok_or_else(|| UriError::Malformed(attribute.to_string()))?;
            if seen.contains(&name) {
                return Err(UriError::Duplicate(name.to_string()));
            }
            seen.push(name);
            let bytes = percent_decode(value).ok_or_else(|| UriError::BadEncoding(name.into()))?;
            let text =
                || String::from_utf8(bytes.clone()).map_err(|_| UriError::BadEncoding(name.into()));
            match name {
                "token" => uri.token = Some(text()?),
                "manufacturer" => uri.manufacturer = Some(text()?),
                "model" => uri.model = Some(text()?),
                "serial" => uri.serial = Some(text()?),
                "slot-id" => {
                    let value = text()?;
                    uri.slot_id = Some(value.parse().map_err(|_| UriError::BadSlotId(value))?);
                }
                "object" => uri.object = Some(text()?),
                "id" => uri.id = Some(bytes),
                "type" => {
                    let value = text()?;
                    if value != "private" {
                        return Err(UriError::NotPrivateKey(value));
                    }
                }
                other => return Err(UriError::Unsupported(other.to_string())),
            }
        }
        for attribute in query.into_iter().flat_map(|q| q.split('&')) {
            let name = attribute.split_once('=').map_or(attribute, |(n, _)| n);
            match name {
                "" => {}
                "pin-value" | "pin-source" => return Err(UriError::PinInUri(name.to_string())),
                "module-name" | "module-path" => {
                    return Err(UriError::ModuleInUri(name.to_string()))
                }
                other => return Err(UriError::Unsupported(other.to_string())),
            }
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(UriError::NoObject);
        }
        Ok(uri)
    }
}

impl Pkcs11Uri {
    /// The same token, and the key labelled `label` (no `id`): where a new key of a series
    /// goes (`object=scep-ra` → `object=scep-ra-1767225600`).
    pub fn with_label(&self, label: &str) -> Pkcs11Uri {
        let path = self.text["pkcs11:".len()..]
            .split('?')
            .next()
            .unwrap_or_default();
        let mut attributes: Vec<String> = path
            .split(';')
            .filter(|a| !a.is_empty())
            .filter(|a| {
                let name = a.split_once('=').map_or(*a, |(name, _)| name);
                name != "object" && name != "id"
            })
            .map(str::to_string)
            .collect();
        attributes.push(format!("object={}", percent_encode(label)));
        let mut uri = self.clone();
        uri.object = Some(label.to_string());
        uri.id = None;
        uri.text = format!("pkcs11:{}", attributes.join(";"));
        uri
    }
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// RFC 3986 percent-decoding; `None` for a broken escape.
fn percent_decode(value: &str) -> Option<Vec<u8>> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// Errors

/// A PKCS#11 failure. The text never carries the PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The URI is refused.
    #[error("PKCS#11 URI: {0}")]
    Uri(#[from] UriError),
    /// The module cannot be loaded or initialised.
    #[error("PKCS#11 module {}: {reason}", path.display())]
    Module {
        /// The module file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No token matches the URI.
    #[error("no token present matches {uri}")]
    NoToken {
        /// The URI.
        uri: String,
    },
    /// Several tokens match the URI.
    #[error("{count} tokens match {uri}; add serial= or slot-id= to pick one")]
    AmbiguousToken {
        /// The URI.
        uri: String,
        /// How many.
        count: usize,
    },
    /// No private key matches the URI.
    #[error("no private key in the token matches {uri}")]
    NoKey {
        /// The URI.
        uri: String,
    },
    /// Several private (or public) keys match the URI.
    #[error("{count} keys in the token match {uri}; add id= to pick one")]
    AmbiguousKey {
        /// The URI.
        uri: String,
        /// How many.
        count: usize,
    },
    /// The private key has no public key object beside it.
    #[error("the key {uri} has no public key object with the same label and id in the token")]
    NoPublicKey {
        /// The URI.
        uri: String,
    },
    /// A key was to be generated under a label and/or id the token already holds.
    #[error("the token already holds a key matching {uri}")]
    KeyExists {
        /// The URI.
        uri: String,
    },
    /// The token could not decrypt a ciphertext while its session stayed usable: the
    /// ciphertext is at fault (bad padding, wrong key, wrong length), not the token.
    #[error("the token cannot decrypt this ciphertext ({0})")]
    Undecryptable(String),
    /// The key is of a type or size rampart does not sign with.
    #[error("the key {uri} cannot be used: {reason}")]
    UnsupportedKey {
        /// The URI.
        uri: String,
        /// Why.
        reason: String,
    },
    /// The PIN cannot be read from its source.
    #[error("token PIN: {0}")]
    Pin(String),
    /// The token refused the PIN (or it is locked).
    #[error("the token refused the PIN ({}); fix the PIN file or {PIN_ENV}", return_value(.0))]
    PinRejected(RvError),
    /// The PIN is the one the token refused last time: not offered again (a real token
    /// counts failed logins towards locking the PIN).
    #[error("the token refused this PIN before; it is not offered again until the PIN file or {PIN_ENV} changes")]
    PinStillRejected,
    /// A PKCS#11 call failed.
    #[error("{function}: {}", describe(source))]
    Token {
        /// The PKCS#11 function.
        function: String,
        /// The failure.
        #[source]
        source: CkError,
    },
    /// The token answered something unusable.
    #[error("the token returned {0}")]
    Malformed(String),
    /// The token kept failing: every attempt was used.
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: Box<Pkcs11Error>,
    },
}

fn describe(error: &CkError) -> String {
    match error {
        CkError::Pkcs11(rv, _) => return_value(rv),
        other => other.to_string(),
    }
}

/// `CKR_PIN_INCORRECT`, as the specification spells return values.
fn return_value(rv: &RvError) -> String {
    format!("CKR_{}", screaming(&format!("{rv:?}")))
}

/// `SessionHandleInvalid` → `SESSION_HANDLE_INVALID`, as the specification spells return
/// values.
fn screaming(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn token_error(source: CkError) -> Pkcs11Error {
    let function = match &source {
        CkError::Pkcs11(_, function) => format!("C_{function:?}"),
        _ => "PKCS#11".to_string(),
    };
    Pkcs11Error::Token { function, source }
}

impl Pkcs11Error {
    /// Whether the failure is about the input of an operation the token answered, which
    /// says nothing about the token's health.
    fn input_refused(&self) -> bool {
        matches!(self, Pkcs11Error::Undecryptable(_))
    }

    /// Whether a new session (and login) may cure it.
    fn session_lost(&self) -> bool {
        let Pkcs11Error::Token {
            source: CkError::Pkcs11(rv, _),
            ..
        } = self
        else {
            return false;
        };
        matches!(
            rv,
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SessionCount
                | RvError::FunctionFailed
                | RvError::GeneralError
                | RvError::CryptokiNotInitialized
        )
    }
}

// ---------------------------------------------------------------------------------------
// Modules

/// The module at `path`, loaded and initialised once per process and shared: PKCS#11 allows
/// one `C_Initialize` per application, and finalising it would pull the token from under
/// every other key using the module.
pub fn module(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    static MODULES: OnceLock<Mutex<BTreeMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let failed = |reason: String| Pkcs11Error::Module {
        path: path.to_path_buf(),
        reason,
    };
    let canonical = path.canonicalize().map_err(|e| {
        failed(format!(
            "{e} (apt-get install softhsm2, or your HSM's client)"
        ))
    })?;
    let mut modules = MODULES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(context) = modules.get(&canonical) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(&canonical).map_err(|e| failed(e.to_string()))?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(failed(describe(&e))),
    }
    modules.insert(canonical, context.clone());
    Ok(context)
}

// ---------------------------------------------------------------------------------------
// The PIN

/// Where the user PIN comes from: read afresh at every login, never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file only its owner may read (trailing newline dropped).
    File(PathBuf),
    /// An environment variable ([`PIN_ENV`] unless told otherwise).
    Env(String),
}

impl PinSource {
    /// `pin_file` when set, else [`PIN_ENV`].
    pub fn from_config(pin_file: &str) -> Self {
        if pin_file.is_empty() {
            PinSource::Env(PIN_ENV.to_string())
        } else {
            PinSource::File(PathBuf::from(pin_file))
        }
    }

    fn read(&self) -> Result<RawAuthPin, Pkcs11Error> {
        let (file, env) = match self {
            PinSource::File(path) => (Some(path.as_path()), None),
            PinSource::Env(var) => (None, Some(var.as_str())),
        };
        let bytes = files::read_configured_secret(file, env)
            .map_err(|e| match self {
                PinSource::File(_) => Pkcs11Error::Pin(e),
                PinSource::Env(_) => Pkcs11Error::Pin(format!("{e} (or set [ca] pin_file)")),
            })?
            .into_bytes();
        if bytes.is_empty() {
            return Err(Pkcs11Error::Pin(format!("{self} is empty")));
        }
        Ok(RawAuthPin::new(Box::new(bytes)))
    }
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::File(path) => write!(f, "PIN file {}", path.display()),
            PinSource::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Keys

/// Where a token key is: module, URI, PIN source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenKeySpec {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The key.
    pub uri: Pkcs11Uri,
    /// The user PIN's source.
    pub pin: PinSource,
}

/// What a token key is for. Set as CKA_SIGN / CKA_DECRYPT when rampart generates the key,
/// and checked when it opens one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsage {
    /// Signing only (a CA key): CKA_SIGN, and CKA_DECRYPT false when generated.
    Sign,
    /// Signing and RSA PKCS#1 v1.5 decryption (the SCEP RA key, which signs replies and
    /// decrypts the requester's content-encryption key): CKA_SIGN and CKA_DECRYPT; RSA only.
    SignAndDecrypt,
}

/// A key pair rampart generates in a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewKeyPair {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// RSA with a modulus of `bits` (exponent 65537).
    Rsa {
        /// Modulus length: 2048 or more.
        bits: u32,
    },
}

impl From<KeyAlgorithm> for NewKeyPair {
    fn from(algorithm: KeyAlgorithm) -> Self {
        match algorithm {
            KeyAlgorithm::EcdsaP256 => NewKeyPair::EcdsaP256,
            KeyAlgorithm::EcdsaP384 => NewKeyPair::EcdsaP384,
            KeyAlgorithm::Rsa3072 => NewKeyPair::Rsa { bits: 3072 },
        }
    }
}

/// The hash of an RSA PKCS#1 v1.5 signature made in the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaHash {
    /// `CKM_SHA256_RSA_PKCS`.
    Sha256,
    /// `CKM_SHA384_RSA_PKCS`.
    Sha384,
    /// `CKM_SHA512_RSA_PKCS`.
    Sha512,
}

impl RsaHash {
    fn mechanism(self) -> Mechanism<'static> {
        match self {
            RsaHash::Sha256 => Mechanism::Sha256RsaPkcs,
            RsaHash::Sha384 => Mechanism::Sha384RsaPkcs,
            RsaHash::Sha512 => Mechanism::Sha512RsaPkcs,
        }
    }
}

/// What the token key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    EcdsaP256,
    EcdsaP384,
    Rsa,
}

impl Kind {
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Kind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Kind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Kind::Rsa => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

/// A logged-in session and the private key's handle in it.
struct Live {
    session: Session,
    key: ObjectHandle,
}

#[derive(Default)]
struct Connection {
    live: Option<Live>,
    /// The last failure, until an operation succeeds.
    last_error: Option<String>,
    /// SHA-256 of the PIN the token last refused.
    rejected_pin: Option<Vec<u8>>,
}

/// A private key in a PKCS#11 token; signs in the token.
pub struct Pkcs11Key {
    spec: TokenKeySpec,
    context: Pkcs11,
    kind: Kind,
    /// SubjectPublicKeyInfo contents: the EC point, or the PKCS#1 RSAPublicKey.
    public_key: Vec<u8>,
    connection: Mutex<Connection>,
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("uri", &self.spec.uri.text)
            .field("module", &self.spec.module)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

fn key_template(class: ObjectClass, uri: &Pkcs11Uri) -> Vec<Attribute> {
    let mut template = vec![Attribute::Class(class)];
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    template
}

/// The one object matching `template`, if any.
fn find_one(
    session: &Session,
    template: &[Attribute],
    uri: &Pkcs11Uri,
) -> Result<Option<ObjectHandle>, Pkcs11Error> {
    let found = session.find_objects(template).map_err(token_error)?;
    match found.len() {
        0 => Ok(None),
        1 => Ok(Some(found[0])),
        count => Err(Pkcs11Error::AmbiguousKey {
            uri: uri.to_string(),
            count,
        }),
    }
}

/// Generate a key pair `new` in the token, labelled (and identified) as `uri` says:
/// private half sensitive, never extractable, signing — and decrypting only for
/// [`KeyUsage::SignAndDecrypt`].
fn generate_pair(
    session: &Session,
    uri: &Pkcs11Uri,
    new: NewKeyPair,
    usage: KeyUsage,
) -> Result<(), Pkcs11Error> {
    let Some(label) = &uri.object else {
        return Err(Pkcs11Error::UnsupportedKey {
            uri: uri.to_string(),
            reason: "a key generated by rampart needs a label: add object=<label>".into(),
        });
    };
    let decrypts = usage == KeyUsage::SignAndDecrypt;
    if decrypts && !matches!(new, NewKeyPair::Rsa { .. }) {
        return Err(Pkcs11Error::UnsupportedKey {
            uri: uri.to_string(),
            reason: "a key that decrypts is an RSA key".into(),
        });
    }
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(decrypts),
        Attribute::Wrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let mut private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        // A CA key signs and nothing else; the SCEP RA key also decrypts key transport.
        Attribute::Decrypt(decrypts),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    if let Some(id) = &uri.id {
        public.push(Attribute::Id(id.clone()));
        private.push(Attribute::Id(id.clone()));
    }
    let mechanism = match new {
        NewKeyPair::EcdsaP256 | NewKeyPair::EcdsaP384 => {
            let kind = match new {
                NewKeyPair::EcdsaP384 => Kind::EcdsaP384,
                _ => Kind::EcdsaP256,
            };
            public.push(Attribute::EcParams(curve_params(kind)));
            Mechanism::EccKeyPairGen
        }
        NewKeyPair::Rsa { bits } => {
            if (bits as usize) < MIN_RSA_BITS {
                return Err(Pkcs11Error::UnsupportedKey {
                    uri: uri.to_string(),
                    reason: format!("a {bits}-bit RSA key is too weak (at least {MIN_RSA_BITS})"),
                });
            }
            public.push(Attribute::ModulusBits(u64::from(bits).into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        }
    };
    session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(token_error)?;
    Ok(())
}

/// CKA_EC_PARAMS of the curve: its OID, DER (RFC 5480 namedCurve).
fn curve_params(kind: Kind) -> Vec<u8> {
    let oid = match kind {
        Kind::EcdsaP384 => const_oid::db::rfc5912::SECP_384_R_1,
        _ => const_oid::db::rfc5912::SECP_256_R_1,
    };
    oid.to_der().expect("an OBJECT IDENTIFIER always encodes")
}

impl Pkcs11Key {
    /// Open the key the spec names for `usage`: find the token, log in, find the key pair.
    pub fn open(spec: &TokenKeySpec, usage: KeyUsage) -> Result<Self, Pkcs11Error> {
        let context = module(&spec.module)?;
        let session = login_session(&context, spec, &mut Connection::default(), false)?;
        Self::load(spec.clone(), context, session, usage)
    }

    /// Open the key the spec names, generating a key pair `new` for `usage` in the token
    /// when it holds none. Returns the key and whether it was generated now.
    pub fn open_or_generate(
        spec: &TokenKeySpec,
        new: NewKeyPair,
        usage: KeyUsage,
    ) -> Result<(Self, bool), Pkcs11Error> {
        let context = module(&spec.module)?;
        let session = login_session(&context, spec, &mut Connection::default(), true)?;
        let uri = &spec.uri;
        if find_one(&session, &key_template(ObjectClass::PRIVATE_KEY, uri), uri)?.is_some() {
            return Ok((Self::load(spec.clone(), context, session, usage)?, false));
        }
        generate_pair(&session, uri, new, usage)?;
        Ok((Self::load(spec.clone(), context, session, usage)?, true))
    }

    /// Generate a key pair `new` for `usage` under the spec's label (and id), which must be
    /// free: a key the token already holds there is [`Pkcs11Error::KeyExists`], never
    /// reused.
    pub fn generate(
        spec: &TokenKeySpec,
        new: NewKeyPair,
        usage: KeyUsage,
    ) -> Result<Self, Pkcs11Error> {
        let context = module(&spec.module)?;
        let session = login_session(&context, spec, &mut Connection::default(), true)?;
        let uri = &spec.uri;
        // Public keys count too: a stray one under the label would be paired with ours.
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            if !session
                .find_objects(&key_template(class, uri))
                .map_err(token_error)?
                .is_empty()
            {
                return Err(Pkcs11Error::KeyExists {
                    uri: uri.to_string(),
                });
            }
        }
        generate_pair(&session, uri, new, usage)?;
        Self::load(spec.clone(), context, session, usage)
    }

    /// The key pair `spec` names, read through the logged-in `session`, which stays open as
    /// the key's live session.
    fn load(
        spec: TokenKeySpec,
        context: Pkcs11,
        session: Session,
        usage: KeyUsage,
    ) -> Result<Self, Pkcs11Error> {
        let uri = &spec.uri;
        let private = find_one(&session, &key_template(ObjectClass::PRIVATE_KEY, uri), uri)?
            .ok_or_else(|| Pkcs11Error::NoKey {
                uri: uri.to_string(),
            })?;
        let public = find_one(&session, &key_template(ObjectClass::PUBLIC_KEY, uri), uri)?
            .ok_or_else(|| Pkcs11Error::NoPublicKey {
                uri: uri.to_string(),
            })?;
        let unsupported = |reason: String| Pkcs11Error::UnsupportedKey {
            uri: uri.to_string(),
            reason,
        };
        let attributes = session
            .get_attributes(
                private,
                &[
                    AttributeType::KeyType,
                    AttributeType::Sign,
                    AttributeType::Decrypt,
                ],
            )
            .map_err(token_error)?;
        let mut key_type = None;
        for attribute in attributes {
            match attribute {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::Sign(false) => {
                    return Err(unsupported(
                        "the private key may not sign (CKA_SIGN false)".into(),
                    ))
                }
                Attribute::Decrypt(false) if usage == KeyUsage::SignAndDecrypt => {
                    return Err(unsupported(
                        "the private key may not decrypt (CKA_DECRYPT false)".into(),
                    ))
                }
                _ => {}
            }
        }
        if usage == KeyUsage::SignAndDecrypt && key_type != Some(KeyType::RSA) {
            return Err(unsupported(format!(
                "key type {key_type:?}: a key that decrypts must be RSA"
            )));
        }
        let (kind, public_key) = match key_type {
            Some(t) if t == KeyType::EC => {
                let attributes = session
                    .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
                    .map_err(token_error)?;
                let (mut params, mut point) = (None, None);
                for attribute in attributes {
                    match attribute {
                        Attribute::EcParams(p) => params = Some(p),
                        Attribute::EcPoint(p) => point = Some(p),
                        _ => {}
                    }
                }
                let params = params.ok_or_else(|| unsupported("no CKA_EC_PARAMS".into()))?;
                let kind = [Kind::EcdsaP256, Kind::EcdsaP384]
                    .into_iter()
                    .find(|k| curve_params(*k) == params)
                    .ok_or_else(|| {
                        unsupported("only the P-256 and P-384 curves are supported".into())
                    })?;
                let point = point.ok_or_else(|| unsupported("no CKA_EC_POINT".into()))?;
                (
                    kind,
                    ec_point(kind, &point)
                        .ok_or_else(|| unsupported("unreadable CKA_EC_POINT".into()))?,
                )
            }
            Some(t) if t == KeyType::RSA => {
                let attributes = session
                    .get_attributes(
                        public,
                        &[AttributeType::Modulus, AttributeType::PublicExponent],
                    )
                    .map_err(token_error)?;
                let (mut modulus, mut exponent) = (None, None);
                for attribute in attributes {
                    match attribute {
                        Attribute::Modulus(m) => modulus = Some(m),
                        Attribute::PublicExponent(e) => exponent = Some(e),
                        _ => {}
                    }
                }
                let modulus = modulus.ok_or_else(|| unsupported("no CKA_MODULUS".into()))?;
                let exponent =
                    exponent.ok_or_else(|| unsupported("no CKA_PUBLIC_EXPONENT".into()))?;
                let der = rsa_public_key(&modulus, &exponent)
                    .map_err(|e| unsupported(format!("RSA public key: {e}")))?;
                let bits = modulus.iter().skip_while(|b| **b == 0).count() * 8;
                if bits < MIN_RSA_BITS {
                    return Err(unsupported(format!(
                        "a {bits}-bit RSA key is too weak (at least {MIN_RSA_BITS})"
                    )));
                }
                (Kind::Rsa, der)
            }
            other => {
                return Err(unsupported(format!(
                    "key type {other:?}: only EC (P-256, P-384) and RSA keys are supported"
                )))
            }
        };
        let connection = Connection {
            live: Some(Live {
                session,
                key: private,
            }),
            ..Connection::default()
        };
        Ok(Pkcs11Key {
            spec,
            context,
            kind,
            public_key,
            connection: Mutex::new(connection),
        })
    }

    /// The URI of the key.
    pub fn uri(&self) -> &Pkcs11Uri {
        &self.spec.uri
    }

    /// The key algorithm, as the configuration names it (RSA keys of any size ≥ 2048 bits
    /// sign as `rsa-3072` does: PKCS#1 v1.5 with SHA-256).
    pub fn key_algorithm(&self) -> KeyAlgorithm {
        match self.kind {
            Kind::EcdsaP256 => KeyAlgorithm::EcdsaP256,
            Kind::EcdsaP384 => KeyAlgorithm::EcdsaP384,
            Kind::Rsa => KeyAlgorithm::Rsa3072,
        }
    }

    /// The last failure, if the last operation failed.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// Sign `message` in the token: a DER ECDSA-Sig-Value, or an RSA PKCS#1 v1.5 signature.
    /// Blocks.
    pub fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        let kind = self.kind;
        self.with_session(|session, key| match kind {
            Kind::EcdsaP256 | Kind::EcdsaP384 => {
                let (digest_algorithm, half) = match kind {
                    Kind::EcdsaP384 => (&aws_lc_rs::digest::SHA384, 48),
                    _ => (&aws_lc_rs::digest::SHA256, 32),
                };
                let digest = aws_lc_rs::digest::digest(digest_algorithm, message);
                let raw = session
                    .sign(&Mechanism::Ecdsa, key, digest.as_ref())
                    .map_err(token_error)?;
                ecdsa_sig_value(&raw, half)
            }
            Kind::Rsa => session
                .sign(&Mechanism::Sha256RsaPkcs, key, message)
                .map_err(token_error),
        })
    }

    /// Sign `message` in the token with RSA PKCS#1 v1.5 over `hash` (an RSA key only).
    /// Blocks.
    pub fn sign_rsa(&self, hash: RsaHash, message: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        self.sign_rsa_with(hash.mechanism(), message)
    }

    /// Sign `message` in the token with RSASSA-PSS, SHA-256, MGF1-SHA-256 and a 32-byte
    /// salt (`CKM_SHA256_RSA_PKCS_PSS`; an RSA key only). Blocks.
    pub fn sign_rsa_pss_sha256(&self, message: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        let parameters = PkcsPssParams {
            hash_alg: MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: u64::from(super::rsa_pss::SALT_LENGTH).into(),
        };
        self.sign_rsa_with(Mechanism::Sha256RsaPkcsPss(parameters), message)
    }

    fn sign_rsa_with(
        &self,
        mechanism: Mechanism<'static>,
        message: &[u8],
    ) -> Result<Vec<u8>, Pkcs11Error> {
        self.require_rsa()?;
        self.with_session(|session, key| {
            session.sign(&mechanism, key, message).map_err(token_error)
        })
    }

    /// Decrypt an RSA PKCS#1 v1.5 ciphertext (`CKM_RSA_PKCS`) in the token (an RSA key
    /// opened for [`KeyUsage::SignAndDecrypt`]). A ciphertext the token cannot decrypt is
    /// [`Pkcs11Error::Undecryptable`], which neither counts as a token failure nor is
    /// retried. Blocks.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        self.require_rsa()?;
        let modulus = self.rsa_modulus_len();
        if ciphertext.len() != modulus {
            return Err(Pkcs11Error::Undecryptable(format!(
                "{} bytes for a {}-byte modulus",
                ciphertext.len(),
                modulus
            )));
        }
        self.with_session(|session, key| {
            match session.decrypt(&Mechanism::RsaPkcs, key, ciphertext) {
                Ok(plain) => Ok(plain),
                Err(CkError::Pkcs11(
                    rv @ (RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange),
                    _,
                )) => Err(Pkcs11Error::Undecryptable(return_value(&rv))),
                Err(error) => {
                    // Some tokens (SoftHSM2) answer bad padding with CKR_GENERAL_ERROR. If
                    // the session is still logged in afterwards, the token is fine and the
                    // ciphertext was at fault; otherwise the session is renewed and retried.
                    let error = token_error(error);
                    if error.session_lost() && logged_in(session) {
                        Err(Pkcs11Error::Undecryptable(describe_token_error(&error)))
                    } else {
                        Err(error)
                    }
                }
            }
        })
    }

    fn require_rsa(&self) -> Result<(), Pkcs11Error> {
        if self.kind == Kind::Rsa {
            return Ok(());
        }
        Err(Pkcs11Error::UnsupportedKey {
            uri: self.spec.uri.to_string(),
            reason: "RSA signatures and decryption need an RSA key".into(),
        })
    }

    /// Length of the RSA modulus in bytes (0 for other keys).
    fn rsa_modulus_len(&self) -> usize {
        use der::Decode as _;
        pkcs1::RsaPublicKey::from_der(&self.public_key)
            .map(|key| key.modulus.as_bytes().len())
            .unwrap_or(0)
    }

    /// Probe the token: the session is open and logged in (re-opening and logging in again
    /// when not, as signing would). Blocks.
    pub fn check(&self) -> Result<(), Pkcs11Error> {
        self.with_session(|session, _| {
            if logged_in(session) {
                return Ok(());
            }
            // The session's own error when it has one (closed, device gone), else this.
            session.get_session_info().map_err(token_error)?;
            Err(token_error(CkError::Pkcs11(
                RvError::UserNotLoggedIn,
                Function::GetSessionInfo,
            )))
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run `operation` on the live session, re-opening and logging in again when the
    /// session or login is gone, at most [`MAX_ATTEMPTS`] times.
    fn with_session<T>(
        &self,
        operation: impl Fn(&Session, ObjectHandle) -> Result<T, Pkcs11Error>,
    ) -> Result<T, Pkcs11Error> {
        let mut connection = self.lock();
        let mut pause = RETRY_PAUSE;
        let mut attempt = 0;
        let failure = loop {
            attempt += 1;
            if connection.live.is_none() {
                match self.connect(&mut connection) {
                    Ok(live) => connection.live = Some(live),
                    Err(error) if error.session_lost() && attempt < MAX_ATTEMPTS => {
                        tracing::warn!(uri = %self.spec.uri, %error, attempt,
                            "PKCS#11 token unavailable: trying again");
                        std::thread::sleep(pause);
                        pause *= 2;
                        continue;
                    }
                    Err(error) => break error,
                }
            }
            let live = connection.live.as_ref().expect("connected above");
            let outcome = operation(&live.session, live.key);
            match outcome {
                Ok(value) => {
                    if connection.last_error.take().is_some() {
                        tracing::info!(uri = %self.spec.uri, "PKCS#11 token usable again");
                    }
                    return Ok(value);
                }
                // The token answered; the input was wrong. Not the token's failure.
                Err(error) if error.input_refused() => {
                    if connection.last_error.take().is_some() {
                        tracing::info!(uri = %self.spec.uri, "PKCS#11 token usable again");
                    }
                    tracing::debug!(uri = %self.spec.uri, %error, "PKCS#11 token refused the input");
                    return Err(error);
                }
                Err(error) if error.session_lost() && attempt < MAX_ATTEMPTS => {
                    tracing::warn!(uri = %self.spec.uri, %error, attempt,
                        "PKCS#11 session lost: opening a new one and logging in again");
                    if let Some(live) = connection.live.take() {
                        // It may be gone already; closing it is a courtesy.
                        let _ = live.session.close();
                    }
                    std::thread::sleep(pause);
                    pause *= 2;
                }
                Err(error) => break error,
            }
        };
        let failure = if attempt > 1 && failure.session_lost() {
            Pkcs11Error::Exhausted {
                attempts: attempt,
                last: Box::new(failure),
            }
        } else {
            failure
        };
        if failure.session_lost() {
            if let Some(live) = connection.live.take() {
                let _ = live.session.close();
            }
        }
        let text = failure.to_string();
        // Logged once per new failure, not at every health probe while it lasts.
        if connection.last_error.as_deref() == Some(text.as_str()) {
            tracing::debug!(uri = %self.spec.uri, error = %text, "PKCS#11 token still failing");
        } else {
            tracing::error!(uri = %self.spec.uri, error = %text, "PKCS#11 token operation failed");
        }
        connection.last_error = Some(text);
        Err(failure)
    }

    /// A new logged-in session with the private key found in it.
    fn connect(&self, connection: &mut Connection) -> Result<Live, Pkcs11Error> {
        let session = login_session(&self.context, &self.spec, connection, false)?;
        let uri = &self.spec.uri;
        let key = find_one(&session, &key_template(ObjectClass::PRIVATE_KEY, uri), uri)?
            .ok_or_else(|| Pkcs11Error::NoKey {
                uri: uri.to_string(),
            })?;
        Ok(Live { session, key })
    }
}

/// Open a session and log the user in, unless the PIN is the one the token refused last.
/// The token is looked up each time: one taken out and put back may sit in another slot.
fn login_session(
    context: &Pkcs11,
    spec: &TokenKeySpec,
    connection: &mut Connection,
    read_write: bool,
) -> Result<Session, Pkcs11Error> {
    let slot = find_slot(context, &spec.uri)?;
    let session = if read_write {
        context.open_rw_session(slot)
    } else {
        context.open_ro_session(slot)
    }
    .map_err(token_error)?;
    let pin = spec.pin.read()?;
    let fingerprint = {
        use secrecy::ExposeSecret;
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pin.expose_secret())
            .as_ref()
            .to_vec()
    };
    if connection.rejected_pin.as_ref() == Some(&fingerprint) {
        return Err(Pkcs11Error::PinStillRejected);
    }
    match session.login_with_raw(UserType::User, &pin) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
            connection.rejected_pin = None;
            Ok(session)
        }
        Err(CkError::Pkcs11(
            rv @ (RvError::PinIncorrect
            | RvError::PinLocked
            | RvError::PinExpired
            | RvError::PinInvalid
            | RvError::PinLenRange),
            _,
        )) => {
            connection.rejected_pin = Some(fingerprint);
            Err(Pkcs11Error::PinRejected(rv))
        }
        Err(e) => Err(token_error(e)),
    }
}

/// The token whose slot matches the URI's token attributes; exactly one.
fn find_slot(context: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot, Pkcs11Error> {
    let slots = context.get_slots_with_token().map_err(token_error)?;
    let mut matching = Vec::new();
    for slot in slots {
        if uri.slot_id.is_some_and(|id| id != slot.id()) {
            continue;
        }
        let info = context.get_token_info(slot).map_err(token_error)?;
        let wanted = [
            (&uri.token, info.label()),
            (&uri.manufacturer, info.manufacturer_id()),
            (&uri.model, info.model()),
            (&uri.serial, info.serial_number()),
        ];
        if wanted.iter().all(|(want, have)| {
            want.as_ref()
                .is_none_or(|w| w.trim_end() == have.trim_end())
        }) {
            matching.push(slot);
        }
    }
    match matching.len() {
        0 => Err(Pkcs11Error::NoToken {
            uri: uri.to_string(),
        }),
        1 => Ok(matching[0]),
        count => Err(Pkcs11Error::AmbiguousToken {
            uri: uri.to_string(),
            count,
        }),
    }
}

/// Whether `session` is open and its user logged in.
fn logged_in(session: &Session) -> bool {
    session.get_session_info().is_ok_and(|info| {
        matches!(
            info.session_state(),
            SessionState::RoUser | SessionState::RwUser
        )
    })
}

/// `CKR_GENERAL_ERROR` (the return value alone) for a token error, the whole text else.
fn describe_token_error(error: &Pkcs11Error) -> String {
    match error {
        Pkcs11Error::Token { source, .. } => describe(source),
        other => other.to_string(),
    }
}

/// The uncompressed point from CKA_EC_POINT, which tokens give DER-wrapped in an OCTET
/// STRING (as the specification asks) or, some of them, raw.
fn ec_point(kind: Kind, value: &[u8]) -> Option<Vec<u8>> {
    let length = match kind {
        Kind::EcdsaP384 => 97,
        _ => 65,
    };
    if let Ok(wrapped) = der::asn1::OctetString::from_der(value) {
        if wrapped.as_bytes().len() == length && wrapped.as_bytes()[0] == 0x04 {
            return Some(wrapped.as_bytes().to_vec());
        }
    }
    (value.len() == length && value[0] == 0x04).then(|| value.to_vec())
}

/// PKCS#1 RSAPublicKey (RFC 8017 §A.1.1), the contents of an RSA SubjectPublicKeyInfo.
fn rsa_public_key(modulus: &[u8], exponent: &[u8]) -> der::Result<Vec<u8>> {
    pkcs1::RsaPublicKey {
        modulus: der::asn1::UintRef::new(modulus)?,
        public_exponent: der::asn1::UintRef::new(exponent)?,
    }
    .to_der()
}

/// `CKM_ECDSA`'s r ‖ s as an ECDSA-Sig-Value (RFC 3279 §2.2.3):
///
/// ```text
/// Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }
/// ```
fn ecdsa_sig_value(raw: &[u8], half: usize) -> Result<Vec<u8>, Pkcs11Error> {
    if raw.len() != 2 * half {
        return Err(Pkcs11Error::Malformed(format!(
            "a {}-byte ECDSA signature, expected {}",
            raw.len(),
            2 * half
        )));
    }
    let (r, s) = raw.split_at(half);
    let integers = [r, s]
        .into_iter()
        .map(der::asn1::UintRef::new)
        .collect::<der::Result<Vec<_>>>()
        .and_then(|integers| integers.to_der());
    integers.map_err(|e| Pkcs11Error::Malformed(format!("an ECDSA signature DER cannot hold: {e}")))
}

impl PublicKeyData for Pkcs11Key {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.kind.algorithm()
    }
}

impl SigningKey for Pkcs11Key {
    /// rcgen's error carries no text: the cause is in [`Pkcs11Key::last_error`].
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.sign_message(message)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_rfc_7512_examples_it_supports() {
        let uri: Pkcs11Uri = "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=private;id=%69%95%3E%5C%F4%BD%EC%91;serial="
            .parse()
            .unwrap();
        assert_eq!(uri.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(uri.manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(uri.model.as_deref(), Some("1.0"));
        assert_eq!(uri.object.as_deref(), Some("my-certificate"));
        assert_eq!(
            uri.id.as_deref(),
            Some(&[0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91][..])
        );
        assert_eq!(uri.serial.as_deref(), Some(""));
        let uri: Pkcs11Uri = "pkcs11:slot-id=7;object=ca".parse().unwrap();
        assert_eq!(uri.slot_id, Some(7));
        assert_eq!(uri.to_string(), "pkcs11:slot-id=7;object=ca");
    }

    #[test]
    fn a_new_label_keeps_the_token_and_drops_the_id() {
        let uri: Pkcs11Uri = "pkcs11:token=My%20Token;object=scep-ra;id=%01;serial=42"
            .parse()
            .unwrap();
        let next = uri.with_label("scep-ra-1767225600");
        assert_eq!(
            next.to_string(),
            "pkcs11:token=My%20Token;serial=42;object=scep-ra-1767225600"
        );
        assert_eq!(next, next.to_string().parse().unwrap());
        let odd = uri.with_label("ra key;1");
        assert_eq!(odd.object.as_deref(), Some("ra key;1"));
        assert_eq!(odd, odd.to_string().parse().unwrap());
    }

    #[test]
    fn refuses_pins_modules_and_what_it_cannot_match() {
        let error = |text: &str| text.parse::<Pkcs11Uri>().unwrap_err();
        assert_eq!(
            error("pkcs11:token=t;object=k?pin-value=1234"),
            UriError::PinInUri("pin-value".into())
        );
        assert_eq!(
            error("pkcs11:token=t;object=k?pin-source=file:/etc/pin"),
            UriError::PinInUri("pin-source".into())
        );
        assert!(!error("pkcs11:object=k?pin-value=1234")
            .to_string()
            .contains("1234"));
        assert_eq!(
            error("pkcs11:object=k?module-path=/usr/lib/x.so"),
            UriError::ModuleInUri("module-path".into())
        );
        assert_eq!(error("file:/x"), UriError::NotPkcs11);
        assert_eq!(error("pkcs11:token=t"), UriError::NoObject);
        assert_eq!(
            error("pkcs11:object=a;object=b"),
            UriError::Duplicate("object".into())
        );
        assert_eq!(
            error("pkcs11:object=a%4"),
            UriError::BadEncoding("object".into())
        );
        assert_eq!(
            error("pkcs11:object=a%ff"),
            UriError::BadEncoding("object".into())
        );
        assert_eq!(
            error("pkcs11:object=a;type=cert"),
            UriError::NotPrivateKey("cert".into())
        );
        assert_eq!(
            error("pkcs11:object=a;x-vendor=1"),
            UriError::Unsupported("x-vendor".into())
        );
        assert_eq!(
            error("pkcs11:object=a;slot-id=x"),
            UriError::BadSlotId("x".into())
        );
        assert_eq!(error("pkcs11:object"), UriError::Malformed("object".into()));
    }

    #[test]
    fn ecdsa_signatures_are_der_encoded_as_verifiers_expect() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{
            EcdsaKeyPair, KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
            ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
        };
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        // Enough signatures that r or s with a high bit, or a leading zero byte, turn up.
        for i in 0..64u8 {
            let message = [i; 40];
            let raw = key.sign(&rng, &message).unwrap();
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key().as_ref())
                .verify(&message, raw.as_ref())
                .unwrap();
            let der = ecdsa_sig_value(raw.as_ref(), 32).unwrap();
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key().as_ref())
                .verify(&message, &der)
                .unwrap();
        }
        assert!(ecdsa_sig_value(&[1; 63], 32).is_err());
    }

    #[test]
    fn ec_points_are_read_wrapped_or_raw() {
        let point = {
            let mut p = vec![0x04];
            p.extend([7u8; 64]);
            p
        };
        let wrapped = der::asn1::OctetString::new(point.clone())
            .unwrap()
            .to_der()
            .unwrap();
        assert_eq!(ec_point(Kind::EcdsaP256, &wrapped), Some(point.clone()));
        assert_eq!(ec_point(Kind::EcdsaP256, &point), Some(point.clone()));
        assert_eq!(ec_point(Kind::EcdsaP384, &point), None);
    }

    #[test]
    fn pins_come_from_an_owner_only_file_or_the_environment() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "1234\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let source = PinSource::File(path.clone());
        let error = source.read().unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        {
            use secrecy::ExposeSecret;
            assert_eq!(source.read().unwrap().expose_secret().as_slice(), b"1234");
        }
        let missing = PinSource::Env("RAMPART_TEST_PKCS11_PIN_NEVER_SET".into());
        let error = missing.read().unwrap_err().to_string();
        assert!(
            error.contains("RAMPART_TEST_PKCS11_PIN_NEVER_SET"),
            "{error}"
        );
        assert_eq!(PinSource::from_config(""), PinSource::Env(PIN_ENV.into()));
    }

    #[test]
    fn return_values_are_named_as_the_specification_does() {
        let error = token_error(CkError::Pkcs11(
            RvError::SessionHandleInvalid,
            Function::Sign,
        ));
        assert_eq!(error.to_string(), "C_Sign: CKR_SESSION_HANDLE_INVALID");
        assert!(error.session_lost());
        let refused = Pkcs11Error::PinRejected(RvError::PinIncorrect);
        assert!(!refused.session_lost());
        assert!(
            refused.to_string().contains("CKR_PIN_INCORRECT"),
            "{refused}"
        );
    }
}
