//! Abuse limits end to end against a daemon started in-process: request bodies over the
//! limit (413 on every listener), slow request heads (slowloris) and stalled bodies cut
//! off, the connection cap, the per-client rate limit on ACME, EST and SCEP enrollment
//! endpoints (429 in each protocol's format, with Retry-After), the ACME pending-orders
//! limit, and key files others can read refusing the start.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config_for, start_with, TestDaemon};
use instant_acme::{Account, Identifier, NewAccount, NewOrder};
use rampart::clock::SystemClock;
use rampart::config::Config;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

async fn daemon(adjust: impl FnOnce(&mut Config)) -> (TestDaemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path());
    adjust(&mut config);
    (start_with(config, Arc::new(SystemClock), None).await, dir)
}

fn acme_base(d: &TestDaemon) -> String {
    format!(
        "https://localhost:{}/acme/default",
        d.daemon.acme_addr.unwrap().port()
    )
}

fn est_base(d: &TestDaemon) -> String {
    format!(
        "https://localhost:{}/.well-known/est",
        d.daemon.est_addr.unwrap().port()
    )
}

fn scep_url(d: &TestDaemon) -> String {
    d.daemon.scep_url.clone().unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

async fn anonymous_account(d: &TestDaemon) -> Account {
    Account::builder_with_root(&d.daemon.ca_bundle)
        .unwrap()
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            format!("{}/directory", acme_base(d)),
            None,
        )
        .await
        .unwrap()
        .0
}

// ---------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413_on_every_listener() {
    let (d, _dir) = daemon(|_| {}).await;
    let big = vec![b'a'; 70 * 1024];
    let post = |url: String, content_type: &'static str, body: Vec<u8>| {
        d.http
            .post(url)
            .bearer_auth(&d.key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let api = post(
        format!("{}/api/v1/enrollments", d.url),
        "application/json",
        big.clone(),
    )
    .await
    .unwrap();
    assert_eq!(api.status(), 413, "admin API");

    let acme = post(
        format!("{}/new-order", acme_base(&d)),
        "application/jose+json",
        big.clone(),
    )
    .await
    .unwrap();
    assert_eq!(acme.status(), 413, "ACME");
    assert_eq!(
        header(&acme, "content-type").as_deref(),
        Some("application/problem+json")
    );
    assert!(header(&acme, "replay-nonce").is_some());

    let est = post(
        format!("{}/simpleenroll", est_base(&d)),
        "application/pkcs10",
        big.clone(),
    )
    .await
    .unwrap();
    assert_eq!(est.status(), 413, "EST");

    let scep = post(
        format!("{}?operation=PKIOperation", scep_url(&d)),
        "application/x-pki-message",
        big.clone(),
    )
    .await
    .unwrap();
    assert_eq!(scep.status(), 413, "SCEP");

    let ocsp = post(
        d.daemon.ocsp_url.clone().unwrap(),
        "application/ocsp-request",
        vec![0u8; 9 * 1024],
    )
    .await
    .unwrap();
    assert_eq!(ocsp.status(), 413, "OCSP on the publish listener");

    // Nothing was issued for any of them, and the listeners still serve.
    assert_eq!(d.get("/api/v1/certificates").await.0, 200);
}

// ---------------------------------------------------------------------------------------
// Slow clients and the connection cap
// ---------------------------------------------------------------------------------------

/// Send `request` one byte every 200 ms and return how long the server kept the
/// connection open; fails if it is still open once every byte went out.
async fn trickle<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &[u8]) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 512];
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() {
            return started.elapsed();
        }
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            // Whatever the server says (a 408), it must then close: keep reading.
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    panic!(
        "the connection stayed open for {:?} while the request head trickled in",
        started.elapsed()
    );
}

fn slow_head(host: &str) -> Vec<u8> {
    format!(
        "GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: {host}\r\nUser-Agent: slowloris-{}\r\n\r\n",
        "x".repeat(40)
    )
    .into_bytes()
}

