//! Certificate discovery: TLS handshakes with the daemon's own listeners (issued by rampart)
//! and with a local rustls server choosing its certificate by SNI (external), the fixture
//! directory (PEM, DER, PKCS#12 clear, with the empty password, and encrypted), recording
//! through the admin API as the CLI does, access and input checks, scheduled jobs and their
//! configuration.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rampart::clock::SystemClock;
use rampart::config::{Config, DiscoveryJobConfig, DiscoveryKind};
use rampart::lifecycle::discovery::{self, Host, Target};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/discovery")
}

fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

fn loopback(port: u16) -> Target {
    Target {
        host: Host::Ip("127.0.0.1".parse().unwrap()),
        port,
    }
}

/// A self-signed certificate for `cn` and its rustls signing key.
fn certified(cn: &str) -> (Vec<u8>, Arc<CertifiedKey>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let der = params.self_signed(&key).unwrap().der().to_vec();
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
        .unwrap();
    let certified = CertifiedKey::new(vec![CertificateDer::from(der.clone())], signing);
    (der, Arc::new(certified))
}

/// Serves `named` to clients that send SNI `localhost`, `default` to the others, and
/// notes the SNI of each (before the client can see a certificate).
#[derive(Debug)]
struct BySni {
    named: Arc<CertifiedKey>,
    default: Arc<CertifiedKey>,
    names_seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.names_seen
            .lock()
            .unwrap()
            .push(hello.server_name().map(str::to_string));
        Some(match hello.server_name() {
            Some("localhost") => self.named.clone(),
            _ => self.default.clone(),
        })
    }
}

/// A TLS server on 127.0.0.1 with a certificate per SNI.
struct SniServer {
    addr: SocketAddr,
    named: Vec<u8>,
    default: Vec<u8>,
    names_seen: Arc<Mutex<Vec<Option<String>>>>,
}

