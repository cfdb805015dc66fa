use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn q(a: &str, ms: u64) -> AddrQuality {
    AddrQuality {
        addr: addr(a),
        latency: Duration::from_millis(ms),
    }
}

/// A peer on the far side of a link that answers every ping after `rtt`
/// while the link is up; pongs in flight when it goes down are lost.
struct Sim {
    t0: Instant,
    now: Instant,
    path: PeerPath,
    link_up: bool,
    rtt: Duration,
    in_flight: Vec<(Instant, TxId)>,
    pings: usize,
    call_me_maybes: usize,
}

impl Sim {
    fn new(endpoints: &[&str]) -> Sim {
        let t0 = Instant::now();
        let mut path = PeerPath::new([7; 8]);
        path.set_relay(true);
        let eps: Vec<SocketAddr> = endpoints.iter().map(|e| addr(e)).collect();
        path.set_netmap_endpoints(&eps);
        Sim {
            t0,
            now: t0,
            path,
            link_up: false,
            rtt: Duration::from_millis(2),
            in_flight: Vec::new(),
            pings: 0,
            call_me_maybes: 0,
        }
    }

    fn act(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Ping { tx_id, .. } => {
                    self.pings += 1;
                    if self.link_up {
                        self.in_flight.push((self.now + self.rtt, tx_id));
                    }
                }
                Action::CallMeMaybe => self.call_me_maybes += 1,
            }
        }
    }

    /// One step of `dt` with a packet sent at its start; returns its route.
    fn step(&mut self, dt: Duration) -> Route {
        let route = self.path.route(self.now);
        let mut out = Vec::new();
        if route.discover {
            self.path.discover(self.now, &mut out);
        }
        self.path.on_timer(self.now, &mut out);
        self.act(out);
        self.now += dt;
        let now = self.now;
        let link_up = self.link_up;
        let (due, later): (Vec<_>, Vec<_>) = self.in_flight.drain(..).partition(|(t, _)| *t <= now);
        self.in_flight = later;
        for (_, tx) in due {
            if link_up {
                self.path.on_pong(now, tx, true);
            }
        }
        route
    }

    /// Steps until `want` holds of the route; returns the time it took.
    fn until(&mut self, limit: Duration, want: impl Fn(&Route) -> bool) -> Option<Duration> {
        let start = self.now;
        while self.now - start < limit {
            if want(&self.step(Duration::from_millis(50))) {
                return Some(self.now - start);
            }
        }
        None
    }
}

fn direct_only(r: &Route) -> bool {
    r.udp.is_some() && !r.relay && !r.discover
}

#[test]
fn starts_relayed_goes_direct_falls_back_and_recovers() {
    let mut s = Sim::new(&["192.0.2.1:41641"]);
    // No pong yet: the candidate and the relay both carry packets.
    let first = s.path.route(s.now);
    assert_eq!(first.udp, Some(addr("192.0.2.1:41641")));
    assert!(first.relay && first.discover);
    // Link down: stays relayed, discovery pings at most every 5 s.
    assert_eq!(s.until(Duration::from_secs(12), direct_only), None);
    assert!(s.pings <= 4, "ping throttle: {} pings in 12 s", s.pings);
    assert!(s.call_me_maybes >= 1);
    assert_eq!(s.path.trusted_addr(s.now), None);

    // The link comes up: direct within one ping interval plus a round trip.
    s.link_up = true;
    let took = s
        .until(Duration::from_secs(10), direct_only)
        .expect("goes direct");
    assert!(
        took <= DISCO_PING_INTERVAL + Duration::from_millis(100),
        "{took:?}"
    );
    assert_eq!(s.path.best().map(|b| b.addr), Some(addr("192.0.2.1:41641")));

    // Traffic flows for a minute: heartbeats keep it direct throughout.
    for _ in 0..1200 {
        assert!(
            direct_only(&s.step(Duration::from_millis(50))),
            "at {:?}",
            s.now - s.t0
        );
    }

    // Pongs stop: the relay is back within the trust window (6.5 s).
    s.link_up = false;
    let took = s
        .until(Duration::from_secs(20), |r| r.relay)
        .expect("falls back to the relay");
    assert!(
        took <= TRUST_UDP_ADDR_DURATION + Duration::from_millis(100),
        "{took:?}"
    );

    // Pongs resume: direct again within a ping interval or a heartbeat.
    s.link_up = true;
    let took = s
        .until(Duration::from_secs(10), direct_only)
        .expect("direct again");
    assert!(
        took <= DISCO_PING_INTERVAL + Duration::from_millis(100),
        "{took:?}"
    );
}

