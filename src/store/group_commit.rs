//! Group commit: changes that must be durable share flushes, run by one thread per store.
//!
//! A change is written (in memory, where the backend keeps it until its next flush), then
//! asks for a flush and gets a [`Flush`]: a ticket that completes once a flush begun after
//! the request has succeeded. Async callers await it without holding a runtime thread;
//! blocking callers [`Flush::wait`]. Requests arriving while a flush runs are covered by
//! the next one, so under load N durable changes cost far fewer than N log syncs, with the
//! same guarantee: durable once the ticket completes.
//!
//! A flush is costly beyond its disk write (sled hands each log write to its I/O threads,
//! waking all of them), so a change that will need one announces itself first
//! ([`GroupCommit::announce`]); a flush about to start while announced changes are still
//! being written waits for them, at most [`COMMIT_DELAY`], and covers them too. Alone, a
//! change never waits.
//!
//! Backend-neutral: the flush is a function given at construction. Imports tokio's
//! `Notify` only (how awaiting callers are woken).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::StoreError;

/// The longest a flush waits for announced changes.
pub const COMMIT_DELAY: Duration = Duration::from_millis(1);

/// What makes the backend's writes durable.
pub type FlushFn = Box<dyn Fn() -> Result<(), StoreError> + Send>;

/// The flushing thread and the tickets it serves; stopped (after a last flush of what was
/// asked) when dropped.
#[derive(Debug)]
pub struct GroupCommit {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// How long a flush waits for announced changes ([`COMMIT_DELAY`]).
    delay: Duration,
    state: Mutex<CommitState>,
    /// The flusher's cue: a flush asked for, an announced change written, or closing.
    work: Condvar,
    /// Signalled after each flush, for blocking waiters.
    flushed: Condvar,
    /// Notified after each flush, for awaiting waiters.
    flushed_async: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct CommitState {
    /// Flush requests so far (each caller's ticket).
    requested: u64,
    /// Requests covered by the flush running or done last.
    started: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// The last failed flush: the tickets it covered (those above `durable`) fail with
    /// its message.
    failure: Option<(u64, String)>,
    /// Announced changes not yet asking for their flush.
    coming: usize,
    /// The store is closing: flush what was asked, then stop.
    closing: bool,
    /// What the flusher waits for, if anything: whoever changes that wakes it (a condvar
    /// signal costs a system call, so none is sent otherwise).
    flusher: Flusher,
    /// Blocking callers waiting in [`Flush::wait`].
    blocked: usize,
}

#[derive(Debug, Default, PartialEq)]
enum Flusher {
    /// Flushing, or about to look at the state again.
    #[default]
    Busy,
    /// For a request (or closing).
    Idle,
    /// For the announced changes to ask.
    AwaitingAnnounced,
}

impl CommitState {
    /// How `ticket` ended, once it has.
    fn outcome(&self, ticket: u64) -> Option<Result<(), StoreError>> {
        if self.durable >= ticket {
            return Some(Ok(()));
        }
        match &self.failure {
            Some((covered, message)) if *covered >= ticket => {
                Some(Err(StoreError::Backend(message.clone())))
            }
            _ => None,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, CommitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The flushing thread's loop: flush whenever tickets are waiting, until closed.
    fn run(&self, flush: &FlushFn) {
        let mut state = self.lock();
        loop {
            while state.requested == state.started && !state.closing {
                state.flusher = Flusher::Idle;
                state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            state.flusher = Flusher::Busy;
            if state.requested == state.started {
                return;
            }
            let deadline = Instant::now() + self.delay;
            while state.coming > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state.flusher = Flusher::AwaitingAnnounced;
                state = self
                    .work
                    .wait_timeout(state, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            state.flusher = Flusher::Busy;
            let covers = state.requested;
            state.started = covers;
            drop(state);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(flush))
                .unwrap_or_else(|_| Err(StoreError::Backend("the store's flush panicked".into())));
            state = self.lock();
            match result {
                Ok(()) => state.durable = state.durable.max(covers),
                Err(error) => state.failure = Some((covers, error.to_string())),
            }
            if state.blocked > 0 {
                self.flushed.notify_all();
            }
            self.flushed_async.notify_waiters();
        }
    }
}

impl GroupCommit {
    /// Start the flushing thread over `flush`.
    pub fn start(flush: FlushFn) -> std::io::Result<Self> {
        Self::start_with(flush, COMMIT_DELAY)
    }

    fn start_with(flush: FlushFn, delay: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            delay,
            ..Shared::default()
        });
        let flusher = std::thread::Builder::new()
            .name("store-commit".into())
            .spawn({
                let shared = shared.clone();
                move || shared.run(&flush)
            })?;
        Ok(GroupCommit {
            shared,
            flusher: Some(flusher),
        })
    }

    /// A change that will need a flush begins.
    pub fn announce(&self) -> Announced<'_> {
        self.shared.lock().coming += 1;
        Announced(&self.shared)
    }

