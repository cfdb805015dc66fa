//! A reference-model test of path choice, in the manner of connlib's
//! state-machine tests: random schedules of UDP cuts and heals between two
//! engines with a steady flow, checked step by step against what the
//! rules (`tailnet_wire::path`, Go's magicsock) allow:
//!
//! - safety: a direct path is only claimed while a pong could have
//!   vouched for it: UDP worked at some moment in the last
//!   `TRUST_UDP_ADDR_DURATION` (6.5 s) plus a tick and a round trip;
//! - liveness on the relay: once UDP has been cut for 7.5 s, every packet
//!   arrives (through the relay);
//! - liveness direct: once UDP has worked for 12 s of flowing traffic
//!   (discovery pings every 5 s at most, a heartbeat every 3 s), the path
//!   is direct and nothing goes through the relay.
//!
//! Schedules come from a fixed-seed generator, so a failure names its seed
//! and replays exactly.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

#[path = "sim/net.rs"]
mod net;

use net::Sim;
use std::time::{Duration, Instant};
use tailnet_wire::path::TRUST_UDP_ADDR_DURATION;

/// xorshift64*: the schedule's randomness (fixed seeds).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The reference model: when UDP last changed state, and whether it works.
struct Model {
    udp_up: bool,
    since: Instant,
    /// The last moment UDP worked (now, while it works).
    last_up: Option<Instant>,
}

impl Model {
    fn set(&mut self, up: bool, now: Instant) {
        if self.udp_up && !up {
            self.last_up = Some(now);
        }
        if up != self.udp_up {
            self.since = now;
        }
        self.udp_up = up;
    }

    fn direct_allowed(&self, now: Instant) -> bool {
        if self.udp_up {
            return true;
        }
        let slack = TRUST_UDP_ADDR_DURATION + Duration::from_millis(250 + 20);
        self.last_up.is_some_and(|t| now.duration_since(t) <= slack)
    }
}

fn run_schedule(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut s = Sim::new();
    let (a, b) = (s.add_node(), s.add_node());
    s.full_mesh();
    let mut model = Model {
        udp_up: true,
        since: s.now,
        last_up: None,
    };
    let step = Duration::from_millis(100);
    let end = s.now + Duration::from_secs(150);
    let mut next_change = s.now + Duration::from_millis(1000 + rng.below(20_000));
    let mut seq = 0u64;
    while s.now < end {
        if s.now >= next_change {
            let up = !model.udp_up;
            if up {
                s.heal_udp(a, b);
            } else {
                s.cut_udp(a, b);
            }
            model.set(up, s.now);
            // Short blips and long stretches both.
            let ms = if rng.below(3) == 0 {
                200 + rng.below(3_000)
            } else {
                5_000 + rng.below(25_000)
            };
            next_change = s.now + Duration::from_millis(ms);
        }
        seq += 1;
        let tag = format!("{seed}-{seq}");
        let before = s.nodes[b].delivered.len();
        let relay_before = s.nodes[a].sent_relay;
        s.send_app(a, b, tag.as_bytes());
        s.run(step);
        let now = s.now;
        let arrived = s.nodes[b].delivered[before..]
            .iter()
            .any(|p| p.len() >= 28 && &p[28..] == tag.as_bytes());
        let (direct, region) = s.path(a, b);
        let stable = now.duration_since(model.since);

        assert!(
            direct.is_none() || model.direct_allowed(now),
            "seed {seed}: direct path claimed {:?} after UDP died",
            model.last_up.map(|t| now.duration_since(t))
        );
        if !model.udp_up && stable >= Duration::from_millis(7_500) {
            assert_eq!(region, net::REGION, "seed {seed}: not on the relay");
            assert!(
                arrived,
                "seed {seed}: lost on the relay ({stable:?} after the cut)"
            );
        }
        if model.udp_up && stable >= Duration::from_secs(12) {
            assert!(
                direct.is_some(),
                "seed {seed}: not direct {stable:?} after the heal"
            );
            assert!(arrived, "seed {seed}: lost on the direct path");
            assert_eq!(
                s.nodes[a].sent_relay, relay_before,
                "seed {seed}: relayed while direct"
            );
        }
    }
}

#[test]
fn path_choice_follows_the_model_under_random_cuts_and_heals() {
    for seed in 0..24 {
        run_schedule(seed);
    }
}
