//! The DERP client against the coordinator's relay (a dev-dependency) and
//! against a hand-driven fake relay for what the coordinator never sends.

use super::*;
use coordinator::server::{Server, ServerHandle};
use coordinator::Store;
use std::path::Path;
use tailnet_wire::derp::FrameReader;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);

fn public(private: &[u8; 32]) -> PublicKey {
    let secret = boringtun::x25519::StaticSecret::from(*private);
    PublicKey::from_bytes(boringtun::x25519::PublicKey::from(&secret).to_bytes())
}

async fn next_event(rx: &mut mpsc::Receiver<DerpEvent>) -> DerpEvent {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a DERP event in time")
        .expect("events channel open")
}

type Packets = mpsc::Receiver<crate::dataplane::RelayBatch>;

/// A client whose events and relayed packets come out of two receivers.
fn spawn_client(
    target: &DerpTarget,
    private: [u8; 32],
    events: usize,
) -> (DerpHandle, mpsc::Receiver<DerpEvent>, Packets) {
    let (tx, rx) = mpsc::channel(events);
    let (ptx, prx) = mpsc::channel(64);
    let sink = PacketSink {
        packets: ptx,
        counters: Arc::default(),
    };
    (spawn_derp(900, target, private, tx, sink), rx, prx)
}

/// The next batch's only packet.
async fn next_packet(rx: &mut Packets) -> (PublicKey, Vec<u8>) {
    let mut batch = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a relayed packet in time")
        .expect("packet channel open");
    assert_eq!(batch.len(), 1, "one packet in the batch");
    batch.remove(0)
}

/// Waits for `Connected`, skipping anything else.
async fn connected(rx: &mut mpsc::Receiver<DerpEvent>) {
    loop {
        if let DerpEvent::Connected { region } = next_event(rx).await {
            assert_eq!(region, 900);
            return;
        }
    }
}

async fn start_coordinator(
    dir: &Path,
    addr: SocketAddr,
    tls: Option<coordinator::server::TlsFiles>,
) -> ServerHandle {
    let store = Arc::new(Store::open(dir).expect("store"));
    // These clients use fresh keys no node registered: an open relay.
    let mut b = Server::builder(store).derp_config(coordinator::server::derp::DerpConfig {
        verify_clients: false,
        ..Default::default()
    });
    if let Some(files) = tls {
        b = b.tls(files);
    }
    b.bind(addr).await.expect("coordinator binds")
}

/// The target a node joined to `server` dials: its control URL is
/// `https://` when `tls`, else `http://`, at the server's address.
fn target_of(server: &ServerHandle, tls: bool) -> DerpTarget {
    let addr = server.local_addr();
    let scheme = DerpScheme::new(tls, &addr.ip().to_string(), addr.port(), false);
    let map = server.derp_map();
    let region = map
        .regions
        .as_ref()
        .and_then(|r| r.get(&900))
        .expect("region 900");
    DerpTarget::from_node(&region.nodes[0], &scheme).expect("a DERP node")
}

struct Pair {
    a: DerpHandle,
    a_rx: mpsc::Receiver<DerpEvent>,
    a_pk: Packets,
    a_key: PublicKey,
    b: DerpHandle,
    b_rx: mpsc::Receiver<DerpEvent>,
    b_pk: Packets,
    b_key: PublicKey,
}

fn spawn_pair(target: &DerpTarget) -> Pair {
    let (a, a_rx, a_pk) = spawn_client(target, [1; 32], 64);
    let (b, b_rx, b_pk) = spawn_client(target, [2; 32], 64);
    Pair {
        a,
        a_rx,
        a_pk,
        a_key: public(&[1; 32]),
        b,
        b_rx,
        b_pk,
        b_key: public(&[2; 32]),
    }
}

