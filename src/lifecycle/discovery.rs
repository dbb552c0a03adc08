//! Certificate discovery: find certificates that are deployed — presented by TLS endpoints,
//! lying in directories as PEM, DER or PKCS#12 files — and keep them in the inventory beside
//! what rampart issued, each with where it was seen, its subject, issuer and expiry, and
//! whether rampart issued it (otherwise it is *external*).
//!
//! Scans run where the operator stands: `rampart discover tls|files` scans from the CLI's
//! host ([`scan_tls`], [`scan_files`]) and posts what it found to the admin API, which calls
//! [`record`]; scheduled jobs (`[[discovery.jobs]]`, started by [`run_jobs`]) scan from the
//! daemon's host. Records are kept as protocol state in the namespace [`NAMESPACE`], keyed
//! by SHA-256 fingerprint, so a certificate seen again (or elsewhere) stays one record.
//!
//! A TLS sighting records the certificate the endpoint presents (the leaf; the chain it
//! sends belongs to its issuers). A file sighting records every certificate in the file.
//!
//! Imports `pipeline` (store, CA, clock, metrics), `store`, `config`, `pkix` and `model`;
//! TLS from tokio-rustls, X.509 from `x509-cert`, PKCS#12 from `pkcs12` (the structure) and
//! `p12-keystore` (decryption).

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use der::asn1::{ContextSpecific, OctetString};
use der::{Decode, Encode};
use ipnet::IpNet;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use x509_cert::Certificate;

use crate::config::{DiscoveryJobConfig, DiscoveryKind};
use crate::pipeline::Pipeline;
use crate::pkix::sha256_hex;
use crate::store::StoreError;

/// Protocol-state namespace of discovered certificates (key: SHA-256 fingerprint, hex).
pub const NAMESPACE: &str = "inventory.discovered";
/// Most addresses one CIDR range may expand to (a /20 in IPv4, a /116 in IPv6).
pub const MAX_RANGE_ADDRESSES: u32 = 1 << RANGE_HOST_BITS;
const RANGE_HOST_BITS: u8 = 12;
/// Most targets one scan accepts in all.
pub const MAX_TARGETS: usize = 65_536;
/// Files larger than this are not certificates worth reading.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Handshakes run at once unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// Time one target gets for connect and handshake unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest accepted location text.
pub const MAX_LOCATION_CHARS: usize = 512;
/// Directory depth a file scan descends to.
const MAX_DEPTH: usize = 32;
/// Distinct locations remembered per certificate (the oldest are dropped).
const MAX_LOCATIONS: usize = 32;
/// Nesting of PKCS#12 SafeContents bags followed.
const MAX_BAG_NESTING: usize = 4;

/// The certificates (DER) found at one place, or why none could be read there.
pub type Found = Result<Vec<Vec<u8>>, String>;

/// Where a certificate was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Presented by a TLS endpoint.
    Tls,
    /// Found in a file.
    File,
}

impl Source {
    /// Lower-case name, as in records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Tls => "tls",
            Source::File => "file",
        }
    }
}

/// A certificate found deployed somewhere, as kept in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredCertificate {
    /// SHA-256 of the DER certificate, lower-case hex (the record's key).
    pub sha256_fingerprint: String,
    /// How it was last seen.
    pub source: Source,
    /// Where it was last seen: `10.0.0.5:443 (sni www.example)` or a file path.
    pub location: String,
    /// Every distinct location it was seen at, the most recent last (at most 32).
    #[serde(default)]
    pub locations: Vec<String>,
    /// Subject DN (RFC 4514).
    pub subject: String,
    /// Issuer DN (RFC 4514).
    pub issuer: String,
    /// Subject alternative names: `dns:…`, `ip:…`, `email:…`, `uri:…`.
    pub sans: Vec<String>,
    /// Serial number, lower-case hex (as rampart's inventory writes serials).
    pub serial: String,
    /// Validity start.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// Validity end.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// A CA certificate (basicConstraints cA).
    #[serde(default)]
    pub is_ca: bool,
    /// rampart issued it: its inventory holds this very certificate (same serial and
    /// fingerprint), or it is one of rampart's own CA certificates. Otherwise external.
    pub issued_by_rampart: bool,
    /// First sighting.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    /// Last sighting.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// The certificate, DER.
    #[serde(with = "crate::model::base64_bytes")]
    pub der: Vec<u8>,
}

