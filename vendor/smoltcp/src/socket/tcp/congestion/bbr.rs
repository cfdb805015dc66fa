//! A simplified BBR (v1): the window and the pacing rate follow a model of
//! the path, the bottleneck bandwidth (the largest delivery rate of the
//! last ten rounds) and the propagation delay (the smallest RTT seen),
//! instead of reacting to each loss. On a path with random loss a
//! loss-based controller (CUBIC, Reno) keeps halving its window; BBR keeps
//! sending at the measured bottleneck rate.
//!
//! Left out of draft-cardwell-iccrg-bbr-congestion-control-00: ProbeRTT
//! (the minimum RTT is kept for the connection's life), packet
//! conservation in the first round of recovery, and per-packet delivery
//! rate samples (one sample per round trip: bytes delivered over the
//! round's duration).

use crate::{socket::tcp::RttEstimator, time::Instant};

use super::Controller;

/// 2/ln(2): the startup gain, doubling the delivery rate per round.
const HIGH_GAIN: f64 = 2.885;
/// Gain cycle of ProbeBW: probe up, drain the probe, cruise six rounds.
const CYCLE: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
const CWND_GAIN: f64 = 2.0;
/// Rounds of bandwidth samples in the max filter.
const BW_ROUNDS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Mode {
    Startup,
    Drain,
    ProbeBw(u8),
}

#[derive(Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Bbr {
    mss: usize,
    rwnd: usize,
    cwnd: usize,
    mode: Mode,
    /// Delivery rate of each of the last rounds, bytes per second.
    bw: [u64; BW_ROUNDS],
    round: usize,
    round_start: Option<Instant>,
    delivered_in_round: usize,
    min_rtt_us: u32,
    full_bw: u64,
    full_bw_rounds: u8,
    in_flight: usize,
}

impl Bbr {
    pub fn new() -> Bbr {
        Bbr {
            mss: 1024,
            rwnd: 64 * 1024,
            cwnd: 10 * 1024,
            mode: Mode::Startup,
            bw: [0; BW_ROUNDS],
            round: 0,
            round_start: None,
            delivered_in_round: 0,
            min_rtt_us: 0,
            full_bw: 0,
            full_bw_rounds: 0,
            in_flight: 0,
        }
    }

    fn max_bw(&self) -> u64 {
        self.bw.iter().copied().max().unwrap_or(0)
    }

    /// Bandwidth-delay product, bytes (0 before both are measured).
    fn bdp(&self) -> usize {
        (self.max_bw() as u128 * self.min_rtt_us as u128 / 1_000_000) as usize
    }

    fn pacing_gain(&self) -> f64 {
        match self.mode {
            Mode::Startup => HIGH_GAIN,
            Mode::Drain => 1.0 / HIGH_GAIN,
            Mode::ProbeBw(phase) => CYCLE[phase as usize % CYCLE.len()],
        }
    }

    fn cwnd_gain(&self) -> f64 {
        match self.mode {
            Mode::Startup | Mode::Drain => HIGH_GAIN,
            Mode::ProbeBw(_) => CWND_GAIN,
        }
    }
}

impl Controller for Bbr {
    fn window(&self) -> usize {
        self.cwnd
    }

    fn set_remote_window(&mut self, remote_window: usize) {
        if self.rwnd < remote_window {
            self.rwnd = remote_window;
        }
    }

    fn on_ack(&mut self, _now: Instant, len: usize, in_flight: usize, _rtt: &RttEstimator) {
        self.in_flight = in_flight;
        if len == 0 {
            return;
        }
        let bdp = self.bdp();
        let target = (self.cwnd_gain() * bdp as f64) as usize + 3 * self.mss;
        self.cwnd = if bdp == 0 {
            self.cwnd.saturating_add(len)
        } else {
            self.cwnd.saturating_add(len).min(target)
        };
        self.cwnd = self.cwnd.min(self.rwnd.max(4 * self.mss)).max(4 * self.mss);
    }

    fn on_delivered(&mut self, _now: Instant, bytes: usize) {
        self.delivered_in_round += bytes;
    }

    fn on_round(&mut self, now: Instant) {
        if let Some(start) = self.round_start {
            let us = (now - start).total_micros();
            if us > 0 {
                let rate = (self.delivered_in_round as u128 * 1_000_000 / us as u128) as u64;
                self.bw[self.round % BW_ROUNDS] = rate;
                self.round += 1;
            }
        }
        self.round_start = Some(now);
        self.delivered_in_round = 0;
        match self.mode {
            Mode::Startup => {
                let bw = self.max_bw();
                if bw >= self.full_bw + self.full_bw / 4 {
                    self.full_bw = bw;
                    self.full_bw_rounds = 0;
                } else {
                    self.full_bw_rounds += 1;
                    if self.full_bw_rounds >= 3 {
                        self.mode = Mode::Drain;
                    }
                }
            }
            Mode::Drain => {
                if self.in_flight <= self.bdp() {
                    self.mode = Mode::ProbeBw(2);
                }
            }
            Mode::ProbeBw(phase) => self.mode = Mode::ProbeBw((phase + 1) % CYCLE.len() as u8),
        }
    }

    fn on_rtt_sample(&mut self, _now: Instant, rtt_us: u32) {
        if self.min_rtt_us == 0 || rtt_us < self.min_rtt_us {
            self.min_rtt_us = rtt_us.max(1);
        }
    }

    fn pacing_rate(&self) -> Option<u64> {
        let bw = self.max_bw();
        (bw > 0).then(|| (self.pacing_gain() * bw as f64) as u64)
    }

    fn on_rto(&mut self, _now: Instant, _in_flight: usize) {
        // Packet conservation after a timeout; the model is kept, and the
        // window regrows by the bytes acknowledged.
        self.cwnd = 4 * self.mss;
    }

    fn set_mss(&mut self, mss: usize) {
        self.mss = mss;
        self.cwnd = self.cwnd.max(10 * mss);
    }

    fn reacts_to_loss(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::time::Duration;

    #[test]
    fn startup_ends_when_bandwidth_stops_growing_and_the_window_follows_the_model() {
        let mut bbr = Bbr::new();
        bbr.set_mss(1000);
        bbr.set_remote_window(64 << 20);
        bbr.on_rtt_sample(Instant::from_millis(0), 50_000);
        let mut now = Instant::from_millis(0);
        bbr.on_round(now);
        // 1 MB per 50 ms round (20 MB/s), steady: startup ends after three
        // rounds without growth.
        for _ in 0..6 {
            bbr.on_delivered(now, 1_000_000);
            now += Duration::from_millis(50);
            bbr.on_round(now);
        }
        assert_ne!(bbr.mode, Mode::Startup);
        assert_eq!(bbr.max_bw(), 20_000_000);
        assert_eq!(bbr.bdp(), 1_000_000);
        // Losses do not shrink the window; acknowledgements bring it to the
        // model's target.
        bbr.on_loss(now, 2_000_000);
        for _ in 0..3000 {
            bbr.on_ack(now, 1000, 0, &RttEstimator::default());
        }
        assert_eq!(bbr.window(), 2_000_000 + 3000);
        assert_eq!(bbr.pacing_rate().map(|r| r > 0), Some(true));
    }
}
