//! tls-alpn-01 (RFC 8737, IP identifiers per RFC 8738): TLS to the target offering only
//! ALPN `acme-tls/1`, then inspect the presented certificate: exactly one
//! subjectAltName equal to the identifier, and a critical acmeIdentifier extension
//! holding SHA-256 of the key authorization.

use std::net::{IpAddr, SocketAddr};

use der::asn1::{ObjectIdentifier, OctetString};
use der::Decode;
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

use super::resolver::target_addresses;
use super::target::{reverse_dns_name, Target};
use super::{Shared, ValidationError};

/// The only ALPN protocol offered (RFC 8737 §6.2).
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// id-pe-acmeIdentifier (RFC 8737 §6.1).
const ACME_IDENTIFIER_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.31");
/// id-ce-subjectAltName.
const SAN_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

pub(super) async fn validate(
    shared: &Shared,
    target: &Target,
    key_authorization: &str,
) -> Result<(), ValidationError> {
    let settings = &shared.settings;
    let resolver = shared.resolver.clone();
    let ips = target_addresses(&resolver, target, settings.allow_private_targets).await?;
    let sni = match target {
        Target::Dns(name) => name.trim_end_matches('.').to_owned(),
        Target::Ip(ip) => reverse_dns_name(*ip),
    };
    let server_name = ServerName::try_from(sni.clone())
        .map_err(|e| ValidationError::Tls(format!("invalid SNI name {sni:?}: {e}")))?;

    let (stream, peer) = connect_any(&ips, settings.tlsalpn01_port).await?;
    tracing::debug!(%peer, %sni, "tls-alpn-01: TCP connected, starting handshake");
    let tls = TlsConnector::from(shared.acme_tls.clone())
        .connect(server_name, stream)
        .await
        .map_err(|e| ValidationError::Tls(format!("TLS handshake with {peer} failed: {e}")))?;
    let (_, conn) = tls.get_ref();

    match conn.alpn_protocol() {
        Some(ACME_TLS_ALPN) => {}
        Some(other) => {
            return Err(ValidationError::Tls(format!(
                "{peer} negotiated ALPN {:?}, expected \"acme-tls/1\"",
                String::from_utf8_lossy(other)
            )))
        }
        None => {
            return Err(ValidationError::Tls(format!(
                "{peer} did not negotiate ALPN \"acme-tls/1\""
            )))
        }
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| ValidationError::Tls(format!("{peer} presented no certificate")))?;
    check_certificate(leaf.as_ref(), target, key_authorization)
}

/// Connects to the first of `ips` that accepts on `port`.
async fn connect_any(
    ips: &[IpAddr],
    port: u16,
) -> Result<(TcpStream, SocketAddr), ValidationError> {
    let mut failures = Vec::new();
    for &ip in ips {
        let addr = SocketAddr::new(ip, port);
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "tls-alpn-01: connect failed");
                failures.push(format!("{addr}: {e}"));
            }
        }
    }
    Err(ValidationError::Connection(format!(
        "cannot connect: {}",
        failures.join("; ")
    )))
}

/// Checks the leaf certificate's subjectAltName and acmeIdentifier against the target
/// and key authorization. Mismatches are [`ValidationError::Unauthorized`].
fn check_certificate(
    der: &[u8],
    target: &Target,
    key_authorization: &str,
) -> Result<(), ValidationError> {
    let cert = Certificate::from_der(der).map_err(|e| {
        ValidationError::Tls(format!("cannot parse the presented certificate: {e}"))
    })?;
    let extensions = cert
        .tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or_default();
    let unique = |oid: ObjectIdentifier, what: &str| {
        let mut found = extensions.iter().filter(|ext| ext.extn_id == oid);
        match (found.next(), found.next()) {
            (Some(ext), None) => Ok(ext),
            (None, _) => Err(unauthorized(format!("certificate has no {what} extension"))),
            (Some(_), Some(_)) => Err(unauthorized(format!(
                "certificate has more than one {what} extension"
            ))),
        }
    };

    let san = unique(SAN_OID, "subjectAltName")?;
    let names = SubjectAltName::from_der(san.extn_value.as_bytes())
        .map_err(|e| unauthorized(format!("cannot parse subjectAltName: {e}")))?
        .0;
    match names.as_slice() {
        [name] if san_matches(name, target) => {}
        [name] => {
            return Err(unauthorized(format!(
                "subjectAltName {name:?} does not match identifier {target}"
            )))
        }
        _ => {
            return Err(unauthorized(format!(
                "certificate must have exactly one subjectAltName, found {}",
                names.len()
            )))
        }
    }

    let acme = unique(ACME_IDENTIFIER_OID, "acmeIdentifier")?;
    if !acme.critical {
        return Err(unauthorized(
            "acmeIdentifier extension is not critical".into(),
        ));
    }
    let digest = OctetString::from_der(acme.extn_value.as_bytes())
        .map_err(|e| unauthorized(format!("malformed acmeIdentifier extension: {e}")))?;
    let expected = Sha256::digest(key_authorization.as_bytes());
    if digest.as_bytes() != expected.as_slice() {
        return Err(unauthorized(
            "acmeIdentifier does not match SHA-256 of the key authorization".into(),
        ));
    }
    Ok(())
}