/// Why discovered certificates were not recorded.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// One of the certificates is not an X.509 certificate (nothing was recorded).
    #[error("certificates[{index}] is not an X.509 certificate: {reason}")]
    NotACertificate {
        /// Position in the list.
        index: usize,
        /// Decoder message.
        reason: String,
    },
    /// The location is empty, too long or holds control characters.
    #[error(
        "the location must be 1 to {MAX_LOCATION_CHARS} characters without control characters"
    )]
    BadLocation,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A TLS target that cannot be scanned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// No target at all.
    #[error("no target given (host:port, IP:port, [IPv6]:port or CIDR:port)")]
    Empty,
    /// `host` without `:port`.
    #[error("`{0}`: missing :port")]
    MissingPort(String),
    /// A port that is not 1…65535.
    #[error("`{0}`: the port must be 1 to 65535")]
    BadPort(String),
    /// An IPv6 address without brackets.
    #[error("`{0}`: write IPv6 targets as [address]:port")]
    BareIpv6(String),
    /// Neither a host name, an IP address nor a CIDR range.
    #[error("`{0}`: not a host name, IP address or CIDR range")]
    BadHost(String),
    /// A CIDR range over [`MAX_RANGE_ADDRESSES`].
    #[error(
        "`{0}`: the range holds more than 4096 addresses (at most a /20 in IPv4, a /116 in IPv6)"
    )]
    RangeTooLarge(String),
    /// More than [`MAX_TARGETS`] in all.
    #[error("more than {MAX_TARGETS} targets in all")]
    TooMany,
}

/// What a target names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An address: connected to as is, without SNI.
    Ip(IpAddr),
    /// A DNS name (lower case): resolved at connect time and sent as SNI.
    Name(String),
}

/// One endpoint to handshake with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Host.
    pub host: Host,
    /// TCP port.
    pub port: u16,
}

impl Target {
    /// The server name sent in the handshake (host-name targets only).
    pub fn sni(&self) -> Option<&str> {
        match &self.host {
            Host::Name(name) => Some(name),
            Host::Ip(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

/// Parse target specs (each may itself be a comma-separated list): `host:port`,
/// `IP:port`, `[IPv6]:port` and `CIDR:port` (expanded to its host addresses; at most
/// [`MAX_RANGE_ADDRESSES`] per range). Duplicates are dropped, order is kept.
pub fn parse_targets<'a>(
    specs: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Target>, TargetError> {
    let mut targets = Vec::new();
    let mut seen = HashSet::new();
    for spec in specs
        .into_iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        for target in parse_target(spec)? {
            if seen.insert(target.clone()) {
                targets.push(target);
            }
            if targets.len() > MAX_TARGETS {
                return Err(TargetError::TooMany);
            }
        }
    }
    if targets.is_empty() {
        return Err(TargetError::Empty);
    }
    Ok(targets)
}

/// Parse one target spec; a CIDR range expands to its host addresses.
pub fn parse_target(spec: &str) -> Result<Vec<Target>, TargetError> {
    let (host, port, bracketed) = match spec.strip_prefix('[') {
        Some(rest) => {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| TargetError::MissingPort(spec.into()))?;
            (host, port, true)
        }
        None => {
            let (host, port) = spec
                .rsplit_once(':')
                .ok_or_else(|| TargetError::MissingPort(spec.into()))?;
            if host.contains(':') {
                return Err(TargetError::BareIpv6(spec.into()));
            }
            (host, port, false)
        }
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| TargetError::BadPort(spec.into()))?;
    if host.contains('/') {
        let net: IpNet = host
            .parse()
            .map_err(|_| TargetError::BadHost(spec.into()))?;
        if net.max_prefix_len() - net.prefix_len() > RANGE_HOST_BITS {
            return Err(TargetError::RangeTooLarge(spec.into()));
        }
        return Ok(net
            .hosts()
            .map(|ip| Target {
                host: Host::Ip(ip),
                port,
            })
            .collect());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![Target {
            host: Host::Ip(ip),
            port,
        }]);
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    match ServerName::try_from(name.as_str()) {
        Ok(ServerName::DnsName(_)) if !bracketed => Ok(vec![Target {
            host: Host::Name(name),
            port,
        }]),
        _ => Err(TargetError::BadHost(spec.into())),
    }
}

/// What one TLS target answered.
#[derive(Debug, Clone)]
pub struct TlsProbe {
    /// The target.
    pub target: Target,
    /// Where: the address that answered, with the SNI sent for host names
    /// (`10.0.0.5:443 (sni www.example)`).
    pub location: String,
    /// The chain the server presented (leaf first), or why none was seen.
    pub result: Found,
}

/// Handshake with every target, at most `concurrency` at a time, each within `timeout`
/// (connect and handshake), and collect the certificate chains presented. Results are in
/// target order.
pub async fn scan_tls(
    targets: Vec<Target>,
    concurrency: usize,
    timeout: Duration,
) -> Vec<TlsProbe> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (index, target) in targets.into_iter().enumerate() {
        // Waiting for a permit before spawning bounds the tasks alive, not only the sockets.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let provider = provider.clone();
        tasks.spawn(async move {
            let probe = probe(target, timeout, provider).await;
            drop(permit);
            (index, probe)
        });
    }
    let mut probes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(probe) => probes.push(probe),
            Err(error) => tracing::warn!(%error, "a TLS discovery probe failed"),
        }
    }
    probes.sort_by_key(|(index, _)| *index);
    probes.into_iter().map(|(_, probe)| probe).collect()
}

