use parking_lot::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// At most one log line per interval: [`allow`](Self::allow) answers
/// `Some(suppressed)` when a line may be written now (with how many events
/// were swallowed since the last line), `None` otherwise. Counts on the
/// tokio clock, so tests can pause it.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// One line per `interval`.
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// Records one event; `Some(n)` if it should be logged now, `n` being
    /// the events not logged since the previous line.
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut s = self.state.lock();
        match s.last {
            Some(t) if now.saturating_duration_since(t) < self.interval => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}
