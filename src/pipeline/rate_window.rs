//! The count behind a template's `rate_limit_per_day`: certificates one identity got on one
//! template over the last 24 hours, kept in memory per (template, identity) and reserved
//! before the CA is asked.
//!
//! A request on a rate-limited template takes a [`Reservation`] before policy decides: it
//! counts as one of the day's issuances while it is decided and issued, becomes one when
//! issued, and is given back as soon as it is denied or held for approval, or when the CA
//! fails. So concurrent requests of one identity cannot all pass the same count, and
//! nothing waits for anything else: requests of other identities, or of one identity under
//! its limit, go on at once.
//!
//! The store keeps a mark per issuance (namespace [`NAMESPACE`], key
//! `<template>/<hex identity>/<issued at, ns, 20 digits>.<request id>`), written just before
//! the issuance's own durable change and so made durable by its flush. A window is read
//! from its marks the first time it is needed after a start; marks older than a day are
//! removed then and whenever the window moves past them.
//!
//! May import: the store trait.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::{Store, StoreError};

/// Store namespace of the issuance marks.
pub const NAMESPACE: &str = "ratelimit";

/// How far back issuances count.
const WINDOW: time::Duration = time::Duration::days(1);

/// (template, identity)
type WindowKey = (String, String);

/// The issuances of one (template, identity) in the last day, oldest first, and the
/// requests under way that count as issuances until they end.
#[derive(Debug, Default)]
struct Window {
    issued: VecDeque<(i128, Uuid)>,
    reserved: u32,
}

impl Window {
    fn count(&self) -> u32 {
        u32::try_from(self.issued.len())
            .unwrap_or(u32::MAX)
            .saturating_add(self.reserved)
    }
}

/// Every rate-limited (template, identity) seen since the start.
#[derive(Debug, Default)]
pub struct RateWindows {
    windows: Arc<Mutex<HashMap<WindowKey, Window>>>,
}

/// One request's place in its window's count; given back when dropped unless
/// [`RateWindows::record`] turned it into an issuance.
#[derive(Debug)]
pub struct Reservation {
    windows: Arc<Mutex<HashMap<WindowKey, Window>>>,
    /// `None` once recorded as an issuance.
    key: Option<WindowKey>,
    /// The window's count before this reservation (what policy compares with the limit).
    before: u32,
}

impl Reservation {
    /// Issuances and other reservations of the window when this one was taken.
    pub fn count_before(&self) -> u32 {
        self.before
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        if let Some(window) = lock(&self.windows).get_mut(&key) {
            window.reserved = window.reserved.saturating_sub(1);
        }
    }
}

fn lock(windows: &Mutex<HashMap<WindowKey, Window>>) -> MutexGuard<'_, HashMap<WindowKey, Window>> {
    windows.lock().unwrap_or_else(|e| e.into_inner())
}

fn prefix(template: &str, identity: &str) -> String {
    format!("{template}/{}/", hex::encode(identity))
}

fn mark_key(template: &str, identity: &str, at: i128, request_id: Uuid) -> String {
    format!("{}{at:020}.{request_id}", prefix(template, identity))
}

/// `(issued at, request id)` of a mark's key (after its prefix); `None` for a key that is
/// not a mark.
fn parse_mark(rest: &str) -> Option<(i128, Uuid)> {
    let (at, request_id) = rest.split_once('.')?;
    Some((at.parse().ok()?, request_id.parse().ok()?))
}

impl RateWindows {
    /// The window's count now, taking nothing (dry runs).
    pub fn count(
        &self,
        store: &dyn Store,
        template: &str,
        identity: &str,
        now: OffsetDateTime,
    ) -> Result<u32, StoreError> {
        self.with_window(store, template, identity, now, |window| window.count())
    }

    /// Reserve a place in the window: the count before it is what the request is decided on.
    pub fn reserve(
        &self,
        store: &dyn Store,
        template: &str,
        identity: &str,
        now: OffsetDateTime,
    ) -> Result<Reservation, StoreError> {
        let before = self.with_window(store, template, identity, now, |window| {
            let before = window.count();
            window.reserved += 1;
            before
        })?;
        Ok(Reservation {
            windows: self.windows.clone(),
            key: Some((template.to_string(), identity.to_string())),
            before,
        })
    }

    /// Count an issuance at `at` (its reservation, if it had one, becomes it) and write its
    /// mark, not flushed: the issuance's own durable change, written next, flushes it. The
    /// window is in memory before the mark is written, so a read of the marks never counts
    /// it a second time.
    pub fn record(
        &self,
        store: &dyn Store,
        template: &str,
        identity: &str,
        at: OffsetDateTime,
        request_id: Uuid,
        reservation: Option<Reservation>,
    ) -> Result<(), StoreError> {
        let at_ns = at.unix_timestamp_nanos();
        // The reservation becomes the issuance below, in the same step; one of another
        // window (there is none) would just be given back.
        let reserved_here = reservation.is_some_and(|mut reservation| {
            let ours = reservation
                .key
                .as_ref()
                .is_some_and(|(t, i)| t == template && i == identity);
            if ours {
                reservation.key = None;
            }
            ours
        });
        self.with_window(store, template, identity, at, |window| {
            // Issuances are recorded in the order they end, whose times may be a little out
            // of order under concurrency: kept sorted for the pruning.
            let place = window.issued.partition_point(|&(t, _)| t <= at_ns);
            window.issued.insert(place, (at_ns, request_id));
            if reserved_here {
                window.reserved = window.reserved.saturating_sub(1);
            }
        })?;
        store.protocol_put(
            NAMESPACE,
            &mark_key(template, identity, at_ns, request_id),
            b"",
            false,
        )
    }

