//! How many audit records of refusals before a request (refused credentials, ACME
//! pre-checks, CAA) a minute may hold, and the account of those left unrecorded.
//!
//! A flood of wrong passwords, challenges, API keys or forbidden names must not fill the
//! disk with records and the store with flushes, and a flood under one name must not crowd
//! the refusals of other names out of the minute: each source (the identity a refusal is
//! recorded under, the actor, from one client address) gets at most
//! [`PER_SOURCE_PER_MINUTE`] records, all of them together at most [`PER_MINUTE`]. So a
//! device sending a wrong SCEP challenge again and again does not hide other devices'
//! wrong challenges, which share the profile's identity. Nothing goes without trace: the
//! next record written carries how many refusals went unrecorded since the one before, and
//! under which actors.
//!
//! What a record holds is bounded too: the claimed name, the reason and every string of
//! the details come from the request, such as an EST user name from a 400 KB header, and
//! are clipped to [`TEXT_KEPT`] characters ([`clip`], [`clip_details`]).
//!
//! Pure bookkeeping, no I/O: the pipeline asks [`RefusalWindow::admit`] before writing.
//! Imports nothing of the crate.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde_json::Value;

/// Records of refusals all actors together may write in a minute.
pub const PER_MINUTE: u32 = 60;

/// Records of refusals under one actor from one client address in a minute.
pub const PER_SOURCE_PER_MINUTE: u32 = 10;

/// Actors the account of unrecorded refusals names one by one; refusals under further
/// actors are counted together.
pub const UNRECORDED_ACTORS_NAMED: usize = 20;

/// Characters a refusal's record and log line keep of each string they are given.
pub const TEXT_KEPT: usize = 512;

/// Items a refusal's record keeps of each list in its details.
pub const ITEMS_KEPT: usize = 32;

/// `text` clipped to [`TEXT_KEPT`] characters; a clipped one ends saying how long it was.
pub fn clip(text: String) -> String {
    match text.char_indices().nth(TEXT_KEPT) {
        None => text,
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
    }
}

/// `details` with every string (and key) clipped and every list cut to [`ITEMS_KEPT`]
/// items, the last then saying how many were left out.
pub fn clip_details(details: Value) -> Value {
    match details {
        Value::String(text) => Value::String(clip(text)),
        Value::Array(items) => {
            let total = items.len();
            let mut kept: Vec<Value> = items
                .into_iter()
                .take(ITEMS_KEPT)
                .map(clip_details)
                .collect();
            if total > ITEMS_KEPT {
                kept.push(Value::String(format!("… {} more", total - ITEMS_KEPT)));
            }
            Value::Array(kept)
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (clip(key), clip_details(value)))
                .collect(),
        ),
        other => other,
    }
}

/// The minute being counted and what it has recorded so far.
#[derive(Debug, Default)]
pub struct RefusalWindow {
    /// Minutes since the epoch.
    minute: i64,
    recorded: u32,
    /// Records this minute, by actor and client address (at most [`PER_MINUTE`] entries).
    recorded_by_source: HashMap<(String, Option<IpAddr>), u32>,
    /// Refusals not recorded since the last record (across minutes).
    unrecorded: Unrecorded,
}

/// Refusals that went unrecorded since the last record written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unrecorded {
    pub total: u64,
    /// By actor, for the first [`UNRECORDED_ACTORS_NAMED`] actors.
    pub by_actor: BTreeMap<String, u64>,
    /// Under actors beyond those named.
    pub other_actors: u64,
}

impl Unrecorded {
    fn count(&mut self, actor: &str) {
        self.total += 1;
        if let Some(count) = self.by_actor.get_mut(actor) {
            *count += 1;
        } else if self.by_actor.len() < UNRECORDED_ACTORS_NAMED {
            self.by_actor.insert(actor.to_string(), 1);
        } else {
            self.other_actors += 1;
        }
    }