    /// Ask for a flush covering everything written before the call.
    pub fn request(&self) -> Flush {
        let mut state = self.shared.lock();
        state.requested += 1;
        let ticket = state.requested;
        let wake = state.flusher == Flusher::Idle;
        drop(state);
        if wake {
            self.shared.work.notify_one();
        }
        Flush {
            shared: self.shared.clone(),
            ticket,
        }
    }

    /// [`GroupCommit::request`] for an announced change, once written.
    pub fn request_announced(&self, announced: Announced<'_>) -> Flush {
        // Asked before the announcement ends, so that a flusher waiting for it covers it.
        let flush = self.request();
        drop(announced);
        flush
    }

    /// Return once everything written before the call is durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.request().wait()
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.work.notify_one();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

/// A change under way that will ask for a flush (see [`GroupCommit::announce`]); dropped
/// unused when the change fails.
#[must_use]
pub struct Announced<'a>(&'a Shared);

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.coming = state.coming.saturating_sub(1);
        let wake = state.coming == 0 && state.flusher == Flusher::AwaitingAnnounced;
        drop(state);
        if wake {
            self.0.work.notify_one();
        }
    }
}

/// A change written and its flush asked for: durable once this completes with `Ok`
/// (awaited, or [`Flush::wait`] on a blocking thread). Dropping it does not undo the change
/// or stop the flush; only the knowledge that it succeeded is lost.
#[derive(Debug)]
#[must_use = "a change is known durable only once its flush has completed"]
pub struct Flush {
    shared: Arc<Shared>,
    ticket: u64,
}

impl Flush {
    /// Block until the flush has completed.
    pub fn wait(self) -> Result<(), StoreError> {
        let mut state = self.shared.lock();
        loop {
            if let Some(outcome) = state.outcome(self.ticket) {
                return outcome;
            }
            state.blocked += 1;
            state = self
                .shared
                .flushed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
            state.blocked -= 1;
        }
    }

