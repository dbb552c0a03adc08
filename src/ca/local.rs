//! The built-in CA: a root and an issuing CA kept in `<data_dir>/ca/`, created on first
//! start, reloaded afterwards. Keys are PKCS#8 PEM files written 0600; `ca.json` keeps
//! what is needed to rebuild the issuer (algorithm, names, and where the issuing key is).
//! The root signs only the issuing CA; the issuing CA signs every leaf, CRL and OCSP
//! response.
//!
//! The issuing key may instead live in a PKCS#11 token (`[ca] key = "pkcs11:…"`, see
//! [`super::pkcs11`]): it is generated there (or found there) when the CA is created, no
//! key file is written for it, and each load checks that the token's public key is the
//! issuing certificate's. Either way the key is a [`CaKey`], and certificates are built by
//! one code path: prepared and linted here, then signed once — on a blocking thread when
//! the key is in a token. The root key stays a file (an operator may move it offline).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use der::{Decode, Encode};
use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, CustomExtension, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber, SignatureAlgorithm, SigningKey,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use x509_cert::Certificate;

use super::lint::Linter;
use super::pkcs11::{KeyUsage, PinSource, Pkcs11Error, Pkcs11Key, TokenKeySpec};
use super::rsa_pss;
use super::{CaAdapter, CaError, CaSignature, CrlOrder, IssuanceOrder, IssuedCertificate, Serial};
use crate::config::{CaConfig, ExtendedKeyUsage, KeyAlgorithm, RsaSignature};
use crate::files;
use crate::model::{Identifier, KeyType};
use crate::pkix::pem;

/// id-pe-authorityInfoAccess.
const AUTHORITY_INFO_ACCESS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];

/// Failure to create or load the CA files.
#[derive(Debug, thiserror::Error)]
pub enum LocalCaError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A CA file exists but cannot be used.
    #[error("{path}: {reason} (delete the ca directory to start over)")]
    Invalid {
        /// File involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Key generation or signing failed.
    #[error("CA key operation failed: {0}")]
    Crypto(String),
    /// A CA key file is readable by others than its owner.
    #[error(transparent)]
    Exposed(#[from] files::SecretFileError),
    /// Where the issuing key is cannot be worked out from `[ca]` and `ca.json`.
    #[error("CA key: {0}")]
    KeyLocation(String),
    /// The PKCS#11 token holding the issuing key failed.
    #[error("issuing CA key in the PKCS#11 token: {0}")]
    Token(#[from] Pkcs11Error),
}

/// What `ca.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CaMetadata {
    key_algorithm: KeyAlgorithm,
    root_subject_cn: String,
    issuing_subject_cn: String,
    organization: String,
    /// The `pkcs11:` URI of the issuing key when it is in a token (absent: `issuing.key.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issuing_key: Option<String>,
}

/// A CA signing key: a PKCS#8 file read into memory, or a key in a PKCS#11 token that signs
/// there; an RSA key of either kind may sign RSASSA-PSS (`[ca] rsa_signature = "pss"`).
///
/// rcgen signs documents itself with the other keys. With a PSS key rcgen's signature is
/// empty, because rcgen can only write `sha256WithRSAEncryption`: [`CaKey::finish`] then
/// signs what rcgen encoded (see [`super::rsa_pss`]). Every
/// document rcgen makes with a `CaKey` goes through it.
pub enum CaKey {
    /// A key file (`issuing.key.pem`, `root.key.pem`).
    File(KeyPair),
    /// An RSA key file that signs RSASSA-PSS: rcgen's key pair for the public key and the
    /// PEM, aws-lc-rs's for the signature.
    FilePss(KeyPair, aws_lc_rs::signature::RsaKeyPair),
    /// A token key.
    Token(Box<Pkcs11Key>),
    /// An RSA token key that signs RSASSA-PSS (`CKM_SHA256_RSA_PKCS_PSS`).
    TokenPss(Box<Pkcs11Key>),
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaKey::File(key) => write!(f, "CaKey::File({:?})", key.algorithm()),
            CaKey::FilePss(..) => write!(f, "CaKey::FilePss"),
            CaKey::Token(key) => write!(f, "CaKey::Token({})", key.uri()),
            CaKey::TokenPss(key) => write!(f, "CaKey::TokenPss({})", key.uri()),
        }
    }
}

