//! The daemon's side of the protocol crates' narrow traits: how an ACME account maps to an
//! identity, how its requests enter the one pipeline, where protocol state is stored.
//!
//! Imports `pipeline`, `lifecycle`, `policy`, `store`, `model`, `config` and the protocol
//! crates; protocol crates never import the daemon.

pub mod acme;
pub mod est;
pub mod passwords;
pub mod retention;
pub mod scep;