async fn exchange(p: &mut Pair, tag: &str) {
    let msg = format!("{tag}: a to b").into_bytes();
    assert!(p.a.send(p.b_key, msg.clone()));
    assert_eq!(next_packet(&mut p.b_pk).await, (p.a_key, msg));
    let msg = format!("{tag}: b to a").into_bytes();
    assert!(p.b.send(p.a_key, msg.clone()));
    assert_eq!(next_packet(&mut p.a_pk).await, (p.b_key, msg));
}

#[tokio::test]
async fn two_clients_relay_through_the_coordinator_and_survive_its_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_coordinator(dir.path(), "127.0.0.1:0".parse().unwrap(), None).await;
    let addr = server.local_addr();
    let target = target_of(&server, false);
    assert_eq!(target.dial_host, "127.0.0.1");
    assert_eq!(target.port, addr.port());

    let mut p = spawn_pair(&target);
    assert!(
        !p.a.send(p.b_key, b"too early".to_vec()),
        "refused until connected"
    );
    connected(&mut p.a_rx).await;
    connected(&mut p.b_rx).await;
    assert!(p.a.is_connected() && p.b.is_connected());
    exchange(&mut p, "first").await;
    // Both told the relay it is their home region.
    assert_eq!(server.derp().clients(), 2);

    // The coordinator goes away: both notice, and come back on their own
    // once it listens again on the same port.
    server.shutdown().await;
    for rx in [&mut p.a_rx, &mut p.b_rx] {
        loop {
            match next_event(rx).await {
                DerpEvent::Disconnected { region, .. } => {
                    assert_eq!(region, 900);
                    break;
                }
                DerpEvent::PeerGone { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(!p.a.is_connected());
    assert!(!p.a.send(p.b_key, b"while down".to_vec()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = start_coordinator(dir.path(), addr, None).await;
    connected(&mut p.a_rx).await;
    connected(&mut p.b_rx).await;
    exchange(&mut p, "after restart").await;

    // A clean shutdown closes the connections.
    p.a.clone().shutdown().await;
    p.b.shutdown().await;
    assert!(!p.a.is_connected());
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.derp().clients() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay still sees clients"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn relaying_over_the_coordinators_tls_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = coordinator::testing::self_signed(dir.path(), std::net::Ipv4Addr::LOCALHOST.into());
    let server = start_coordinator(
        &dir.path().join("state"),
        "127.0.0.1:0".parse().unwrap(),
        Some(files),
    )
    .await;
    let target = target_of(&server, true);
    assert!(target.tls && target.insecure_for_tests);
    let mut p = spawn_pair(&target);
    connected(&mut p.a_rx).await;
    connected(&mut p.b_rx).await;
    exchange(&mut p, "tls").await;
    // Verification on: the self-signed certificate is refused, so the
    // client never connects.
    let strict = DerpTarget {
        insecure_for_tests: false,
        ..target.clone()
    };
    let (c, mut rx, _pk) = spawn_client(&strict, [3; 32], 4);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .is_err(),
        "no event: the handshake fails"
    );
    assert!(!c.is_connected());
    c.shutdown().await;
    p.a.shutdown().await;
    p.b.shutdown().await;
    server.shutdown().await;
}

/// A relay driven by hand: it pings the client, sends it a PeerGone and
/// a packet, then hangs up.
#[tokio::test]
async fn the_client_answers_pings_notes_its_home_and_reports_a_lost_relay() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server_private = [9u8; 32];
    let server_key = public(&server_private);
    let relay = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.expect("request"));
        }
        let head = String::from_utf8(head).expect("ascii");
        assert!(head.starts_with("GET /derp HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nUpgrade: DERP\r\n"), "{head}");
        let mut out = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\n\r\n".to_vec();
        out.extend_from_slice(&derp::server_key_frame(&server_key));
        tcp.write_all(&out).await.expect("greeting");
        let mut reader = FrameReader::new(derp::MAX_FRAME_LEN);
        let mut buf = [0u8; 4096];
        let mut frames = Vec::new();
        // ClientInfo, NotePreferred(1), then later the Pong.
        while frames.len() < 2 {
            let n = tcp.read(&mut buf).await.expect("read");
            reader.push(&buf[..n]);
            while let Some(f) = reader.next_frame().expect("frame") {
                frames.push(f.to_vec());
            }
        }
        let Ok(derp::Decoded::Frame {
            frame: Frame::ClientInfo { key, sealed },
            ..
        }) = derp::decode(&frames[0], derp::MAX_FRAME_LEN)
        else {
            panic!("first frame is not ClientInfo");
        };
        let info = derp::open_client_info(&server_private, &key, sealed).expect("opens");
        assert_eq!(info, ClientInfo::ours());
        assert_eq!(frames[1], Frame::NotePreferred { preferred: true }.to_vec());
        let mut out = derp::server_info_frame(&server_private, &key, &derp::ServerInfo::ours());
        Frame::Ping { data: *b"areyouup" }.encode(&mut out);
        Frame::PeerGone {
            key: PublicKey::from_bytes([5; 32]),
            reason: PeerGoneReason::NotHere,
        }
        .encode(&mut out);
        Frame::RecvPacket {
            src: PublicKey::from_bytes([6; 32]),
            packet: b"relayed",
        }
        .encode(&mut out);
        tcp.write_all(&out).await.expect("write");
        loop {
            if let Some(f) = reader.next_frame().expect("frame") {
                assert_eq!(f, Frame::Pong { data: *b"areyouup" });
                break;
            }
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(n > 0, "client hung up");
            reader.push(&buf[..n]);
        }
        // Hang up.
    });
    let node = DerpNode {
        name: "900a".into(),
        region_id: 900,
        host_name: "127.0.0.1".into(),
        ipv4: "127.0.0.1".into(),
        ipv6: "none".into(),
        derp_port: i32::from(port),
        ..DerpNode::default()
    };
    let target = DerpTarget::from_node(&node, &DerpScheme::new(false, "127.0.0.1", port, false))
        .expect("target");
    let (c, mut rx, mut pk) = spawn_client(&target, [1; 32], 16);
    assert_eq!(
        next_event(&mut rx).await,
        DerpEvent::Connected { region: 900 }
    );
    assert_eq!(
        next_event(&mut rx).await,
        DerpEvent::PeerGone {
            key: PublicKey::from_bytes([5; 32]),
            not_here: true
        }
    );
    assert_eq!(
        next_packet(&mut pk).await,
        (PublicKey::from_bytes([6; 32]), b"relayed".to_vec())
    );
    relay.await.expect("fake relay saw the Pong");
    match next_event(&mut rx).await {
        DerpEvent::Disconnected { region: 900, error } => {
            assert!(error.contains("closed"), "{error}")
        }
        other => panic!("unexpected {other:?}"),
    }
    c.shutdown().await;
}