impl CaKey {
    /// This key signing with `scheme` (which matters for RSA keys only).
    fn with_signature(self, scheme: RsaSignature) -> Result<Self, LocalCaError> {
        if scheme == RsaSignature::Pkcs1v15 {
            return Ok(self);
        }
        if self.algorithm() != &rcgen::PKCS_RSA_SHA256 {
            return Err(LocalCaError::KeyLocation(
                "ca.rsa_signature = \"pss\" needs an RSA key; this CA's key is not one".into(),
            ));
        }
        Ok(match self {
            CaKey::File(key) => {
                let signer = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(key.serialized_der())
                    .map_err(|e| LocalCaError::Crypto(format!("RSA key for PSS: {e}")))?;
                CaKey::FilePss(key, signer)
            }
            CaKey::Token(key) => CaKey::TokenPss(key),
            pss => pss,
        })
    }

    /// The key file's key pair (none for a token key).
    fn key_file(&self) -> Option<&KeyPair> {
        match self {
            CaKey::File(key) | CaKey::FilePss(key, _) => Some(key),
            CaKey::Token(_) | CaKey::TokenPss(_) => None,
        }
    }

    fn pss(&self) -> bool {
        matches!(self, CaKey::FilePss(..) | CaKey::TokenPss(_))
    }

    /// An RSASSA-PSS signature of `message` (a PSS key only).
    fn sign_pss(&self, message: &[u8]) -> Result<Vec<u8>, CaError> {
        match self {
            CaKey::FilePss(_, signer) => {
                let mut signature = vec![0; signer.public_modulus_len()];
                signer
                    .sign(
                        &aws_lc_rs::signature::RSA_PSS_SHA256,
                        &aws_lc_rs::rand::SystemRandom::new(),
                        message,
                        &mut signature,
                    )
                    .map_err(|e| CaError::Internal(format!("RSASSA-PSS signature: {e}")))?;
                Ok(signature)
            }
            CaKey::TokenPss(key) => key
                .sign_rsa_pss_sha256(message)
                .map_err(|e| CaError::Internal(format!("RSASSA-PSS signature in the token: {e}"))),
            CaKey::File(_) | CaKey::Token(_) => Err(CaError::Internal(
                "an RSASSA-PSS signature asked of a key that signs PKCS#1 v1.5".into(),
            )),
        }
    }

    /// A certificate or CRL rcgen encoded with this key, signed: as it is, or signed with PSS.
    fn finish<T: rsa_pss::SignedStructure>(&self, der: &[u8]) -> Result<Vec<u8>, CaError> {
        if !self.pss() {
            return Ok(der.to_vec());
        }
        rsa_pss::sign::<T>(der, |tbs| self.sign_pss(tbs))
    }

    /// A signature of `data` with its algorithm identifier (for an OCSP response).
    fn sign_detached(&self, data: &[u8]) -> Result<CaSignature, CaError> {
        if self.pss() {
            return Ok(CaSignature {
                algorithm: rsa_pss::algorithm_identifier(),
                signature: self.sign_pss(data)?,
            });
        }
        let (oid, null) = if self.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 {
            ("1.2.840.10045.4.3.2", false)
        } else if self.algorithm() == &rcgen::PKCS_ECDSA_P384_SHA384 {
            ("1.2.840.10045.4.3.3", false)
        } else {
            ("1.2.840.113549.1.1.11", true)
        };
        let signature = self
            .sign(data)
            .map_err(|e| self.failure("signing an OCSP response", e))?;
        Ok(CaSignature {
            algorithm: spki::AlgorithmIdentifierOwned {
                oid: const_oid::ObjectIdentifier::new_unwrap(oid),
                parameters: null.then(der::Any::null),
            },
            signature,
        })
    }

    /// Signing blocks the thread (a token round trip): run it off the async runtime.
    fn blocks(&self) -> bool {
        matches!(self, CaKey::Token(_) | CaKey::TokenPss(_))
    }

    /// What went wrong signing, with the token's own error when rcgen could carry none.
    fn failure(&self, what: &str, error: rcgen::Error) -> CaError {
        match (self, error) {
            (CaKey::Token(key) | CaKey::TokenPss(key), rcgen::Error::RemoteKeyError) => {
                CaError::Internal(format!(
                    "{what}: {}",
                    key.last_error()
                        .unwrap_or_else(|| "the PKCS#11 token failed".into())
                ))
            }
            (_, error) => CaError::Internal(format!("{what}: {error}")),
        }
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaKey::File(key) | CaKey::FilePss(key, _) => key.der_bytes(),
            CaKey::Token(key) | CaKey::TokenPss(key) => key.der_bytes(),
        }
    }

    /// For a PSS key `sha256WithRSAEncryption`, the only RSA algorithm rcgen knows; the
    /// identifiers are rewritten when the document is signed.
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            CaKey::File(key) | CaKey::FilePss(key, _) => key.algorithm(),
            CaKey::Token(key) | CaKey::TokenPss(key) => key.algorithm(),
        }
    }
}

