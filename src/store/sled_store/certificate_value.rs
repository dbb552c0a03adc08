//! The `certificates` tree's value: a certificate record with its DER as raw bytes, and its
//! issuer chain kept once per chain in `meta` rather than in every record.
//!
//! Every certificate of an issuing CA carries the same chain (~650 bytes of base64 for the
//! built-in CA's), and base64 makes the DER a third larger. sled writes a record again each
//! time it rewrites the leaf that holds it, so the bytes of a record are paid many times
//! over: at a million certificates the chains alone were ~650 MB.
//!
//! Layout (schema version 3):
//!
//! ```text
//! 0x01                       format
//! 0x00 | 0x01 <32 bytes>     no chain | the chain's id (SHA-256, see `chain_id`)
//! u32 BE, then that many     the record as JSON, with `der` empty and `chain` empty
//! the rest                   the certificate, DER
//! ```
//!
//! A value that starts with `{` is a record written before (JSON with both in base64): it
//! is read as it is. `meta` holds `chain/<id>` → the chain (per certificate a u32 BE length
//! and the DER), written in the same change as the first record that refers to it and never
//! changed or removed.
//!
//! May import: the parent module (errors, `decode`), model, aws-lc-rs (the digest), std.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{backend, decode, StoreError};
use crate::model::CertificateRecord;

/// The format byte of a value in this layout.
const FORMAT: u8 = 1;
/// Prefix of a chain's key in `meta`.
const CHAIN_PREFIX: &[u8] = b"chain/";

/// A chain's id: SHA-256 over each certificate's length (u32 BE) and DER, in order.
pub(super) type ChainId = [u8; 32];

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tree: "certificates",
        reason: reason.into(),
    }
}

/// The id of `chain`, `None` for an empty one.
pub(super) fn chain_id(chain: &[Vec<u8>]) -> Option<ChainId> {
    if chain.is_empty() {
        return None;
    }
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for der in chain {
        digest.update(&(der.len() as u32).to_be_bytes());
        digest.update(der);
    }
    let mut id = [0; 32];
    id.copy_from_slice(digest.finish().as_ref());
    Some(id)
}

/// `meta` key of a chain.
pub(super) fn chain_key(id: &ChainId) -> Vec<u8> {
    [CHAIN_PREFIX, id.as_slice()].concat()
}

/// A chain as `meta` keeps it.
pub(super) fn encode_chain(chain: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chain.iter().map(|der| 4 + der.len()).sum());
    for der in chain {
        out.extend_from_slice(&(der.len() as u32).to_be_bytes());
        out.extend_from_slice(der);
    }
    out
}

/// The bytes a u32 BE length at the start of `bytes` announces, and what follows them.
fn length_prefixed<'a>(bytes: &'a [u8], what: &str) -> Result<(&'a [u8], &'a [u8]), StoreError> {
    let truncated = || corrupt(format!("truncated {what}"));
    let (length, rest) = bytes.split_first_chunk::<4>().ok_or_else(truncated)?;
    let length = u32::from_be_bytes(*length) as usize;
    if rest.len() < length {
        return Err(truncated());
    }
    Ok(rest.split_at(length))
}

fn decode_chain(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut chain = Vec::new();
    while !bytes.is_empty() {
        let (der, rest) = length_prefixed(bytes, "chain")?;
        chain.push(der.to_vec());
        bytes = rest;
    }
    Ok(chain)
}

/// `cert` as the `certificates` tree keeps it, its chain referred to by `chain`
/// (`chain_id(&cert.chain)`; the chain must be in `meta` by the time this value is).
pub(super) fn encode(cert: &CertificateRecord, chain: Option<&ChainId>) -> Vec<u8> {
    let header = serde_json::to_vec(&CertificateRecord {
        der: Vec::new(),
        chain: Vec::new(),
        ..cert.clone()
    })
    .expect("store records serialize");
    let mut out = Vec::with_capacity(1 + 33 + 4 + header.len() + cert.der.len());
    out.push(FORMAT);
    match chain {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            out.extend_from_slice(id);
        }
    }
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&cert.der);
    out
}

/// A stored record, its chain still to be looked up when it refers to one (a record
/// written before this layout has its chain in place, and refers to none).
pub(super) fn decode_record(
    bytes: &[u8],
) -> Result<(CertificateRecord, Option<ChainId>), StoreError> {
    let Some((&format, rest)) = bytes.split_first() else {
        return Err(corrupt("empty value"));
    };
    if format == b'{' {
        return Ok((decode("certificates", bytes)?, None));
    }
    if format != FORMAT {
        return Err(corrupt(format!("unknown value format {format}")));
    }
    let (chain, rest) = match rest.split_first() {
        Some((0, rest)) => (None, rest),
        Some((1, rest)) => {
            let (id, rest) = rest
                .split_first_chunk::<32>()
                .ok_or_else(|| corrupt("truncated chain id"))?;
            (Some(*id), rest)
        }
        _ => return Err(corrupt("bad chain reference")),
    };
    let (header, der) = length_prefixed(rest, "header")?;
    let mut cert: CertificateRecord = decode("certificates", header)?;
    cert.der = der.to_vec();
    Ok((cert, chain))
}

