//! Abuse limits of the listeners (`[limits]`): the connection settings `serve` applies
//! (a cap on concurrent connections, the HTTP/1 header read timeout, an idle timeout fed by
//! [`Tracked`] I/O), and a per-client rate limit on the enrollment endpoints.
//!
//! The rate limit is a layer around each protocol's router, chosen by path, so the protocol
//! crates stay unaware of it; refusals are in the protocol's own format: an ACME
//! `rateLimited` problem (429, `Retry-After`, with a fresh nonce from the ACME server),
//! and for EST and SCEP a plain-text 429 with `Retry-After`. (SCEP over HTTP has no error
//! structure of its own short of a signed CertRep, which would need the request decrypted
//! first, the work the limit is there to spare; 429 says exactly what happened, and a
//! client that does not know it still sees a failed request and retries later.)

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Query, Request};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::LimitsConfig;

/// Most client addresses one limiter keeps a bucket for.
const MAX_TRACKED_CLIENTS: usize = 100_000;
/// Shortest interval between two sweeps of the bucket table when it is full.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How `serve` treats the connections of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time to send an HTTP/1 request head (and to start the next one on a kept-alive
    /// connection).
    pub header_read_timeout: Duration,
    /// Time without a byte read or written after which the connection is closed.
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// From `[limits]`.
    pub fn from_config(limits: &LimitsConfig) -> Self {
        ConnectionLimits {
            max_connections: limits.max_connections_per_listener.max(1),
            header_read_timeout: Duration::from_secs(limits.header_read_timeout_seconds.max(1)),
            idle_timeout: Duration::from_secs(limits.idle_timeout_seconds.max(1)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Idle timeout
// ---------------------------------------------------------------------------------------

/// When a connection last moved a byte.
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    /// Milliseconds after `origin` of the last byte read or written.
    last: AtomicU64,
}

impl Activity {
    /// Activity starting now.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(elapsed, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }

    /// Completes once nothing was read or written for `limit`.
    pub async fn idle(&self, limit: Duration) {
        loop {
            let quiet = self.quiet_for();
            if quiet >= limit {
                return;
            }
            tokio::time::sleep(limit - quiet).await;
        }
    }
}

/// A stream that records its reads and writes in an [`Activity`].
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    /// Track `inner` in `activity`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------
// Per-client rate limit
// ---------------------------------------------------------------------------------------

/// What the limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refuse; the client may try again after this many seconds (at least 1).
    Limit {
        /// Seconds until the client has a request again.
        retry_after_seconds: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct Buckets {
    by_client: HashMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
}

/// A token bucket per client address (IPv6: per /64, what one subscriber usually holds):
/// `capacity` requests at once, refilled at `capacity` per minute. The table holds at
/// most [`MAX_TRACKED_CLIENTS`] clients; when it is full, clients whose bucket has refilled
/// are forgotten (a full bucket is what a new client gets anyway), and if none has, new
/// clients are refused until one has.
#[derive(Debug)]
pub struct RateLimiter {
    capacity: f64,
    per_second: f64,
    max_clients: usize,
    buckets: Mutex<Buckets>,
}

impl RateLimiter {
    /// `per_minute` requests per client and minute; `None` when 0 (no limit).
    pub fn per_minute(per_minute: u32) -> Option<Arc<Self>> {
        Self::with_table_size(per_minute, MAX_TRACKED_CLIENTS)
    }

    fn with_table_size(per_minute: u32, max_clients: usize) -> Option<Arc<Self>> {
        (per_minute > 0).then(|| {
            Arc::new(RateLimiter {
                capacity: f64::from(per_minute),
                per_second: f64::from(per_minute) / 60.0,
                max_clients: max_clients.max(1),
                buckets: Mutex::new(Buckets {
                    by_client: HashMap::new(),
                    last_sweep: None,
                }),
            })
        })
    }

    /// Take one request from `ip`'s bucket at `now`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Decision {
        let key = client_key(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.by_client.contains_key(&key) && buckets.by_client.len() >= self.max_clients {
            let swept_recently = buckets
                .last_sweep
                .is_some_and(|at| now.saturating_duration_since(at) < SWEEP_INTERVAL);
            if !swept_recently {
                buckets.last_sweep = Some(now);
                buckets
                    .by_client
                    .retain(|_, bucket| self.level(bucket, now) < self.capacity);
            }
            if buckets.by_client.len() >= self.max_clients {
                return Decision::Limit {
                    retry_after_seconds: self.seconds_until(self.capacity - 1.0),
                };
            }
        }
        let level = buckets
            .by_client
            .get(&key)
            .map_or(self.capacity, |bucket| self.level(bucket, now));
        let (tokens, decision) = if level >= 1.0 {
            (level - 1.0, Decision::Allow)
        } else {
            (
                level,
                Decision::Limit {
                    retry_after_seconds: self.seconds_until(level),
                },
            )
        };
        buckets.by_client.insert(key, Bucket { tokens, at: now });
        decision
    }

    /// Tokens in `bucket` at `now`.
    fn level(&self, bucket: &Bucket, now: Instant) -> f64 {
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
        (bucket.tokens + refill).min(self.capacity)
    }

    /// Whole seconds (at least 1) until a bucket holding `level` tokens holds one.
    fn seconds_until(&self, level: f64) -> u64 {
        let missing = (1.0 - level).max(0.0);
        // Bounded by 60 / per_minute seconds, so the cast cannot overflow.
        ((missing / self.per_second).ceil() as u64).max(1)
    }
}

/// The address a bucket belongs to: IPv4 (also IPv4-mapped IPv6) as is, IPv6 by /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)))),
        },
    }
}