async fn probe(target: Target, timeout: Duration, provider: Arc<CryptoProvider>) -> TlsProbe {
    let presented = Arc::new(Mutex::new(None));
    let mut peer = None;
    let outcome = tokio::time::timeout(
        timeout,
        handshake(&target, provider, presented.clone(), &mut peer),
    )
    .await;
    let chain = presented
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let result = match (chain, outcome) {
        // Seen, even when the handshake failed afterwards (a server that demands a client
        // certificate, say).
        (Some(chain), _) => Ok(chain),
        (None, Ok(Ok(()))) => Err("the server presented no certificate".into()),
        (None, Ok(Err(reason))) => Err(reason),
        (None, Err(_)) => Err(format!("no answer within {} ms", timeout.as_millis())),
    };
    let location = match (&target.host, peer) {
        (Host::Ip(_), _) => target.to_string(),
        (Host::Name(name), Some(addr)) => format!("{addr} (sni {name})"),
        (Host::Name(name), None) => format!("{target} (sni {name})"),
    };
    TlsProbe {
        target,
        location,
        result,
    }
}

async fn handshake(
    target: &Target,
    provider: Arc<CryptoProvider>,
    presented: Arc<Mutex<Option<Vec<Vec<u8>>>>>,
    peer: &mut Option<SocketAddr>,
) -> Result<(), String> {
    let verifier = Arc::new(RecordingVerifier {
        provider: provider.clone(),
        presented,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let (server_name, tcp) = match &target.host {
        Host::Ip(ip) => (
            ServerName::IpAddress((*ip).into()),
            TcpStream::connect(SocketAddr::new(*ip, target.port)).await,
        ),
        Host::Name(name) => (
            ServerName::try_from(name.clone()).map_err(|e| e.to_string())?,
            TcpStream::connect((name.as_str(), target.port)).await,
        ),
    };
    let tcp = tcp.map_err(|e| format!("connect: {e}"))?;
    *peer = tcp.peer_addr().ok();
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    // close_notify; the peer's manners do not matter any more.
    let _ = stream.shutdown().await;
    Ok(())
}

/// Accepts whatever certificate the server presents and keeps a copy of the chain.
///
/// This is an inventory scanner, not a trust decision: discovery must see expired,
/// self-signed, misnamed and foreign certificates too, and nothing is sent over the
/// connection. The handshake signature is still checked, and a chain whose key did not
/// sign the handshake is dropped: what is recorded was presented by a server holding its key.
#[derive(Debug)]
struct RecordingVerifier {
    provider: Arc<CryptoProvider>,
    presented: Arc<Mutex<Option<Vec<Vec<u8>>>>>,
}

impl RecordingVerifier {
    fn keep(&self, chain: Option<Vec<Vec<u8>>>) {
        *self
            .presented
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = chain;
    }

    /// The signature check's verdict; a failure forgets the chain.
    fn checked(
        &self,
        verdict: Result<HandshakeSignatureValid, rustls::Error>,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if verdict.is_err() {
            self.keep(None);
        }
        verdict
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.to_vec())
            .collect();
        self.keep(Some(chain));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.checked(rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.checked(rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        ))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What one file held.
#[derive(Debug, Clone)]
pub struct FileFinding {
    /// The file.
    pub path: PathBuf,
    /// Its certificates, or why it was skipped (an encrypted PKCS#12, an unreadable file).
    pub result: Found,
}

/// Search `root` (a directory, walked recursively, or a single file) for certificates:
/// PEM (every CERTIFICATE block), DER, and PKCS#12 without a password or with an empty
/// one. Files over [`MAX_FILE_BYTES`] and files holding no certificate are left out
/// silently; encrypted PKCS#12 files and unreadable files are reported as skipped.
/// Symbolic links are followed, each directory is entered once (no loops). Blocking.
pub fn scan_files(root: &Path) -> std::io::Result<Vec<FileFinding>> {
    let meta = std::fs::metadata(root)?;
    let mut findings = Vec::new();
    if meta.is_file() {
        scan_file(root, meta.len(), &mut findings);
    } else if meta.is_dir() {
        walk(root, 0, &mut HashSet::new(), &mut findings);
    } else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is neither a directory nor a file", root.display()),
        ));
    }
    Ok(findings)
}

