//! The engine on a simulated network (`sim/net.rs`): relay fallback and
//! return, idle tunnels past WireGuard's timers, peer restarts and hostile
//! input, in simulated time. Each test runs in well under a second, with
//! no sockets and no sleeps.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

#[path = "sim/net.rs"]
mod net;

use net::{drops, flow, Sim, REGION};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// Two nodes on open addresses: the first packet goes direct and through
/// the relay; a disco pong makes the direct path the only one.
#[test]
fn a_pair_goes_direct_once_disco_proves_the_path() {
    let mut s = Sim::new();
    let (a, b) = (s.add_node(), s.add_node());
    s.full_mesh();
    s.send_app(a, b, b"hello");
    let took = s
        .run_until(2 * SEC, |s| s.got(b, b"hello"))
        .expect("first packet delivered");
    assert!(took < SEC, "{took:?}");
    s.run_until(2 * SEC, |s| s.path(a, b).0.is_some())
        .expect("direct path trusted");
    assert_eq!(s.path(a, b), (Some(s.nodes[b].public_addr()), 0));
    // Traffic now goes direct only.
    let relay_before = s.nodes[a].sent_relay;
    let (sent, got) = flow(&mut s, a, b, 2 * SEC, Duration::from_millis(100));
    assert_eq!(sent, got);
    assert_eq!(
        s.nodes[a].sent_relay, relay_before,
        "nothing through the relay"
    );
}

/// Port of tests/relay.rs `relay_then_direct_then_relay_then_direct` and
/// tests/derp.rs `a_transfer_survives_its_direct_path_being_cut...`: a
/// flow keeps moving while its direct path is cut (the relay carries it
/// within the 6.5 s trust time) and goes direct again when UDP heals.
#[test]
fn a_flow_falls_back_to_the_relay_when_udp_is_cut_and_returns_when_healed() {
    let mut s = Sim::new();
    let (a, b) = (s.add_node(), s.add_node());
    s.full_mesh();
    let (sent, got) = flow(&mut s, a, b, 3 * SEC, Duration::from_millis(50));
    assert_eq!(sent, got, "direct flow loses nothing");
    assert!(s.path(a, b).0.is_some());

    s.cut_udp(a, b);
    // Within the trust time (6.5 s) plus a heartbeat, the relay carries
    // the flow; at most the packets of that window are lost.
    let (sent, got) = flow(&mut s, a, b, 10 * SEC, Duration::from_millis(50));
    assert!(
        sent - got <= 160,
        "{} of {sent} lost after the cut",
        sent - got
    );
    assert_eq!(s.path(a, b), (None, REGION), "on the relay");
    let (sent, got) = flow(&mut s, a, b, 5 * SEC, Duration::from_millis(50));
    assert_eq!(sent, got, "relay flow loses nothing");

    s.heal_udp(a, b);
    s.run_until(10 * SEC, |s| s.path(a, b).0.is_some())
        .expect("direct again after the heal");
    let relay_before = s.nodes[a].sent_relay;
    let (sent, got) = flow(&mut s, a, b, 2 * SEC, Duration::from_millis(50));
    assert_eq!(sent, got);
    assert_eq!(s.nodes[a].sent_relay, relay_before, "off the relay");
}

/// Two nodes behind NATs that let in only what answers their own sends:
/// the first packets go through the relay, disco punches the hole, and
/// the path goes direct.
#[test]
fn nodes_behind_nats_start_on_the_relay_and_punch_through() {
    let mut s = Sim::new();
    let (a, b) = (s.add_node_behind_nat(), s.add_node_behind_nat());
    s.full_mesh();
    s.send_app(a, b, b"first");
    s.run_until(2 * SEC, |s| s.got(b, b"first"))
        .expect("delivered through the relay");
    s.send_app(b, a, b"back");
    s.run_until(2 * SEC, |s| s.got(a, b"back"))
        .expect("reply delivered");
    let (sent, got) = flow(&mut s, a, b, 8 * SEC, Duration::from_millis(100));
    assert_eq!(sent, got);
    assert_eq!(s.path(a, b), (Some(s.nodes[b].public_addr()), 0));
}

