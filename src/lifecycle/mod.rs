//! What happens to certificates after issuance. For now: revocation. (Renewal, CRL
//! publication, webhooks and discovery come with their issues.)
//!
//! Imports `pipeline` (store access and clock), `policy`, `store` and `model`.

pub mod escrow;
pub mod revocation;