fn walk(
    dir: &Path,
    depth: usize,
    visited: &mut HashSet<(u64, u64)>,
    findings: &mut Vec<FileFinding>,
) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    // A directory reached again (through a link) is a loop or a second way in.
    if depth > MAX_DEPTH || !visited.insert((meta.dev(), meta.ino())) {
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            findings.push(FileFinding {
                path: dir.to_path_buf(),
                result: Err(format!("cannot list the directory: {error}")),
            });
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        // Following links; a dangling one has no metadata and is passed over.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, depth + 1, visited, findings);
        } else if meta.is_file() {
            scan_file(&path, meta.len(), findings);
        }
    }
}

fn scan_file(path: &Path, size: u64, findings: &mut Vec<FileFinding>) {
    if size > MAX_FILE_BYTES {
        return;
    }
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes));
    if let Err(error) = read {
        findings.push(FileFinding {
            path: path.to_path_buf(),
            result: Err(format!("cannot read: {error}")),
        });
        return;
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return;
    }
    if let Some(result) = certificates_in(&bytes) {
        findings.push(FileFinding {
            path: path.to_path_buf(),
            result,
        });
    }
}

/// The certificates in a file's contents: `None` when it holds none (or is not a
/// certificate format), an error when it does but cannot be read without a password.
pub fn certificates_in(bytes: &[u8]) -> Option<Found> {
    if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        let mut reader = bytes;
        let certificates: Vec<Vec<u8>> = rustls_pemfile::certs(&mut reader)
            .map_while(Result::ok)
            .map(|c| c.to_vec())
            .filter(|der| Certificate::from_der(der).is_ok())
            .collect();
        return (!certificates.is_empty()).then_some(Ok(certificates));
    }
    // DER certificates and PKCS#12 both start with a SEQUENCE.
    if bytes.first() != Some(&0x30) {
        return None;
    }
    if Certificate::from_der(bytes).is_ok() {
        return Some(Ok(vec![bytes.to_vec()]));
    }
    pkcs12_certificates(bytes)
}

/// Certificates of a PKCS#12 file (RFC 7292): those in unencrypted SafeContents as they
/// are, those in encrypted ones when the empty password opens them (PBES2 here, the
/// legacy PKCS#12 PBE schemes through `p12-keystore`, which returns the certificates that
/// go with a key or carry Java's trust attribute).
fn pkcs12_certificates(bytes: &[u8]) -> Option<Found> {
    use const_oid::db::rfc5911::{ID_DATA, ID_ENCRYPTED_DATA, ID_ENVELOPED_DATA};
    let pfx = pkcs12::pfx::Pfx::from_der(bytes).ok()?;
    if pfx.auth_safe.content_type != ID_DATA {
        return Some(Err(
            "PKCS#12 in public-key integrity mode (signed): skipped, not supported".into(),
        ));
    }
    let Some(safes) = octets(&pfx.auth_safe.content)
        .and_then(|data| Vec::<cms::content_info::ContentInfo>::from_der(&data).ok())
    else {
        return Some(Err("unreadable PKCS#12".into()));
    };
    let mut found = Vec::new();
    let mut sealed = false;
    for safe in &safes {
        if safe.content_type == ID_DATA {
            if let Some(bags) = octets(&safe.content)
                .and_then(|data| pkcs12::safe_bag::SafeContents::from_der(&data).ok())
            {
                collect_cert_bags(&bags, 0, &mut found);
            }
        } else if safe.content_type == ID_ENCRYPTED_DATA {
            match decrypt_with_empty_password(&safe.content)
                .and_then(|data| pkcs12::safe_bag::SafeContents::from_der(&data).ok())
            {
                Some(bags) => collect_cert_bags(&bags, 0, &mut found),
                None => sealed = true,
            }
        } else if safe.content_type == ID_ENVELOPED_DATA {
            sealed = true;
        }
    }
    if sealed {
        // "Without a password" is, by most tools, the empty one.
        match p12_keystore::KeyStore::from_pkcs12(bytes, "") {
            Ok(store) => {
                for (_, entry) in store.entries() {
                    match entry {
                        p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => {
                            found.extend(chain.chain().iter().map(|c| c.as_der().to_vec()));
                        }
                        p12_keystore::KeyStoreEntry::Certificate(cert) => {
                            found.push(cert.as_der().to_vec());
                        }
                        p12_keystore::KeyStoreEntry::Secret(_) => {}
                    }
                }
            }
            Err(_) if found.is_empty() => {
                return Some(Err("encrypted PKCS#12 (password-protected): skipped".into()));
            }
            // Certificates stored in the clear were read; the rest needs the password.
            Err(_) => {}
        }
    }
    let mut seen = HashSet::new();
    found.retain(|der| Certificate::from_der(der).is_ok() && seen.insert(der.clone()));
    if found.is_empty() {
        return Some(Err("PKCS#12 without a readable certificate: skipped".into()));
    }
    Some(Ok(found))
}

