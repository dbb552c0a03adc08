//! The listeners' own TLS certificate: the operator's files when `[tls]` names them,
//! otherwise one issued by the built-in CA for localhost, 127.0.0.1, ::1 and
//! `server.public_hostname`, kept in `<data_dir>/tls/` and re-issued on start when a
//! third of its life is left or the names changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use der::Decode;
use rcgen::{KeyPair, PublicKeyData};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ServerError;
use crate::config::Config;
use crate::files;
use crate::model::{Identifier, KeyType};
use crate::pipeline::Pipeline;
use crate::pkix::pem;

/// Lifetime of a self-issued listener certificate.
const LISTENER_VALIDITY_DAYS: u32 = 90;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ListenerMeta {
    names: Vec<Identifier>,
    serial: String,
}

/// Where the listener certificate lives.
pub fn listener_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("listener.cert.pem"), dir.join("listener.key.pem"))
}

fn listener_names(config: &Config) -> Vec<Identifier> {
    let mut names = vec![Identifier::Dns("localhost".into())];
    if let Ok(Identifier::Dns(host)) = Identifier::dns(&config.server.public_hostname) {
        if host != "localhost" {
            names.push(Identifier::Dns(host));
        }
    } else if let Ok(ip) = config.server.public_hostname.parse() {
        names.push(Identifier::Ip(ip));
    }
    for ip in ["127.0.0.1", "::1"] {
        let ip = Identifier::Ip(ip.parse().expect("literal address"));
        if !names.contains(&ip) {
            names.push(ip);
        }
    }
    names
}

/// Fraction of a certificate's life left at `now` (0 when expired or unreadable).
fn life_left(cert_der: &[u8], now: OffsetDateTime) -> f64 {
    let Ok(cert) = x509_cert::Certificate::from_der(cert_der) else {
        return 0.0;
    };
    let validity = &cert.tbs_certificate.validity;
    let start = validity.not_before.to_unix_duration().as_secs_f64();
    let end = validity.not_after.to_unix_duration().as_secs_f64();
    let now = now.unix_timestamp() as f64;
    if end <= start {
        return 0.0;
    }
    ((end - now) / (end - start)).clamp(0.0, 1.0)
}

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::Io {
        what: what.display().to_string(),
        source,
    }
}

/// Make sure a usable self-issued listener certificate exists; issue one if not.
/// Returns the paths of the chain and key files.
pub async fn ensure_listener_certificate(
    pipeline: &Pipeline,
    data_dir: &Path,
) -> Result<(PathBuf, PathBuf), ServerError> {
    let (cert_path, key_path) = listener_paths(data_dir);
    let meta_path = data_dir.join("tls").join("listener.json");
    let names = listener_names(&pipeline.config());
    let now = pipeline.clock().now();
    let current = std::fs::read_to_string(&meta_path)
        .ok()
        .and_then(|text| serde_json::from_str::<ListenerMeta>(&text).ok())
        .zip(std::fs::read_to_string(&cert_path).ok())
        .filter(|_| key_path.exists());
    if let Some((meta, chain)) = current {
        let leaf = pem::decode_certificates(&chain)
            .ok()
            .and_then(|c| c.into_iter().next());
        if meta.names == names && leaf.is_some_and(|der| life_left(&der, now) > 1.0 / 3.0) {
            return Ok((cert_path, key_path));
        }
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let record = pipeline
        .issue_internal(
            crate::pipeline::InternalPurpose::Listener(names.clone()),
            key.der_bytes().to_vec(),
            KeyType::EcdsaP256,
            LISTENER_VALIDITY_DAYS,
        )
        .await
        .map_err(|e| ServerError::Tls(format!("cannot issue the listener certificate: {e}")))?;
    let dir = data_dir.join("tls");
    files::create_private_dir(&dir).map_err(io(&dir))?;
    files::write_secret(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
    let mut chain = vec![record.der.as_slice()];
    chain.extend(record.chain.iter().map(Vec::as_slice));
    files::write_public(&cert_path, pem::encode_certificates(chain).as_bytes())
        .map_err(io(&cert_path))?;
    let meta = serde_json::to_vec_pretty(&ListenerMeta {
        names,
        serial: record.serial.clone(),
    })
    .expect("serializes");
    files::write_public(&meta_path, &meta).map_err(io(&meta_path))?;
    tracing::info!(serial = %record.serial, "issued the listener TLS certificate");
    Ok((cert_path, key_path))
}

/// A rustls server configuration from PEM chain and key files.
///
/// With `client_roots`, clients may present a certificate chaining to one of those roots
/// (verified at the handshake; a wrong one fails it); without one they still connect.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
    client_roots: Option<&[Vec<u8>]>,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let chain_text = std::fs::read_to_string(cert_path).map_err(io(cert_path))?;
    let chain: Vec<CertificateDer<'static>> = pem::decode_certificates(&chain_text)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", cert_path.display())))?
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let key_text = std::fs::read(key_path).map_err(io(key_path))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_text.as_slice())
        .map_err(|e| ServerError::Tls(format!("{}: {e}", key_path.display())))?
        .ok_or_else(|| ServerError::Tls(format!("{}: no private key found", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for der in roots {
                store
                    .add(CertificateDer::from(der.clone()))
                    .map_err(|e| ServerError::Tls(e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(store),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| ServerError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", cert_path.display())))?;
    config.alpn_protocols = ALPN_PREFERENCE.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Application protocols in the server's order of preference (rustls picks the first one
/// the client offers too). HTTP/1.1 first: ACME, EST and SCEP clients send one request at
/// a time (an ACME client cannot sign its next request before the previous answer brings
/// the nonce), so HTTP/2's multiplexing buys them nothing, while serving HTTP/2 costs a task
/// per stream and cross-thread wake-ups — measured with `rampart bench acme -c 32`: ~11 %
/// more server CPU per order and ~15 % fewer orders/s than HTTP/1.1. Clients that offer
/// only `h2` still get it.
const ALPN_PREFERENCE: [&[u8]; 2] = [b"http/1.1", b"h2"];

#[cfg(test)]
mod tests {
    use super::*;

    /// The protocol a client offering `offered` ends up with, over an in-memory handshake.
    fn negotiated(offered: &[&[u8]]) -> Option<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let server_config = server_config(&cert_path, &key_path, None).unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let mut client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        client_config.alpn_protocols = offered.iter().map(|p| p.to_vec()).collect();
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), "localhost".try_into().unwrap())
                .unwrap();
        let mut server = rustls::ServerConnection::new(server_config).unwrap();
        while client.is_handshaking() || server.is_handshaking() {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        server.alpn_protocol().map(<[u8]>::to_vec)
    }

    #[test]
    fn http1_is_preferred_and_h2_still_served_to_clients_offering_only_h2() {
        assert_eq!(
            negotiated(&[b"h2", b"http/1.1"]).as_deref(),
            Some(&b"http/1.1"[..])
        );
        assert_eq!(negotiated(&[b"h2"]).as_deref(), Some(&b"h2"[..]));
        assert_eq!(negotiated(&[]), None);
    }
}