/// Port of tests/derp.rs `relay_only_peers_keep_a_tcp_stream_up_for_minutes_idle`
/// (200 real seconds there) and tests/vtime: relay-only peers idle for
/// 200 s, past WireGuard's rekey (120 s) and reject-after (180 s) times;
/// the next packet starts a new session and arrives at once, both ways.
#[test]
fn relay_only_peers_idle_past_reject_after_and_carry_the_next_packet() {
    let mut s = Sim::new();
    let (a, b) = (s.add_node(), s.add_node());
    s.cut_udp(a, b);
    s.full_mesh();
    // The eager initiation went to the (cut) UDP endpoint; boringtun's
    // retry after REKEY_TIMEOUT (5 s) goes through the relay too.
    s.send_app(a, b, b"first");
    s.run_until(7 * SEC, |s| s.got(b, b"first"))
        .expect("first packet through the relay");
    let (sent, got) = flow(&mut s, a, b, 2 * SEC, Duration::from_millis(100));
    assert_eq!(sent, got);
    assert_eq!(s.path(a, b), (None, REGION));
    let hs = s.handshakes(a, b);

    s.run(Duration::from_secs(200));

    s.send_app(a, b, b"after 200 s idle");
    let took = s
        .run_until(3 * SEC, |s| s.got(b, b"after 200 s idle"))
        .expect("delivered after the idle period");
    assert!(took < 2 * SEC, "{took:?}");
    s.send_app(b, a, b"reply");
    s.run_until(3 * SEC, |s| s.got(a, b"reply"))
        .expect("reply after the idle period");
    assert!(s.handshakes(a, b) > hs, "a new session after reject-after");
}

/// Port of tests/vtime `idle_tunnel_rekeys_keeps_alive...`: with a
/// persistent keep-alive, an idle direct tunnel sends keep-alives on the
/// timer tick and rekeys after 120 s with no application traffic.
#[test]
fn an_idle_tunnel_with_keepalive_rekeys_on_time() {
    let mut s = Sim::new();
    let (a, b) = (s.add_node(), s.add_node());
    let mut pa = s.nodes[a].as_peer();
    let mut pb = s.nodes[b].as_peer();
    pa.persistent_keepalive = Some(25);
    pb.persistent_keepalive = Some(25);
    let now = s.now;
    s.nodes[a].engine.handle_map(now, vec![pb]);
    s.nodes[b].engine.handle_map(now, vec![pa]);
    let (sent, got) = flow(&mut s, a, b, SEC, Duration::from_millis(100));
    assert_eq!(sent, got);
    let hs = s.handshakes(a, b);
    let tx = s.nodes[a].sent_udp;
    s.run(Duration::from_secs(300));
    assert!(
        s.nodes[a].sent_udp >= tx + 8,
        "keep-alives while idle: {} -> {}",
        tx,
        s.nodes[a].sent_udp
    );
    assert!(s.handshakes(a, b) > hs, "rekeyed while idle");
    let (sent, got) = flow(&mut s, a, b, SEC, Duration::from_millis(100));
    assert_eq!(sent, got, "carries data after 300 s");
}

/// The bug behind a seed_topology flake: a peer restarts (same node key,
/// new disco key, no sessions). Once the netmap shows its new disco key,
/// the others drop their session to it, and the next packet to it
/// handshakes and arrives at once — not after boringtun's ~15 s give-up.
#[test]
fn a_restarted_peer_is_reached_at_once_after_the_netmap_shows_its_new_disco_key() {
    let mut s = Sim::new();
    let (a, b) = (s.add_node(), s.add_node());
    s.full_mesh();
    let (sent, got) = flow(&mut s, a, b, 3 * SEC, Duration::from_millis(100));
    assert_eq!(sent, got);
    s.run(Duration::from_secs(30));

    s.restart(b);
    s.send_map(a); // control tells A about B's new disco key
    s.send_map(b);
    s.send_app(a, b, b"to the new process");
    let took = s
        .run_until(15 * SEC, |s| s.got(b, b"to the new process"))
        .expect("the restarted peer is reached");
    assert!(took < SEC, "took {took:?}");
    s.send_app(b, a, b"from the new process");
    s.run_until(SEC, |s| s.got(a, b"from the new process"))
        .expect("and answers");
}