/// The enrollment endpoints of one listener, and how it refuses a client over its limit.
#[derive(Clone)]
pub enum Enrollments {
    /// ACME newNonce, newAccount, newOrder: a `rateLimited` problem from the server.
    Acme(Arc<rampart_acme::AcmeServer>),
    /// EST simpleenroll, simplereenroll, serverkeygen.
    Est,
    /// SCEP PKIOperation (GET and POST).
    Scep,
}

impl std::fmt::Debug for Enrollments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Enrollments::Acme(_) => "Acme",
            Enrollments::Est => "Est",
            Enrollments::Scep => "Scep",
        })
    }
}

impl Enrollments {
    /// Whether a request to `uri` counts against the limit. Paths are compared
    /// percent-decoded (the routers decode parameters); counting a request the router
    /// then answers 404 costs nothing, missing one would open a way around the limit.
    fn counts(&self, uri: &Uri) -> bool {
        let path = percent_decode(uri.path());
        match self {
            Enrollments::Acme(_) => {
                let Some(rest) = path.strip_prefix("/acme/") else {
                    return false;
                };
                let mut segments = rest.split('/');
                matches!(
                    (segments.next(), segments.next(), segments.next()),
                    (Some(profile), Some("new-nonce" | "new-account" | "new-order"), None)
                        if !profile.is_empty()
                )
            }
            Enrollments::Est => path.strip_prefix("/.well-known/est/").is_some_and(|rest| {
                matches!(
                    rest.rsplit('/').next(),
                    Some("simpleenroll" | "simplereenroll" | "serverkeygen")
                )
            }),
            Enrollments::Scep => {
                let scep = path == "/scep"
                    || path
                        .strip_prefix("/scep/")
                        .is_some_and(|profile| !profile.is_empty());
                // A query the router cannot read either is counted: it might be one.
                scep && Query::<HashMap<String, String>>::try_from_uri(uri).map_or(true, |q| {
                    q.get("operation").map(String::as_str) == Some("PKIOperation")
                })
            }
        }
    }

    /// The protocol's "too many requests" answer.
    fn refuse(&self, request: &Request, retry_after_seconds: u64) -> Response {
        let detail = format!(
            "too many enrollment requests from this address; retry after {retry_after_seconds} s"
        );
        match self {
            Enrollments::Acme(server) => server.rate_limited(
                request.headers(),
                request.uri(),
                retry_after_seconds,
                &detail,
            ),
            Enrollments::Est | Enrollments::Scep => {
                let mut response = (StatusCode::TOO_MANY_REQUESTS, detail + "\n").into_response();
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
                response
            }
        }
    }
}

/// Rate-limit the enrollment endpoints of `router` per client address (from the
/// [`ConnectInfo`] `serve` puts on every request); without a limiter, `router` as is.
pub fn limit_enrollments(
    router: Router,
    limiter: Option<Arc<RateLimiter>>,
    endpoints: Enrollments,
) -> Router {
    let Some(limiter) = limiter else {
        return router;
    };
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let limiter = limiter.clone();
            let endpoints = endpoints.clone();
            async move {
                let peer = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| info.0);
                let Some(peer) = peer.filter(|_| endpoints.counts(request.uri())) else {
                    return next.run(request).await;
                };
                match limiter.check(peer.ip(), Instant::now()) {
                    Decision::Allow => next.run(request).await,
                    Decision::Limit {
                        retry_after_seconds,
                    } => {
                        tracing::debug!(
                            client = %peer.ip(),
                            path = request.uri().path(),
                            retry_after_seconds,
                            "enrollment request over the per-client rate limit"
                        );
                        endpoints.refuse(&request, retry_after_seconds)
                    }
                }
            }
        },
    ))
}