#[test]
fn idle_peer_stops_heartbeats_and_trust_lapses() {
    let mut s = Sim::new(&["192.0.2.1:41641"]);
    s.link_up = true;
    s.until(Duration::from_secs(10), direct_only)
        .expect("direct");
    // No more sends: heartbeats continue for 45 s, then stop.
    let mut last_pings = s.pings;
    let mut t = Duration::ZERO;
    let mut quiet_since = None;
    while t < Duration::from_secs(70) {
        let mut out = Vec::new();
        s.path.on_timer(s.now, &mut out);
        s.act(out);
        s.now += Duration::from_millis(250);
        t += Duration::from_millis(250);
        let now = s.now;
        let due: Vec<_> = s.in_flight.drain(..).collect();
        for (_, tx) in due {
            s.path.on_pong(now, tx, true);
        }
        if s.pings != last_pings {
            last_pings = s.pings;
            quiet_since = None;
        } else if quiet_since.is_none() {
            quiet_since = Some(t);
        }
    }
    let quiet = quiet_since.expect("heartbeats stopped");
    assert!(
        quiet <= SESSION_ACTIVE_TIMEOUT + HEARTBEAT_INTERVAL,
        "{quiet:?}"
    );
    assert_eq!(s.path.trusted_addr(s.now), None, "trust lapsed");
    // The next send goes both ways and rediscovers.
    let r = s.path.route(s.now);
    assert!(r.relay && r.discover && r.udp.is_some());
}

#[test]
fn no_relay_no_candidates() {
    let mut p = PeerPath::new([0; 8]);
    let t = Instant::now();
    let r = p.route(t);
    assert_eq!(
        r,
        Route {
            udp: None,
            relay: false,
            discover: true
        }
    );
    let mut out = Vec::new();
    p.discover(t, &mut out);
    assert!(out.is_empty(), "nothing to ping, no relay: {out:?}");
    p.set_relay(true);
    assert!(p.route(t).relay);
}

#[test]
fn pongs_over_the_relay_and_unknown_txids_change_nothing() {
    let mut p = PeerPath::new([1; 8]);
    p.set_relay(true);
    p.set_netmap_endpoints(&[addr("192.0.2.1:1")]);
    let t = Instant::now();
    let mut out = Vec::new();
    p.discover(t, &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[1], Action::CallMeMaybe);
    let Action::Ping { tx_id, to } = out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(to, addr("192.0.2.1:1"));
    assert_eq!(p.on_pong(t, [9; 12], true), PongOutcome::Unknown);
    assert_eq!(p.on_pong(t, tx_id, false), PongOutcome::ViaRelay);
    assert_eq!(p.best(), None);
    // Each TxID counts once.
    assert_eq!(p.on_pong(t, tx_id, true), PongOutcome::Unknown);
}

#[test]
fn ping_times_out() {
    let mut p = PeerPath::new([1; 8]);
    p.set_netmap_endpoints(&[addr("192.0.2.1:1")]);
    let t = Instant::now();
    let mut out = Vec::new();
    p.discover(t, &mut out);
    let Action::Ping { tx_id, .. } = out[0] else {
        panic!()
    };
    p.on_timer(t + PING_TIMEOUT, &mut Vec::new());
    assert_eq!(
        p.on_pong(t + PING_TIMEOUT, tx_id, true),
        PongOutcome::Unknown
    );
}

#[test]
fn ping_sources_become_candidates_and_repeats_are_ignored() {
    let mut p = PeerPath::new([1; 8]);
    let from = addr("198.51.100.7:5000");
    assert!(p.on_ping(from, [1; 12]));
    assert!(!p.on_ping(from, [1; 12]), "same TxID from the same address");
    assert!(p.on_ping(from, [2; 12]));
    assert_eq!(p.candidates().collect::<Vec<_>>(), vec![from]);
    // Netmap updates keep it.
    p.set_netmap_endpoints(&[addr("192.0.2.1:1")]);
    assert_eq!(p.candidates().count(), 2);
}