async fn sni_server() -> SniServer {
    let (named, named_key) = certified("named.discovery.test");
    let (default, default_key) = certified("default.discovery.test");
    let names_seen = Arc::new(Mutex::new(Vec::new()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(BySni {
        named: named_key,
        default: default_key,
        names_seen: names_seen.clone(),
    }));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    SniServer {
        addr,
        named,
        default,
        names_seen,
    }
}

/// Post what a probe or a file held, as `rampart discover` does.
async fn report(
    d: &common::TestDaemon,
    source: &str,
    location: &str,
    ders: &[Vec<u8>],
) -> Vec<Value> {
    let certificates: Vec<String> = ders.iter().map(|der| b64(der)).collect();
    let (status, body) = d
        .post(
            "/api/v1/discovery",
            json!({"source": source, "location": location, "certificates": certificates}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

async fn listed(d: &common::TestDaemon, query: &str) -> Vec<Value> {
    let (status, body) = d.get(&format!("/api/v1/discovery{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

fn by_subject<'a>(items: &'a [Value], cn: &str) -> &'a Value {
    let subject = format!("CN={cn}");
    items
        .iter()
        .find(|i| i["subject"] == subject.as_str())
        .unwrap_or_else(|| panic!("no {subject} in {items:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemons_own_listeners_are_found_as_issued_by_rampart() {
    let dir = tempfile::tempdir().unwrap();
    let d = common::start(dir.path()).await;
    let est = d.daemon.est_addr.unwrap().port();
    let acme = d.daemon.acme_addr.unwrap().port();
    let probes = discovery::scan_tls(
        vec![loopback(est), loopback(acme)],
        4,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(probes.len(), 2);
    let issuing = d.daemon.pipeline.ca().chain()[0].clone();
    for probe in &probes {
        let chain = probe.result.clone().expect("the listener answers");
        assert_eq!(chain.len(), 2, "leaf and issuing CA");
        assert_eq!(chain[1], issuing);
        let items = report(&d, "tls", &probe.location, &chain[..1]).await;
        assert_eq!(items.len(), 1);
        let item = &items[0];
        assert_eq!(item["issued_by_rampart"], true, "{item}");
        assert_eq!(item["source"], "tls");
        assert_eq!(item["location"], probe.location.as_str());
        assert_eq!(item["is_ca"], false);
        assert!(item.get("der").is_none(), "answers leave the DER out");
        assert!(item["sans"]
            .as_array()
            .unwrap()
            .contains(&json!("dns:localhost")));
        // The same bytes are in rampart's inventory under the same serial.
        let (status, cert) = d
            .get(&format!(
                "/api/v1/certificates/{}",
                item["serial"].as_str().unwrap()
            ))
            .await;
        assert_eq!(status, 200, "{cert}");
        assert_eq!(cert["sha256_fingerprint"], item["sha256_fingerprint"]);
    }
    assert_eq!(probes[0].location, format!("127.0.0.1:{est}"));
    // Both listeners share one certificate: one record, seen at two places.
    let items = listed(&d, "").await;
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(
        items[0]["locations"],
        json!([format!("127.0.0.1:{est}"), format!("127.0.0.1:{acme}")])
    );
    assert_eq!(items[0]["location"], format!("127.0.0.1:{acme}"));
    // rampart's own CA certificates count as rampart's too.
    let items = report(&d, "file", "/etc/ssl/rampart-issuing.pem", &[issuing]).await;
    assert_eq!(items[0]["issued_by_rampart"], true);
    assert_eq!(items[0]["is_ca"], true);
    assert!(listed(&d, "?external=true").await.is_empty());
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_tls_server_is_external_and_sni_picks_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = common::start(dir.path()).await;
    let server = sni_server().await;
    let port = server.addr.port();
    let targets =
        discovery::parse_targets([format!("localhost:{port},127.0.0.0/30:{port}").as_str()])
            .unwrap();
    assert_eq!(targets.len(), 3, "a name and the two hosts of a /30");
    let probes = discovery::scan_tls(targets, 2, Duration::from_secs(5)).await;

    let named = &probes[0];
    assert_eq!(
        named.result.as_ref().unwrap()[0],
        server.named,
        "SNI localhost"
    );
    assert!(
        named
            .location
            .ends_with(&format!(":{port} (sni localhost)")),
        "{}",
        named.location
    );
    let by_address = &probes[1];
    assert_eq!(by_address.location, format!("127.0.0.1:{port}"));
    assert_eq!(
        by_address.result.as_ref().unwrap()[0],
        server.default,
        "no SNI"
    );
    let closed = &probes[2];
    assert_eq!(closed.location, format!("127.0.0.2:{port}"));
    assert!(
        closed.result.as_ref().unwrap_err().contains("connect"),
        "{closed:?}"
    );
    let names = server.names_seen.lock().unwrap().clone();
    assert!(names.contains(&Some("localhost".into())), "{names:?}");
    assert!(
        names.contains(&None),
        "addresses are scanned without SNI: {names:?}"
    );

    for probe in &probes[..2] {
        let chain = probe.result.as_ref().unwrap();
        report(&d, "tls", &probe.location, &chain[..1]).await;
    }
    let external = listed(&d, "?external=true").await;
    assert_eq!(external.len(), 2, "{external:#?}");
    let item = by_subject(&external, "named.discovery.test");
    assert_eq!(item["issued_by_rampart"], false);
    assert_eq!(item["issuer"], "CN=named.discovery.test");
    assert_eq!(item["sans"], json!(["dns:named.discovery.test"]));
    assert!(item["not_after"].as_str().unwrap() > item["not_before"].as_str().unwrap());
    assert_eq!(item["first_seen"], item["last_seen"]);

    let (_, metrics) = d.get("/metrics").await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains(r#"rampart_discovered_certificates_total{source="tls",external="true"} 2"#),
        "{metrics}"
    );
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_servers_time_out() {
    // Accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let started = std::time::Instant::now();
    let probes = discovery::scan_tls(
        vec![loopback(port), loopback(port), loopback(port)],
        3,
        Duration::from_millis(300),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    for probe in probes {
        assert_eq!(probe.result, Err("no answer within 300 ms".to_string()));
    }
    held.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fixture_directory_is_found_and_encrypted_pkcs12_is_skipped() {
    let findings = discovery::scan_files(&fixtures()).unwrap();
    let names: Vec<String> = findings
        .iter()
        .map(|f| {
            f.path
                .strip_prefix(fixtures())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "bundle.pem",
            "certs-only.p12",
            "clear.p12",
            "empty-password.p12",
            "encrypted.p12",
            "legacy.p12",
            "nested/cert.der"
        ],
        "junk and the README are left out"
    );
    let counts: Vec<Option<usize>> = findings
        .iter()
        .map(|f| f.result.as_ref().ok().map(Vec::len))
        .collect();
    assert_eq!(
        counts,
        [Some(2), Some(1), Some(1), Some(1), None, Some(1), Some(1)]
    );
    let skipped = findings[4].result.as_ref().unwrap_err();
    assert!(skipped.contains("encrypted PKCS#12"), "{skipped}");

    let dir = tempfile::tempdir().unwrap();
    let d = common::start(dir.path()).await;
    for finding in &findings {
        if let Ok(ders) = &finding.result {
            report(&d, "file", &finding.path.display().to_string(), ders).await;
        }
    }
    let items = listed(&d, "?external=true").await;
    assert_eq!(items.len(), 7, "{items:#?}");
    for (cn, file) in [
        ("pem-one.discovery.test", "bundle.pem"),
        ("pem-two.discovery.test", "bundle.pem"),
        ("der.discovery.test", "nested/cert.der"),
        ("p12-clear.discovery.test", "clear.p12"),
        ("p12-empty.discovery.test", "empty-password.p12"),
        ("p12-legacy.discovery.test", "legacy.p12"),
        ("p12-certs-only.discovery.test", "certs-only.p12"),
    ] {
        let item = by_subject(&items, cn);
        assert_eq!(item["source"], "file");
        assert_eq!(
            item["location"],
            fixtures().join(file).display().to_string()
        );
        assert_eq!(item["issued_by_rampart"], false);
    }
    assert_eq!(listed(&d, "?external=false").await.len(), 7);

    // Seen again elsewhere later: one record, first sighting kept, both places listed.
    let first = by_subject(&items, "der.discovery.test").clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let der = std::fs::read(fixtures().join("nested/cert.der")).unwrap();
    let again = report(&d, "file", "/srv/app/cert.der", &[der]).await;
    assert_eq!(again[0]["first_seen"], first["first_seen"]);
    assert_ne!(again[0]["last_seen"], first["last_seen"]);
    assert_eq!(again[0]["location"], "/srv/app/cert.der");
    assert_eq!(
        again[0]["locations"],
        json!([first["location"], "/srv/app/cert.der"])
    );
    assert_eq!(listed(&d, "").await.len(), 7);
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_needs_a_managing_role_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = common::start(dir.path()).await;
    let der = std::fs::read(fixtures().join("nested/cert.der")).unwrap();
    let good = json!({"source": "file", "location": "/x", "certificates": [b64(&der)]});

    let key = d.new_api_key("viewer", &["scep-demo"]).await;
    let viewer = common::TestDaemon {
        daemon: d.daemon,
        url: d.url.clone(),
        key,
        http: d.http.clone(),
    };
    let (status, body) = viewer.post("/api/v1/discovery", good.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, _) = viewer.get("/api/v1/discovery").await;
    assert_eq!(status, 403);
    let status = viewer
        .http
        .get(format!("{}/api/v1/discovery", viewer.url))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401, "no key");
    let d = common::TestDaemon {
        daemon: viewer.daemon,
        key: d.key,
        ..viewer
    };

    for (body, code) in [
        (
            json!({"source": "file", "location": "/x", "certificates": ["not base64!"]}),
            "bad_certificate",
        ),
        (
            json!({"source": "file", "location": "/x", "certificates": [b64(b"junk"), b64(&der)]}),
            "bad_certificate",
        ),
        (
            json!({"source": "smtp", "location": "/x", "certificates": []}),
            "bad_json",
        ),
        (
            json!({"source": "file", "location": "", "certificates": [b64(&der)]}),
            "bad_location",
        ),
        (
            json!({"source": "file", "location": "a\nb", "certificates": [b64(&der)]}),
            "bad_location",
        ),
        (
            json!({"source": "file", "location": "/x", "certificates": [b64(&der)], "extra": 1}),
            "bad_json",
        ),
    ] {
        let (status, answer) = d.post("/api/v1/discovery", body.clone()).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["error"], code, "{body} → {answer}");
    }
    let (status, answer) = d.get("/api/v1/discovery?external=maybe").await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_query")));
    assert!(
        listed(&d, "").await.is_empty(),
        "a refused request records nothing, not even its good certificates"
    );
    let (status, _) = d.post("/api/v1/discovery", good).await;
    assert_eq!(status, 200);
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_jobs_scan_files_and_tls_and_stop_with_the_daemon() {
    let server = sni_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config_for(dir.path());
    config.discovery.jobs = vec![
        DiscoveryJobConfig {
            name: "fixtures".into(),
            kind: DiscoveryKind::Files,
            targets: vec![],
            path: Some(fixtures()),
            interval_minutes: 60,
        },
        DiscoveryJobConfig {
            name: "web".into(),
            kind: DiscoveryKind::Tls,
            targets: vec![format!("localhost:{}", server.addr.port())],
            path: None,
            interval_minutes: 60,
        },
    ];
    config.validate().unwrap();
    let d = common::start_with(config, Arc::new(SystemClock), None).await;
    let mut items = Vec::new();
    for _ in 0..100 {
        items = listed(&d, "").await;
        if items.len() == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(items.len(), 8, "{items:#?}");
    let named = by_subject(&items, "named.discovery.test");
    assert_eq!(named["source"], "tls");
    assert!(named["location"]
        .as_str()
        .unwrap()
        .ends_with("(sni localhost)"));
    by_subject(&items, "p12-empty.discovery.test");
    let stopping = tokio::time::timeout(Duration::from_secs(15), d.daemon.shutdown()).await;
    assert!(stopping.is_ok(), "the jobs stop with the daemon");
}

#[test]
fn bad_discovery_jobs_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rampart.toml");
    let job = |extra: &str| {
        format!("[[discovery.jobs]]\nname = \"scan\"\ninterval_minutes = 5\n{extra}\n")
    };
    for (text, key, reason) in [
        (
            job("kind = \"tls\"\ntargets = [\"10.0.0.0/8:443\"]"),
            "discovery.jobs[0].targets",
            "4096",
        ),
        (
            job("kind = \"tls\"\ntargets = [\"example.test\"]"),
            "discovery.jobs[0].targets",
            "port",
        ),
        (
            job("kind = \"tls\"\ntargets = []"),
            "discovery.jobs[0].targets",
            "lists targets",
        ),
        (
            job("kind = \"files\""),
            "discovery.jobs[0].path",
            "names a path",
        ),
        (
            job("kind = \"files\"\npath = \"/tmp\"\ninterval_minutes = 0")
                .replace("interval_minutes = 5\n", ""),
            "discovery.jobs[0].interval_minutes",
            "at least 1",
        ),
        (
            format!(
                "{}{}",
                job("kind = \"files\"\npath = \"/a\""),
                job("kind = \"files\"\npath = \"/b\"")
            ),
            "discovery.jobs[1].name",
            "exists already",
        ),
        (
            job("kind = \"files\"\npath = \"/a\"\ncolour = \"red\""),
            "colour",
            "",
        ),
        (job("kind = \"smtp\""), "smtp", ""),
    ] {
        std::fs::write(&file, &text).unwrap();
        let error = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(
            error.contains(key) && error.contains(reason),
            "{text}\n→ {error}"
        );
    }
    std::fs::write(
        &file,
        job("kind = \"tls\"\ntargets = [\"[2001:db8::/116]:443\", \"www.example.test:8443\"]"),
    )
    .unwrap();
    let config = Config::load(Some(&file)).unwrap();
    assert_eq!(config.discovery.jobs.len(), 1);
    assert!(Config::load_default().unwrap().discovery.jobs.is_empty());
}
