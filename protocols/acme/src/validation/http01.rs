//! http-01 (RFC 8555 §8.3): fetch `http://<identifier>/.well-known/acme-challenge/<token>`
//! and compare the body with the key authorization.
//!
//! Names resolve through [`PolicyResolver`], so every address connected to, including
//! after redirects, passes the target policy; IP literals (the target itself or in a
//! redirect) are checked here because reqwest does not resolve them. Redirects: at most
//! [`MAX_REDIRECTS`], http/https only, ports 80/443 (or the configured http-01 port for
//! `http://`); HTTPS certificates are not verified.

use std::error::Error as StdError;
use std::net::IpAddr;
use std::sync::Arc;

use reqwest::redirect::{Attempt, Policy};
use reqwest::{StatusCode, Url};

use super::resolver::PolicyResolver;
use super::target::{check_address, Target};
use super::{Shared, ValidationError, ValidationSettings};

/// Most redirects followed (Let's Encrypt uses the same bound).
const MAX_REDIRECTS: usize = 10;
/// Largest body accepted; a key authorization is well under this.
const MAX_BODY: usize = 1024;
/// How much of a wrong body is quoted back in the error.
const QUOTE_CHARS: usize = 100;

/// The HTTP client http-01 validations share: redirects limited by policy, names
/// resolved by the validation resolver with the private-address policy, no proxies, no
/// idle connections, bounded by the validation timeout.
pub(super) fn client(
    settings: &ValidationSettings,
    tls: &rustls::ClientConfig,
    resolver: hickory_resolver::TokioResolver,
) -> Result<reqwest::Client, ValidationError> {
    let allow_private = settings.allow_private_targets;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .dns_resolver(Arc::new(PolicyResolver::new(resolver, allow_private)))
        .redirect(redirect_policy(settings.http01_port, allow_private))
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(0)
        .user_agent(concat!(
            "rampart-acme-validator/",
            env!("CARGO_PKG_VERSION")
        ))
        .timeout(settings.timeout)
        .build()
        .map_err(|e| ValidationError::Connection(format!("HTTP client setup failed: {e}")))
}

pub(super) async fn validate(
    shared: &Shared,
    target: &Target,
    token: &str,
    key_authorization: &str,
) -> Result<(), ValidationError> {
    let settings = &shared.settings;
    let allow_private = settings.allow_private_targets;
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ValidationError::Unauthorized(format!(
            "malformed challenge token {token:?}"
        )));
    }
    if let Target::Ip(ip) = target {
        check_address(*ip, allow_private)?;
    }
    let url = format!(
        "http://{}:{}/.well-known/acme-challenge/{token}",
        target.url_host(),
        settings.http01_port
    );
    tracing::debug!(%url, "http-01: fetching");

    let client = &shared.http_client;
    let mut response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| classify(&e, &url))?;
    let final_url = response.url().to_string();
    let status = response.status();
    tracing::debug!(%final_url, %status, "http-01: response");
    if status != StatusCode::OK {
        return Err(ValidationError::IncorrectResponse(format!(
            "{final_url} answered HTTP {status}, expected 200"
        )));
    }
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY as u64)
    {
        return Err(too_large(&final_url));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| classify(&e, &final_url))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_large(&final_url));
        }
        body.extend_from_slice(&chunk);
    }

    if body.trim_ascii_end() == key_authorization.as_bytes() {
        return Ok(());
    }
    let received: String = String::from_utf8_lossy(&body)
        .chars()
        .take(QUOTE_CHARS)
        .collect();
    Err(ValidationError::Unauthorized(format!(
        "key authorization mismatch at {final_url}: expected {key_authorization:?}, received {received:?}"
    )))
}

fn too_large(url: &str) -> ValidationError {
    ValidationError::IncorrectResponse(format!("response body from {url} exceeds {MAX_BODY} bytes"))
}

fn redirect_policy(http01_port: u16, allow_private: bool) -> Policy {
    Policy::custom(move |attempt: Attempt<'_>| {
        if attempt.previous().len() > MAX_REDIRECTS {
            let error = ValidationError::IncorrectResponse(format!(
                "too many redirects (more than {MAX_REDIRECTS})"
            ));
            return attempt.error(error);
        }
        match check_redirect(attempt.url(), http01_port, allow_private) {
            Ok(()) => {
                tracing::debug!(url = %attempt.url(), "http-01: following redirect");
                attempt.follow()
            }
            Err(error) => attempt.error(error),
        }
    })
}