fn san_matches(name: &GeneralName, target: &Target) -> bool {
    match (name, target) {
        (GeneralName::DnsName(dns), Target::Dns(domain)) => dns
            .as_str()
            .eq_ignore_ascii_case(domain.trim_end_matches('.')),
        (GeneralName::IpAddress(bytes), Target::Ip(IpAddr::V4(ip))) => {
            bytes.as_bytes() == ip.octets()
        }
        (GeneralName::IpAddress(bytes), Target::Ip(IpAddr::V6(ip))) => {
            bytes.as_bytes() == ip.octets()
        }
        _ => false,
    }
}

fn unauthorized(message: String) -> ValidationError {
    ValidationError::Unauthorized(message)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use rcgen::{CertificateParams, CustomExtension, KeyPair, SanType};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::sign::{CertifiedKey, SingleCertAndKey};
    use tokio::net::TcpListener;
    use tokio_rustls::LazyConfigAcceptor;

    use super::super::test_support::{a_record, settings, DnsResponder};
    use super::super::{ValidationSettings, Validator};
    use super::*;

    const KEY_AUTHZ: &str = "token.thumbprint";

    fn digest(key_authz: &str) -> Vec<u8> {
        Sha256::digest(key_authz.as_bytes()).to_vec()
    }

    fn certificate(
        san: SanType,
        acme: Option<CustomExtension>,
    ) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![san];
        params.custom_extensions = acme.into_iter().collect();
        let cert = params.self_signed(&key).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }

    fn dns_san() -> SanType {
        SanType::DnsName("example.test".try_into().unwrap())
    }

    /// What the test server saw in the ClientHello.
    #[derive(Default, Debug)]
    struct Seen {
        sni: Option<String>,
        alpn: Vec<Vec<u8>>,
    }

    /// A one-certificate TLS server on 127.0.0.1 answering with ALPN `alpn`.
    async fn tls_server(
        cert: (CertificateDer<'static>, PrivateKeyDer<'static>),
        alpn: &[&[u8]],
    ) -> (u16, Arc<Mutex<Seen>>) {
        tls_server_with(cert, alpn, rustls::DEFAULT_VERSIONS).await
    }

    /// As [`tls_server`], restricted to `versions`.
    async fn tls_server_with(
        cert: (CertificateDer<'static>, PrivateKeyDer<'static>),
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (u16, Arc<Mutex<Seen>>) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // Built by hand: `with_single_cert` runs webpki, which rejects the critical
        // acmeIdentifier extension it does not know.
        let key = provider.key_provider.load_private_key(cert.1).unwrap();
        let certified = CertifiedKey::new(vec![cert.0], key);
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let seen_by_server = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let config = config.clone();
                let seen = seen_by_server.clone();
                tokio::spawn(async move {
                    let acceptor = rustls::server::Acceptor::default();
                    let Ok(start) = LazyConfigAcceptor::new(acceptor, stream).await else {
                        return;
                    };
                    {
                        let hello = start.client_hello();
                        let mut seen = seen.lock().unwrap();
                        seen.sni = hello.server_name().map(str::to_owned);
                        seen.alpn = hello
                            .alpn()
                            .map(|protocols| protocols.map(<[u8]>::to_vec).collect())
                            .unwrap_or_default();
                    }
                    let _ = start.into_stream(config).await;
                });
            }
        });
        (port, seen)
    }

    async fn validator(port: u16) -> (DnsResponder, Validator) {
        let dns = DnsResponder::start(vec![a_record("example.test", [127, 0, 0, 1])]).await;
        let v = Validator::new(ValidationSettings {
            tlsalpn01_port: port,
            ..settings(Some(dns.addr))
        })
        .unwrap();
        (dns, v)
    }

    fn example() -> Target {
        Target::Dns("example.test".into())
    }

    #[tokio::test]
    async fn valid_certificate_passes() {
        let acme = CustomExtension::new_acme_identifier(&digest(KEY_AUTHZ));
        let (port, seen) = tls_server(certificate(dns_san(), Some(acme)), &[ACME_TLS_ALPN]).await;
        let (_dns, v) = validator(port).await;
        v.tlsalpn01(&example(), KEY_AUTHZ).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.sni.as_deref(), Some("example.test"));
        assert_eq!(seen.alpn, vec![ACME_TLS_ALPN.to_vec()]);
    }

    #[tokio::test]
    async fn ip_target_uses_reverse_name_sni() {
        let acme = CustomExtension::new_acme_identifier(&digest(KEY_AUTHZ));
        let san = SanType::IpAddress([127, 0, 0, 1].into());
        let (port, seen) = tls_server(certificate(san, Some(acme)), &[ACME_TLS_ALPN]).await;
        let (_dns, v) = validator(port).await;
        let target = Target::Ip([127, 0, 0, 1].into());
        v.tlsalpn01(&target, KEY_AUTHZ).await.unwrap();
        assert_eq!(
            seen.lock().unwrap().sni.as_deref(),
            Some("1.0.0.127.in-addr.arpa")
        );
    }

    #[tokio::test]
    async fn wrong_digest_is_unauthorized() {
        let acme = CustomExtension::new_acme_identifier(&digest("other.authz"));
        let (port, _) = tls_server(certificate(dns_san(), Some(acme)), &[ACME_TLS_ALPN]).await;
        let (_dns, v) = validator(port).await;
        let err = v.tlsalpn01(&example(), KEY_AUTHZ).await.unwrap_err();
        assert!(
            matches!(err, ValidationError::Unauthorized(ref m) if m.contains("SHA-256")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn missing_or_noncritical_identifier_is_unauthorized() {
        let (port, _) = tls_server(certificate(dns_san(), None), &[ACME_TLS_ALPN]).await;
        let (_dns, v) = validator(port).await;
        let err = v.tlsalpn01(&example(), KEY_AUTHZ).await.unwrap_err();
        assert!(
            matches!(err, ValidationError::Unauthorized(ref m) if m.contains("no acmeIdentifier")),
            "{err:?}"
        );

        let mut acme = CustomExtension::new_acme_identifier(&digest(KEY_AUTHZ));
        acme.set_criticality(false);
        let (port, _) = tls_server(certificate(dns_san(), Some(acme)), &[ACME_TLS_ALPN]).await;
        let (_dns, v) = validator(port).await;
        let err = v.tlsalpn01(&example(), KEY_AUTHZ).await.unwrap_err();
        assert!(
            matches!(err, ValidationError::Unauthorized(ref m) if m.contains("not critical")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn wrong_san_is_unauthorized() {
        let acme = CustomExtension::new_acme_identifier(&digest(KEY_AUTHZ));
        let san = SanType::DnsName("other.test".try_into().unwrap());
        let (port, _) = tls_server(certificate(san, Some(acme)), &[ACME_TLS_ALPN]).await;
        let (_dns, v) = validator(port).await;
        let err = v.tlsalpn01(&example(), KEY_AUTHZ).await.unwrap_err();
        assert!(
            matches!(err, ValidationError::Unauthorized(ref m) if m.contains("does not match")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn server_without_acme_alpn_is_tls_error() {
        let acme = CustomExtension::new_acme_identifier(&digest(KEY_AUTHZ));
        for alpn in [&[b"http/1.1".as_slice()][..], &[]] {
            let (port, _) = tls_server(certificate(dns_san(), Some(acme.clone())), alpn).await;
            let (_dns, v) = validator(port).await;
            let err = v.tlsalpn01(&example(), KEY_AUTHZ).await.unwrap_err();
            assert!(matches!(err, ValidationError::Tls(_)), "{alpn:?}: {err:?}");
            assert_eq!(err.acme_type(), "tls");
        }
    }

    #[tokio::test]
    async fn tls12_server_passes() {
        let acme = CustomExtension::new_acme_identifier(&digest(KEY_AUTHZ));
        let cert = certificate(dns_san(), Some(acme));
        let (port, _) = tls_server_with(cert, &[ACME_TLS_ALPN], &[&rustls::version::TLS12]).await;
        let (_dns, v) = validator(port).await;
        v.tlsalpn01(&example(), KEY_AUTHZ).await.unwrap();
    }

    #[tokio::test]
    async fn server_without_the_certificate_key_fails_handshake() {
        let acme = CustomExtension::new_acme_identifier(&digest(KEY_AUTHZ));
        let (cert, _) = certificate(dns_san(), Some(acme.clone()));
        let (_, other_key) = certificate(dns_san(), Some(acme));
        for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12]] {
            let (port, _) = tls_server_with(
                (cert.clone(), other_key.clone_key()),
                &[ACME_TLS_ALPN],
                versions,
            )
            .await;
            let (_dns, v) = validator(port).await;
            let err = v.tlsalpn01(&example(), KEY_AUTHZ).await.unwrap_err();
            assert!(
                matches!(err, ValidationError::Tls(ref m) if m.contains("Signature")),
                "{err:?}"
            );
        }
    }

    #[tokio::test]
    async fn private_target_refused_by_default() {
        let v = Validator::new(ValidationSettings {
            allow_private_targets: false,
            ..settings(None)
        })
        .unwrap();
        let err = v
            .tlsalpn01(&Target::Ip([10, 0, 0, 1].into()), KEY_AUTHZ)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ValidationError::Connection(ref m) if m.contains("private")),
            "{err:?}"
        );
    }
}