impl SigningKey for CaKey {
    /// Empty for a PSS key: the document is signed afterwards ([`CaKey::finish`]).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            CaKey::File(key) => key.sign(message),
            CaKey::Token(key) => key.sign(message),
            CaKey::FilePss(..) | CaKey::TokenPss(_) => Ok(Vec::new()),
        }
    }
}

/// Where the issuing key is: `[ca] key` when set (a key moved into a token is found there),
/// else what `ca.json` recorded when the CA was created.
fn token_spec(
    config: &CaConfig,
    recorded: Option<&str>,
) -> Result<Option<TokenKeySpec>, LocalCaError> {
    let uri = match (config.key.as_str(), recorded) {
        ("", None) => return Ok(None),
        ("", Some(recorded)) => recorded,
        (configured, _) => configured,
    };
    if config.pkcs11_module.is_empty() {
        return Err(LocalCaError::KeyLocation(format!(
            "the issuing key is {uri}: set [ca] pkcs11_module to the token's PKCS#11 library"
        )));
    }
    Ok(Some(TokenKeySpec {
        module: PathBuf::from(&config.pkcs11_module),
        uri: uri.parse().map_err(Pkcs11Error::Uri)?,
        pin: PinSource::from_config(&config.pin_file),
    }))
}

/// URLs written into issued certificates.
#[derive(Debug, Clone, Default)]
struct Publication {
    crl_url: Option<String>,
    ocsp_url: Option<String>,
    ca_issuers_url: Option<String>,
}

/// The built-in CA.
pub struct LocalCa {
    /// Shared with the blocking thread that signs when the key is in a token.
    issuer: Arc<Issuer<'static, CaKey>>,
    /// Encodes every leaf's parameters (unsigned) first and lints the result.
    linter: Linter,
    issuing_der: Vec<u8>,
    issuing_not_after: OffsetDateTime,
    root_der: Vec<u8>,
    publication: Publication,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("issuing_not_after", &self.issuing_not_after)
            .finish_non_exhaustive()
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LocalCaError + '_ {
    move |source| LocalCaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn crypto(e: rcgen::Error) -> LocalCaError {
    LocalCaError::Crypto(e.to_string())
}

fn signing(e: CaError) -> LocalCaError {
    LocalCaError::Crypto(e.to_string())
}

fn signature_algorithm(algorithm: KeyAlgorithm) -> &'static SignatureAlgorithm {
    match algorithm {
        KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyAlgorithm::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
    }
}

/// Generate a key of `algorithm`.
pub fn generate_key(algorithm: KeyAlgorithm) -> Result<KeyPair, LocalCaError> {
    let alg = signature_algorithm(algorithm);
    match algorithm {
        KeyAlgorithm::Rsa3072 => KeyPair::generate_rsa_for(alg, rcgen::RsaKeySize::_3072),
        _ => KeyPair::generate_for(alg),
    }
    .map_err(crypto)
}

