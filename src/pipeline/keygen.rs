//! Keys rampart makes for requesters (API enrollments with `generate_key`, server-side
//! renewals), made on tokio's blocking pool: an RSA key takes tens of milliseconds (2048
//! bits) to seconds (4096) of CPU, and an async worker held that long stalls every listener
//! it serves. The key generation itself is [`crate::pkix::keygen`]'s. (EST serverkeygen
//! makes only P-256 keys, microseconds of work, and calls it in place.)
//!
//! May import: `pkix::keygen`, `model`.

use crate::model::{Identifier, KeyType};
use crate::pkix::keygen::{key_and_csr, Generated};

/// [`key_and_csr`], off the async workers.
pub async fn generate(
    key_type: KeyType,
    common_name: Option<String>,
    identifiers: Vec<Identifier>,
) -> Result<Generated, String> {
    tokio::task::spawn_blocking(move || key_and_csr(key_type, common_name.as_deref(), &identifiers))
        .await
        .map_err(|e| format!("the key generation task failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a single-threaded runtime, a task spawned after the key's begins before the key is
    /// made: the generation waits on the blocking pool and leaves the runtime to others.
    /// (Made in place, it would run to its end first, and the flag would still be unset.)
    #[tokio::test(flavor = "current_thread")]
    async fn rsa_keys_are_made_off_the_async_runtime() {
        let (ran, seen) = tokio::sync::oneshot::channel::<()>();
        let mut seen = seen;
        let keygen = tokio::spawn(async move {
            let generated = generate(
                KeyType::Rsa { bits: 2048 },
                Some("offload.test".into()),
                vec![Identifier::Dns("offload.test".into())],
            )
            .await;
            (generated, seen.try_recv().is_ok())
        });
        let other = tokio::spawn(async move { ran.send(()).is_ok() });
        let (generated, other_ran_meanwhile) = keygen.await.unwrap();
        other.await.unwrap();
        assert!(other_ran_meanwhile);
        let generated = generated.unwrap();
        assert!(!generated.pkcs8.is_empty());
        crate::pkix::csr::VerifiedCsr::parse(&generated.csr_der).unwrap();
    }
}
