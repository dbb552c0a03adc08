//! EST end to end against a daemon started in-process: cacerts, simpleenroll with HTTP
//! Basic, simplereenroll with the issued certificate as TLS client certificate, and the
//! RFC 7030 error statuses — with nothing issued for any refusal.

mod common;

use common::est_certificates as certificates;

use std::sync::Arc;

use base64::Engine;
use common::{config_for, csr, p256, start_with};
use der::Decode;
use rampart::clock::SystemClock;
use rampart::config::EstUserConfig;
use rampart::model::Protocol;

/// HTTP Basic user and password, if sent.
type Basic<'a> = Option<(&'a str, &'a str)>;

const USER: &str = "device-7";
const PASSWORD: &str = "s3cret";

struct Est {
    d: common::TestDaemon,
    base: String,
    bundle: Vec<u8>,
}

async fn est() -> (Est, tempfile::TempDir) {
    est_with(|_| {}).await
}

async fn est_with(adjust: impl FnOnce(&mut rampart::config::Config)) -> (Est, tempfile::TempDir) {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path());
    adjust(&mut config);
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    let hash = argon2::Argon2::default()
        .hash_password(PASSWORD.as_bytes(), &salt)
        .unwrap()
        .to_string();
    config.est.users.insert(
        USER.into(),
        EstUserConfig {
            password_hash: hash,
            roles: vec!["admin".into()],
        },
    );
    let d = start_with(config, Arc::new(SystemClock), None).await;
    let base = format!(
        "https://localhost:{}/.well-known/est",
        d.daemon.est_addr.unwrap().port()
    );
    let bundle = std::fs::read(&d.daemon.ca_bundle).unwrap();
    (Est { d, base, bundle }, dir)
}

impl Est {
    fn client(&self, identity: Option<reqwest::Identity>) -> reqwest::Client {
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        for cert in reqwest::Certificate::from_pem_bundle(&self.bundle).unwrap() {
            builder = builder.add_root_certificate(cert);
        }
        if let Some(identity) = identity {
            builder = builder.identity(identity);
        }
        builder.build().unwrap()
    }

