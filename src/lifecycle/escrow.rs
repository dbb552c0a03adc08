//! Key escrow for server-generated keys: AES-256-GCM (aws-lc-rs) under a key kept in
//! `<data_dir>/escrow.key` (0600, created on first use), sealed records in the store's
//! protocol state by certificate serial. Only managers read them back, audited.

use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

use crate::files;
use crate::pipeline::Pipeline;
use crate::store::StoreError;

const NAMESPACE: &str = "escrow.keys";

/// Escrow failures.
#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    /// The escrow key file.
    #[error("escrow key {0}")]
    Key(String),
    /// Sealing or opening failed (wrong key or a damaged record).
    #[error("escrowed key cannot be opened")]
    Crypto,
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the escrow key lives.
fn key_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("escrow.key")
}

/// Refuse an escrow key file that group or others may read (checked at start and on use);
/// a missing one is fine (it is created on first use).
pub fn check_key_file(data_dir: &Path) -> Result<(), files::SecretFileError> {
    files::check_secret_permissions_if_present(&key_path(data_dir))
}

fn sealing_key(data_dir: &Path) -> Result<LessSafeKey, EscrowError> {
    let path = key_path(data_dir);
    check_key_file(data_dir).map_err(|e| EscrowError::Key(e.to_string()))?;
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            aws_lc_rs::rand::fill(&mut key)
                .map_err(|_| EscrowError::Key("no system randomness".into()))?;
            files::write_secret(&path, &key)
                .map_err(|e| EscrowError::Key(format!("{}: {e}", path.display())))?;
            key.to_vec()
        }
        Err(e) => return Err(EscrowError::Key(format!("{}: {e}", path.display()))),
    };
    let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
        .map_err(|_| EscrowError::Key("must be 32 bytes".into()))?;
    Ok(LessSafeKey::new(unbound))
}

/// Seal `pkcs8` for the certificate `serial` and store it (durably).
pub async fn deposit(pipeline: &Pipeline, serial: &str, pkcs8: &[u8]) -> Result<(), EscrowError> {
    let key = sealing_key(&pipeline.config().server.data_dir)?;
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| EscrowError::Crypto)?;
    let mut sealed = pkcs8.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(serial.as_bytes()),
        &mut sealed,
    )
    .map_err(|_| EscrowError::Crypto)?;
    let mut record = nonce.to_vec();
    record.extend_from_slice(&sealed);
    let serial = serial.to_string();
    pipeline
        .with_store(move |store| store.protocol_put(NAMESPACE, &serial, &record, true))
        .await?;
    Ok(())
}

/// The escrowed PKCS#8 key of `serial`, if one was kept.
pub async fn withdraw(pipeline: &Pipeline, serial: &str) -> Result<Option<Vec<u8>>, EscrowError> {
    let owned = serial.to_string();
    let Some(record) = pipeline
        .with_store(move |store| store.protocol_get(NAMESPACE, &owned))
        .await?
    else {
        return Ok(None);
    };
    if record.len() < NONCE_LEN {
        return Err(EscrowError::Crypto);
    }
    let key = sealing_key(&pipeline.config().server.data_dir)?;
    let (nonce, sealed) = record.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| EscrowError::Crypto)?;
    let mut buffer = sealed.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(serial.as_bytes()), &mut buffer)
        .map_err(|_| EscrowError::Crypto)?;
    Ok(Some(plain.to_vec()))
}
