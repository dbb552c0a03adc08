//! rampart-acme: an RFC 8555 ACME server as a library.
//!
//! The crate owns the wire format and the protocol state machine: JWS verification
//! ([`jws`]), nonces ([`nonce`]), accounts, orders, authorizations and challenges
//! ([`records`], [`server`]) and challenge validation ([`validation`]). It knows nothing of
//! the daemon: policy, issuance, certificates and storage go through [`backend::AcmeBackend`]
//! and [`records::KeyValue`], which the embedder implements.

pub mod ari;
pub mod backend;
pub mod csr;
pub mod jws;
pub mod nonce;
pub mod problem;
pub mod records;
pub mod server;
pub mod validation;
pub mod wire;

pub use backend::{
    AcmeBackend, CaaRefusal, ExternalAccountKey, Issuance, KnownCertificate, PendingStatus,
    Profile, Revoker,
};
pub use problem::{Problem, ProblemType};
pub use records::{AccountRecord, KeyValue, MemoryKv, OrderRecord, Records};
pub use server::{router, AcmeServer, Clock};