#[test]
fn call_me_maybe_replaces_its_endpoints_and_pings_at_once() {
    let mut p = PeerPath::new([1; 8]);
    p.set_relay(true);
    let t = Instant::now();
    let mut out = Vec::new();
    p.on_call_me_maybe(
        t,
        &[
            addr("192.0.2.1:1"),
            addr("192.0.2.2:2"),
            addr("[fe80::1]:3"),
        ],
        &mut out,
    );
    assert_eq!(
        out.len(),
        2,
        "two pings, no CallMeMaybe back, no link-local: {out:?}"
    );
    assert!(out.iter().all(|a| matches!(a, Action::Ping { .. })));
    // A second one within the ping interval still pings (throttle reset)
    // and drops the endpoint it no longer lists.
    out.clear();
    p.on_call_me_maybe(t + Duration::from_secs(1), &[addr("192.0.2.2:2")], &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        p.candidates().collect::<Vec<_>>(),
        vec![addr("192.0.2.2:2")]
    );
}

#[test]
fn better_addr_follows_go() {
    // Any address beats none is handled by the caller (best = None);
    // here: the same address never beats itself.
    assert!(!better_addr(&q("192.0.2.1:1", 1), &q("192.0.2.1:1", 50)));
    // Much faster wins.
    assert!(better_addr(&q("192.0.2.1:1", 10), &q("192.0.2.2:1", 100)));
    assert!(!better_addr(&q("192.0.2.2:1", 100), &q("192.0.2.1:1", 10)));
    // Within 1 %: no switch (hysteresis).
    assert!(!better_addr(&q("192.0.2.1:1", 99), &q("192.0.2.2:1", 100)));
    assert!(!better_addr(&q("192.0.2.1:1", 100), &q("192.0.2.2:1", 100)));
    // Private beats public at similar latency; loopback beats private.
    assert!(better_addr(&q("10.0.0.1:1", 100), &q("192.0.2.2:1", 90)));
    assert!(better_addr(&q("127.0.0.1:1", 1), &q("10.0.0.1:1", 1)));
    // IPv6 gets 10 points: beats IPv4 at equal latency, not when 20 % slower.
    assert!(better_addr(
        &q("[2001:db8::1]:1", 10),
        &q("192.0.2.2:1", 10)
    ));
    assert!(!better_addr(
        &q("[2001:db8::1]:1", 12),
        &q("192.0.2.2:1", 10)
    ));
    // Zero latencies do not divide by zero.
    assert!(!better_addr(&q("192.0.2.1:1", 0), &q("192.0.2.2:1", 0)));
}

#[test]
fn a_better_pong_moves_the_best_address() {
    let mut p = PeerPath::new([1; 8]);
    p.set_netmap_endpoints(&[addr("192.0.2.1:1"), addr("10.0.0.1:1")]);
    let t = Instant::now();
    let mut out = Vec::new();
    p.discover(t, &mut out);
    let txs: Vec<(SocketAddr, TxId)> = out
        .iter()
        .filter_map(|a| match a {
            Action::Ping { to, tx_id } => Some((*to, *tx_id)),
            _ => None,
        })
        .collect();
    assert_eq!(txs.len(), 2);
    let public = txs
        .iter()
        .find(|(a, _)| *a == addr("192.0.2.1:1"))
        .unwrap()
        .1;
    let private = txs
        .iter()
        .find(|(a, _)| *a == addr("10.0.0.1:1"))
        .unwrap()
        .1;
    // The public one answers first: best at once.
    assert!(matches!(
        p.on_pong(t + Duration::from_millis(5), public, true),
        PongOutcome::Direct {
            best_changed: true,
            ..
        }
    ));
    assert_eq!(
        p.trusted_addr(t + Duration::from_millis(5)),
        Some(addr("192.0.2.1:1"))
    );
    // The private one a little slower still wins (+20 points).
    assert!(matches!(
        p.on_pong(t + Duration::from_millis(6), private, true),
        PongOutcome::Direct {
            best_changed: true,
            ..
        }
    ));
    assert_eq!(p.best().map(|b| b.addr), Some(addr("10.0.0.1:1")));
    assert_eq!(
        p.route(t + Duration::from_millis(7)).udp,
        Some(addr("10.0.0.1:1"))
    );
}

#[test]
fn candidates_are_bounded() {
    let mut p = PeerPath::new([1; 8]);
    for i in 0..100u16 {
        p.on_ping(SocketAddr::from(([192, 0, 2, 1], i)), [0; 12]);
    }
    assert_eq!(p.candidates().count(), MAX_CANDIDATES);
}
