//! At-most-once application of event ids within a window.
//!
//! The first request for an id runs the invalidation; a request for the
//! same id while it runs (a sender retrying after its timeout) waits for
//! that outcome instead of running it again: success answers it as a
//! duplicate, failure lets it try. Applied ids are remembered for the
//! window (longer than the signature's replay tolerance, so a replayed
//! request is still a duplicate), at most `capacity` of them (oldest
//! forgotten first).

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) struct Dedupe {
    state: Mutex<State>,
    window: Duration,
    capacity: usize,
}

#[derive(Default)]
struct State {
    slots: HashMap<String, Slot>,
    /// Applied ids in the order they completed.
    done: VecDeque<(Instant, String)>,
}

enum Slot {
    /// Being applied; the value becomes `Some(applied)` when it ends.
    InFlight(watch::Receiver<Option<bool>>),
    Done,
}

pub(crate) enum Begin {
    /// Apply it, then call [`Claim::finish`].
    New(Claim),
    /// Already applied.
    Duplicate,
}

/// The right (and duty) to apply one id. Dropped unfinished counts as a
/// failure.
pub(crate) struct Claim {
    dedupe: Arc<Dedupe>,
    id: String,
    tx: Option<watch::Sender<Option<bool>>>,
}

impl Dedupe {
    pub(crate) fn new(window: Duration, capacity: usize) -> Arc<Dedupe> {
        Arc::new(Dedupe {
            state: Mutex::new(State::default()),
            window,
            capacity: capacity.max(1),
        })
    }

    /// Claims `id`, or reports it applied, waiting while another request
    /// applies it.
    pub(crate) async fn begin(self: &Arc<Self>, id: &str) -> Begin {
        loop {
            let mut rx = {
                let mut st = self.state.lock();
                self.prune(&mut st, Instant::now());
                match st.slots.get(id) {
                    Some(Slot::Done) => return Begin::Duplicate,
                    Some(Slot::InFlight(rx)) => rx.clone(),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        st.slots.insert(id.to_owned(), Slot::InFlight(rx));
                        return Begin::New(Claim {
                            dedupe: self.clone(),
                            id: id.to_owned(),
                            tx: Some(tx),
                        });
                    }
                }
            };
            // Ends with Some(outcome), or Err when the claim vanished
            // without finishing; either way look again.
            let _ = rx.wait_for(Option::is_some).await;
        }
    }

    fn prune(&self, st: &mut State, now: Instant) {
        while let Some((at, _)) = st.done.front() {
            let expired = now.saturating_duration_since(*at) > self.window;
            if !expired && st.done.len() <= self.capacity {
                break;
            }
            if let Some((_, id)) = st.done.pop_front() {
                if matches!(st.slots.get(&id), Some(Slot::Done)) {
                    st.slots.remove(&id);
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.lock().slots.len()
    }
}

impl Claim {
    /// Records the outcome: applied ids become duplicates, failed ones
    /// free to try again.
    pub(crate) fn finish(mut self, applied: bool) {
        self.end(applied);
    }

    fn end(&mut self, applied: bool) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        {
            let mut st = self.dedupe.state.lock();
            if applied {
                st.slots.insert(self.id.clone(), Slot::Done);
                st.done.push_back((Instant::now(), self.id.clone()));
                let now = Instant::now();
                self.dedupe.prune(&mut st, now);
            } else {
                st.slots.remove(&self.id);
            }
        }
        let _ = tx.send(Some(applied));
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.end(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn once_per_id_within_window() {
        let d = Dedupe::new(Duration::from_secs(10), 100);
        let Begin::New(c) = d.begin("a").await else {
            panic!("first is new")
        };
        // A concurrent second request waits for the first.
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { matches!(d2.begin("a").await, Begin::Duplicate) });
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!waiter.is_finished());
        c.finish(true);
        assert!(waiter.await.unwrap());
        assert!(matches!(d.begin("a").await, Begin::Duplicate));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(matches!(d.begin("a").await, Begin::New(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn failure_lets_a_waiter_apply() {
        let d = Dedupe::new(Duration::from_secs(10), 100);
        let Begin::New(c) = d.begin("a").await else {
            panic!()
        };
        let d2 = d.clone();
        let waiter = tokio::spawn(async move {
            match d2.begin("a").await {
                Begin::New(c) => {
                    c.finish(true);
                    true
                }
                Begin::Duplicate => false,
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(c); // unfinished: a failure
        assert!(waiter.await.unwrap(), "the waiter applies it");
        assert!(matches!(d.begin("a").await, Begin::Duplicate));
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_bounds_memory() {
        let d = Dedupe::new(Duration::from_secs(600), 3);
        for i in 0..10 {
            let Begin::New(c) = d.begin(&i.to_string()).await else {
                panic!()
            };
            c.finish(true);
        }
        assert_eq!(d.len(), 3);
        assert!(matches!(d.begin("9").await, Begin::Duplicate));
    }
}
