//! boringtun's clock, driven by the engine's `now`.
//!
//! boringtun 0.7 reads its clock inside `Tunn` (timers, handshake ages,
//! the rate limiter). Built with its `mock-instant` feature that clock is
//! `mock_instant`'s thread-local one, and the engine is its only writer:
//! every entry point sets it to `now - epoch` (per engine) before any
//! boringtun call, and every boringtun call happens inside an entry point
//! on the same thread. So a tunnel's timers follow the engine's time, real
//! in the node, simulated in tests (vendor-notes/boringtun.md, "Time").

use std::time::Instant;

pub(crate) fn set(epoch: Instant, now: Instant) {
    mock_instant::MockClock::set_time(now.saturating_duration_since(epoch));
}