#[test]
fn targets_from_derp_map_nodes() {
    let tls = DerpScheme::default();
    let debug_http = DerpScheme {
        debug_use_http: true,
        ..DerpScheme::default()
    };
    let node = DerpNode {
        host_name: "derp.example.com".into(),
        ipv4: "192.0.2.1".into(),
        ipv6: "2001:db8::1".into(),
        ..DerpNode::default()
    };
    let t = DerpTarget::from_node(&node, &tls).expect("target");
    assert_eq!(
        (t.host_name.as_str(), t.dial_host.as_str(), t.port, t.tls),
        ("derp.example.com", "192.0.2.1", 443, true)
    );
    let plain = DerpTarget::from_node(&node, &debug_http).expect("target");
    assert_eq!((plain.port, plain.tls), (3340, false));
    let v6_only = DerpNode {
        ipv4: "none".into(),
        ..node.clone()
    };
    assert_eq!(
        DerpTarget::from_node(&v6_only, &tls).expect("v6").dial_host,
        "2001:db8::1"
    );
    let dns = DerpNode {
        ipv4: String::new(),
        ipv6: String::new(),
        derp_port: 8443,
        ..node.clone()
    };
    let t = DerpTarget::from_node(&dns, &tls).expect("dns");
    assert_eq!((t.dial_host.as_str(), t.port), ("derp.example.com", 8443));
    let off = DerpNode {
        ipv4: "none".into(),
        ipv6: "none".into(),
        ..node.clone()
    };
    assert_eq!(DerpTarget::from_node(&off, &tls), None);
    let stun_only = DerpNode {
        stun_only: true,
        ..node
    };
    assert_eq!(DerpTarget::from_node(&stun_only, &tls), None);
}

