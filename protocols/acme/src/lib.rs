//! rampart-acme: an RFC 8555 ACME server as a library.
//!
//! The crate owns the wire format and the protocol state machine: JWS verification,
//! nonces, accounts, orders, authorizations, challenges and their validation. It knows
//! nothing of the daemon: everything else (who an account is, whether names may be issued,
//! signing, storage) goes through the narrow traits the daemon implements.
//!
//! Modules: `validation` (http-01, dns-01, tls-alpn-01 checks).

pub mod validation;
