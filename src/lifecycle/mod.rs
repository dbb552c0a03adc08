//! What happens to certificates after issuance: revocation, CRLs, OCSP and
//! their publication endpoint, key escrow, delivery to filesystem targets (with a reload
//! command and rollback), renewal (windows, the scheduler, ARI), signed webhooks from the
//! outbox, and discovery of deployed certificates (TLS endpoints and files, recorded as
//! rampart-issued or external). Each background part runs as its own task started by
//! `server`.
//!
//! Imports `pipeline` (store access, clock, metrics, event payloads), `policy`, `store`,
//! `config`, `pkix` and `model`; `delivery` only `config` and `pkix`.

pub mod crl;
pub mod delivery;
pub mod discovery;
pub mod escrow;
pub mod ocsp;
pub mod publish;
pub mod renewal;
pub mod revocation;
pub mod webhooks;