async fn tls_to(addr: SocketAddr, bundle: &Path) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(bundle).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn request_heads_sent_slower_than_the_header_timeout_are_cut_off() {
    let (d, _dir) = daemon(|c| c.limits.header_read_timeout_seconds = 1).await;
    // Plain HTTP (SCEP, the admin API) and HTTPS (ACME) listeners alike.
    for addr in [d.daemon.scep_addr.unwrap(), d.daemon.api_addr.unwrap()] {
        let open = trickle(TcpStream::connect(addr).await.unwrap(), &slow_head("x")).await;
        assert!(
            open >= Duration::from_millis(800) && open < Duration::from_secs(4),
            "{addr}: closed after {open:?}"
        );
    }
    let stream = tls_to(d.daemon.acme_addr.unwrap(), &d.daemon.ca_bundle).await;
    let open = trickle(stream, &slow_head("localhost")).await;
    assert!(open < Duration::from_secs(4), "ACME: closed after {open:?}");

    // A client at normal speed is served.
    let caps = d
        .http
        .get(format!("{}?operation=GetCACaps", scep_url(&d)))
        .send()
        .await
        .unwrap();
    assert_eq!(caps.status(), 200);
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_off_at_the_idle_timeout() {
    let (d, _dir) = daemon(|c| c.limits.idle_timeout_seconds = 1).await;
    let mut stream = TcpStream::connect(d.daemon.scep_addr.unwrap())
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => panic!("a stalled body kept the connection open for 5 s"),
        }
    }
    let open = started.elapsed();
    assert!(
        open >= Duration::from_millis(800) && open < Duration::from_secs(4),
        "closed after {open:?}"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let (d, _dir) = daemon(|c| {
        c.limits.max_connections_per_listener = 2;
        c.limits.header_read_timeout_seconds = 60;
    })
    .await;
    let addr = d.daemon.api_addr.unwrap();
    let healthz = format!("http://{addr}/healthz");
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    // Both slots are taken by clients that say nothing: the next one is not served.
    let client = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let waiting = client()
        .get(&healthz)
        .timeout(Duration::from_millis(1500))
        .send()
        .await;
    assert!(
        waiting.as_ref().is_err_and(reqwest::Error::is_timeout),
        "{waiting:?}"
    );
    // Another listener has its own slots.
    let caps = d
        .http
        .get(format!("{}?operation=GetCACaps", scep_url(&d)))
        .send()
        .await
        .unwrap();
    assert_eq!(caps.status(), 200);
    // One slot frees up: served again.
    drop(first);
    let served = client()
        .get(&healthz)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
}

// ---------------------------------------------------------------------------------------
// Per-client rate limits
// ---------------------------------------------------------------------------------------

const PER_MINUTE: u32 = 4;

fn retry_after(response: &reqwest::Response) -> u64 {
    let value: u64 = header(response, "retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in seconds");
    // One request every 60 / PER_MINUTE seconds.
    assert!((1..=u64::from(60 / PER_MINUTE)).contains(&value), "{value}");
    value
}