/// `%XX` sequences decoded (invalid ones and non-UTF-8 results left as they are).
fn percent_decode(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&high), Some(&low)) if hex(high).is_some() && hex(low).is_some() => {
                let value = hex(high).unwrap_or(0) * 16 + hex(low).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'%'));
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(_) => Cow::Borrowed(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let limiter = RateLimiter::per_minute(3).unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check(v4(1), start), Decision::Allow);
        }
        // 3 per minute: one more request every 20 s.
        assert_eq!(
            limiter.check(v4(1), start),
            Decision::Limit {
                retry_after_seconds: 20
            }
        );
        assert_eq!(
            limiter.check(v4(1), start + Duration::from_secs(15)),
            Decision::Limit {
                retry_after_seconds: 5
            }
        );
        assert_eq!(
            limiter.check(v4(1), start + Duration::from_secs(20)),
            Decision::Allow
        );
        // Other clients have their own bucket.
        assert_eq!(limiter.check(v4(2), start), Decision::Allow);
        assert!(RateLimiter::per_minute(0).is_none());
    }

    #[test]
    fn ipv6_clients_share_their_slash_64_and_mapped_v4_is_v4() {
        let limiter = RateLimiter::per_minute(1).unwrap();
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limiter.check(a, now), Decision::Allow);
        assert!(matches!(limiter.check(b, now), Decision::Limit { .. }));
        assert_eq!(limiter.check(c, now), Decision::Allow);
        assert_eq!(limiter.check(v4(7), now), Decision::Allow);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert!(matches!(limiter.check(mapped, now), Decision::Limit { .. }));
    }

    #[test]
    fn the_table_is_bounded() {
        let limiter = RateLimiter::with_table_size(2, 2).unwrap();
        let now = Instant::now();
        assert_eq!(limiter.check(v4(1), now), Decision::Allow);
        assert_eq!(limiter.check(v4(2), now), Decision::Allow);
        // Full, and nobody's bucket has refilled: a third client waits.
        assert!(matches!(limiter.check(v4(3), now), Decision::Limit { .. }));
        // A minute later both buckets are full again and are forgotten.
        let later = now + Duration::from_secs(61);
        assert_eq!(limiter.check(v4(3), later), Decision::Allow);
        let table = limiter.buckets.lock().unwrap();
        assert_eq!(table.by_client.len(), 1);
    }

    #[test]
    fn enrollment_endpoints_are_recognised_by_path() {
        let counts = |endpoints: &Enrollments, uri: &str| endpoints.counts(&uri.parse().unwrap());
        let est = Enrollments::Est;
        for uri in [
            "/.well-known/est/simpleenroll",
            "/.well-known/est/label/simplereenroll",
            "/.well-known/est/serverkeygen",
            "/.well-known/est/simple%65nroll",
        ] {
            assert!(counts(&est, uri), "{uri}");
        }
        for uri in [
            "/.well-known/est/cacerts",
            "/.well-known/est/csrattrs",
            "/scep",
        ] {
            assert!(!counts(&est, uri), "{uri}");
        }
        let scep = Enrollments::Scep;
        for uri in [
            "/scep?operation=PKIOperation",
            "/scep/strict?operation=PKIOperation&message=abc",
            "/scep?operation=PKIOperatio%6E",
        ] {
            assert!(counts(&scep, uri), "{uri}");
        }
        for uri in [
            "/scep?operation=GetCACaps",
            "/scep/x?operation=GetCACert",
            "/scepx?operation=PKIOperation",
        ] {
            assert!(!counts(&scep, uri), "{uri}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/a%2Fb%41"), "/a/bA");
        assert_eq!(percent_decode("/100%"), "/100%");
        assert_eq!(percent_decode("/%zz"), "/%zz");
        assert_eq!(percent_decode("/%ff"), "/%ff");
    }

    #[tokio::test]
    async fn tracked_io_feeds_the_idle_timer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut tracked = Tracked::new(server, activity.clone());
        let mut client = client;
        let limit = Duration::from_millis(200);
        client.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        tokio::time::sleep(Duration::from_millis(150)).await;
        tracked.read_exact(&mut byte).await.unwrap();
        // The read just now restarted the clock: not idle for another ~200 ms.
        let started = Instant::now();
        activity.idle(limit).await;
        assert!(started.elapsed() >= Duration::from_millis(150));
    }
}
