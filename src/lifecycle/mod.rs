//! What happens to certificates after issuance: revocation, CRLs, OCSP and
//! their publication endpoint, key escrow, delivery to filesystem targets (with a reload
//! command and rollback), discovery of deployed certificates (TLS endpoints and files,
//! recorded as rampart-issued or external). (Renewal and webhooks come with their issues.)
//!
//! Imports `pipeline` (store access and clock), `policy`, `store` and `model`; `delivery`
//! only `config` and `pkix`.

pub mod crl;
pub mod delivery;
pub mod discovery;
pub mod escrow;
pub mod ocsp;
pub mod publish;
pub mod revocation;
pub mod webhooks;
