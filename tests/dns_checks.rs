//! Layer 2's DNS checks against a small authoritative server: a role that requires its
//! names to resolve into its address ranges and to sit in a zone it owns gets only those.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rampart::clock::SystemClock;
use rampart::config::{DnsChecksConfig, RoleConfig};
use serde_json::{json, Value};
use tokio::net::UdpSocket;

/// Zones `lab.test` and `other.test` with a few A records; everything else NXDOMAIN.
fn answer(query: &Message) -> Message {
    let mut reply = Message::new();
    reply.set_id(query.id());
    reply.set_message_type(MessageType::Response);
    reply.set_op_code(query.op_code());
    reply.set_recursion_desired(query.recursion_desired());
    reply.set_recursion_available(true);
    reply.set_authoritative(true);
    let hosts: [(&str, Ipv4Addr); 4] = [
        ("app.lab.test.", Ipv4Addr::new(10, 1, 2, 3)),
        ("lab.test.", Ipv4Addr::new(10, 1, 2, 1)),
        ("ext.lab.test.", Ipv4Addr::new(192, 0, 2, 9)),
        ("x.other.test.", Ipv4Addr::new(10, 1, 2, 4)),
    ];
    let zones = ["lab.test.", "other.test."];
    let mut code = ResponseCode::NoError;
    for question in query.queries() {
        reply.add_query(question.clone());
        let name = question.name().to_ascii().to_ascii_lowercase();
        let known = hosts.iter().any(|(h, _)| *h == name) || zones.contains(&name.as_str());
        if !known {
            code = ResponseCode::NXDomain;
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
                let soa = SOA::new(
                    Name::from_ascii(format!("ns.{name}")).unwrap(),
                    Name::from_ascii(format!("hostmaster.{name}")).unwrap(),
                    1,
                    3600,
                    600,
                    86400,
                    60,
                );
                reply.add_answer(Record::from_rdata(
                    question.name().clone(),
                    60,
                    RData::SOA(soa),
                ));
            }
            _ => {}
        }
    }
    reply.set_response_code(code);
    reply
}

async fn dns_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
            if let Ok(query) = Message::from_vec(&buf[..len]) {
                if let Ok(bytes) = answer(&query).to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        }
    });
    addr
}

#[tokio::test]
async fn names_must_resolve_into_the_roles_ranges_and_zones() {
    let resolver = dns_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config_for(dir.path());
    config.policy.dns_resolver = resolver.to_string();
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
    let enroll = |name: &'static str| {
        let d = &d;
        let token = token.clone();
        async move {
            let response = d
                .http
                .post(format!("{}/api/v1/enrollments", d.url))
                .bearer_auth(token)
                .json(&json!({"csr": common::csr(&common::p256(), None, &[name]), "template": "server"}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    let (status, body) = enroll("app.lab.test").await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = enroll("*.lab.test").await;
    assert_eq!(status, 201, "a wildcard is checked by its zone: {body}");
    for (name, says) in [
        ("ext.lab.test", "outside the role's address ranges"),
        ("gone.lab.test", "does not resolve"),
        ("x.other.test", "zone `other.test`"),
    ] {
        let (status, body) = enroll(name).await;
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
