//! Checking shared secrets against their argon2 hashes from the configuration (EST Basic
//! passwords, SCEP static challenges) without paying argon2 on every request.
//!
//! argon2 is deliberately slow (tens of milliseconds), and a device fleet presents the same
//! few secrets over and over. A secret that verified once is remembered as SHA-256 of
//! (scope, stored hash, secret), so a changed hash (a reload) is a miss; failures are never
//! remembered, and argon2 runs one at a time — a fleet arriving together waits for the first
//! check instead of each paying for its own, and guessing cannot take every core.
//!
//! Imports `pkix` (SHA-256).

use std::collections::HashSet;
use std::sync::Mutex;

use crate::pkix::sha256_hex;

/// Most remembered secrets; the memory is forgotten whole when full.
const CAPACITY: usize = 10_000;

/// Verified secrets, remembered.
#[derive(Debug, Default)]
pub struct PasswordChecker {
    verified: Mutex<HashSet<String>>,
    turn: tokio::sync::Mutex<()>,
}

impl PasswordChecker {
    /// Whether `secret` matches the PHC-format argon2 `hash` configured for `scope` (a user,
    /// a profile).
    pub async fn verify(&self, scope: &str, hash: &str, secret: &str) -> bool {
        let memo = sha256_hex(format!("{scope}\n{hash}\n{secret}").as_bytes());
        let remembered = || {
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&memo)
        };
        if remembered() {
            return true;
        }
        let _turn = self.turn.lock().await;
        if remembered() {
            return true;
        }
        let (hash, secret) = (hash.to_string(), secret.to_string());
        let verified = tokio::task::spawn_blocking(move || {
            use argon2::password_hash::{PasswordHash, PasswordVerifier};
            PasswordHash::new(&hash).is_ok_and(|hash| {
                argon2::Argon2::default()
                    .verify_password(secret.as_bytes(), &hash)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        if verified {
            let mut set = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if set.len() >= CAPACITY {
                set.clear();
            }
            set.insert(memo);
        }
        verified
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};

    fn hash(secret: &str) -> String {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        argon2::Argon2::default()
            .hash_password(secret.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn right_secret_verifies_and_is_remembered_per_scope_and_hash() {
        let checker = PasswordChecker::default();
        let stored = hash("s3cret");
        assert!(checker.verify("device-7", &stored, "s3cret").await);
        assert!(checker.verify("device-7", &stored, "s3cret").await);
        assert_eq!(checker.verified.lock().unwrap().len(), 1);
        assert!(!checker.verify("device-7", &stored, "wrong").await);
        // Another hash for the same scope (a reload changed it): checked again, and refused.
        assert!(!checker.verify("device-7", &hash("other"), "s3cret").await);
        assert!(
            !checker
                .verify("device-7", "not a PHC string", "s3cret")
                .await
        );
        assert_eq!(
            checker.verified.lock().unwrap().len(),
            1,
            "failures are not remembered"
        );
    }
}