/// The chains certificate records refer to, as read from (or found in) `meta`: a handful
/// per store, each kept in memory once seen.
#[derive(Debug)]
pub(super) struct Chains {
    meta: sled::Tree,
    seen: RwLock<HashMap<ChainId, Arc<Vec<Vec<u8>>>>>,
}

impl Chains {
    pub(super) fn new(meta: sled::Tree) -> Self {
        Chains {
            meta,
            seen: RwLock::new(HashMap::new()),
        }
    }

    /// The chain `id`; an error when no chain of that id is stored.
    pub(super) fn get(&self, id: &ChainId) -> Result<Arc<Vec<Vec<u8>>>, StoreError> {
        self.find(id)?
            .ok_or_else(|| corrupt(format!("chain {} is missing", hex::encode(id))))
    }

    /// Whether chain `id` is in `meta` already (written by a change that is complete).
    pub(super) fn is_stored(&self, id: &ChainId) -> Result<bool, StoreError> {
        Ok(self.find(id)?.is_some())
    }

    fn find(&self, id: &ChainId) -> Result<Option<Arc<Vec<Vec<u8>>>>, StoreError> {
        if let Some(chain) = self.seen.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Ok(Some(chain.clone()));
        }
        let Some(bytes) = self.meta.get(chain_key(id)).map_err(backend)? else {
            return Ok(None);
        };
        let chain = Arc::new(decode_chain(&bytes)?);
        self.seen
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*id, chain.clone());
        Ok(Some(chain))
    }

    /// The record in `bytes`, chain included.
    pub(super) fn record(&self, bytes: &[u8]) -> Result<CertificateRecord, StoreError> {
        let (mut cert, chain) = decode_record(bytes)?;
        if let Some(id) = chain {
            cert.chain = self.get(&id)?.as_ref().clone();
        }
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(chain: Vec<Vec<u8>>) -> CertificateRecord {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        CertificateRecord {
            serial: "0a1b".into(),
            request_id: uuid::Uuid::now_v7(),
            protocol: crate::model::Protocol::Api,
            owner: "alice".into(),
            template: "server".into(),
            issuer: "local".into(),
            subject: "CN=a.example".into(),
            sans: vec![crate::model::Identifier::Dns("a.example".into())],
            key_type: crate::model::KeyType::EcdsaP256,
            not_before: now,
            not_after: now + time::Duration::days(30),
            sha256_fingerprint: "00".repeat(32),
            resource: None,
            metadata: Default::default(),
            status: crate::model::StoredStatus::Valid,
            revocation: None,
            der: vec![0x30, 0x03, 0x02, 0x01, 0x05],
            chain,
        }
    }

    fn store() -> (tempfile::TempDir, Chains) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .temporary(true)
            .path(dir.path())
            .open()
            .unwrap();
        (dir, Chains::new(db.open_tree("meta").unwrap()))
    }

    #[test]
    fn a_record_reads_back_with_its_chain_from_meta() {
        let (_dir, chains) = store();
        let cert = record(vec![vec![1, 2, 3], vec![4; 300]]);
        let id = chain_id(&cert.chain).unwrap();
        assert!(!chains.is_stored(&id).unwrap());
        chains
            .meta
            .insert(chain_key(&id), encode_chain(&cert.chain))
            .unwrap();
        assert!(chains.is_stored(&id).unwrap());
        let bytes = encode(&cert, Some(&id));
        assert_eq!(chains.record(&bytes).unwrap(), cert);
        // The chain is not in the value: only its id.
        assert!(bytes.len() < cert.der.len() + 33 + 1 + 4 + 600);
        assert!(!bytes.windows(300).any(|w| w == [4; 300].as_slice()));
    }

    #[test]
    fn a_record_without_chain_and_a_record_of_the_json_layout_read_back() {
        let (_dir, chains) = store();
        let bare = record(Vec::new());
        assert_eq!(chains.record(&encode(&bare, None)).unwrap(), bare);
        let legacy = record(vec![vec![9; 40]]);
        let json = serde_json::to_vec(&legacy).unwrap();
        assert_eq!(chains.record(&json).unwrap(), legacy);
    }

    #[test]
    fn a_missing_chain_or_a_damaged_value_is_corrupt_not_a_panic() {
        let (_dir, chains) = store();
        let cert = record(vec![vec![7; 10]]);
        let id = chain_id(&cert.chain).unwrap();
        let bytes = encode(&cert, Some(&id));
        assert!(matches!(
            chains.record(&bytes),
            Err(StoreError::Corrupt { .. })
        ));
        for cut in 0..bytes.len() - cert.der.len() {
            assert!(matches!(
                chains.record(&bytes[..cut]),
                Err(StoreError::Corrupt { .. })
            ));
        }
        assert!(matches!(
            chains.record(&[7, 0]),
            Err(StoreError::Corrupt { .. })
        ));
        chains
            .meta
            .insert(chain_key(&id), &[0, 0, 0, 9, 1][..])
            .unwrap();
        assert!(matches!(
            chains.record(&bytes),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