/// An EncryptedData (RFC 5652 §8) under PBES2 (RFC 8018), opened with the empty password.
/// A wrong password yields `None` (or, rarely, bytes that do not parse as SafeContents).
fn decrypt_with_empty_password(content: &der::Any) -> Option<Vec<u8>> {
    let encrypted = cms::encrypted_data::EncryptedData::from_der(&content.to_der().ok()?).ok()?;
    let info = &encrypted.enc_content_info;
    if info.content_enc_alg.oid != pkcs5::pbes2::PBES2_OID {
        return None;
    }
    let parameters = info.content_enc_alg.parameters.as_ref()?.to_der().ok()?;
    pkcs5::pbes2::Parameters::from_der(&parameters)
        .ok()?
        .decrypt("", info.encrypted_content.as_ref()?.as_bytes())
        .ok()
}

/// The bytes of an OCTET STRING held in a ContentInfo's content.
fn octets(content: &der::Any) -> Option<Vec<u8>> {
    let encoded = content.to_der().ok()?;
    Some(OctetString::from_der(&encoded).ok()?.into_bytes())
}

fn collect_cert_bags(bags: &[pkcs12::safe_bag::SafeBag], depth: usize, found: &mut Vec<Vec<u8>>) {
    for bag in bags {
        if bag.bag_id == pkcs12::PKCS_12_CERT_BAG_OID {
            if let Ok(cert) =
                ContextSpecific::<pkcs12::cert_type::CertBag>::from_der(&bag.bag_value)
            {
                if cert.value.cert_id == pkcs12::PKCS_12_X509_CERT_OID {
                    found.push(cert.value.cert_value.as_bytes().to_vec());
                }
            }
        } else if bag.bag_id == pkcs12::PKCS_12_SAFE_CONTENTS_BAG_OID && depth < MAX_BAG_NESTING {
            if let Ok(nested) =
                ContextSpecific::<pkcs12::safe_bag::SafeContents>::from_der(&bag.bag_value)
            {
                collect_cert_bags(&nested.value, depth + 1, found);
            }
        }
    }
}

/// What the inventory keeps of a certificate's contents.
struct Facts {
    fingerprint: String,
    subject: String,
    issuer: String,
    sans: Vec<String>,
    serial: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    is_ca: bool,
}

fn facts(der: &[u8]) -> Result<Facts, String> {
    use const_oid::db::rfc5280::{ID_CE_BASIC_CONSTRAINTS, ID_CE_SUBJECT_ALT_NAME};
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName};
    let cert = Certificate::from_der(der).map_err(|e| e.to_string())?;
    let tbs = &cert.tbs_certificate;
    let time = |t: &x509_cert::time::Time| {
        i64::try_from(t.to_unix_duration().as_secs())
            .ok()
            .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
            .ok_or_else(|| "a validity date out of range".to_string())
    };
    let mut sans = Vec::new();
    let mut is_ca = false;
    for ext in tbs.extensions.iter().flatten() {
        if ext.extn_id == ID_CE_SUBJECT_ALT_NAME {
            let Ok(names) = SubjectAltName::from_der(ext.extn_value.as_bytes()) else {
                continue;
            };
            for name in names.0 {
                match name {
                    GeneralName::DnsName(dns) => sans.push(format!("dns:{dns}")),
                    GeneralName::Rfc822Name(mail) => sans.push(format!("email:{mail}")),
                    GeneralName::UniformResourceIdentifier(uri) => sans.push(format!("uri:{uri}")),
                    GeneralName::IpAddress(ip) => {
                        let ip = match ip.as_bytes() {
                            &[a, b, c, d] => Some(IpAddr::from([a, b, c, d])),
                            bytes => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
                        };
                        if let Some(ip) = ip {
                            sans.push(format!("ip:{ip}"));
                        }
                    }
                    _ => {}
                }
            }
        } else if ext.extn_id == ID_CE_BASIC_CONSTRAINTS {
            is_ca = BasicConstraints::from_der(ext.extn_value.as_bytes()).is_ok_and(|bc| bc.ca);
        }
    }
    Ok(Facts {
        fingerprint: sha256_hex(der),
        subject: tbs.subject.to_string(),
        issuer: tbs.issuer.to_string(),
        sans,
        serial: rampart_acme::ari::serial_hex(tbs.serial_number.as_bytes()),
        not_before: time(&tbs.validity.not_before)?,
        not_after: time(&tbs.validity.not_after)?,
        is_ca,
    })
}