/// Without the new disco key in its netmap, A keeps sealing with a
/// session B no longer has: the control case that shows the test above
/// measures the fix, not luck.
#[test]
fn without_the_new_disco_key_a_restarted_peer_is_not_reached_promptly() {
    let mut s = Sim::new();
    let (a, b) = (s.add_node(), s.add_node());
    s.full_mesh();
    let (sent, got) = flow(&mut s, a, b, 3 * SEC, Duration::from_millis(100));
    assert_eq!(sent, got);
    s.run(Duration::from_secs(30));
    s.restart(b);
    s.send_map(b);
    s.send_app(a, b, b"to the new process");
    assert!(
        s.run_until(3 * SEC, |s| s.got(b, b"to the new process"))
            .is_none(),
        "reached without the netmap update"
    );
}

/// Hostile input at the engine: garbage, truncated and forged datagrams
/// and relayed packets are dropped and counted; nothing reaches the
/// netstack and the tunnel keeps working.
#[test]
fn garbage_is_dropped_and_counted_and_the_tunnel_keeps_working() {
    let mut s = Sim::new();
    let (a, b) = (s.add_node(), s.add_node());
    s.full_mesh();
    let (sent, got) = flow(&mut s, a, b, SEC, Duration::from_millis(100));
    assert_eq!(sent, got);
    let delivered = s.nodes[b].delivered.len();
    let before = drops(&s.nodes[b]);
    let evil: std::net::SocketAddr = "203.0.113.66:666".parse().expect("addr");
    // Not WireGuard, disco or STUN; WireGuard types with wrong lengths.
    s.inject_udp(b, evil, b"\xffgarbage");
    s.inject_udp(b, evil, &[1u8; 10]);
    s.inject_udp(b, evil, &[4u8; 20]);
    // A well-formed data message for an index nobody has.
    let mut data = vec![0u8; 64];
    data[0] = 4;
    data[4..8].copy_from_slice(&0x00ab_cd00u32.to_le_bytes());
    s.inject_udp(b, evil, &data);
    // A handshake initiation with a bad MAC1.
    let mut init = vec![0u8; 148];
    init[0] = 1;
    s.inject_udp(b, evil, &init);
    // Disco from a key nobody has, over UDP and the relay.
    let mut disco = b"TS\xf0\x9f\x92\xac".to_vec();
    disco.extend_from_slice(&[9u8; 32 + 24 + 40]);
    s.inject_udp(b, evil, &disco);
    let stranger = tailnet_engine::config::public_of(&tailnet_wire::PrivateKey::generate());
    s.inject_derp(b, stranger, &disco);
    // A tampered data message from A's own session index range.
    s.inject_derp(b, s.nodes[a].node_key(), &data);
    s.run(SEC);
    let after = drops(&s.nodes[b]);
    let grew = |k: &str| after[k] - before[k];
    assert!(grew("malformed") >= 3, "{after:?}");
    assert!(grew("unknown_peer") >= 2, "{after:?}");
    assert!(grew("rejected") >= 1, "{after:?}");
    assert!(grew("disco_rejected") >= 2, "{after:?}");
    assert_eq!(s.nodes[b].delivered.len(), delivered, "nothing delivered");
    let (sent, got) = flow(&mut s, a, b, SEC, Duration::from_millis(100));
    assert_eq!(sent, got, "the tunnel still works");
}

/// A packet from a peer whose inner source is outside its allowed IPs is
/// dropped (cryptokey routing).
#[test]
fn a_peer_cannot_send_from_addresses_it_does_not_own() {
    let mut s = Sim::new();
    let (a, b) = (s.add_node(), s.add_node());
    s.full_mesh();
    let (sent, got) = flow(&mut s, a, b, SEC, Duration::from_millis(100));
    assert_eq!(sent, got);
    // A claims B's address space by sending from 100.64.0.99.
    let spoofed = net::ipv4_udp(
        std::net::Ipv4Addr::new(100, 64, 0, 99),
        s.nodes[b].ip,
        b"spoofed",
    );
    let now = s.now;
    // Route it via A's engine by destination (B), sealed in A's session.
    s.nodes[a].engine.handle_app_packet(now, &spoofed);
    let before = drops(&s.nodes[b])["bad_source"];
    s.run(SEC);
    assert!(!s.got(b, b"spoofed"));
    assert_eq!(drops(&s.nodes[b])["bad_source"], before + 1);
}

