//! Layer 2's DNS checks against a small authoritative server: a role that requires its
//! names to resolve into its address ranges and to sit in a zone it owns gets only those;
//! answers are reused briefly, refusals ("does not resolve") are not.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rampart::clock::SystemClock;
use rampart::config::{DnsChecksConfig, RoleConfig};
use serde_json::{json, Value};
use tokio::net::UdpSocket;

/// Zones `lab.test` and `other.test` with a few A records, and those in `added` (inside
/// `lab.test`); everything else NXDOMAIN.
fn answer(query: &Message, added: &[(String, Ipv4Addr)]) -> Message {
    let mut reply = Message::new();
    reply.set_id(query.id());
    reply.set_message_type(MessageType::Response);
    reply.set_op_code(query.op_code());
    reply.set_recursion_desired(query.recursion_desired());
    reply.set_recursion_available(true);
    reply.set_authoritative(true);
    let mut hosts: Vec<(&str, Ipv4Addr)> = vec![
        ("app.lab.test.", Ipv4Addr::new(10, 1, 2, 3)),
        ("lab.test.", Ipv4Addr::new(10, 1, 2, 1)),
        ("ext.lab.test.", Ipv4Addr::new(192, 0, 2, 9)),
        ("x.other.test.", Ipv4Addr::new(10, 1, 2, 4)),
    ];
    hosts.extend(added.iter().map(|(name, ip)| (name.as_str(), *ip)));
    let zones = ["lab.test.", "other.test."];
    let mut code = ResponseCode::NoError;
    for question in query.queries() {
        reply.add_query(question.clone());
        let name = question.name().to_ascii().to_ascii_lowercase();
        let known = hosts.iter().any(|(h, _)| *h == name) || zones.contains(&name.as_str());
        if !known {
            code = ResponseCode::NXDomain;
            // As an authoritative server does: the zone's SOA, whose TTL says how long the
            // "no such name" may be believed (RFC 2308).
            if let Some(zone) = zones
                .iter()
                .find(|zone| name.ends_with(&format!(".{zone}")))
            {
                reply.add_name_server(soa(zone));
            }
            continue;
        }
        match question.query_type() {
            RecordType::A => {
                if let Some((_, ip)) = hosts.iter().find(|(h, _)| *h == name) {
                    reply.add_answer(Record::from_rdata(
                        question.name().clone(),
                        60,
                        RData::A(A(*ip)),
                    ));
                }
            }
            RecordType::SOA if zones.contains(&name.as_str()) => {
                reply.add_answer(soa(&name));
            }
            _ => {}
        }
    }
    reply.set_response_code(code);
    reply
}

/// The SOA record of `zone` (TTL and negative TTL 60 s).
fn soa(zone: &str) -> Record {
    let soa = SOA::new(
        Name::from_ascii(format!("ns.{zone}")).unwrap(),
        Name::from_ascii(format!("hostmaster.{zone}")).unwrap(),
        1,
        3600,
        600,
        86400,
        60,
    );
    Record::from_rdata(Name::from_ascii(zone).unwrap(), 60, RData::SOA(soa))
}

/// The test server: where it listens, the questions it was asked (name, type), and the
/// hosts added to it while it runs.
struct TestDns {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<(String, RecordType)>>>,
    added: Arc<Mutex<Vec<(String, Ipv4Addr)>>>,
}

impl TestDns {
    /// How many times `name` was asked for its A record.
    fn a_queries(&self, name: &str) -> usize {
        let asked = self.asked.lock().unwrap();
        asked
            .iter()
            .filter(|(asked, kind)| asked == name && *kind == RecordType::A)
            .count()
    }
}

async fn dns_server() -> TestDns {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dns = TestDns {
        addr: socket.local_addr().unwrap(),
        asked: Arc::default(),
        added: Arc::default(),
    };
    let (asked, added) = (dns.asked.clone(), dns.added.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
            if let Ok(query) = Message::from_vec(&buf[..len]) {
                asked.lock().unwrap().extend(
                    query
                        .queries()
                        .iter()
                        .map(|q| (q.name().to_ascii().to_ascii_lowercase(), q.query_type())),
                );
                let reply = answer(&query, &added.lock().unwrap());
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        }
    });
    dns
}

