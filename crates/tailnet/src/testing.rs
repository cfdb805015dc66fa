//! Test support: a mock clock for boringtun's timers (feature `mock-time`).
//!
//! boringtun reads its own clock in `update_timers`; with this feature it
//! reads `mock_instant`'s thread-local clock instead, which only moves when
//! [`advance`] is called. Run the nodes of such a test on one thread (a
//! current-thread tokio runtime) so they all see the same mock time.

use std::time::Duration;

/// Moves boringtun's clock forward by `d` for every tunnel on this thread.
pub fn advance(d: Duration) {
    mock_instant::MockClock::advance(d);
}

/// How far boringtun's clock has moved on this thread.
pub fn elapsed() -> Duration {
    mock_instant::MockClock::time()
}