fn corrupt(reason: impl fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree: NAMESPACE,
        reason: reason.to_string(),
    }
}

/// Record certificates seen at `location` at `now`: classify each (issued by rampart or
/// external), merge with what the inventory knew of it (first sighting, locations) and
/// store it durably. Every certificate is checked before anything is written. Returns the
/// records as stored.
pub async fn record(
    pipeline: &Pipeline,
    source: Source,
    location: &str,
    certificates: Vec<Vec<u8>>,
    now: OffsetDateTime,
) -> Result<Vec<DiscoveredCertificate>, DiscoveryError> {
    let chars = location.chars().count();
    if chars == 0 || chars > MAX_LOCATION_CHARS || location.chars().any(char::is_control) {
        return Err(DiscoveryError::BadLocation);
    }
    let mut seen = HashSet::new();
    let mut parsed = Vec::new();
    for (index, der) in certificates.into_iter().enumerate() {
        let facts =
            facts(&der).map_err(|reason| DiscoveryError::NotACertificate { index, reason })?;
        if seen.insert(facts.fingerprint.clone()) {
            parsed.push((facts, der));
        }
    }
    let mut own_ca = pipeline.ca().chain();
    own_ca.extend(pipeline.ca().trust_anchors());
    let owned_location = location.to_string();
    // Read-merge-write per certificate: two sightings of one certificate at the same
    // instant may keep only one of the new locations, never a wrong record.
    let recorded = pipeline
        .with_store(move |store| {
            let mut out = Vec::with_capacity(parsed.len());
            for (facts, der) in parsed {
                let issued = store.certificate(&facts.serial)?.is_some_and(|r| {
                    r.sha256_fingerprint
                        .eq_ignore_ascii_case(&facts.fingerprint)
                });
                // An unreadable earlier record is replaced by this sighting.
                let known = store
                    .protocol_get(NAMESPACE, &facts.fingerprint)?
                    .and_then(|bytes| {
                        serde_json::from_slice::<DiscoveredCertificate>(&bytes)
                            .inspect_err(|error| {
                                tracing::warn!(key = %facts.fingerprint, %error,
                                    "unreadable discovery record replaced");
                            })
                            .ok()
                    });
                let is_new = known.is_none();
                let (first_seen, mut locations) = known
                    .map(|k| (k.first_seen.min(now), k.locations))
                    .unwrap_or((now, Vec::new()));
                locations.retain(|l| *l != owned_location);
                locations.push(owned_location.clone());
                if locations.len() > MAX_LOCATIONS {
                    locations.drain(..locations.len() - MAX_LOCATIONS);
                }
                let record = DiscoveredCertificate {
                    issued_by_rampart: issued || own_ca.contains(&der),
                    sha256_fingerprint: facts.fingerprint,
                    source,
                    location: owned_location.clone(),
                    locations,
                    subject: facts.subject,
                    issuer: facts.issuer,
                    sans: facts.sans,
                    serial: facts.serial,
                    not_before: facts.not_before,
                    not_after: facts.not_after,
                    is_ca: facts.is_ca,
                    first_seen,
                    last_seen: now,
                    der,
                };
                let bytes = serde_json::to_vec(&record).map_err(corrupt)?;
                store.protocol_put(NAMESPACE, &record.sha256_fingerprint, &bytes, true)?;
                out.push((record, is_new));
            }
            Ok(out)
        })
        .await?;
    let new = recorded.iter().filter(|(_, is_new)| *is_new).count();
    for (record, _) in recorded.iter().filter(|(_, is_new)| *is_new) {
        pipeline
            .metrics()
            .discovered(source.as_str(), !record.issued_by_rampart);
    }
    tracing::info!(
        source = source.as_str(),
        %location,
        certificates = recorded.len(),
        new,
        "discovered certificates recorded"
    );
    Ok(recorded.into_iter().map(|(record, _)| record).collect())
}

/// Every discovered certificate (only external ones with `external_only`), soonest expiry
/// first. Unreadable records are left out with a warning.
pub async fn list(
    pipeline: &Pipeline,
    external_only: bool,
) -> Result<Vec<DiscoveredCertificate>, StoreError> {
    let rows = pipeline
        .with_store(|store| store.protocol_scan(NAMESPACE, ""))
        .await?;
    let mut records: Vec<DiscoveredCertificate> = rows
        .into_iter()
        .filter_map(|(key, bytes)| match serde_json::from_slice(&bytes) {
            Ok(record) => Some(record),
            Err(error) => {
                tracing::warn!(%key, %error, "unreadable discovery record left out");
                None
            }
        })
        .filter(|r: &DiscoveredCertificate| !external_only || !r.issued_by_rampart)
        .collect();
    records.sort_by(|a, b| {
        (a.not_after, &a.sha256_fingerprint).cmp(&(b.not_after, &b.sha256_fingerprint))
    });
    Ok(records)
}

