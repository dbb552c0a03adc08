//! rampart — a certificate registration-authority daemon.
//!
//! Module map and dependency direction (see `DESIGN.md`):
//! `cli → server → api → pipeline → {policy, ca, store} → model`; `config`, `clock`,
//! `files` and `pkix` are leaves.

pub mod api;
pub mod apikeys;
pub mod bench;
pub mod ca;
pub mod cli;
pub mod clock;
pub mod config;
pub mod files;
pub mod gateway;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod pkix;
pub mod policy;
pub mod server;
pub mod store;
