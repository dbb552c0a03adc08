//! TLS client configuration for the validators. Validation targets present self-signed
//! (tls-alpn-01) or arbitrary (HTTPS redirects in http-01) certificates, so the chain is
//! not verified; the handshake signature still is, with the provider's algorithms, so
//! the peer must hold the key of the certificate it presents.
//!
//! The signature check reads the public key with x509-cert rather than through rustls'
//! webpki helpers: webpki refuses certificates with unknown critical extensions, and the
//! tls-alpn-01 certificate carries exactly such an extension (acmeIdentifier).

use std::sync::Arc;

use der::{Decode, Encode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, PeerMisbehaved, SignatureScheme};

use super::ValidationError;

/// A client configuration (aws-lc-rs provider, TLS 1.2 and 1.3) that accepts any server
/// certificate and offers exactly the ALPN protocols `alpn`.
pub(crate) fn client_config(alpn: &[&[u8]]) -> Result<rustls::ClientConfig, ValidationError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AcceptAnyServerCert {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ValidationError::Tls(format!("TLS client setup failed: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Accepts every certificate chain but verifies handshake signatures.
#[derive(Debug)]
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyServerCert {
    /// Verifies `dss` over `message` with the public key of `cert`. TLS 1.3 uses the
    /// scheme's first algorithm; TLS 1.2 tries every algorithm mapped to the scheme.
    fn verify(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
        tls13: bool,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let unadvertised =
            || rustls::Error::from(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme);
        if tls13 && !allowed_in_tls13(dss.scheme) {
            return Err(unadvertised());
        }
        let candidates = self
            .algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algorithms)| *algorithms)
            .ok_or_else(unadvertised)?;
        let candidates = if tls13 {
            &candidates[..candidates.len().min(1)]
        } else {
            candidates
        };
        let (key_algorithm, public_key) = public_key_of(cert).ok_or(
            rustls::Error::InvalidCertificate(CertificateError::BadEncoding),
        )?;
        let mut usable = candidates
            .iter()
            .filter(|algorithm| *algorithm.public_key_alg_id() == *key_algorithm)
            .peekable();
        if usable.peek().is_none() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
                    signature_algorithm_id: u16::from(dss.scheme).to_be_bytes().to_vec(),
                    public_key_algorithm_id: key_algorithm,
                },
            ));
        }
        if usable.any(|algorithm| {
            algorithm
                .verify_signature(&public_key, message, dss.signature())
                .is_ok()
        }) {
            Ok(HandshakeSignatureValid::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::BadSignature,
            ))
        }
    }
}

/// RFC 8446 §4.2.3: no MD5/SHA-1/SHA-224 (or no hash), no RSA-PKCS1, DSA or anonymous
/// signatures in TLS 1.3 (the rule rustls applies internally).
fn allowed_in_tls13(scheme: SignatureScheme) -> bool {
    let [hash, signature] = u16::from(scheme).to_be_bytes();
    hash > 3 && signature > 2
}

/// The subjectPublicKeyInfo of `cert` as (AlgorithmIdentifier contents — OID and
/// parameters, as webpki compares them — and the raw subjectPublicKey bits).
fn public_key_of(cert: &CertificateDer<'_>) -> Option<(Vec<u8>, Vec<u8>)> {
    let cert = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    let spki = cert.tbs_certificate.subject_public_key_info;
    let mut algorithm = spki.algorithm.oid.to_der().ok()?;
    if let Some(parameters) = &spki.algorithm.parameters {
        algorithm.extend(parameters.to_der().ok()?);
    }
    let key = spki.subject_public_key.as_bytes()?.to_vec();
    Some((algorithm, key))
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify(message, cert, dss, false)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify(message, cert, dss, true)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