/// Start one task per `[[discovery.jobs]]`: each scans at once and then every
/// `interval_minutes`, records what it finds, and ends when `signal` turns true (or its
/// sender goes away).
pub fn run_jobs(pipeline: &Pipeline, signal: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    pipeline
        .config()
        .discovery
        .jobs
        .iter()
        .map(|job| tokio::spawn(run_job(pipeline.clone(), job.clone(), signal.clone())))
        .collect()
}

async fn run_job(pipeline: Pipeline, job: DiscoveryJobConfig, mut signal: watch::Receiver<bool>) {
    let targets = match job.kind {
        DiscoveryKind::Tls => match parse_targets(job.targets.iter().map(String::as_str)) {
            Ok(targets) => targets,
            Err(error) => {
                tracing::error!(job = %job.name, %error, "discovery job not started");
                return;
            }
        },
        DiscoveryKind::Files => Vec::new(),
    };
    let interval = Duration::from_secs(u64::from(job.interval_minutes) * 60);
    loop {
        tokio::select! {
            _ = stopped(&mut signal) => return,
            summary = run_once(&pipeline, &job, &targets) => match summary {
                Ok(summary) => tracing::info!(
                    job = %job.name,
                    places = summary.places,
                    certificates = summary.certificates,
                    skipped = summary.skipped,
                    "discovery job ran"
                ),
                Err(error) => tracing::warn!(job = %job.name, %error, "discovery job failed"),
            },
        }
        tokio::select! {
            _ = stopped(&mut signal) => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn stopped(signal: &mut watch::Receiver<bool>) {
    while !*signal.borrow_and_update() {
        if signal.changed().await.is_err() {
            return;
        }
    }
}

/// What one run of a job saw.
struct RunSummary {
    /// Endpoints or files that held certificates.
    places: usize,
    /// Certificates recorded.
    certificates: usize,
    /// Endpoints that did not answer, files skipped.
    skipped: usize,
}

async fn run_once(
    pipeline: &Pipeline,
    job: &DiscoveryJobConfig,
    targets: &[Target],
) -> Result<RunSummary, String> {
    let sightings: Vec<(Source, String, Found)> = match job.kind {
        DiscoveryKind::Tls => scan_tls(targets.to_vec(), DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT)
            .await
            .into_iter()
            .map(|p| {
                (
                    Source::Tls,
                    p.location,
                    p.result.map(|chain| chain.into_iter().take(1).collect()),
                )
            })
            .collect(),
        DiscoveryKind::Files => {
            let path = job.path.clone().unwrap_or_default();
            tokio::task::spawn_blocking(move || scan_files(&path))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{}: {e}", job.path.clone().unwrap_or_default().display()))?
                .into_iter()
                .map(|f| (Source::File, f.path.display().to_string(), f.result))
                .collect()
        }
    };
    let mut summary = RunSummary {
        places: 0,
        certificates: 0,
        skipped: 0,
    };
    for (source, location, result) in sightings {
        let Ok(certificates) = result else {
            summary.skipped += 1;
            continue;
        };
        match record(
            pipeline,
            source,
            &location,
            certificates,
            pipeline.clock().now(),
        )
        .await
        {
            Ok(recorded) => {
                summary.places += 1;
                summary.certificates += recorded.len();
            }
            Err(error) => {
                summary.skipped += 1;
                tracing::warn!(
                    job = %job.name,
                    %location,
                    %error,
                    "discovered certificates not recorded"
                );
            }
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Host {
        Host::Ip(text.parse().unwrap())
    }

    #[test]
    fn targets_of_every_form_parse() {
        let targets = parse_targets([
            "www.Example.test:443,10.0.0.5:8443",
            "[2001:db8::1]:443",
            " ",
            "www.example.test:443",
        ])
        .unwrap();
        assert_eq!(
            targets,
            vec![
                Target {
                    host: Host::Name("www.example.test".into()),
                    port: 443
                },
                Target {
                    host: ip("10.0.0.5"),
                    port: 8443
                },
                Target {
                    host: ip("2001:db8::1"),
                    port: 443
                },
            ],
            "names are lower-cased and duplicates dropped"
        );
        assert_eq!(targets[0].sni(), Some("www.example.test"));
        assert_eq!(targets[1].sni(), None, "addresses get no SNI");
        assert_eq!(targets[2].to_string(), "[2001:db8::1]:443");
    }

    #[test]
    fn cidr_ranges_expand_to_their_hosts() {
        let targets = parse_targets(["10.0.0.0/30:443"]).unwrap();
        let hosts: Vec<String> = targets.iter().map(ToString::to_string).collect();
        assert_eq!(hosts, ["10.0.0.1:443", "10.0.0.2:443"]);
        assert_eq!(parse_target("192.0.2.7/32:80").unwrap().len(), 1);
        assert_eq!(parse_target("10.1.0.0/20:443").unwrap().len(), 4094);
        assert_eq!(parse_target("[2001:db8::/120]:443").unwrap().len(), 256);
        assert_eq!(parse_target("[2001:db8::/116]:443").unwrap().len(), 4096);
    }

    #[test]
    fn ranges_over_4096_addresses_are_refused() {
        for spec in [
            "10.0.0.0/19:443",
            "0.0.0.0/0:443",
            "[2001:db8::/115]:443",
            "[::/0]:1",
        ] {
            let error = parse_targets([spec]).unwrap_err();
            assert_eq!(error, TargetError::RangeTooLarge(spec.into()));
            assert!(
                error.to_string().contains("more than 4096 addresses"),
                "{error}"
            );
        }
    }

    #[test]
    fn bad_targets_are_refused_with_the_reason() {
        assert_eq!(parse_targets(["", " , "]), Err(TargetError::Empty));
        assert_eq!(
            parse_targets(["example.test"]),
            Err(TargetError::MissingPort("example.test".into()))
        );
        for spec in ["example.test:0", "example.test:65536", "example.test:https"] {
            assert_eq!(parse_target(spec), Err(TargetError::BadPort(spec.into())));
        }
        assert_eq!(
            parse_target("2001:db8::1:443"),
            Err(TargetError::BareIpv6("2001:db8::1:443".into()))
        );
        for spec in [
            "bad_name!:443",
            "10.0.0.0/33:443",
            "[www.example]:443",
            ":443",
        ] {
            assert_eq!(
                parse_target(spec),
                Err(TargetError::BadHost(spec.into())),
                "{spec}"
            );
        }
    }

    #[test]
    fn too_many_targets_in_all_are_refused() {
        let specs: Vec<String> = (0..17).map(|i| format!("10.{i}.0.0/20:443")).collect();
        assert_eq!(
            parse_targets(specs.iter().map(String::as_str)),
            Err(TargetError::TooMany)
        );
    }

    fn self_signed(cn: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn pem_and_der_contents_are_recognised_and_junk_is_not() {
        let (a, b) = (self_signed("a.test"), self_signed("b.test"));
        let pem = crate::pkix::pem::encode_certificates([a.as_slice(), b.as_slice()]);
        let with_key =
            format!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{pem}");
        assert_eq!(
            certificates_in(with_key.as_bytes()),
            Some(Ok(vec![a.clone(), b]))
        );
        assert_eq!(certificates_in(&a), Some(Ok(vec![a.clone()])));
        assert_eq!(certificates_in(b"hello"), None);
        assert_eq!(certificates_in(&[0x30, 0x03, 0x02, 0x01, 0x01]), None);
        assert_eq!(
            certificates_in(&a[..a.len() - 1]),
            None,
            "a truncated certificate"
        );
        let key_only = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(certificates_in(key_only.as_bytes()), None);
    }

    #[test]
    fn file_scan_skips_large_files_and_survives_link_loops() {
        let dir = tempfile::tempdir().unwrap();
        let cert = self_signed("loop.test");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/cert.der"), &cert).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("sub/up")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.path().join("dangling")).unwrap();
        let mut big = crate::pkix::pem::encode_certificates([cert.as_slice()]).into_bytes();
        big.resize(MAX_FILE_BYTES as usize + 1, b'\n');
        std::fs::write(dir.path().join("big.pem"), big).unwrap();
        let findings = scan_files(dir.path()).unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].path, dir.path().join("sub/cert.der"));
        assert_eq!(findings[0].result, Ok(vec![cert.clone()]));
        // A single file can be named too; a missing path is an error.
        assert_eq!(
            scan_files(&dir.path().join("sub/cert.der")).unwrap().len(),
            1
        );
        assert!(scan_files(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn certificate_facts_are_read() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["a.test".to_string(), "192.0.2.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "a.test");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x8f, 0x01]));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let facts = facts(&der).unwrap();
        assert_eq!(facts.subject, "CN=a.test");
        assert_eq!(facts.issuer, "CN=a.test");
        assert_eq!(facts.sans, ["dns:a.test", "ip:192.0.2.1"]);
        assert_eq!(facts.serial, "8f01");
        assert_eq!(facts.fingerprint, sha256_hex(&der));
        assert!(facts.is_ca);
        assert!(facts.not_before < facts.not_after);
    }
}