#[tokio::test]
async fn acme_new_nonce_account_and_order_are_rate_limited_per_client() {
    let (d, _dir) = daemon(|c| c.limits.per_ip_requests_per_minute = PER_MINUTE).await;
    // instant-acme: newNonce + newAccount, then newNonce + newOrder — the whole allowance.
    let account = anonymous_account(&d).await;
    account
        .new_order(&NewOrder::new(&[Identifier::Dns("www.example".into())]))
        .await
        .unwrap();

    let url = format!("{}/new-order", acme_base(&d));
    let refused = d
        .http
        .post(&url)
        .header("content-type", "application/jose+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    retry_after(&refused);
    assert!(header(&refused, "replay-nonce").is_some());
    assert_eq!(
        header(&refused, "content-type").as_deref(),
        Some("application/problem+json")
    );
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:ietf:params:acme:error:rateLimited");
    assert_eq!(problem["status"], 429);

    // newNonce and newAccount share the client's allowance.
    let nonce = d
        .http
        .head(format!("{}/new-nonce", acme_base(&d)))
        .send()
        .await
        .unwrap();
    assert_eq!(nonce.status(), 429);
    retry_after(&nonce);
    let new_account = d
        .http
        .post(format!("{}/new-account", acme_base(&d)))
        .header("content-type", "application/jose+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(new_account.status(), 429);
    // Everything else is not limited: the directory, the account's own resources.
    let directory = d
        .http
        .get(format!("{}/directory", acme_base(&d)))
        .send()
        .await
        .unwrap();
    assert_eq!(directory.status(), 200);
    // The other listeners keep their own allowance.
    let est = d
        .http
        .post(format!("{}/simpleenroll", est_base(&d)))
        .header("content-type", "application/pkcs10")
        .body("AAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(est.status(), 401);
}

#[tokio::test]
async fn est_and_scep_enrollments_are_rate_limited_per_client() {
    let (d, _dir) = daemon(|c| c.limits.per_ip_requests_per_minute = PER_MINUTE).await;
    let enroll = format!("{}/simpleenroll", est_base(&d));
    for _ in 0..PER_MINUTE {
        let response = d
            .http
            .post(&enroll)
            .header("content-type", "application/pkcs10")
            .body("AAAA")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    for operation in ["simpleenroll", "simplereenroll", "serverkeygen"] {
        let refused = d
            .http
            .post(format!("{}/{operation}", est_base(&d)))
            .header("content-type", "application/pkcs10")
            .body("AAAA")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 429, "{operation}");
        retry_after(&refused);
        assert_eq!(
            header(&refused, "content-type").as_deref(),
            Some("text/plain; charset=utf-8")
        );
        assert!(refused.text().await.unwrap().contains("retry after"));
    }
    let cacerts = d
        .http
        .get(format!("{}/cacerts", est_base(&d)))
        .send()
        .await
        .unwrap();
    assert_eq!(cacerts.status(), 200, "cacerts is not limited");

    let pki_operation = format!("{}?operation=PKIOperation", scep_url(&d));
    for _ in 0..PER_MINUTE {
        let response = d
            .http
            .post(&pki_operation)
            .header("content-type", "application/x-pki-message")
            .body("not a pkiMessage")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }
    let refused = d
        .http
        .post(&pki_operation)
        .header("content-type", "application/x-pki-message")
        .body("not a pkiMessage")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    retry_after(&refused);
    // GET PKIOperation, on another profile path, shares the allowance.
    let by_get = d
        .http
        .get(format!(
            "{}/other?operation=PKIOperation&message=AAAA",
            scep_url(&d)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(by_get.status(), 429);
    let caps = d
        .http
        .get(format!("{}?operation=GetCACaps", scep_url(&d)))
        .send()
        .await
        .unwrap();
    assert_eq!(caps.status(), 200, "GetCACaps is not limited");
    // The admin API is not rate limited.
    for _ in 0..2 * PER_MINUTE {
        assert_eq!(d.get("/api/v1/certificates").await.0, 200);
    }
}

#[tokio::test]
async fn acme_orders_beyond_the_pending_limit_are_rate_limited() {
    let (d, _dir) = daemon(|c| {
        c.limits.per_ip_requests_per_minute = 0;
        c.limits.max_pending_orders_per_account = 2;
    })
    .await;
    let account = anonymous_account(&d).await;
    for name in ["a.example", "b.example"] {
        account
            .new_order(&NewOrder::new(&[Identifier::Dns(name.into())]))
            .await
            .unwrap();
    }
    let Err(instant_acme::Error::Api(problem)) = account
        .new_order(&NewOrder::new(&[Identifier::Dns("c.example".into())]))
        .await
    else {
        panic!("a third pending order was accepted");
    };
    assert_eq!(
        problem.r#type.as_deref(),
        Some("urn:ietf:params:acme:error:rateLimited")
    );
    assert_eq!(problem.status, Some(429));
    // Another account orders as usual.
    anonymous_account(&d)
        .await
        .new_order(&NewOrder::new(&[Identifier::Dns("c.example".into())]))
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Key files
// ---------------------------------------------------------------------------------------

async fn try_start(
    config: &Config,
) -> Result<rampart::server::Daemon, rampart::server::ServerError> {
    // The store of the daemon stopped just before may stay locked for a moment.
    for _ in 0..50 {
        match rampart::server::start(config.clone(), Arc::new(SystemClock)).await {
            Err(rampart::server::ServerError::Store(rampart::store::StoreError::Locked {
                ..
            })) => tokio::time::sleep(Duration::from_millis(100)).await,
            other => return other,
        }
    }
    panic!("the store stayed locked");
}

#[tokio::test]
async fn key_files_others_can_read_refuse_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path());
    try_start(&config).await.unwrap().shutdown().await;
    let data = dir.path();
    let escrow = data.join("escrow.key");
    std::fs::write(&escrow, [7u8; 32]).unwrap();
    std::fs::set_permissions(&escrow, std::fs::Permissions::from_mode(0o600)).unwrap();
    for key in [
        data.join("ca/issuing.key.pem"),
        data.join("ca/root.key.pem"),
        data.join("ca/scep-ra.key.pem"),
        data.join("tls/listener.key.pem"),
        escrow.clone(),
    ] {
        assert!(key.is_file(), "{}", key.display());
        for mode in [0o644, 0o640] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let error = try_start(&config)
                .await
                .expect_err("a daemon started with an exposed key")
                .to_string();
            assert!(
                error.contains(&format!("chmod 600 {}", key.display())),
                "{}: {error}",
                key.display()
            );
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    try_start(&config).await.unwrap().shutdown().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_allowance_and_address() {
    let (d, _dir) = daemon(|c| {
        c.limits.per_ip_requests_per_minute = PER_MINUTE;
        c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let new_nonce = |forwarded: &'static str| {
        d.http
            .head(format!("{}/new-nonce", acme_base(&d)))
            .header("x-forwarded-for", forwarded)
            .send()
    };
    for _ in 0..PER_MINUTE {
        assert_eq!(new_nonce("203.0.113.1").await.unwrap().status(), 200);
    }
    assert_eq!(new_nonce("203.0.113.1").await.unwrap().status(), 429);
    // Another client behind the same proxy has its own allowance; a client naming itself
    // first in the header is still counted by what the proxy appended.
    assert_eq!(new_nonce("203.0.113.2").await.unwrap().status(), 200);
    assert_eq!(
        new_nonce("198.51.100.9, 203.0.113.1")
            .await
            .unwrap()
            .status(),
        429
    );

    // The audit records the forwarded client, not the proxy.
    refuse_api_key_with(&d, "x-forwarded-for", "198.51.100.66, 203.0.113.9").await;
    assert_eq!(only_refused_client(&d).await, "203.0.113.9");
    // The audit can be searched by client address or network.
    for (filter, found) in [
        ("client=203.0.113.9", 1),
        ("client=203.0.113.0/24", 1),
        ("client=127.0.0.1", 0),
        ("client=2001:db8::/32", 0),
    ] {
        let entries = d
            .audit_entries(&format!("action=credentials_refused&{filter}"))
            .await;
        assert_eq!(entries.len(), found, "{filter}: {entries:?}");
    }
    let (status, body) = d.get("/api/v1/audit?client=somewhere").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_query")),
        "{body}"
    );
    // So can the command line, which says where each request came from.
    let listed = tokio::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["audit", "list", "--client", "203.0.113.0/24"])
        .env("RAMPART_API_URL", &d.url)
        .env("RAMPART_API_KEY", &d.key)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("unknown API key id (from 203.0.113.9)"),
        "{text}"
    );
}

/// An API request with an unknown key and the forwarding `header`: refused (401).
async fn refuse_api_key_with(d: &TestDaemon, header: &str, value: &str) {
    let refused = d
        .http
        .get(format!("{}/api/v1/certificates", d.url))
        .header(header, value)
        .bearer_auth("rpk_000000000000_x")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}

/// The client address of the audit's one refusal of credentials.
async fn only_refused_client(d: &TestDaemon) -> String {
    let entries = d.refused_credentials().await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0]["details"]["client"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A TCP-level proxy on loopback: every connection to the returned address is relayed to
/// `target` after `header` (a PROXY protocol header naming the client it stands for).
async fn tcp_proxy(target: SocketAddr, header: Vec<u8>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let header = header.clone();
            tokio::spawn(async move {
                let mut upstream = TcpStream::connect(target).await.unwrap();
                upstream.write_all(&header).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn behind_a_tcp_proxy_the_proxy_header_names_the_client() {
    let (d, _dir) = daemon(|c| {
        c.limits.per_ip_requests_per_minute = PER_MINUTE;
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.server.proxy_protocol = vec![
            rampart::config::Listener::Acme,
            rampart::config::Listener::Est,
        ];
    })
    .await;
    let (acme, est) = (d.daemon.acme_addr.unwrap(), d.daemon.est_addr.unwrap());
    // Two clients behind the proxy, one announced in version 1, one in version 2.
    let v1 = b"PROXY TCP4 203.0.113.1 127.0.0.1 40001 443\r\n".to_vec();
    let v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (
            "[2001:db8::2]:40002".parse::<SocketAddr>().unwrap(),
            "[2001:db8::1]:443".parse::<SocketAddr>().unwrap(),
        ),
    )
    .build()
    .unwrap();
    let (first, second) = (tcp_proxy(acme, v1.clone()).await, tcp_proxy(acme, v2).await);
    let new_nonce = |via: SocketAddr| {
        d.http
            .head(format!(
                "https://localhost:{}/acme/default/new-nonce",
                via.port()
            ))
            .send()
    };
    // TLS runs through the proxy; each named client has its own allowance.
    for _ in 0..PER_MINUTE {
        assert_eq!(new_nonce(first).await.unwrap().status(), 200);
    }
    assert_eq!(new_nonce(first).await.unwrap().status(), 429);
    assert_eq!(new_nonce(second).await.unwrap().status(), 200);
    // A trusted proxy's connection without a header is closed, not served as the proxy;
    // a connection whose TLS handshake fails is closed too. Both are counted.
    assert!(new_nonce(acme).await.is_err());
    let health_checked = tcp_proxy(acme, b"PROXY UNKNOWN\r\n".to_vec()).await;
    // A health check's connection (header, then closed) is not a failed handshake.
    drop(TcpStream::connect(health_checked).await.unwrap());
    let mut garbage = TcpStream::connect(health_checked).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = garbage.read_to_end(&mut rest).await;
    // (The TLS stack closes the connection just before the count is taken: read again.)
    let counted = [
        "rampart_connections_refused_total{listener=\"acme\",reason=\"proxy_header\"} 1",
        "rampart_connections_refused_total{listener=\"acme\",reason=\"tls_handshake\"} 1",
    ];
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = d
            .http
            .get(format!("{}/metrics", d.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if counted.iter().all(|line| metrics.contains(line)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for line in counted {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    // EST (client TLS through the proxy): the audit records the client the header named.
    let via = tcp_proxy(est, v1).await;
    let refused = d
        .http
        .post(format!(
            "https://localhost:{}/.well-known/est/simpleenroll",
            via.port()
        ))
        .basic_auth("nobody", Some("wrong"))
        .header("content-type", "application/pkcs10")
        .body("AAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(only_refused_client(&d).await, "203.0.113.1");
    // Listeners not named keep reading no header: the API answers a direct connection.
    assert_eq!(d.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn behind_a_proxy_that_sends_forwarded_only_that_header_names_the_client() {
    let (d, _dir) = daemon(|c| {
        c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        c.server.forwarded_header = rampart::config::ForwardedHeader::Forwarded;
    })
    .await;
    for (header, value) in [
        ("x-forwarded-for", "198.51.100.7"),
        (
            "forwarded",
            "for=198.51.100.8, for=\"[2001:db8::9]:4711\";proto=https",
        ),
    ] {
        refuse_api_key_with(&d, header, value).await;
    }
    let clients: Vec<_> = d
        .refused_credentials()
        .await
        .iter()
        .map(|entry| entry["details"]["client"].clone())
        .collect();
    assert_eq!(clients, ["127.0.0.1", "2001:db8::9"], "{clients:?}");
}
