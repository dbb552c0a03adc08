//! Anti-replay nonces (RFC 8555 §7.2): random, single use, a bounded set in memory. A
//! restart forgets them; clients get `badNonce` with a fresh nonce and retry.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The outstanding nonces.
#[derive(Debug)]
pub struct NonceStore {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashSet<String>,
    order: VecDeque<String>,
}

impl NonceStore {
    /// A store keeping at most `capacity` unused nonces (the oldest are forgotten first).
    pub fn new(capacity: usize) -> Self {
        NonceStore {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    /// A fresh nonce.
    pub fn issue(&self) -> String {
        let bytes: [u8; 16] = rand::random();
        let nonce = URL_SAFE_NO_PAD.encode(bytes);
        let mut inner = self.inner.lock().expect("nonce lock");
        while inner.order.len() >= self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.live.remove(&old);
            }
        }
        inner.live.insert(nonce.clone());
        inner.order.push_back(nonce.clone());
        nonce
    }

    /// Use up `nonce`; `false` if it was never issued, already used or forgotten.
    pub fn consume(&self, nonce: &str) -> bool {
        let mut inner = self.inner.lock().expect("nonce lock");
        // The VecDeque entry stays until it ages out; `live` is the truth.
        inner.live.remove(nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use_and_bounded() {
        let store = NonceStore::new(2);
        let a = store.issue();
        assert!(store.consume(&a));
        assert!(!store.consume(&a), "replay");
        let b = store.issue();
        let _c = store.issue();
        let _d = store.issue();
        assert!(!store.consume(&b), "evicted");
        assert!(!store.consume("never-issued"));
    }
}
