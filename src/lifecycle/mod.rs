//! What happens to certificates after issuance: revocation, CRLs, OCSP and
//! their publication endpoint, key escrow. (Renewal,
//! OCSP, webhooks and discovery come with their issues.)
//!
//! Imports `pipeline` (store access and clock), `policy`, `store` and `model`.

pub mod crl;
pub mod escrow;
pub mod ocsp;
pub mod publish;
pub mod revocation;