fn ca_params(cn: &str, organization: &str, path_len: Option<u8>) -> CertificateParams {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if !organization.is_empty() {
        dn.push(DnType::OrganizationName, organization);
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn not_after_of(der: &[u8]) -> Result<OffsetDateTime, String> {
    let cert = Certificate::from_der(der).map_err(|e| e.to_string())?;
    let not_after = cert.tbs_certificate.validity.not_after.to_unix_duration();
    OffsetDateTime::from_unix_timestamp(not_after.as_secs() as i64).map_err(|e| e.to_string())
}

struct CaFiles {
    dir: PathBuf,
}

impl CaFiles {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn read(&self, name: &str) -> Result<String, LocalCaError> {
        let path = self.path(name);
        std::fs::read_to_string(&path).map_err(io_error(&path))
    }
    fn invalid(&self, name: &str, reason: impl ToString) -> LocalCaError {
        LocalCaError::Invalid {
            path: self.path(name),
            reason: reason.to_string(),
        }
    }
}

impl LocalCa {
    /// Load the CA from `dir`, or create it there when `dir` holds none. Returns the CA and
    /// whether it was created now.
    pub fn create_or_load(
        dir: &Path,
        config: &CaConfig,
        now: OffsetDateTime,
    ) -> Result<(Self, bool), LocalCaError> {
        let files = CaFiles {
            dir: dir.to_path_buf(),
        };
        let created = !files.path("ca.json").exists();
        if created {
            Self::create(&files, config, now)?;
        }
        let mut ca = Self::load(&files, config)?;
        ca.publication = Publication {
            crl_url: Some(config.crl_url.clone()).filter(|u| !u.is_empty()),
            ocsp_url: Some(config.ocsp_url.clone()).filter(|u| !u.is_empty()),
            ca_issuers_url: Some(config.ca_issuers_url.clone()).filter(|u| !u.is_empty()),
        };
        Ok((ca, created))
    }

    fn create(files: &CaFiles, config: &CaConfig, now: OffsetDateTime) -> Result<(), LocalCaError> {
        files::create_private_dir(&files.dir).map_err(io_error(&files.dir))?;
        let token = token_spec(config, None)?;
        let metadata = CaMetadata {
            key_algorithm: config.key_algorithm,
            root_subject_cn: format!("{} Root CA", config.common_name),
            issuing_subject_cn: format!("{} Issuing CA", config.common_name),
            organization: config.organization.clone(),
            issuing_key: token.as_ref().map(|spec| spec.uri.to_string()),
        };
        let not_before = now - Duration::minutes(5);

        let root_key = CaKey::File(generate_key(config.key_algorithm)?)
            .with_signature(config.rsa_signature)?;
        let mut root_params = ca_params(&metadata.root_subject_cn, &metadata.organization, None);
        root_params.not_before = not_before;
        root_params.not_after = now + Duration::days(config.root_validity_days.into());
        root_params.serial_number = Some(SerialNumber::from_slice(Serial::generate().as_bytes()));
        let root_cert = root_key
            .finish::<Certificate>(root_params.self_signed(&root_key).map_err(crypto)?.der())
            .map_err(signing)?;
        let root_issuer = Issuer::new(root_params, &root_key);

        let issuing_key = match &token {
            None => CaKey::File(generate_key(config.key_algorithm)?),
            Some(spec) => {
                let (key, generated) =
                    Pkcs11Key::open_or_generate(spec, config.key_algorithm.into(), KeyUsage::Sign)?;
                if key.algorithm() != signature_algorithm(config.key_algorithm) {
                    return Err(LocalCaError::KeyLocation(format!(
                        "the token already holds {} as a {:?} key; set [ca] key_algorithm to match it",
                        spec.uri,
                        key.key_algorithm()
                    )));
                }
                tracing::info!(uri = %spec.uri, generated, "issuing CA key in the PKCS#11 token");
                CaKey::Token(Box::new(key))
            }
        };
        let mut issuing_params = ca_params(
            &metadata.issuing_subject_cn,
            &metadata.organization,
            Some(0),
        );
        issuing_params.not_before = not_before;
        let issuing_days = config.issuing_validity_days.min(config.root_validity_days);
        issuing_params.not_after = now + Duration::days(issuing_days.into());
        issuing_params.serial_number =
            Some(SerialNumber::from_slice(Serial::generate().as_bytes()));
        issuing_params.use_authority_key_identifier_extension = true;
        let issuing_cert = root_key
            .finish::<Certificate>(
                issuing_params
                    .signed_by(&issuing_key, &root_issuer)
                    .map_err(crypto)?
                    .der(),
            )
            .map_err(signing)?;

        let write_secret = |name: &str, text: String| {
            let path = files.path(name);
            files::write_secret(&path, text.as_bytes()).map_err(io_error(&path))
        };
        let write_public = |name: &str, text: String| {
            let path = files.path(name);
            files::write_public(&path, text.as_bytes()).map_err(io_error(&path))
        };
        if let Some(root_key) = root_key.key_file() {
            write_secret("root.key.pem", root_key.serialize_pem())?;
        }
        if let Some(issuing_key) = issuing_key.key_file() {
            write_secret("issuing.key.pem", issuing_key.serialize_pem())?;
        }
        write_public("root.cert.pem", pem::encode(pem::CERTIFICATE, &root_cert))?;
        write_public(
            "issuing.cert.pem",
            pem::encode(pem::CERTIFICATE, &issuing_cert),
        )?;
        // Written last: its presence marks a complete CA.
        let json = serde_json::to_string_pretty(&metadata).expect("metadata serializes");
        write_public("ca.json", json)
    }

    fn load(files: &CaFiles, config: &CaConfig) -> Result<Self, LocalCaError> {
        let metadata: CaMetadata = serde_json::from_str(&files.read("ca.json")?)
            .map_err(|e| files.invalid("ca.json", e))?;
        // Refused before use: a key others can read is a key others may have copied. The
        // root key may have been moved offline; when it is there, it is checked too.
        files::check_secret_permissions_if_present(&files.path("root.key.pem"))?;
        let (key, key_name) = match token_spec(config, metadata.issuing_key.as_deref())? {
            None => {
                files::check_secret_permissions(&files.path("issuing.key.pem"))?;
                let key_pem = files.read("issuing.key.pem")?;
                let key =
                    KeyPair::from_pem(&key_pem).map_err(|e| files.invalid("issuing.key.pem", e))?;
                (CaKey::File(key), "issuing.key.pem".to_string())
            }
            Some(spec) => (
                CaKey::Token(Box::new(Pkcs11Key::open(&spec, KeyUsage::Sign)?)),
                spec.uri.to_string(),
            ),
        };
        if key.algorithm() != signature_algorithm(metadata.key_algorithm) {
            return Err(LocalCaError::Invalid {
                path: files.path("ca.json"),
                reason: format!("{key_name} is not a {:?} key", metadata.key_algorithm),
            });
        }
        let key = key.with_signature(config.rsa_signature)?;
        let issuing_der = pem::decode(&files.read("issuing.cert.pem")?, &[pem::CERTIFICATE])
            .map_err(|e| files.invalid("issuing.cert.pem", e))?;
        let root_der = pem::decode(&files.read("root.cert.pem")?, &[pem::CERTIFICATE])
            .map_err(|e| files.invalid("root.cert.pem", e))?;
        let issuing_not_after =
            not_after_of(&issuing_der).map_err(|e| files.invalid("issuing.cert.pem", e))?;
        let issuing_spki = Certificate::from_der(&issuing_der)
            .map_err(|e| files.invalid("issuing.cert.pem", e))?
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
            .to_vec();
        if issuing_spki != key.der_bytes() {
            return Err(files.invalid(
                "issuing.cert.pem",
                format!("{key_name}: key does not match issuing.cert.pem"),
            ));
        }
        let params = ca_params(
            &metadata.issuing_subject_cn,
            &metadata.organization,
            Some(0),
        );
        Ok(LocalCa {
            linter: Linter::new(params.clone(), key.algorithm()).map_err(crypto)?,
            issuer: Arc::new(Issuer::new(params, key)),
            issuing_der,
            issuing_not_after,
            root_der,
            publication: Publication::default(),
        })
    }

    /// The issuing CA's certificate, DER.
    pub fn issuing_certificate(&self) -> &[u8] {
        &self.issuing_der
    }

    /// Phase one of an issuance: the leaf's parameters, built from the order and linted
    /// (encoded unsigned for the lint, nothing signed yet), and its actual not-after.
    fn prepare(
        &self,
        order: &IssuanceOrder,
    ) -> Result<(CertificateParams, OffsetDateTime), CaError> {
        let not_after = order.not_after.min(self.issuing_not_after);
        if not_after <= order.not_before {
            return Err(CaError::Refused(
                "the issuing CA has expired or expires before the requested start".into(),
            ));
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = &order.common_name {
            dn.push(DnType::CommonName, cn.as_str());
        }
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from_slice(order.serial.as_bytes()));
        params.not_before = order.not_before;
        params.not_after = not_after;
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.subject_alt_names = order
            .sans
            .iter()
            .map(|id| match id {
                Identifier::Dns(name) => name
                    .as_str()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|_| CaError::Refused(format!("`{name}` is not an IA5 string"))),
                Identifier::Ip(ip) => Ok(SanType::IpAddress(*ip)),
                Identifier::Email(address) => address
                    .as_str()
                    .try_into()
                    .map(SanType::Rfc822Name)
                    .map_err(|_| CaError::Refused(format!("`{address}` is not an IA5 string"))),
                Identifier::Uri(uri) => uri
                    .as_str()
                    .try_into()
                    .map(SanType::URI)
                    .map_err(|_| CaError::Refused(format!("`{uri}` is not an IA5 string"))),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if order.key_encipherment {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = order
            .extended_key_usages
            .iter()
            .map(|eku| eku_purpose(*eku))
            .collect();
        if let Some(url) = &self.publication.crl_url {
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        if let Some(aia) = self.authority_info_access()? {
            params.custom_extensions.push(aia);
        }
        let public_key = RequesterKey {
            key_type: order.key_type,
            bytes: &order.public_key,
        };
        self.linter.check(&params, &public_key)?;
        Ok((params, not_after))
    }

    /// Run `sign` with the issuer: in place for a key file, on a blocking thread for a token
    /// key (a round trip to the device must not stall the runtime).
    async fn with_issuer<T: Send + 'static>(
        &self,
        sign: impl FnOnce(&Issuer<'static, CaKey>) -> T + Send + 'static,
    ) -> Result<T, CaError> {
        if !self.issuer.key().blocks() {
            return Ok(sign(&self.issuer));
        }
        let issuer = self.issuer.clone();
        tokio::task::spawn_blocking(move || sign(&issuer))
            .await
            .map_err(|e| CaError::Internal(format!("the signing task failed: {e}")))
    }

    fn authority_info_access(&self) -> Result<Option<CustomExtension>, CaError> {
        use x509_cert::ext::pkix::name::GeneralName;
        use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
        let mut descriptions = Vec::new();
        let entries = [
            (
                const_oid::db::rfc5280::ID_AD_OCSP,
                &self.publication.ocsp_url,
            ),
            (
                const_oid::db::rfc5280::ID_AD_CA_ISSUERS,
                &self.publication.ca_issuers_url,
            ),
        ];
        for (method, url) in entries {
            if let Some(url) = url {
                let location = der::asn1::Ia5String::new(url.as_str())
                    .map_err(|e| CaError::Internal(format!("AIA URL `{url}`: {e}")))?;
                descriptions.push(AccessDescription {
                    access_method: method,
                    access_location: GeneralName::UniformResourceIdentifier(location),
                });
            }
        }
        if descriptions.is_empty() {
            return Ok(None);
        }
        let content = AuthorityInfoAccessSyntax(descriptions)
            .to_der()
            .map_err(|e| CaError::Internal(e.to_string()))?;
        Ok(Some(CustomExtension::from_oid_content(
            AUTHORITY_INFO_ACCESS,
            content,
        )))
    }
}

fn eku_purpose(eku: ExtendedKeyUsage) -> ExtendedKeyUsagePurpose {
    match eku {
        ExtendedKeyUsage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsage::CodeSigning => ExtendedKeyUsagePurpose::CodeSigning,
        ExtendedKeyUsage::EmailProtection => ExtendedKeyUsagePurpose::EmailProtection,
        ExtendedKeyUsage::TimeStamping => ExtendedKeyUsagePurpose::TimeStamping,
        ExtendedKeyUsage::OcspSigning => ExtendedKeyUsagePurpose::OcspSigning,
    }
}

/// The requester's public key as rcgen writes it into the SubjectPublicKeyInfo.
struct RequesterKey<'a> {
    key_type: KeyType,
    bytes: &'a [u8],
}

impl PublicKeyData for RequesterKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.bytes
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        // Only the key-type half of the algorithm is written into the SPKI.
        match self.key_type {
            KeyType::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

#[async_trait::async_trait]
impl CaAdapter for LocalCa {
    fn id(&self) -> &str {
        "local"
    }

    fn chain(&self) -> Vec<Vec<u8>> {
        vec![self.issuing_der.clone()]
    }

    fn trust_anchors(&self) -> Vec<Vec<u8>> {
        vec![self.root_der.clone()]
    }

    async fn issue(&self, order: &IssuanceOrder) -> Result<IssuedCertificate, CaError> {
        let (params, not_after) = self.prepare(order)?;
        // Phase two: signed once, with the CA key.
        let (key_type, public_key) = (order.key_type, order.public_key.clone());
        let der = self
            .with_issuer(move |issuer| {
                let requester = RequesterKey {
                    key_type,
                    bytes: &public_key,
                };
                match params.signed_by(&requester, issuer) {
                    Ok(cert) => issuer.key().finish::<Certificate>(cert.der()),
                    Err(e @ rcgen::Error::RemoteKeyError) => {
                        Err(issuer.key().failure("signing the certificate", e))
                    }
                    Err(e) => Err(CaError::Refused(e.to_string())),
                }
            })
            .await??;
        let parsed = Certificate::from_der(&der).map_err(|e| CaError::Internal(e.to_string()))?;
        Ok(IssuedCertificate {
            serial: order.serial.to_string(),
            subject: parsed.tbs_certificate.subject.to_string(),
            not_before: order.not_before,
            not_after,
            chain: self.chain(),
            der,
        })
    }

    async fn health(&self) -> Result<(), String> {
        if !self.issuer.key().blocks() {
            return Ok(());
        }
        self.with_issuer(|issuer| match issuer.key() {
            CaKey::Token(key) | CaKey::TokenPss(key) => key.check().map_err(|e| e.to_string()),
            CaKey::File(_) | CaKey::FilePss(..) => Ok(()),
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("issuing CA key in the PKCS#11 token: {e}"))
    }

    async fn sign_ocsp(&self, response_data: &[u8]) -> Result<CaSignature, CaError> {
        let data = response_data.to_vec();
        self.with_issuer(move |issuer| issuer.key().sign_detached(&data))
            .await?
    }

    async fn sign_crl(&self, crl: &CrlOrder) -> Result<Vec<u8>, CaError> {
        let reason = |code: u8| {
            use rcgen::RevocationReason as R;
            Some(match code {
                1 => R::KeyCompromise,
                2 => R::CaCompromise,
                3 => R::AffiliationChanged,
                4 => R::Superseded,
                5 => R::CessationOfOperation,
                6 => R::CertificateHold,
                8 => R::RemoveFromCrl,
                9 => R::PrivilegeWithdrawn,
                10 => R::AaCompromise,
                // RFC 5280 §5.3.1: unspecified is expressed by omitting the reason.
                _ => return None,
            })
        };
        let params = rcgen::CertificateRevocationListParams {
            this_update: crl.this_update,
            next_update: crl.next_update,
            crl_number: SerialNumber::from_slice(&crl.number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: crl
                .revoked
                .iter()
                .map(|(serial, at, code)| rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: *at,
                    reason_code: reason(*code),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        self.with_issuer(move |issuer| {
            params
                .signed_by(issuer)
                .map_err(|e| issuer.key().failure("signing the CRL", e))
                .and_then(|crl| {
                    issuer
                        .key()
                        .finish::<x509_cert::crl::CertificateList>(crl.der())
                })
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::os::unix::fs::PermissionsExt;

    fn order(key: &KeyPair, key_type: KeyType, now: OffsetDateTime) -> IssuanceOrder {
        IssuanceOrder {
            serial: Serial::generate(),
            public_key: key.der_bytes().to_vec(),
            key_type,
            common_name: Some("a.test".into()),
            sans: vec![
                Identifier::dns("a.test").unwrap(),
                Identifier::Ip("127.0.0.1".parse().unwrap()),
            ],
            not_before: now,
            not_after: now + Duration::days(9000),
            extended_key_usages: vec![ExtendedKeyUsage::ServerAuth],
            key_encipherment: false,
            csr_der: Vec::new(),
        }
    }

    #[tokio::test]
    async fn creates_reloads_and_signs_for_each_algorithm() {
        for algorithm in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Rsa3072,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let ca_dir = dir.path().join("ca");
            let mut config = Config::load_default().unwrap().ca;
            config.key_algorithm = algorithm;
            let now = OffsetDateTime::now_utc();
            let (first, created) = LocalCa::create_or_load(&ca_dir, &config, now).unwrap();
            assert!(created);
            for key in ["root.key.pem", "issuing.key.pem"] {
                let mode = std::fs::metadata(ca_dir.join(key))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{key}");
            }
            let (second, created) = LocalCa::create_or_load(&ca_dir, &config, now).unwrap();
            assert!(!created);
            assert_eq!(first.issuing_certificate(), second.issuing_certificate());

            let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let issued = second
                .issue(&order(&leaf_key, KeyType::EcdsaP256, now))
                .await
                .unwrap();
            assert_eq!(issued.subject, "CN=a.test");
            // Clamped to the issuing CA's end of life.
            assert_eq!(issued.not_after, second.issuing_not_after);
            let cert = Certificate::from_der(&issued.der).unwrap();
            assert_eq!(
                cert.tbs_certificate.issuer,
                Certificate::from_der(second.issuing_certificate())
                    .unwrap()
                    .tbs_certificate
                    .subject
            );
        }
    }

    /// The RSASSA-PSS signature on `signature` over `message` by `public_key` (PKCS#1).
    fn verify_pss(public_key: &[u8], message: &[u8], signature: &[u8]) {
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA256,
            public_key,
        )
        .verify(message, signature)
        .expect("RSASSA-PSS signature verifies");
    }

    fn spki_key(certificate: &Certificate) -> Vec<u8> {
        let spki = &certificate.tbs_certificate.subject_public_key_info;
        assert_eq!(spki.algorithm.oid, const_oid::db::rfc5912::RSA_ENCRYPTION);
        spki.subject_public_key.raw_bytes().to_vec()
    }

    #[tokio::test]
    async fn rsa_pss_signs_every_certificate_crl_and_ocsp_response() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let mut config = Config::load_default().unwrap().ca;
        config.key_algorithm = KeyAlgorithm::Rsa3072;
        config.rsa_signature = RsaSignature::Pss;
        let now = OffsetDateTime::now_utc();
        let (ca, _) = LocalCa::create_or_load(&ca_dir, &config, now).unwrap();
        let pss = rsa_pss::algorithm_identifier();

        let root = Certificate::from_der(&ca.root_der).unwrap();
        let issuing = Certificate::from_der(ca.issuing_certificate()).unwrap();
        for (certificate, signer) in [(&root, &root), (&issuing, &root)] {
            assert_eq!(certificate.signature_algorithm, pss);
            assert_eq!(certificate.tbs_certificate.signature, pss);
            verify_pss(
                &spki_key(signer),
                &certificate.tbs_certificate.to_der().unwrap(),
                certificate.signature.raw_bytes(),
            );
        }
        let issuing_key = spki_key(&issuing);

        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let issued = ca
            .issue(&order(&leaf_key, KeyType::EcdsaP256, now))
            .await
            .unwrap();
        super::super::lint::lint_der(&issued.der).unwrap();
        let leaf = Certificate::from_der(&issued.der).unwrap();
        assert_eq!(leaf.signature_algorithm, pss);
        verify_pss(
            &issuing_key,
            &leaf.tbs_certificate.to_der().unwrap(),
            leaf.signature.raw_bytes(),
        );

        let crl_der = ca
            .sign_crl(&CrlOrder {
                number: 7,
                this_update: now,
                next_update: now + Duration::hours(24),
                revoked: vec![(
                    leaf.tbs_certificate.serial_number.as_bytes().to_vec(),
                    now,
                    1,
                )],
            })
            .await
            .unwrap();
        let crl = x509_cert::crl::CertificateList::from_der(&crl_der).unwrap();
        assert_eq!(crl.signature_algorithm, pss);
        assert_eq!(crl.tbs_cert_list.signature, pss);
        assert_eq!(
            crl.tbs_cert_list
                .revoked_certificates
                .as_ref()
                .unwrap()
                .len(),
            1
        );
        verify_pss(
            &issuing_key,
            &crl.tbs_cert_list.to_der().unwrap(),
            crl.signature.raw_bytes(),
        );

        let signed = ca.sign_ocsp(b"response data").await.unwrap();
        assert_eq!(signed.algorithm, pss);
        verify_pss(&issuing_key, b"response data", &signed.signature);

        // Reloaded with PKCS#1 v1.5, the same key signs the classic way again.
        config.rsa_signature = RsaSignature::Pkcs1v15;
        let (classic, created) = LocalCa::create_or_load(&ca_dir, &config, now).unwrap();
        assert!(!created);
        let issued = classic
            .issue(&order(&leaf_key, KeyType::EcdsaP256, now))
            .await
            .unwrap();
        let leaf = Certificate::from_der(&issued.der).unwrap();
        assert_eq!(
            leaf.signature_algorithm.oid,
            const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION
        );
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            &issuing_key,
        )
        .verify(
            &leaf.tbs_certificate.to_der().unwrap(),
            leaf.signature.raw_bytes(),
        )
        .unwrap();
    }

    #[test]
    fn rsa_pss_is_refused_for_an_ec_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let mut config = Config::load_default().unwrap().ca;
        let now = OffsetDateTime::now_utc();
        LocalCa::create_or_load(&ca_dir, &config, now).unwrap();
        // An existing EC CA, configured for PSS (e.g. key_algorithm changed afterwards).
        config.rsa_signature = RsaSignature::Pss;
        let error = LocalCa::create_or_load(&ca_dir, &config, now).unwrap_err();
        assert!(error.to_string().contains("needs an RSA key"), "{error}");
    }

    #[test]
    fn mismatched_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let config = Config::load_default().unwrap().ca;
        let now = OffsetDateTime::now_utc();
        LocalCa::create_or_load(&ca_dir, &config, now).unwrap();
        let other = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
        files::write_secret(
            &ca_dir.join("issuing.key.pem"),
            other.serialize_pem().as_bytes(),
        )
        .unwrap();
        let error = LocalCa::create_or_load(&ca_dir, &config, now).unwrap_err();
        assert!(error.to_string().contains("does not match"), "{error}");
    }

    #[test]
    fn group_or_world_readable_ca_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let config = Config::load_default().unwrap().ca;
        let now = OffsetDateTime::now_utc();
        LocalCa::create_or_load(&ca_dir, &config, now).unwrap();
        for key in ["issuing.key.pem", "root.key.pem"] {
            let path = ca_dir.join(key);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let error = LocalCa::create_or_load(&ca_dir, &config, now).unwrap_err();
            assert!(matches!(error, LocalCaError::Exposed(_)), "{error}");
            assert!(
                error
                    .to_string()
                    .contains(&format!("chmod 600 {}", path.display())),
                "{error}"
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        LocalCa::create_or_load(&ca_dir, &config, now).unwrap();
    }
}
