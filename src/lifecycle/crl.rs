//! Certificate revocation lists (RFC 5280 §5) for the built-in CA: signed by the CA
//! adapter, numbered from a counter kept in the store, listing every revoked certificate
//! with its time and reason. The current CRL is kept in memory and replaced after every
//! revocation and once half of its validity has passed, so every reader (SCEP GetCRL, the
//! publication endpoint) gets a fresh one without re-signing on each request, nor reading
//! the revoked certificates unless one was revoked since (the store counts revocations).

use time::{Duration, OffsetDateTime};
use tokio::sync::Mutex;

use crate::ca::{CaError, CrlOrder};
use crate::pipeline::Pipeline;
use crate::store::StoreError;

/// Protocol-state namespace and key of the last CRL number.
const NUMBER: (&str, &str) = ("crl", "number");

/// Why no CRL could be produced.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The CA refused or failed.
    #[error(transparent)]
    Ca(#[from] CaError),
}

#[derive(Debug)]
struct Current {
    der: Vec<u8>,
    /// [`crate::store::Store::revocations_since_open`] before its list was read.
    revocations: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
}

/// The CA's current CRL.
#[derive(Debug)]
pub struct Crls {
    pipeline: Pipeline,
    current: Mutex<Option<Current>>,
}

impl Crls {
    /// For `pipeline`'s CA.
    pub fn new(pipeline: Pipeline) -> Self {
        Crls {
            pipeline,
            current: Mutex::new(None),
        }
    }

    /// The current CRL, DER; signs a new one when a certificate was revoked since the
    /// last, or half of its validity has passed.
    pub async fn current(&self) -> Result<Vec<u8>, CrlError> {
        let mut current = self.current.lock().await;
        // Read before the list: a revocation in between makes the next call sign again.
        let revocations = self.pipeline.store().revocations_since_open();
        let now = self.pipeline.clock().now();
        if let Some(crl) = current.as_ref() {
            let half = crl.this_update + (crl.next_update - crl.this_update) / 2;
            if crl.revocations == revocations && now < half {
                return Ok(crl.der.clone());
            }
        }
        // Only the built-in CA's certificates: upstream CAs publish their own revocations.
        let own_issuer = self.pipeline.ca().id().to_string();
        let only_built_in = !self.pipeline.has_other_cas();
        let revoked = self
            .pipeline
            .with_store(move |store| {
                let mut own = store.revoked()?;
                if only_built_in {
                    return Ok(own);
                }
                let mut kept = Vec::with_capacity(own.len());
                for (serial, revocation) in own.drain(..) {
                    if store
                        .certificate(&serial)?
                        .is_none_or(|cert| cert.issuer == own_issuer)
                    {
                        kept.push((serial, revocation));
                    }
                }
                Ok(kept)
            })
            .await?;
        let number = self
            .pipeline
            .with_store(|store| {
                let last = store
                    .protocol_get(NUMBER.0, NUMBER.1)?
                    .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                store.protocol_put(NUMBER.0, NUMBER.1, &(last + 1).to_be_bytes(), true)?;
                Ok(last + 1)
            })
            .await?;
        let validity = Duration::hours(self.pipeline.config().ca.crl_validity_hours.into());
        let order = CrlOrder {
            number,
            this_update: now,
            next_update: now + validity,
            revoked: revoked
                .iter()
                .filter_map(|(serial, revocation)| {
                    Some((
                        hex::decode(serial).ok()?,
                        revocation.revoked_at,
                        revocation.reason.code(),
                    ))
                })
                .collect(),
        };
        let der = self.pipeline.ca().sign_crl(&order).await?;
        tracing::info!(number, entries = order.revoked.len(), "signed a CRL");
        *current = Some(Current {
            der: der.clone(),
            revocations,
            this_update: order.this_update,
            next_update: order.next_update,
        });
        Ok(der)
    }
}