    /// Whether nothing went unrecorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl RefusalWindow {
    /// A refusal under `actor` from `client` in `minute` (minutes since the epoch): `Some`
    /// with what went unrecorded before it when it is to be recorded, `None` when it goes
    /// unrecorded (it is then counted for the next record).
    pub fn admit(
        &mut self,
        minute: i64,
        actor: &str,
        client: Option<IpAddr>,
    ) -> Option<Unrecorded> {
        if self.minute != minute {
            self.minute = minute;
            self.recorded = 0;
            self.recorded_by_source.clear();
        }
        let source = (actor.to_string(), client);
        let by_source = self.recorded_by_source.get(&source).copied().unwrap_or(0);
        if self.recorded >= PER_MINUTE || by_source >= PER_SOURCE_PER_MINUTE {
            self.unrecorded.count(actor);
            return None;
        }
        self.recorded += 1;
        self.recorded_by_source.insert(source, by_source + 1);
        Some(std::mem::take(&mut self.unrecorded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_and_long_lists_are_clipped_and_say_so() {
        assert_eq!(clip("alice".into()), "alice");
        let exactly = "é".repeat(TEXT_KEPT);
        assert_eq!(clip(exactly.clone()), exactly);
        let long = "é".repeat(100_000);
        let clipped = clip(long);
        assert!(clipped.starts_with(&"é".repeat(TEXT_KEPT)));
        assert!(clipped.ends_with("… (200000 bytes)"), "{clipped}");
        assert_eq!(
            clipped.chars().count(),
            TEXT_KEPT + "… (200000 bytes)".len() - 2
        );

        let names: Vec<Value> = (0..1000).map(|n| format!("dns:n{n}.test").into()).collect();
        let details = serde_json::json!({
            "names": names,
            "user": "x".repeat(10_000),
            "serial": 7,
        });
        let clipped = clip_details(details);
        let names = clipped["names"].as_array().unwrap();
        assert_eq!(names.len(), ITEMS_KEPT + 1);
        assert_eq!(names[ITEMS_KEPT], "… 968 more");
        assert!(clipped["user"].as_str().unwrap().len() < 600);
        assert_eq!(clipped["serial"], 7);
    }

    fn address(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn one_actor_floods_only_its_own_share_of_the_minute() {
        let mut window = RefusalWindow::default();
        let admitted = (0..25)
            .filter(|_| window.admit(1, "mallory", address(66)).is_some())
            .count();
        assert_eq!(admitted, PER_SOURCE_PER_MINUTE as usize);
        let alice = window
            .admit(1, "alice", address(66))
            .expect("another actor is still recorded");
        assert_eq!(alice.total, 15);
        assert_eq!(alice.by_actor, BTreeMap::from([("mallory".into(), 15)]));
        assert!(window.admit(1, "alice", address(66)).unwrap().is_empty());
    }

    #[test]
    fn one_address_floods_only_its_own_share_of_an_actor_shared_by_many() {
        // SCEP devices share their profile's identity: a device sending a wrong challenge
        // again and again must not hide another device's.
        let mut window = RefusalWindow::default();
        let flooding = (0..25)
            .filter(|_| window.admit(1, "scep:default", address(66)).is_some())
            .count();
        assert_eq!(flooding, PER_SOURCE_PER_MINUTE as usize);
        let other = window
            .admit(1, "scep:default", address(7))
            .expect("another address under the same actor is still recorded");
        assert_eq!(
            other.by_actor,
            BTreeMap::from([("scep:default".into(), 15)])
        );
        assert!(window.admit(1, "scep:default", None).is_some());
    }

    #[test]
    fn all_actors_together_stop_at_the_minute_bound_and_the_next_minute_tells_what_went_unrecorded()
    {
        let mut window = RefusalWindow::default();
        let admitted = (0..100)
            .filter(|n| window.admit(7, &format!("guess-{n}"), None).is_some())
            .count();
        assert_eq!(admitted, PER_MINUTE as usize);
        assert!(window.admit(7, "alice", address(1)).is_none());
        let next = window
            .admit(8, "guess-0", None)
            .expect("a new minute records again");
        assert_eq!(next.total, 41);
        assert_eq!(next.by_actor.len(), UNRECORDED_ACTORS_NAMED);
        assert_eq!(next.other_actors, 41 - UNRECORDED_ACTORS_NAMED as u64);
        assert_eq!(next.by_actor.get("guess-60"), Some(&1));
        assert!(window.admit(8, "guess-1", None).unwrap().is_empty());
    }
}