/// Whether a redirect to `url` may be followed.
fn check_redirect(url: &Url, http01_port: u16, allow_private: bool) -> Result<(), ValidationError> {
    let scheme = url.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(ValidationError::IncorrectResponse(format!(
            "redirect to {url}: only http and https are allowed"
        )));
    }
    let port = url.port_or_known_default().unwrap_or(0);
    if !(port == 80 || port == 443 || (scheme == "http" && port == http01_port)) {
        return Err(ValidationError::IncorrectResponse(format!(
            "redirect to {url}: port {port} is not allowed (only 80 and 443)"
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| ValidationError::IncorrectResponse(format!("redirect to {url}: no host")))?;
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        check_address(ip, allow_private)?;
    }
    Ok(())
}

/// Maps a reqwest failure to a validation error, preferring a [`ValidationError`] raised
/// by our resolver or redirect policy somewhere in its source chain.
fn classify(error: &reqwest::Error, url: &str) -> ValidationError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    let mut chain = Vec::new();
    while let Some(err) = source {
        if let Some(ours) = err.downcast_ref::<ValidationError>() {
            return ours.clone();
        }
        chain.push(err.to_string());
        source = err.source();
    }
    let detail = chain.join(": ");
    if error.is_redirect() {
        ValidationError::IncorrectResponse(format!("fetching {url}: {detail}"))
    } else if error.is_timeout() {
        ValidationError::Connection(format!("timeout fetching {url}: {detail}"))
    } else {
        ValidationError::Connection(format!("fetching {url}: {detail}"))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::test_support::{a_record, settings, DnsResponder, HttpReply, HttpResponder};
    use super::super::Validator;
    use super::*;

    const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
    const KEY_AUTHZ: &str =
        "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ";

    fn challenge_path() -> String {
        format!("/.well-known/acme-challenge/{TOKEN}")
    }

    async fn validator(port: u16, dns: Option<SocketAddr>) -> Validator {
        Validator::new(ValidationSettings {
            http01_port: port,
            ..settings(dns)
        })
        .unwrap()
    }

    fn localhost() -> Target {
        Target::Ip([127, 0, 0, 1].into())
    }

    #[tokio::test]
    async fn correct_body_passes() {
        let expected = challenge_path();
        let server = HttpResponder::start(move |path| {
            assert_eq!(path, expected);
            HttpReply::ok(format!("{KEY_AUTHZ}\r\n"))
        })
        .await;
        let v = validator(server.port, None).await;
        v.http01(&localhost(), TOKEN, KEY_AUTHZ).await.unwrap();
    }

    #[tokio::test]
    async fn name_target_resolves_through_configured_dns() {
        let dns = DnsResponder::start(vec![a_record("example.test", [127, 0, 0, 1])]).await;
        let server = HttpResponder::start(|_| HttpReply::ok(KEY_AUTHZ)).await;
        let v = validator(server.port, Some(dns.addr)).await;
        let target = Target::Dns("example.test".into());
        v.http01(&target, TOKEN, KEY_AUTHZ).await.unwrap();
    }

    #[tokio::test]
    async fn wrong_body_is_unauthorized() {
        let server = HttpResponder::start(|_| HttpReply::ok("x".repeat(300))).await;
        let v = validator(server.port, None).await;
        let err = v.http01(&localhost(), TOKEN, KEY_AUTHZ).await.unwrap_err();
        let ValidationError::Unauthorized(msg) = &err else {
            panic!("{err:?}")
        };
        assert!(msg.contains(&format!("\"{}\"", "x".repeat(100))), "{msg}");
        assert!(!msg.contains(&"x".repeat(101)), "{msg}");
    }

    #[tokio::test]
    async fn not_found_is_incorrect_response() {
        let server = HttpResponder::start(|_| HttpReply::status(404)).await;
        let v = validator(server.port, None).await;
        let err = v.http01(&localhost(), TOKEN, KEY_AUTHZ).await.unwrap_err();
        assert!(
            matches!(err, ValidationError::IncorrectResponse(ref m) if m.contains("404")),
            "{err:?}"
        );
        assert_eq!(err.acme_type(), "incorrectResponse");
    }

    #[tokio::test]
    async fn oversized_body_is_incorrect_response() {
        let server = HttpResponder::start(|_| HttpReply::ok("a".repeat(2048))).await;
        let v = validator(server.port, None).await;
        let err = v.http01(&localhost(), TOKEN, KEY_AUTHZ).await.unwrap_err();
        assert!(
            matches!(err, ValidationError::IncorrectResponse(ref m) if m.contains("exceeds")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn redirect_to_same_port_passes() {
        let server = HttpResponder::start(|path| {
            if path == "/elsewhere" {
                HttpReply::ok(KEY_AUTHZ)
            } else {
                HttpReply::redirect("/elsewhere")
            }
        })
        .await;
        let v = validator(server.port, None).await;
        v.http01(&localhost(), TOKEN, KEY_AUTHZ).await.unwrap();
    }

    #[tokio::test]
    async fn redirect_to_disallowed_port_fails() {
        let other = HttpResponder::start(|_| HttpReply::ok(KEY_AUTHZ)).await;
        let location = format!("http://127.0.0.1:{}/x", other.port);
        let server = HttpResponder::start(move |_| HttpReply::redirect(&location)).await;
        let v = validator(server.port, None).await;
        let err = v.http01(&localhost(), TOKEN, KEY_AUTHZ).await.unwrap_err();
        assert!(
            matches!(err, ValidationError::IncorrectResponse(ref m) if m.contains("not allowed")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn redirect_loop_stops() {
        let server = HttpResponder::start(|_| HttpReply::redirect("/again")).await;
        let v = validator(server.port, None).await;
        let err = v.http01(&localhost(), TOKEN, KEY_AUTHZ).await.unwrap_err();
        assert!(
            matches!(err, ValidationError::IncorrectResponse(ref m) if m.contains("too many")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn private_targets_refused_by_default() {
        let server = HttpResponder::start(|_| HttpReply::ok(KEY_AUTHZ)).await;
        let dns = DnsResponder::start(vec![a_record("example.test", [127, 0, 0, 1])]).await;
        let v = Validator::new(ValidationSettings {
            http01_port: server.port,
            allow_private_targets: false,
            ..settings(Some(dns.addr))
        })
        .unwrap();
        let err = v.http01(&localhost(), TOKEN, KEY_AUTHZ).await.unwrap_err();
        assert!(
            matches!(err, ValidationError::Connection(ref m) if m.contains("loopback")),
            "{err:?}"
        );
        // The same through name resolution (the reqwest resolver path).
        let target = Target::Dns("example.test".into());
        let err = v.http01(&target, TOKEN, KEY_AUTHZ).await.unwrap_err();
        assert!(
            matches!(err, ValidationError::Connection(ref m) if m.contains("loopback")),
            "{err:?}"
        );
        assert_eq!(server.hits(), 0);
    }

    #[tokio::test]
    async fn silent_server_times_out_as_connection_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let v = Validator::new(ValidationSettings {
            http01_port: port,
            timeout: std::time::Duration::from_millis(300),
            ..settings(None)
        })
        .unwrap();
        let err = v.http01(&localhost(), TOKEN, KEY_AUTHZ).await.unwrap_err();
        assert!(
            matches!(err, ValidationError::Connection(ref m) if m.contains("timed out")),
            "{err:?}"
        );
        hold.abort();
    }

    #[tokio::test]
    async fn redirect_hops_resolve_through_the_policy_resolver() {
        // `other.test` exists only in the test DNS: following the redirect at all shows
        // the hop was resolved by the validation resolver (never /etc/hosts or the system).
        let dns = DnsResponder::start(vec![a_record("other.test", [127, 0, 0, 1])]).await;
        let port = Arc::new(std::sync::atomic::AtomicU16::new(0));
        let own = port.clone();
        let server = HttpResponder::start(move |path| {
            if path == "/elsewhere" {
                HttpReply::ok(KEY_AUTHZ)
            } else {
                let port = own.load(std::sync::atomic::Ordering::SeqCst);
                HttpReply::redirect(&format!("http://other.test:{port}/elsewhere"))
            }
        })
        .await;
        port.store(server.port, std::sync::atomic::Ordering::SeqCst);
        let v = validator(server.port, Some(dns.addr)).await;
        v.http01(&localhost(), TOKEN, KEY_AUTHZ).await.unwrap();
        assert_eq!(server.hits(), 2);
    }

    /// The client http-01 uses, with private targets refused, asked for a loopback URL
    /// directly (an IP literal is not resolved, so it stands in for a public first hop
    /// that redirects).
    async fn first_hop_then_redirect(
        location: impl Fn(u16) -> String + Send + Sync + 'static,
    ) -> (ValidationError, usize) {
        let dns = DnsResponder::start(vec![a_record("private.test", [127, 0, 0, 1])]).await;
        let port = Arc::new(std::sync::atomic::AtomicU16::new(0));
        let own = port.clone();
        let server = HttpResponder::start(move |_| {
            HttpReply::redirect(&location(own.load(std::sync::atomic::Ordering::SeqCst)))
        })
        .await;
        port.store(server.port, std::sync::atomic::Ordering::SeqCst);
        let settings = ValidationSettings {
            http01_port: server.port,
            allow_private_targets: false,
            ..settings(Some(dns.addr))
        };
        let resolver = super::super::resolver::DnsSettings::new(Some(dns.addr), settings.timeout)
            .unwrap()
            .resolver();
        let tls = super::super::tls::client_config(&[b"http/1.1"]).unwrap();
        let client = client(&settings, &tls, resolver).unwrap();
        let url = format!("http://127.0.0.1:{}/start", server.port);
        let error = client.get(&url).send().await.unwrap_err();
        (classify(&error, &url), server.hits())
    }

    #[tokio::test]
    async fn redirect_to_a_name_with_a_private_address_is_refused_after_resolution() {
        let (err, hits) =
            first_hop_then_redirect(|port| format!("http://private.test:{port}/x")).await;
        assert!(
            matches!(err, ValidationError::Connection(ref m) if m.contains("loopback")),
            "{err:?}"
        );
        assert_eq!(hits, 1, "the redirect target must not be contacted");
    }

    #[tokio::test]
    async fn redirect_to_a_private_literal_other_port_or_scheme_is_refused() {
        let (err, hits) = first_hop_then_redirect(|port| format!("http://10.0.0.1:{port}/x")).await;
        assert!(
            matches!(err, ValidationError::Connection(ref m) if m.contains("private")),
            "{err:?}"
        );
        assert_eq!(hits, 1);
        let (err, _) = first_hop_then_redirect(|port| format!("https://8.8.8.8:{port}/x")).await;
        assert!(
            matches!(err, ValidationError::IncorrectResponse(ref m) if m.contains("not allowed")),
            "{err:?}"
        );
        let (err, _) = first_hop_then_redirect(|_| "http://8.8.8.8:8443/x".to_string()).await;
        assert!(
            matches!(err, ValidationError::IncorrectResponse(ref m) if m.contains("not allowed")),
            "{err:?}"
        );
        // reqwest hands other schemes back as the 3xx itself, which fails the check too.
        let server = HttpResponder::start(|_| HttpReply::redirect("file:///etc/passwd")).await;
        let v = validator(server.port, None).await;
        let err = v.http01(&localhost(), TOKEN, KEY_AUTHZ).await.unwrap_err();
        assert!(
            matches!(err, ValidationError::IncorrectResponse(ref m) if m.contains("302")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_body_that_trickles_is_cut_at_the_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let drip = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf).await;
                    let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
                    if stream.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    for _ in 0..1000 {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        if stream.write_all(b"a").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let v = Validator::new(ValidationSettings {
            http01_port: port,
            timeout: std::time::Duration::from_millis(400),
            ..settings(None)
        })
        .unwrap();
        let started = std::time::Instant::now();
        let err = v.http01(&localhost(), TOKEN, KEY_AUTHZ).await.unwrap_err();
        assert!(matches!(err, ValidationError::Connection(_)), "{err:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
        drip.abort();
    }

    #[test]
    fn redirect_rules() {
        let ok = |u: &str| check_redirect(&Url::parse(u).unwrap(), 8080, false).is_ok();
        assert!(ok("http://example.com/a"));
        assert!(ok("https://example.com/a"));
        assert!(ok("http://example.com:8080/a"));
        assert!(!ok("https://example.com:8080/a"));
        assert!(!ok("http://example.com:8443/a"));
        assert!(!ok("ftp://example.com/a"));
        assert!(!ok("http://10.0.0.1/a"));
        assert!(!ok("http://[::1]/a"));
        assert!(ok("http://[2606:4700::1]/a"));
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let v = Validator::new(settings(Some("127.0.0.1:9".parse().unwrap()))).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for token in ["", "../etc", "a/b", "a?b"] {
            let err = rt
                .block_on(v.http01(&localhost(), token, KEY_AUTHZ))
                .unwrap_err();
            assert!(
                matches!(err, ValidationError::Unauthorized(_)),
                "{token}: {err:?}"
            );
        }
    }
}
