//! Test fixtures for the validators: a tiny authoritative UDP DNS responder (A, TXT,
//! CNAME and CAA records, SERVFAIL on demand), a minimal
//! HTTP/1.1 responder, and settings pointing at them. Everything listens on 127.0.0.1
//! ephemeral ports and stops when dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinDecodable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use super::ValidationSettings;

/// Nameserver used when a test does not care about DNS (nothing listens there).
const UNUSED_DNS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9);

/// Settings for tests: private targets allowed, short timeout, `dns` as nameserver.
pub fn settings(dns: Option<SocketAddr>) -> ValidationSettings {
    ValidationSettings {
        dns_resolver: Some(dns.unwrap_or(UNUSED_DNS)),
        allow_private_targets: true,
        timeout: Duration::from_secs(5),
        ..ValidationSettings::default()
    }
}

/// A DNS record served by [`DnsResponder`]: lowercase owner name without trailing dot.
pub type TestRecord = (String, RData);

/// An A record.
pub fn a_record(name: &str, ip: [u8; 4]) -> TestRecord {
    (name.to_ascii_lowercase(), RData::A(A(Ipv4Addr::from(ip))))
}

/// A CNAME record (answered for every query type; not chased by the responder).
pub fn cname_record(name: &str, target: &str) -> TestRecord {
    let target = Name::from_ascii(target).unwrap();
    (name.to_ascii_lowercase(), RData::CNAME(CNAME(target)))
}

/// A TXT record made of `strings` (character-strings of one record).
pub fn txt_record(name: &str, strings: Vec<&str>) -> TestRecord {
    let strings = strings.into_iter().map(str::to_owned).collect();
    (name.to_ascii_lowercase(), RData::TXT(TXT::new(strings)))
}

/// A CAA record with raw `flags` (128 = critical), property `tag` and `value` exactly as
/// on the wire (e.g. `"ca.example; accounturi=https://…"`, or `";"`). Built by decoding
/// the wire form, so it is what a resolver would see. Panics on a tag hickory refuses
/// (not 1–15 ASCII letters and digits).
pub fn caa_record(name: &str, flags: u8, tag: &str, value: &str) -> TestRecord {
    let tag_len = u8::try_from(tag.len()).expect("CAA tag too long");
    let mut rdata = vec![flags, tag_len];
    rdata.extend_from_slice(tag.as_bytes());
    rdata.extend_from_slice(value.as_bytes());
    let rdata_len = u16::try_from(rdata.len()).expect("CAA value too long");
    // Owner ".", type CAA (257), class IN, TTL 0, RDLENGTH, RDATA.
    let mut wire = vec![0u8, 0x01, 0x01, 0x00, 0x01, 0, 0, 0, 0];
    wire.extend_from_slice(&rdata_len.to_be_bytes());
    wire.extend_from_slice(&rdata);
    let record = Record::from_bytes(&wire).expect("invalid CAA record");
    let rdata = record.into_data();
    assert!(
        matches!(rdata, RData::CAA(_)),
        "not decoded as CAA: {rdata:?}"
    );
    (name.to_ascii_lowercase(), rdata)
}

/// Answers UDP queries from a record list: matching records (and CNAMEs), NODATA when
/// the name exists with other types, NXDOMAIN otherwise; SERVFAIL for every query about
/// the names given to [`DnsResponder::set_servfail`].
pub struct DnsResponder {
    /// Where it listens.
    pub addr: SocketAddr,
    records: Arc<Mutex<Vec<TestRecord>>>,
    servfail: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl DnsResponder {
    /// Start answering on a 127.0.0.1 ephemeral port.
    pub async fn start(records: Vec<TestRecord>) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records = Arc::new(Mutex::new(records));
        let served = records.clone();
        let servfail: Arc<Mutex<Vec<String>>> = Arc::default();
        let failing = servfail.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                let reply = {
                    let records = served.lock().unwrap();
                    let failing = failing.lock().unwrap();
                    answer(&query, &records, &failing)
                };
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        Self {
            addr,
            records,
            servfail,
            task,
        }
    }

    /// Replaces the served records.
    pub fn set_records(&self, records: Vec<TestRecord>) {
        *self.records.lock().unwrap() = records;
    }

    /// Answers SERVFAIL (whatever the type) for queries about exactly these names
    /// (case-insensitive, no trailing dot); replaces the previous list.
    pub fn set_servfail(&self, names: &[&str]) {
        *self.servfail.lock().unwrap() = names
            .iter()
            .map(|name| name.trim_end_matches('.').to_ascii_lowercase())
            .collect();
    }
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(query: &Message, records: &[TestRecord], servfail: &[String]) -> Message {
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    let Some(question) = query.queries().first() else {
        reply.set_response_code(ResponseCode::FormErr);
        return reply;
    };
    reply.add_query(question.clone());
    let owner: &Name = question.name();
    let wanted = owner.to_ascii().trim_end_matches('.').to_ascii_lowercase();
    if servfail.contains(&wanted) {
        reply.set_response_code(ResponseCode::ServFail);
        return reply;
    }
    let mut name_exists = false;
    for (_, rdata) in records.iter().filter(|(name, _)| *name == wanted) {
        name_exists = true;
        let rtype = rdata.record_type();
        if rtype == question.query_type() || rtype == RecordType::CNAME {
            reply.add_answer(Record::from_rdata(owner.clone(), 0, rdata.clone()));
        }
    }
    if !name_exists {
        reply.set_response_code(ResponseCode::NXDomain);
    }
    reply
}

/// What [`HttpResponder`] sends back.
pub struct HttpReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpReply {
    /// 200 with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// An empty response with `status`.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// 302 to `location`.
    pub fn redirect(location: &str) -> Self {
        Self {
            status: 302,
            headers: vec![("Location".into(), location.into())],
            body: Vec::new(),
        }
    }
}

type Handler = dyn Fn(&str) -> HttpReply + Send + Sync;

/// Minimal HTTP/1.1 server: one request per connection, reply chosen by path.
pub struct HttpResponder {
    /// Port on 127.0.0.1.
    pub port: u16,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl HttpResponder {
    /// Start answering on a 127.0.0.1 ephemeral port; `handler` maps a request path to a reply.
    pub async fn start(handler: impl Fn(&str) -> HttpReply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handler: Arc<Handler> = Arc::new(handler);
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16384 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let text = String::from_utf8_lossy(&request);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let reply = handler(&path);
                    let mut head = format!(
                        "HTTP/1.1 {} Test\r\nContent-Length: {}\r\nConnection: close\r\n",
                        reply.status,
                        reply.body.len()
                    );
                    for (name, value) in &reply.headers {
                        head.push_str(&format!("{name}: {value}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&reply.body).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { port, hits, task }
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for HttpResponder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