    /// Wait for the flush without blocking the runtime's thread.
    pub async fn completed(self) -> Result<(), StoreError> {
        loop {
            let notified = self.shared.flushed_async.notified();
            tokio::pin!(notified);
            // Registered before the check, so that a flush ending in between still wakes it.
            notified.as_mut().enable();
            if let Some(outcome) = self.shared.lock().outcome(self.ticket) {
                return outcome;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn counting(flushes: Arc<AtomicUsize>, fail: Arc<AtomicBool>) -> FlushFn {
        Box::new(move || {
            flushes.fetch_add(1, Ordering::SeqCst);
            match fail.load(Ordering::SeqCst) {
                true => Err(StoreError::Backend("disk full".into())),
                false => Ok(()),
            }
        })
    }

    #[test]
    fn a_ticket_completes_after_a_flush_begun_after_it() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let commits =
            GroupCommit::start(counting(flushes.clone(), Arc::default())).expect("thread");
        commits.sync().expect("flushed");
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
        commits.request().wait().expect("flushed");
        assert_eq!(flushes.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_flush_fails_the_tickets_it_covered_and_a_later_one_succeeds() {
        let fail = Arc::new(AtomicBool::new(true));
        let flushes = Arc::new(AtomicUsize::new(0));
        let commits = GroupCommit::start(counting(flushes.clone(), fail.clone())).expect("thread");
        let error = commits.sync().expect_err("the flush failed");
        assert!(error.to_string().contains("disk full"), "{error}");
        fail.store(false, Ordering::SeqCst);
        commits.sync().expect("flushed again");
    }

    /// A flush that blocks until the gate opens, counting its calls.
    struct Gated {
        gate: Arc<(Mutex<bool>, Condvar)>,
        flushes: Arc<AtomicUsize>,
    }

    impl Gated {
        fn start() -> (GroupCommit, Gated) {
            let gated = Gated {
                gate: Arc::default(),
                flushes: Arc::default(),
            };
            let (gate, flushes) = (gated.gate.clone(), gated.flushes.clone());
            let commits = GroupCommit::start(Box::new(move || {
                flushes.fetch_add(1, Ordering::SeqCst);
                let (open, cv) = &*gate;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                Ok(())
            }))
            .expect("thread");
            (commits, gated)
        }

        fn flushes(&self) -> usize {
            self.flushes.load(Ordering::SeqCst)
        }

        fn until_a_flush_runs(&self) {
            while self.flushes() == 0 {
                std::thread::yield_now();
            }
        }

        fn open(&self) {
            *self.gate.0.lock().unwrap() = true;
            self.gate.1.notify_all();
        }
    }

    impl Drop for Gated {
        // Dropped before the commits (declared after them), so that a failed assertion
        // ends the test instead of leaving the flusher stuck and the drop joining it.
        fn drop(&mut self) {
            self.open();
        }
    }

    #[test]
    fn a_flush_waits_for_an_announced_change_and_covers_it() {
        let flushes = Arc::new(AtomicUsize::new(0));
        // A delay no test outlasts: the flush waits for the change, not the clock.
        let commits = GroupCommit::start_with(
            counting(flushes.clone(), Arc::default()),
            Duration::from_secs(600),
        )
        .expect("thread");
        let announced = commits.announce();
        let other = commits.request();
        let give_up = Instant::now() + Duration::from_secs(30);
        while commits.shared.lock().flusher != Flusher::AwaitingAnnounced {
            assert!(
                Instant::now() < give_up,
                "the flush did not wait for the change"
            );
            std::thread::yield_now();
        }
        let own = commits.request_announced(announced);
        other.wait().expect("the other change");
        own.wait().expect("the announced change");
        assert_eq!(flushes.load(Ordering::SeqCst), 1, "one flush covered both");
    }

    #[test]
    fn changes_asking_during_a_flush_share_the_next_one() {
        let (commits, gated) = Gated::start();
        let first = commits.request();
        gated.until_a_flush_runs();
        // While the first flush runs, two changes ask.
        let second = commits.request();
        let third = commits.request();
        gated.open();
        first.wait().expect("first");
        second.wait().expect("second");
        third.wait().expect("third");
        assert_eq!(gated.flushes(), 2, "one flush covered both");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_awaited_ticket_completes_only_after_its_flush() {
        let (commits, gated) = Gated::start();
        let waits: Vec<_> = (0..16)
            .map(|_| {
                let flush = commits.request();
                tokio::spawn(flush.completed())
            })
            .collect();
        gated.until_a_flush_runs();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            waits.iter().all(|wait| !wait.is_finished()),
            "a ticket completed while its flush was still running"
        );
        gated.open();
        for wait in waits {
            wait.await.expect("task").expect("flushed");
        }
    }

    #[test]
    fn dropping_the_commits_flushes_what_was_asked_and_stops_the_thread() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let commits =
            GroupCommit::start(counting(flushes.clone(), Arc::default())).expect("thread");
        let asked = commits.request();
        drop(commits);
        asked.wait().expect("flushed before the thread stopped");
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
    }
}