    /// Run `f` on the window of (template, identity) moved to `now`: read from the store's
    /// marks when not in memory yet, and its issuances older than a day dropped (their
    /// marks removed from the store, not flushed: a mark that comes back after a crash is
    /// older than a day and is dropped again).
    fn with_window<T>(
        &self,
        store: &dyn Store,
        template: &str,
        identity: &str,
        now: OffsetDateTime,
        f: impl FnOnce(&mut Window) -> T,
    ) -> Result<T, StoreError> {
        let key = (template.to_string(), identity.to_string());
        let cutoff = (now - WINDOW).unix_timestamp_nanos();
        if !lock(&self.windows).contains_key(&key) {
            // Read outside the lock; a window another request loaded meanwhile wins (it may
            // count an issuance recorded since, which this read might have missed).
            let loaded = load(store, template, identity)?;
            lock(&self.windows).entry(key.clone()).or_insert(loaded);
        }
        let (result, expired) = {
            let mut windows = lock(&self.windows);
            let window = windows.entry(key.clone()).or_default();
            let mut expired = Vec::new();
            while window.issued.front().is_some_and(|&(t, _)| t < cutoff) {
                expired.extend(window.issued.pop_front());
            }
            let result = f(window);
            // A window with nothing in it is read again (from no marks) when next needed:
            // memory holds only the identities with issuances in the last day.
            if window.issued.is_empty() && window.reserved == 0 {
                windows.remove(&key);
            }
            (result, expired)
        };
        for (at, request_id) in expired {
            store.protocol_delete(
                NAMESPACE,
                &mark_key(template, identity, at, request_id),
                false,
            )?;
        }
        Ok(result)
    }
}

/// A window as the store's marks have it (in key order, which is time order).
fn load(store: &dyn Store, template: &str, identity: &str) -> Result<Window, StoreError> {
    let prefix = prefix(template, identity);
    let issued = store
        .protocol_scan(NAMESPACE, &prefix)?
        .into_iter()
        .filter_map(|(key, _)| key.strip_prefix(&prefix).and_then(parse_mark))
        .collect();
    Ok(Window {
        issued,
        reserved: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn reservations_count_until_given_back_or_recorded() {
        let (_dir, store) = store();
        let windows = RateWindows::default();
        let now = OffsetDateTime::now_utc();
        let first = windows.reserve(&store, "server", "ci", now).unwrap();
        let second = windows.reserve(&store, "server", "ci", now).unwrap();
        assert_eq!((first.count_before(), second.count_before()), (0, 1));
        // Other templates and identities have windows of their own.
        assert_eq!(windows.count(&store, "client", "ci", now).unwrap(), 0);
        assert_eq!(windows.count(&store, "server", "bob", now).unwrap(), 0);
        drop(second);
        assert_eq!(windows.count(&store, "server", "ci", now).unwrap(), 1);
        windows
            .record(&store, "server", "ci", now, Uuid::now_v7(), Some(first))
            .unwrap();
        // Recorded: one issuance, no reservation left (dropping it gave nothing back twice).
        assert_eq!(windows.count(&store, "server", "ci", now).unwrap(), 1);
        let third = windows.reserve(&store, "server", "ci", now).unwrap();
        assert_eq!(third.count_before(), 1);
    }

    #[test]
    fn only_windows_with_something_in_them_stay_in_memory() {
        let (_dir, store) = store();
        let windows = RateWindows::default();
        let now = OffsetDateTime::now_utc();
        assert_eq!(windows.count(&store, "server", "idle", now).unwrap(), 0);
        let reservation = windows.reserve(&store, "server", "busy", now).unwrap();
        windows
            .record(&store, "server", "done", now, Uuid::now_v7(), None)
            .unwrap();
        let in_memory = |windows: &RateWindows| lock(&windows.windows).len();
        assert_eq!(in_memory(&windows), 2);
        drop(reservation);
        assert_eq!(windows.count(&store, "server", "busy", now).unwrap(), 0);
        assert_eq!(in_memory(&windows), 1);
        // A day later the last one goes too.
        let later = now + time::Duration::hours(25);
        assert_eq!(windows.count(&store, "server", "done", later).unwrap(), 0);
        assert_eq!(in_memory(&windows), 0);
    }

    #[test]
    fn the_window_is_read_back_from_the_marks_and_moves_on_after_a_day() {
        let (_dir, store) = store();
        let start = OffsetDateTime::now_utc();
        let windows = RateWindows::default();
        for hours in [0, 2, 4] {
            let at = start + time::Duration::hours(hours);
            windows
                .record(&store, "server", "ci", at, Uuid::now_v7(), None)
                .unwrap();
        }
        // A new start reads the marks.
        let later = start + time::Duration::hours(5);
        let restarted = RateWindows::default();
        assert_eq!(restarted.count(&store, "server", "ci", later).unwrap(), 3);
        // 25 hours after the first: it no longer counts, and its mark is gone.
        let next_day = start + time::Duration::hours(25);
        assert_eq!(
            restarted.count(&store, "server", "ci", next_day).unwrap(),
            2
        );
        let marks = store
            .protocol_scan(NAMESPACE, &prefix("server", "ci"))
            .unwrap();
        assert_eq!(marks.len(), 2);
        assert_eq!(
            RateWindows::default()
                .count(&store, "server", "ci", next_day)
                .unwrap(),
            2
        );
        // Not a mark: ignored.
        store
            .protocol_put(
                NAMESPACE,
                &format!("{}junk", prefix("server", "ci")),
                b"",
                false,
            )
            .unwrap();
        assert_eq!(
            RateWindows::default()
                .count(&store, "server", "ci", next_day)
                .unwrap(),
            2
        );
    }
}
