//! Reconnect backoff shared by the control runner and the DERP client
//! (a module of its own so the DERP client need not import `control`).

use std::time::Duration;

/// First reconnect delay; it doubles up to [`MAX_BACKOFF`], ±25 % jitter.
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The delay before reconnect attempt `n` (0-based): 0.5 s doubling to
/// 30 s, each ±25 % at random so a fleet does not reconnect in step.
pub fn backoff(n: u32) -> Duration {
    let base = MIN_BACKOFF
        .saturating_mul(1u32 << n.min(16))
        .min(MAX_BACKOFF);
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        u16::from_le_bytes(b)
    } else {
        u16::MAX / 2
    };
    // factor in [0.75, 1.25)
    let factor = 0.75 + f64::from(r) / f64::from(u16::MAX) * 0.5;
    base.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap_with_jitter() {
        for n in 0..40 {
            let d = backoff(n);
            let base = MIN_BACKOFF
                .saturating_mul(1u32 << n.min(16))
                .min(MAX_BACKOFF);
            assert!(
                d >= base.mul_f64(0.75) && d <= base.mul_f64(1.25),
                "{n}: {d:?}"
            );
        }
        assert!(backoff(30) <= MAX_BACKOFF.mul_f64(1.25));
        let a: Vec<_> = (0..8).map(|_| backoff(3)).collect();
        assert!(a.windows(2).any(|w| w[0] != w[1]), "jitter varies: {a:?}");
    }
}