/// Port of the first half of tests/relay.rs `relay_then_direct...`: peers
/// that know each other only by keys talk through the relay; when the
/// netmap brings an endpoint, disco proves it and both go direct.
#[test]
fn relay_only_peers_go_direct_when_the_netmap_brings_an_endpoint() {
    let mut s = Sim::new();
    let (a, b) = (s.add_node(), s.add_node());
    let now = s.now;
    for (i, j) in [(a, b), (b, a)] {
        let mut p = s.nodes[j].as_peer();
        p.endpoint = None;
        p.endpoints.clear();
        s.nodes[i].engine.handle_map(now, vec![p]);
    }
    let (sent, got) = flow(&mut s, a, b, 2 * SEC, Duration::from_millis(100));
    assert_eq!(sent, got);
    assert_eq!(s.path(a, b), (None, REGION));
    s.send_map(a); // now with B's endpoint
    s.run_until(5 * SEC, |s| {
        s.path(a, b).0 == Some(s.nodes[b].public_addr())
            && s.path(b, a).0 == Some(s.nodes[a].public_addr())
    })
    .expect("both direct");
    let relay_before = s.nodes[a].sent_relay;
    let (sent, got) = flow(&mut s, a, b, 2 * SEC, Duration::from_millis(100));
    assert_eq!(sent, got);
    assert_eq!(s.nodes[a].sent_relay, relay_before);
}

/// `always_use_derp` (Go's TS_DEBUG_ALWAYS_USE_DERP): reachable peers
/// still talk through the relay only, and no disco ping goes out over UDP.
#[test]
fn always_use_derp_keeps_traffic_on_the_relay() {
    let mut s = Sim::new();
    let (a, b) = (s.add_node(), s.add_node());
    for i in [a, b] {
        s.nodes[i].always_use_derp = true;
    }
    s.rebuild(a);
    s.rebuild(b);
    s.full_mesh();
    s.send_app(a, b, b"first");
    s.run_until(2 * SEC, |s| s.got(b, b"first"))
        .expect("delivered");
    let (sent, got) = flow(&mut s, a, b, 10 * SEC, Duration::from_millis(100));
    assert_eq!(sent, got);
    assert_eq!(s.path(a, b), (None, REGION));
    assert_eq!(s.path(b, a), (None, REGION));
    assert_eq!(
        s.nodes[a].sent_udp + s.nodes[b].sent_udp,
        0,
        "nothing over UDP"
    );
}

/// Three nodes, one behind a NAT; the NATed one restarts. Both others
/// reach the new process at once once their netmaps show its new disco
/// key, and the third pair's session is untouched.
#[test]
fn in_a_mesh_of_three_a_restart_disturbs_only_the_restarted_nodes_sessions() {
    let mut s = Sim::new();
    let (a, b, c) = (s.add_node(), s.add_node(), s.add_node_behind_nat());
    s.full_mesh();
    for (x, y) in [(a, b), (a, c), (b, c), (c, a)] {
        let (sent, got) = flow(&mut s, x, y, 2 * SEC, Duration::from_millis(100));
        assert_eq!(sent, got, "{x} to {y}");
    }
    let ab_handshakes = s.handshakes(a, b);
    s.restart(c);
    s.full_mesh();
    for x in [a, b] {
        let msg = format!("from {x} to the new process");
        s.send_app(x, c, msg.as_bytes());
        let took = s
            .run_until(5 * SEC, |s| s.got(c, msg.as_bytes()))
            .expect("the restarted node is reached");
        assert!(took < 2 * SEC, "{x}: {took:?}");
    }
    let (sent, got) = flow(&mut s, a, b, SEC, Duration::from_millis(100));
    assert_eq!(sent, got);
    assert_eq!(s.handshakes(a, b), ab_handshakes, "A-B kept its session");
}
