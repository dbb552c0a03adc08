//! What a server under test needs to validate the bench's ACME orders for real: a DNS
//! server answering every name with 127.0.0.1, and an http-01 responder.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::{TcpListener, UdpSocket};

/// Key authorizations by token.
pub type Tokens = Arc<Mutex<HashMap<String, String>>>;

/// Answer every A query with 127.0.0.1 (other types: no data), on UDP `addr`.
pub async fn serve_any_name_dns(addr: SocketAddr) -> std::io::Result<()> {
    let socket = UdpSocket::bind(addr).await?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            if let Ok(bytes) = answer(&query).to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    Ok(())
}

fn answer(query: &Message) -> Message {
    let mut reply = Message::new();
    reply.set_id(query.id());
    reply.set_message_type(MessageType::Response);
    reply.set_op_code(query.op_code());
    reply.set_recursion_desired(query.recursion_desired());
    reply.set_recursion_available(true);
    reply.set_authoritative(true);
    reply.set_response_code(ResponseCode::NoError);
    for question in query.queries() {
        reply.add_query(question.clone());
        if question.query_type() == RecordType::A {
            let record = Record::from_rdata(
                question.name().clone(),
                60,
                RData::A(A(Ipv4Addr::LOCALHOST)),
            );
            reply.add_answer(record);
        }
    }
    reply
}

/// Serve `/.well-known/acme-challenge/<token>` from `tokens` on TCP `addr`.
pub async fn serve_http01(addr: SocketAddr, tokens: Tokens) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let router = axum::Router::new()
        .route(
            "/.well-known/acme-challenge/{token}",
            get(key_authorization),
        )
        .with_state(tokens);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(())
}

async fn key_authorization(
    State(tokens): State<Tokens>,
    Path(token): Path<String>,
) -> Result<String, StatusCode> {
    tokens
        .lock()
        .expect("tokens lock")
        .get(&token)
        .cloned()
        .ok_or(StatusCode::NOT_FOUND)
}