/// Go's rule: TLS to every relay of the map whatever the control URL's
/// scheme; plain HTTP only with `TS_DEBUG_USE_DERP_HTTP`, or (ours) for
/// the relay on the plain control listener itself.
#[test]
fn tls_follows_the_derp_map_not_the_control_url() {
    let relay = |host: &str, ip: &str, port: i32| DerpNode {
        host_name: host.into(),
        ipv4: ip.into(),
        ipv6: "none".into(),
        derp_port: port,
        ..DerpNode::default()
    };
    let plain_control = DerpScheme::new(false, "127.0.0.1", 8080, false);
    let tls_of = |n: &DerpNode, s: &DerpScheme| DerpTarget::from_node(n, s).expect("dialable").tls;
    // A derper or Tailscale relay named by a map from an http:// control
    // server: TLS (the bug: plain HTTP, "closed during the upgrade").
    assert!(tls_of(
        &relay("derp.example.com", "192.0.2.1", 0),
        &plain_control
    ));
    assert!(tls_of(
        &relay("127.0.0.1", "127.0.0.1", 8443),
        &plain_control
    ));
    assert!(tls_of(&relay("derp.example.com", "", 8080), &plain_control));
    // The control listener's own relay: plain, by address or by name.
    assert!(!tls_of(
        &relay("127.0.0.1", "127.0.0.1", 8080),
        &plain_control
    ));
    assert!(!tls_of(
        &relay("coord.internal", "127.0.0.1", 8080),
        &plain_control
    ));
    let by_name = DerpScheme::new(false, "Coord.Internal", 8080, false);
    assert!(!tls_of(&relay("coord.internal", "", 8080), &by_name));
    let v6 = DerpScheme::new(false, "[::1]", 8080, false);
    let v6_relay = DerpNode {
        ipv4: "none".into(),
        ipv6: "::1".into(),
        ..relay("::1", "", 8080)
    };
    assert!(!tls_of(&v6_relay, &v6));
    // Port 0 means 443: never the plain listener.
    assert!(tls_of(&relay("127.0.0.1", "127.0.0.1", 0), &plain_control));
    // An https:// control URL: TLS everywhere, even at the same address.
    let tls_control = DerpScheme::new(true, "127.0.0.1", 8080, false);
    assert!(tls_of(&relay("127.0.0.1", "127.0.0.1", 8080), &tls_control));
    // Go's debug knob: plain HTTP to every relay, 3340 by default.
    let knob = DerpScheme::new(true, "127.0.0.1", 8080, true);
    let t = DerpTarget::from_node(&relay("derp.example.com", "192.0.2.1", 0), &knob).unwrap();
    assert_eq!((t.tls, t.port), (false, 3340));
}