    async fn enroll(
        &self,
        op: &str,
        body: String,
        basic: Option<(&str, &str)>,
        identity: Option<reqwest::Identity>,
    ) -> (u16, Vec<u8>) {
        let mut request = self
            .client(identity)
            .post(format!("{}/{op}", self.base))
            .header("content-type", "application/pkcs10")
            .body(body);
        if let Some((user, password)) = basic {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.unwrap();
        (
            response.status().as_u16(),
            response.bytes().await.unwrap().to_vec(),
        )
    }
}

fn b64_csr(pem: &str) -> String {
    let der = rampart::pkix::pem::decode(pem, &["CERTIFICATE REQUEST"]).unwrap();
    base64::engine::general_purpose::STANDARD.encode(der)
}

#[tokio::test]
async fn cacerts_enroll_and_reenroll() {
    let (est, _dir) = est().await;
    let response = est
        .client(None)
        .get(format!("{}/cacerts", est.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/pkcs7-mime"));
    assert_eq!(
        certificates(&response.bytes().await.unwrap()).len(),
        2,
        "issuing CA and root"
    );

    let key = p256();
    let (status, body) = est
        .enroll(
            "simpleenroll",
            b64_csr(&csr(&key, Some("dev7.test"), &["dev7.test"])),
            Some((USER, PASSWORD)),
            None,
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let issued = certificates(&body);
    assert_eq!(issued.len(), 1);
    let serial = hex::encode(
        x509_cert::Certificate::from_der(&issued[0])
            .unwrap()
            .tbs_certificate
            .serial_number
            .as_bytes(),
    );
    let record = est
        .d
        .daemon
        .pipeline
        .store()
        .certificate(serial.trim_start_matches("00"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            record.protocol,
            record.owner.as_str(),
            record.template.as_str()
        ),
        (Protocol::Est, USER, "client")
    );

    // Re-enroll with the certificate as TLS client certificate: same names required.
    let pem = format!(
        "{}{}",
        rampart::pkix::pem::encode("CERTIFICATE", &issued[0]),
        key.serialize_pem()
    );
    let identity = || reqwest::Identity::from_pem(pem.as_bytes()).unwrap();
    let (status, body) = est
        .enroll(
            "simplereenroll",
            b64_csr(&csr(&key, Some("dev7.test"), &["dev7.test"])),
            None,
            Some(identity()),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_ne!(certificates(&body)[0], issued[0]);
    let (status, body) = est
        .enroll(
            "simplereenroll",
            b64_csr(&csr(&key, Some("other.test"), &["other.test"])),
            None,
            Some(identity()),
        )
        .await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    // A client certificate also authenticates a simpleenroll.
    let (status, _) = est
        .enroll(
            "simpleenroll",
            b64_csr(&csr(&p256(), None, &["dev8.test"])),
            None,
            Some(identity()),
        )
        .await;
    assert_eq!(status, 200);

    // Revoked certificates authenticate nothing.
    est.d
        .post(
            &format!("/api/v1/certificates/{}/revoke", record.serial),
            serde_json::json!({}),
        )
        .await;
    let (status, _) = est
        .enroll(
            "simplereenroll",
            b64_csr(&csr(&key, Some("dev7.test"), &["dev7.test"])),
            None,
            Some(identity()),
        )
        .await;
    assert_eq!(status, 401);
    est.d.daemon.shutdown().await;
}

#[tokio::test]
async fn refusals_use_the_rfc_statuses_and_issue_nothing() {
    let (est, _dir) = est().await;
    let good = b64_csr(&csr(&p256(), None, &["dev9.test"]));
    let count = || {
        let query = rampart::store::CertificateQuery {
            limit: 100,
            owner: Some(USER.into()),
            ..Default::default()
        };
        est.d
            .daemon
            .pipeline
            .store()
            .list_certificates(&query, time::OffsetDateTime::now_utc())
            .unwrap()
            .items
            .len()
    };
    // A user name as long as the header allows: the audit keeps its start only.
    let long_user = "u".repeat(100_000);
    let cases: Vec<(&str, String, Basic, u16)> = vec![
        ("simpleenroll", good.clone(), None, 401),
        ("simpleenroll", good.clone(), Some((USER, "wrong")), 401),
        (
            "simpleenroll",
            good.clone(),
            Some(("nobody", PASSWORD)),
            401,
        ),
        (
            "simpleenroll",
            good.clone(),
            Some((long_user.as_str(), PASSWORD)),
            401,
        ),
        (
            "simpleenroll",
            "%%% not base64".into(),
            Some((USER, PASSWORD)),
            400,
        ),
        (
            "simpleenroll",
            base64::engine::general_purpose::STANDARD.encode(b"garbage"),
            Some((USER, PASSWORD)),
            400,
        ),
        (
            "simpleenroll",
            b64_csr(&csr(&p256(), None, &["www.google.com"])),
            Some((USER, PASSWORD)),
            403,
        ),
        ("simplereenroll", good.clone(), Some((USER, PASSWORD)), 401),
        (
            "nolabel/simpleenroll",
            good.clone(),
            Some((USER, PASSWORD)),
            404,
        ),
    ];
    for (op, body, basic, expected) in cases {
        let (status, answer) = est.enroll(op, body, basic, None).await;
        assert_eq!(
            status,
            expected,
            "{op}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let response = est
        .client(None)
        .post(format!("{}/simpleenroll", est.base))
        .header("content-type", "text/plain")
        .basic_auth(USER, Some(PASSWORD))
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    let response = est
        .client(None)
        .post(format!("{}/simpleenroll", est.base))
        .header("content-type", "application/pkcs10")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("www-authenticate"));
    let response = est
        .client(None)
        .post(format!("{}/fullcmc", est.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 501);
    // A wrong method is 405 naming the right ones; HEAD is GET without the body.
    for (method, operation, allow) in [
        (reqwest::Method::GET, "simpleenroll", "POST"),
        (reqwest::Method::PUT, "serverkeygen", "POST"),
        (reqwest::Method::POST, "cacerts", "GET, HEAD"),
        (reqwest::Method::DELETE, "csrattrs", "GET, HEAD"),
    ] {
        let response = est
            .client(None)
            .request(method.clone(), format!("{}/{operation}", est.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 405, "{method} {operation}");
        assert_eq!(
            response.headers().get("allow").unwrap(),
            allow,
            "{method} {operation}"
        );
    }
    let response = est
        .client(None)
        .head(format!("{}/cacerts", est.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("application/pkcs7-mime"));
    assert!(response.bytes().await.unwrap().is_empty());
    let response = est
        .client(None)
        .post(format!("{}/simpleenroll", est.base))
        .header("content-type", "application/pkcs10")
        .basic_auth(USER, Some(PASSWORD))
        .body(vec![b'A'; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    assert_eq!(count(), 0, "refused requests issued certificates");
    // Wrong credentials are audited with whom they claimed; no credentials at all (the
    // client's first try, answered with a challenge) are not, and no password is kept.
    let refused = est.d.refused_credentials().await;
    let seen: Vec<(&str, &str)> = refused
        .iter()
        .map(|entry| {
            (
                entry["actor"].as_str().unwrap(),
                entry["reason"].as_str().unwrap(),
            )
        })
        .collect();
    let clipped = format!("{}… (100000 bytes)", "u".repeat(512));
    assert_eq!(
        seen,
        [
            (USER, "unknown user or wrong password"),
            ("nobody", "unknown user or wrong password"),
            (clipped.as_str(), "unknown user or wrong password"),
        ],
        "{refused:?}"
    );
    for entry in &refused {
        assert_eq!(entry["details"]["protocol"], "est", "{entry}");
        assert_eq!(entry["details"]["client"], "127.0.0.1", "{entry}");
        assert!(!entry.to_string().contains(PASSWORD), "{entry}");
    }
    est.d.daemon.shutdown().await;
}

#[tokio::test]
async fn serverkeygen_and_csrattrs() {
    let (est, _dir) = est().await;
    let response = est
        .client(None)
        .post(format!("{}/serverkeygen", est.base))
        .header("content-type", "application/pkcs10")
        .basic_auth(USER, Some(PASSWORD))
        .body(b64_csr(&csr(&p256(), Some("gen.test"), &["gen.test"])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let boundary = content_type
        .strip_prefix("multipart/mixed; boundary=")
        .expect("multipart/mixed")
        .to_string();
    let body = response.text().await.unwrap();
    let parts: Vec<&str> = body
        .split(&format!("--{boundary}"))
        .filter(|p| p.contains("Content-Type"))
        .collect();
    assert_eq!(parts.len(), 2);
    let payload = |part: &str| {
        let text: String = part
            .split_once("\r\n\r\n")
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    };
    assert!(parts[0].contains("application/pkcs8"));
    let key = rcgen::KeyPair::try_from(payload(parts[0]).as_slice()).unwrap();
    let p7 = payload(parts[1]);
    let info = cms::content_info::ContentInfo::from_der(&p7).unwrap();
    let signed: cms::signed_data::SignedData = info.content.decode_as().unwrap();
    let leaf = match &signed.certificates.unwrap().0.as_slice()[0] {
        cms::cert::CertificateChoices::Certificate(c) => c.clone(),
        _ => panic!("unexpected certificate choice"),
    };
    use rcgen::PublicKeyData;
    assert_eq!(
        leaf.tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
        key.der_bytes()
    );

    let response = est
        .client(None)
        .get(format!("{}/csrattrs", est.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/csrattrs");
    est.d.daemon.shutdown().await;
}

/// One HTTP/1.1 POST over a fresh TLS connection (protocol `version`), with a CSR that
/// `bind` may tie to that connection's tls-exporter value; returns the status code.
async fn post_bound_csr(
    est: &Est,
    version: &'static rustls::SupportedProtocolVersion,
    bind: impl FnOnce(&[u8]) -> Option<String>,
) -> (u16, String) {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for der in
        rampart::pkix::pem::decode_certificates(std::str::from_utf8(&est.bundle).unwrap()).unwrap()
    {
        roots.add(der.into()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let port = est.d.daemon.est_addr.unwrap().port();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let exporter = tls
        .get_ref()
        .1
        .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", Some(&[]))
        .unwrap();
    let key = p256();
    let mut params = rcgen::CertificateParams::new(vec!["bound.test".to_string()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let attributes = match bind(&exporter) {
        Some(password) => {
            let mut values = vec![0x31, (password.len() + 2) as u8, 0x0c, password.len() as u8];
            values.extend_from_slice(password.as_bytes());
            vec![rcgen::Attribute {
                oid: &[1, 2, 840, 113549, 1, 9, 7],
                values,
            }]
        }
        None => Vec::new(),
    };
    let csr = params
        .serialize_request_with_attributes(&key, attributes)
        .unwrap();
    let body = base64::engine::general_purpose::STANDARD.encode(csr.der());
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let request = format!(
        "POST /.well-known/est/bound/simpleenroll HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/pkcs10\r\n\
         Authorization: Basic {basic}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.ok();
    let status = answer
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap();
    (status, answer)
}

#[tokio::test]
async fn proof_of_possession_linking_binds_the_csr_to_its_tls_connection() {
    let (est, _dir) = est_with(|config| {
        config.est.profiles.insert(
            "bound".into(),
            rampart::config::EstProfileConfig {
                template: "client".into(),
                auth: Default::default(),
                require_pop_linking: true,
                escrow_keys: false,
            },
        );
    })
    .await;
    let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (status, answer) =
            post_bound_csr(&est, version, |exporter| Some(encode(exporter))).await;
        assert_eq!(status, 200, "{version:?}: {answer}");
        // A CSR bound to another connection (a replay), and an unbound one, are refused.
        let (status, _) = post_bound_csr(&est, version, |_| Some(encode(&[7u8; 32]))).await;
        assert_eq!(status, 400, "{version:?}");
        let (status, _) = post_bound_csr(&est, version, |_| None).await;
        assert_eq!(status, 400, "{version:?}");
    }
    est.d.daemon.shutdown().await;
}

#[tokio::test]
async fn profiles_restrict_authentication_methods() {
    use rampart::config::{EstAuth, EstProfileConfig};
    let (est, _dir) = est_with(|config| {
        for (label, auth) in [
            ("certonly", EstAuth::Certificate),
            ("both", EstAuth::Both),
            ("basic", EstAuth::Basic),
        ] {
            config.est.profiles.insert(
                label.into(),
                EstProfileConfig {
                    template: "client".into(),
                    auth,
                    require_pop_linking: false,
                    escrow_keys: false,
                },
            );
        }
    })
    .await;
    let key = p256();
    let (status, body) = est
        .enroll(
            "simpleenroll",
            b64_csr(&csr(&key, None, &["m1.test"])),
            Some((USER, PASSWORD)),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let issued = certificates(&body).remove(0);
    let pem = format!(
        "{}{}",
        rampart::pkix::pem::encode("CERTIFICATE", &issued),
        key.serialize_pem()
    );
    let cert = || Some(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    let csr_b64 = || b64_csr(&csr(&p256(), None, &["m2.test"]));
    let cases = [
        ("certonly/simpleenroll", Some((USER, PASSWORD)), false, 401),
        ("certonly/simpleenroll", None, true, 200),
        ("basic/simpleenroll", None, true, 401),
        ("basic/simpleenroll", Some((USER, PASSWORD)), false, 200),
        ("both/simpleenroll", Some((USER, PASSWORD)), false, 401),
        ("both/simpleenroll", None, true, 401),
        ("both/simpleenroll", Some((USER, PASSWORD)), true, 200),
    ];
    for (op, basic, with_cert, expected) in cases {
        let (status, answer) = est
            .enroll(op, csr_b64(), basic, if with_cert { cert() } else { None })
            .await;
        assert_eq!(
            status,
            expected,
            "{op} basic={} cert={with_cert}: {}",
            basic.is_some(),
            String::from_utf8_lossy(&answer)
        );
    }
    // The four refusals of presented credentials are audited, each under whom it claimed.
    let serial = {
        use der::Decode;
        let leaf = x509_cert::Certificate::from_der(&issued).unwrap();
        rampart_acme::ari::serial_hex(leaf.tbs_certificate.serial_number.as_bytes())
    };
    let by_certificate = format!("certificate {serial}");
    let refused = est.d.refused_credentials().await;
    let actors: Vec<&str> = refused
        .iter()
        .map(|entry| entry["actor"].as_str().unwrap())
        .collect();
    assert_eq!(
        actors,
        [USER, by_certificate.as_str(), USER, by_certificate.as_str()],
        "{refused:?}"
    );
    assert_eq!(refused[1]["details"]["certificate_serial"], serial.as_str());
    est.d.daemon.shutdown().await;
}

#[tokio::test]
async fn serverkeygen_keys_are_escrowed_only_when_the_profile_asks() {
    use std::os::unix::fs::PermissionsExt;
    let (est, dir) = est_with(|config| {
        config.est.profiles.insert(
            "escrow".into(),
            rampart::config::EstProfileConfig {
                template: "client".into(),
                auth: Default::default(),
                require_pop_linking: false,
                escrow_keys: true,
            },
        );
    })
    .await;
    let keygen = |op: &'static str| {
        let request = est
            .client(None)
            .post(format!("{}/{op}", est.base))
            .header("content-type", "application/pkcs10")
            .basic_auth(USER, Some(PASSWORD))
            .body(b64_csr(&csr(&p256(), None, &["kept.test"])));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200);
            let body = response.text().await.unwrap();
            let parts: Vec<String> = body
                .split("--rampart-est-serverkeygen")
                .filter(|p| p.contains("Content-Type"))
                .map(|p| {
                    p.split_once("\r\n\r\n")
                        .unwrap()
                        .1
                        .split_whitespace()
                        .collect()
                })
                .collect();
            let decode = |t: &str| base64::engine::general_purpose::STANDARD.decode(t).unwrap();
            let cert = certificates(parts[1].as_bytes()).remove(0);
            let serial = hex::encode(
                x509_cert::Certificate::from_der(&cert)
                    .unwrap()
                    .tbs_certificate
                    .serial_number
                    .as_bytes(),
            );
            (
                decode(&parts[0]),
                serial.trim_start_matches("00").to_string(),
            )
        }
    };
    let (key, serial) = keygen("escrow/serverkeygen").await;
    let (status, pem) = est
        .d
        .get(&format!("/api/v1/certificates/{serial}/escrowed-key"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        rampart::pkix::pem::decode(pem.as_str().unwrap(), &["PRIVATE KEY"]).unwrap(),
        key
    );
    let mode = std::fs::metadata(dir.path().join("escrow.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let (_, serial) = keygen("serverkeygen").await;
    assert_eq!(
        est.d
            .get(&format!("/api/v1/certificates/{serial}/escrowed-key"))
            .await
            .0,
        404,
        "kept without escrow"
    );
    est.d.daemon.shutdown().await;
}

/// An enrollment whose certificate outlasts `est.issue_wait_ms` (0 here: every one does) is
/// answered 202 with Retry-After while the issuance goes on, and the same request sent again
/// gets the certificate: one certificate, not one per attempt (RFC 7030 §4.2.3). The wait
/// bounds the CA's time only: a refusal is answered at once.
#[tokio::test]
async fn an_enrollment_outlasting_the_wait_is_answered_202_then_delivered_when_sent_again() {
    let (est, _dir) = est_with(|config| config.est.issue_wait_ms = 0).await;
    let body = b64_csr(&csr(&p256(), None, &["later.test"]));
    let first = est
        .client(None)
        .post(format!("{}/simpleenroll", est.base))
        .header("content-type", "application/pkcs10")
        .basic_auth(USER, Some(PASSWORD))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 202);
    assert!(first.headers().contains_key("retry-after"));
    let mut delivered = None;
    for _ in 0..250 {
        let (status, answer) = est
            .enroll("simpleenroll", body.clone(), Some((USER, PASSWORD)), None)
            .await;
        if status == 200 {
            delivered = Some(answer);
            break;
        }
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&answer));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let issued = certificates(&delivered.expect("the re-sent request gets the certificate"));
    assert_eq!(issued.len(), 1);
    let query = rampart::store::CertificateQuery {
        san_contains: Some("later.test".into()),
        limit: 10,
        ..Default::default()
    };
    let recorded = est
        .d
        .daemon
        .pipeline
        .store()
        .list_certificates(&query, time::OffsetDateTime::now_utc())
        .unwrap()
        .items;
    assert_eq!(
        recorded.len(),
        1,
        "one certificate for the request and its re-sends"
    );
    assert_eq!(recorded[0].der, issued[0]);

    let refused = b64_csr(&csr(&p256(), None, &["www.google.com"]));
    let (status, _) = est
        .enroll("simpleenroll", refused, Some((USER, PASSWORD)), None)
        .await;
    assert_eq!(status, 403);
    est.d.daemon.shutdown().await;
}
