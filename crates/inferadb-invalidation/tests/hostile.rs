//! Hostile load on the receiver (issue 16): a listener that keeps failing
//! does not stop it. (The forged-webhook log flood is in `logs.rs`.)

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

mod common;

use common::{flaky_receiver, forged_posts};
use std::time::Duration;

/// Issue 16 finding 9: `Receiver::serve` stopped for good after 50 accept
/// errors in a row. Now it backs off and keeps accepting.
#[tokio::test(start_paused = true)]
async fn receiver_survives_a_run_of_accept_errors() {
    let (tx, _h, _m) = flaky_receiver(120);
    // Fires once the receiver gets past the failures (paused clock: the
    // backoff sleeps advance it).
    let statuses = tokio::time::timeout(Duration::from_secs(600), forged_posts(&tx, 1))
        .await
        .expect("served within the backoff");
    assert_eq!(statuses, vec![401]);
}