/// A node that is slow to take relayed packets (its data plane is busy
/// with a bulk download) still sends: its ACKs must not queue behind the
/// data coming in. Before the reader and writer ran side by side, a full
/// packet channel stopped the client's only loop, and with it every send.
#[tokio::test]
async fn a_client_slow_to_take_packets_still_sends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_coordinator(dir.path(), "127.0.0.1:0".parse().unwrap(), None).await;
    let target = target_of(&server, false);
    // a's packet channel holds one packet, and nobody reads it yet.
    let (a_tx, mut a_rx) = mpsc::channel(16);
    let (a_ptx, a_pk) = mpsc::channel(1);
    let a = spawn_derp(
        900,
        &target,
        [1; 32],
        a_tx,
        PacketSink {
            packets: a_ptx,
            counters: Arc::default(),
        },
    );
    let (b, mut b_rx, mut b_pk) = spawn_client(&target, [2; 32], 16);
    let (a_key, b_key) = (public(&[1; 32]), public(&[2; 32]));
    connected(&mut a_rx).await;
    connected(&mut b_rx).await;
    // b floods a: 300 KB, several reads' worth. a's channel takes the
    // first batch and its reader then waits to hand over the next.
    for i in 0..300u32 {
        let mut p = vec![0u8; 1000];
        p[..4].copy_from_slice(&i.to_be_bytes());
        while !b.send(a_key, p.clone()) {
            tokio::task::yield_now().await;
        }
    }
    tokio::time::timeout(WAIT, async {
        while a_pk.is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("a's reader fills its channel");
    // a, still not reading, sends to b: it arrives.
    assert!(a.send(b_key, b"ack".to_vec()));
    assert_eq!(next_packet(&mut b_pk).await, (a_key, b"ack".to_vec()));
    a.shutdown().await;
    b.shutdown().await;
}

/// Replaces the real-time half of tests/derp.rs's 200 s idle test (its
/// WireGuard half runs on the engine's simulator): two clients idle for
/// 200 s of tokio's paused clock, past the client's 120 s read deadline.
/// The relay's keep-alives (every 60 s) keep both connections up: no
/// reconnect, and packets cross at once afterwards. Without keep-alives
/// the read deadline would end both connections at 120 s.
#[tokio::test(start_paused = true)]
async fn idle_clients_stay_connected_past_the_read_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_coordinator(dir.path(), "127.0.0.1:0".parse().expect("addr"), None).await;
    let target = target_of(&server, false);
    let mut p = spawn_pair(&target);
    connected(&mut p.a_rx).await;
    connected(&mut p.b_rx).await;
    exchange(&mut p, "before").await;

    tokio::time::sleep(derp::CLIENT_READ_TIMEOUT + Duration::from_secs(80)).await;

    exchange(&mut p, "after 200 s idle").await;
    for rx in [&mut p.a_rx, &mut p.b_rx] {
        while let Ok(e) = rx.try_recv() {
            assert!(
                !matches!(
                    e,
                    DerpEvent::Disconnected { .. } | DerpEvent::Connected { .. }
                ),
                "the connection was lost or remade while idle: {e:?}"
            );
        }
    }
    p.a.shutdown().await;
    p.b.shutdown().await;
    server.shutdown().await;
}

/// The control case of the test above: a relay that sends nothing for
/// longer than the read deadline (keep-alives every 1,000 s) is given up
/// at 120 s and dialled again.
#[tokio::test(start_paused = true)]
async fn a_silent_relay_is_given_up_after_the_read_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(dir.path()).expect("store"));
    let server = Server::builder(store)
        .derp_config(coordinator::server::derp::DerpConfig {
            verify_clients: false,
            keepalive: Duration::from_secs(1000),
            ..Default::default()
        })
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("coordinator binds");
    let target = target_of(&server, false);
    let (c, mut rx, _pk) = spawn_client(&target, [1; 32], 16);
    connected(&mut rx).await;
    let start = tokio::time::Instant::now();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(300), rx.recv())
            .await
            .expect("an event within 300 s")
            .expect("events open");
        if let DerpEvent::Disconnected { error, .. } = e {
            assert!(error.contains("120 s"), "{error}");
            break;
        }
    }
    let took = start.elapsed();
    assert!(
        took >= derp::CLIENT_READ_TIMEOUT && took < derp::CLIENT_READ_TIMEOUT + WAIT,
        "{took:?}"
    );
    c.shutdown().await;
    server.shutdown().await;
}