/// A test DNS server and a daemon checking through it, with an API key (returned) of role
/// `web`: names under `.test` that must resolve into 10.0.0.0/8 and sit in zone `lab.test`.
async fn checked_daemon() -> (TestDns, tempfile::TempDir, common::TestDaemon, String) {
    let dns = dns_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config_for(dir.path());
    config.policy.dns_resolver = dns.addr.to_string();
    config.roles.insert(
        "web".into(),
        RoleConfig {
            templates: vec!["server".into()],
            dns_names: vec!["**.test".to_string().try_into().unwrap()],
            ip_ranges: vec![],
            email_domains: vec![],
            uri_prefixes: vec![],
            manage: false,
            dns_checks: Some(DnsChecksConfig {
                resolve: true,
                addresses_in: vec!["10.0.0.0/8".parse().unwrap()],
                zones: vec!["lab.test".into()],
            }),
        },
    );
    let d = common::start_with(config, Arc::new(SystemClock), None).await;
    let token = d.new_api_key("web-bot", &["web"]).await;
    (dns, dir, d, token)
}

/// Enroll `names` with `token` for template `server`: status and body.
async fn enroll(d: &common::TestDaemon, token: &str, names: &[&str]) -> (u16, Value) {
    let response = d
        .http
        .post(format!("{}/api/v1/enrollments", d.url))
        .bearer_auth(token)
        .json(&json!({"csr": common::csr(&common::p256(), None, names), "template": "server"}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json::<Value>().await.unwrap())
}

#[tokio::test]
async fn names_must_resolve_into_the_roles_ranges_and_zones() {
    let (_dns, _dir, d, token) = checked_daemon().await;

    let (status, body) = enroll(&d, &token, &["app.lab.test"]).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = enroll(&d, &token, &["*.lab.test"]).await;
    assert_eq!(status, 201, "a wildcard is checked by its zone: {body}");
    for (name, says) in [
        ("ext.lab.test", "outside the role's address ranges"),
        ("gone.lab.test", "does not resolve"),
        ("x.other.test", "zone `other.test`"),
    ] {
        let (status, body) = enroll(&d, &token, &[name]).await;
        assert_eq!(status, 403, "{name}: {body}");
        assert_eq!(body["rule"], "dns_check_failed", "{body}");
        assert_eq!(body["layer"], "names");
        assert!(body["message"].as_str().unwrap().contains(says), "{body}");
    }
    // The admin role has no DNS checks: the same names pass its patterns alone.
    let (status, body) = d
        .enroll(
            &common::csr(&common::p256(), None, &["gone.lab.test"]),
            "server",
        )
        .await;
    assert_eq!(status, 201, "{body}");
    d.daemon.shutdown().await;
}

#[tokio::test]
async fn answers_are_reused_and_a_name_just_added_passes_at_once() {
    let (dns, _dir, d, token) = checked_daemon().await;

    // Two requests for one name: the second is decided on the answer the first got.
    for _ in 0..2 {
        let (status, body) = enroll(&d, &token, &["app.lab.test"]).await;
        assert_eq!(status, 201, "{body}");
    }
    assert_eq!(dns.a_queries("app.lab.test."), 1);

    // Several names in one request are each looked up (and each decided).
    let (status, body) = enroll(&d, &token, &["app.lab.test", "lab.test", "gone.lab.test"]).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("gone.lab.test"),
        "{body}"
    );
    assert_eq!(dns.a_queries("lab.test."), 1);

    // A name that did not resolve passes as soon as the operator adds it: the refusal was
    // not kept.
    let (status, body) = enroll(&d, &token, &["new.lab.test"]).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not resolve"),
        "{body}"
    );
    dns.added
        .lock()
        .unwrap()
        .push(("new.lab.test.".into(), Ipv4Addr::new(10, 1, 2, 7)));
    let (status, body) = enroll(&d, &token, &["new.lab.test"]).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(dns.a_queries("new.lab.test."), 2);
    d.daemon.shutdown().await;
}
