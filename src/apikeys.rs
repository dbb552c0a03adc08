//! API keys: `rpk_<id>_<secret>` tokens. The id is public and names the stored record; the
//! 256-bit secret is shown once and stored only as its SHA-256 (a random 256-bit secret
//! needs no slow hash). Verification compares hashes in constant time.
//!
//! Imports `store` (record type) and `pkix` (hashing).

use base64::Engine;
use time::OffsetDateTime;

use crate::model::{Credential, Identity};
use crate::pkix::sha256_hex;
use crate::store::ApiKeyRecord;

const PREFIX: &str = "rpk_";

/// A freshly generated key: the record to store and the token to show once.
#[derive(Debug)]
pub struct NewApiKey {
    /// What the store keeps.
    pub record: ApiKeyRecord,
    /// What the user keeps. Never logged, never stored.
    pub token: String,
}

/// Generate a key for `identity` with `roles`.
pub fn generate(identity: &str, roles: Vec<String>, now: OffsetDateTime) -> NewApiKey {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut id).expect("system randomness");
    aws_lc_rs::rand::fill(&mut secret).expect("system randomness");
    let key_id = hex::encode(id);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    NewApiKey {
        record: ApiKeyRecord {
            key_id: key_id.clone(),
            identity: identity.to_string(),
            roles,
            secret_sha256: sha256_hex(secret.as_bytes()),
            created_at: now,
        },
        token: format!("{PREFIX}{key_id}_{secret}"),
    }
}

/// Split a token into its id and secret; `None` when it is not shaped like one.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && !secret.is_empty()).then_some((id, secret))
}

/// Whether `secret` is the one `record` was made for.
pub fn verify(record: &ApiKeyRecord, secret: &str) -> bool {
    let presented = sha256_hex(secret.as_bytes());
    #[allow(deprecated)]
    aws_lc_rs::constant_time::verify_slices_are_equal(
        presented.as_bytes(),
        record.secret_sha256.as_bytes(),
    )
    .is_ok()
}

/// The identity a verified key authenticates.
pub fn identity(record: &ApiKeyRecord) -> Identity {
    Identity {
        name: record.identity.clone(),
        roles: record.roles.clone(),
        credential: Credential::ApiKey {
            key_id: record.key_id.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_only_the_right_secret_verifies() {
        let key = generate("admin", vec!["admin".into()], OffsetDateTime::now_utc());
        assert!(!key.record.secret_sha256.contains(&key.token[17..]));
        let (id, secret) = parse_token(&key.token).unwrap();
        assert_eq!(id, key.record.key_id);
        assert!(verify(&key.record, secret));
        assert!(!verify(&key.record, "wrong"));
        for bad in [
            "",
            "rpk_",
            "rpk_123_x",
            "Bearer x",
            "rpk_zzzzzzzzzzzz_x",
            "rpk_0123456789ab_",
        ] {
            assert!(parse_token(bad).is_none(), "{bad}");
        }
    }
}
