//! The coordinator's DERP relay, driven by raw clients speaking the
//! `tailnet_wire::derp` codec over loopback TCP: the upgrade, the
//! handshake, forwarding both ways, PeerGone, Ping/Pong, KeepAlive, bad
//! input closing only its own connection, a replaced connection, the
//! probes, a key stable across restarts.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use coordinator::server::derp::DerpConfig;
use coordinator::server::{Server, ServerHandle};
use coordinator::Store;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tailnet_wire::derp::{self, ClientInfo, Frame, FrameReader, PeerGoneReason};
use tailnet_wire::PublicKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

struct Relay {
    server: ServerHandle,
    _dir: tempfile::TempDir,
}

impl Relay {
    /// A relay serving any key (these tests drive it with fresh keys).
    async fn start(config: DerpConfig) -> Relay {
        Relay::start_verified(DerpConfig {
            verify_clients: false,
            ..config
        })
        .await
    }

    /// A relay with `config` as given (`verify_clients` as set there).
    async fn start_verified(config: DerpConfig) -> Relay {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path()).expect("store"));
        let server = Server::builder(store)
            .derp_config(config)
            .bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        Relay { server, _dir: dir }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn counter(
        &self,
        pick: fn(&coordinator::server::derp::DerpCounters) -> &std::sync::atomic::AtomicU64,
    ) -> u64 {
        pick(self.server.derp_counters()).load(Ordering::Relaxed)
    }

    /// Waits until `pick` reads `want` (counters move on the relay's tasks).
    async fn wait_counter(
        &self,
        what: &str,
        pick: fn(&coordinator::server::derp::DerpCounters) -> &std::sync::atomic::AtomicU64,
        want: u64,
    ) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.counter(pick) != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {} instead of {want}",
                self.counter(pick)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn key(private: &[u8; 32]) -> PublicKey {
    PublicKey::from_bytes(x25519_dalek::x25519(
        *private,
        x25519_dalek::X25519_BASEPOINT_BYTES,
    ))
}

/// What a raw client read, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Packet(PublicKey, Vec<u8>),
    Gone(PublicKey, PeerGoneReason),
    Pong([u8; 8]),
    KeepAlive,
    Other(u8),
}

struct Raw {
    tcp: TcpStream,
    reader: FrameReader,
    head: String,
    server_key: PublicKey,
    public: PublicKey,
    /// The ServerInfo the relay sent ([`Raw::connect`]).
    info: derp::ServerInfo,
}

impl Raw {
    /// Upgrade and read the ServerKey; no ClientInfo yet.
    async fn upgrade(addr: SocketAddr) -> Raw {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(&derp::upgrade_request("127.0.0.1"))
            .await
            .expect("request");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let resp = loop {
            if let Some(r) = derp::parse_upgrade_response(&buf).expect("101") {
                break r;
            }
            let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
                .await
                .expect("response in time")
                .expect("read");
            assert!(n > 0, "closed during the upgrade: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..resp.head_len]).to_string();
        let mut reader = FrameReader::new(derp::MAX_FRAME_LEN);
        reader.push(&buf[resp.head_len..]);
        let mut raw = Raw {
            tcp,
            reader,
            head,
            server_key: PublicKey::from_bytes([0; 32]),
            public: PublicKey::from_bytes([0; 32]),
            info: derp::ServerInfo::default(),
        };
        let server_key = loop {
            match raw.reader.next_frame().expect("frame") {
                Some(Frame::ServerKey { key }) => break key,
                Some(f) => panic!("{f:?} before ServerKey"),
                None => raw.fill().await,
            }
        };
        assert_eq!(resp.server_key, Some(server_key), "header and frame agree");
        raw.server_key = server_key;
        raw
    }

    /// A client that completed the handshake as `private`.
    async fn connect(addr: SocketAddr, private: [u8; 32]) -> Raw {
        let mut raw = Raw::upgrade(addr).await;
        raw.public = key(&private);
        let hello = derp::client_info_frame(&private, &raw.server_key, &ClientInfo::ours());
        raw.tcp.write_all(&hello).await.expect("client info");
        let sealed = loop {
            match raw.reader.next_frame().expect("frame") {
                Some(Frame::ServerInfo { sealed }) => break sealed.to_vec(),
                Some(f) => panic!("{f:?} before ServerInfo"),
                None => raw.fill().await,
            }
        };
        let info = derp::open_server_info(&private, &raw.server_key, &sealed).expect("opens");
        assert_eq!(info.version, 2);
        raw.info = info;
        raw
    }

    async fn fill(&mut self) {
        let mut chunk = vec![0u8; 65536];
        let n = tokio::time::timeout(WAIT, self.tcp.read(&mut chunk))
            .await
            .expect("a frame in time")
            .expect("read");
        assert!(n > 0, "relay closed the connection");
        self.reader.push(&chunk[..n]);
    }

    async fn send(&mut self, frame: Frame<'_>) {
        self.tcp.write_all(&frame.to_vec()).await.expect("write");
    }

    async fn send_packet(&mut self, dst: PublicKey, packet: &[u8]) {
        self.send(Frame::SendPacket { dst, packet }).await;
    }

    /// The next frame, KeepAlives included.
    async fn next_any(&mut self) -> Got {
        loop {
            let got = match self.reader.next_frame().expect("well-formed frame") {
                None => None,
                Some(Frame::RecvPacket { src, packet }) => Some(Got::Packet(src, packet.to_vec())),
                Some(Frame::PeerGone { key, reason }) => Some(Got::Gone(key, reason)),
                Some(Frame::Pong { data }) => Some(Got::Pong(data)),
                Some(Frame::KeepAlive) => Some(Got::KeepAlive),
                Some(f) => Some(Got::Other(f.frame_type().0)),
            };
            match got {
                Some(g) => return g,
                None => self.fill().await,
            }
        }
    }

    /// The next frame that is not a KeepAlive.
    async fn next(&mut self) -> Got {
        loop {
            match self.next_any().await {
                Got::KeepAlive => continue,
                g => return g,
            }
        }
    }

    /// Whether the relay closes this connection within [`WAIT`].
    async fn closed(&mut self) -> bool {
        let mut chunk = vec![0u8; 65536];
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {} // frames before the close
            }
        }
    }

    /// A Ping answered: proves the connection is alive and everything the
    /// relay queued before the Pong has arrived.
    async fn round_trip(&mut self, tag: u8) -> Vec<Got> {
        let data = [tag; 8];
        self.send(Frame::Ping { data }).await;
        let mut before = Vec::new();
        loop {
            match self.next().await {
                Got::Pong(d) if d == data => return before,
                g => before.push(g),
            }
        }
    }
}

fn disco_packet() -> Vec<u8> {
    let mut p = derp::DISCO_MAGIC.to_vec();
    p.extend_from_slice(&[0x11; 32]);
    p.extend_from_slice(&[0x22; 24]);
    p.extend_from_slice(b"sealed disco message");
    p
}

#[tokio::test]
async fn two_clients_exchange_packets_both_ways() {
    let relay = Relay::start(DerpConfig::default()).await;
    let mut a = Raw::connect(relay.addr(), [1; 32]).await;
    let mut b = Raw::connect(relay.addr(), [2; 32]).await;
    // The 101 is Go's: title-case names, version 2, the relay's key in hex.
    for line in [
        "HTTP/1.1 101 Switching Protocols\r\n",
        "Upgrade: DERP\r\n",
        "Connection: Upgrade\r\n",
        "Derp-Version: 2\r\n",
    ] {
        assert!(a.head.contains(line), "{line:?} missing in {}", a.head);
    }
    let hex_key = hex::encode(relay.server.derp().public_key().as_bytes());
    assert!(
        a.head.contains(&format!("Derp-Public-Key: {hex_key}\r\n")),
        "{}",
        a.head
    );
    assert_eq!(a.server_key, relay.server.derp().public_key());
    relay
        .wait_counter("connections", |c| &c.connections, 2)
        .await;
    assert_eq!(relay.server.derp().clients(), 2);
    assert!(relay.server.derp().is_connected(&b.public));

    // NotePreferred is accepted (stats only).
    a.send(Frame::NotePreferred { preferred: true }).await;
    a.send_packet(b.public, b"hello from a").await;
    assert_eq!(
        b.next().await,
        Got::Packet(a.public, b"hello from a".to_vec())
    );
    b.send_packet(a.public, b"hello from b").await;
    assert_eq!(
        a.next().await,
        Got::Packet(b.public, b"hello from b".to_vec())
    );
    // A disco packet takes its own queue and arrives the same way.
    let disco = disco_packet();
    a.send_packet(b.public, &disco).await;
    assert_eq!(b.next().await, Got::Packet(a.public, disco));
    // The largest packet (64 KiB) goes through.
    let big = vec![0x5a; derp::MAX_PACKET_SIZE];
    b.send_packet(a.public, &big).await;
    assert_eq!(a.next().await, Got::Packet(b.public, big));

    relay
        .wait_counter("forwarded", |c| &c.packets_forwarded, 4)
        .await;
    assert_eq!(
        relay.counter(|c| &c.bytes_forwarded),
        (12 + 12 + disco_packet().len() + derp::MAX_PACKET_SIZE) as u64
    );
    relay.server.shutdown().await;
    assert!(a.closed().await, "shutdown closes DERP connections");
}

#[tokio::test]
async fn peer_gone_not_here_is_rate_limited_and_disconnects_are_announced() {
    let relay = Relay::start(DerpConfig::default()).await;
    let mut a = Raw::connect(relay.addr(), [1; 32]).await;
    let mut b = Raw::connect(relay.addr(), [2; 32]).await;
    let nobody = PublicKey::from_bytes([0x77; 32]);

    // A WireGuard packet to an unknown key: dropped silently.
    a.send_packet(nobody, b"wireguard").await;
    assert_eq!(a.round_trip(1).await, vec![]);
    // Disco packets are answered with PeerGone(not here): three at once,
    // then one a second (Go's limiter).
    for _ in 0..5 {
        a.send_packet(nobody, &disco_packet()).await;
    }
    let got = a.round_trip(2).await;
    assert_eq!(got, vec![Got::Gone(nobody, PeerGoneReason::NotHere); 3]);
    assert_eq!(relay.counter(|c| &c.dropped_unknown_dest), 6);
    assert_eq!(relay.counter(|c| &c.peer_gone_not_here), 3);

    // B sends to A; when B leaves, A hears of it.
    b.send_packet(a.public, b"from b").await;
    assert_eq!(a.next().await, Got::Packet(b.public, b"from b".to_vec()));
    // A received from B, so B's departure is news to A.
    drop(b);
    assert_eq!(
        a.next().await,
        Got::Gone(key(&[2; 32]), PeerGoneReason::Disconnected)
    );
    relay
        .wait_counter("peer gone disconnected", |c| &c.peer_gone_disconnected, 1)
        .await;
    assert_eq!(relay.server.derp().clients(), 1);
    relay.server.shutdown().await;
}

#[tokio::test]
async fn ping_pong_and_keepalive() {
    let relay = Relay::start(DerpConfig {
        keepalive: Duration::from_millis(200),
        keepalive_jitter: Duration::ZERO,
        ..DerpConfig::default()
    })
    .await;
    let mut a = Raw::connect(relay.addr(), [1; 32]).await;
    a.send(Frame::Ping { data: *b"ping1234" }).await;
    assert_eq!(a.next().await, Got::Pong(*b"ping1234"));
    // A longer ping payload (up to 1000 bytes) echoes its first 8 bytes.
    let mut long = vec![0x12, 0, 0, 0, 20];
    long.extend_from_slice(b"abcdefgh-and-more-..");
    a.tcp.write_all(&long).await.expect("write");
    assert_eq!(a.next().await, Got::Pong(*b"abcdefgh"));
    assert_eq!(a.next_any().await, Got::KeepAlive);
    assert_eq!(a.next_any().await, Got::KeepAlive);
    // Unknown frame types from a client are skipped.
    a.send(Frame::Unknown {
        frame_type: 0x7e,
        payload: b"future",
    })
    .await;
    assert!(a.round_trip(3).await.is_empty());
    assert_eq!(relay.counter(|c| &c.pongs), 3);
    relay.server.shutdown().await;
}

#[tokio::test]
async fn bad_input_closes_only_its_own_connection_and_is_counted() {
    let relay = Relay::start(DerpConfig {
        handshake_timeout: Duration::from_millis(500),
        ..DerpConfig::default()
    })
    .await;
    let mut a = Raw::connect(relay.addr(), [1; 32]).await;
    let mut b = Raw::connect(relay.addr(), [2; 32]).await;

    // A ClientInfo whose box does not open.
    let mut garbage = Raw::upgrade(relay.addr()).await;
    garbage
        .send(Frame::ClientInfo {
            key: key(&[3; 32]),
            sealed: &[0xee; 64],
        })
        .await;
    assert!(garbage.closed().await);
    // A ClientInfo sealed to the wrong key.
    let mut wrong = Raw::upgrade(relay.addr()).await;
    let hello = derp::client_info_frame(&[4; 32], &key(&[9; 32]), &ClientInfo::ours());
    wrong.tcp.write_all(&hello).await.expect("write");
    assert!(wrong.closed().await);
    // No ClientInfo at all: the handshake times out.
    let mut silent = Raw::upgrade(relay.addr()).await;
    assert!(silent.closed().await);
    relay
        .wait_counter("handshake failures", |c| &c.handshake_failed, 3)
        .await;
    // A client that hangs up before ClientInfo gave up; it was not refused.
    drop(Raw::upgrade(relay.addr()).await);
    relay
        .wait_counter("abandoned handshakes", |c| &c.handshake_abandoned, 1)
        .await;
    assert_eq!(relay.counter(|c| &c.handshake_failed), 3);
    assert!(!relay.server.derp().is_connected(&key(&[3; 32])));

    // After the handshake: a frame header announcing 2 MiB.
    let mut huge = Raw::connect(relay.addr(), [5; 32]).await;
    huge.tcp
        .write_all(&[0x04, 0x00, 0x20, 0x00, 0x00])
        .await
        .expect("write");
    assert!(huge.closed().await);
    // A SendPacket over 64 KiB.
    let mut over = Raw::connect(relay.addr(), [6; 32]).await;
    over.send_packet(a.public, &vec![0; derp::MAX_PACKET_SIZE + 1])
        .await;
    assert!(over.closed().await);
    // A malformed Ping, and a mesh-only frame without the mesh key.
    let mut short = Raw::connect(relay.addr(), [7; 32]).await;
    short
        .tcp
        .write_all(&[0x12, 0, 0, 0, 2, 1, 2])
        .await
        .expect("write");
    assert!(short.closed().await);
    let mut mesh = Raw::connect(relay.addr(), [8; 32]).await;
    mesh.send(Frame::WatchConns).await;
    assert!(mesh.closed().await);
    relay
        .wait_counter("closed malformed", |c| &c.closed_malformed, 4)
        .await;
    // None of that touched A or B.
    a.send_packet(b.public, b"still here").await;
    assert_eq!(
        b.next().await,
        Got::Packet(a.public, b"still here".to_vec())
    );
    assert!(a.round_trip(4).await.is_empty());
    relay.server.shutdown().await;
}

#[tokio::test]
async fn a_newer_connection_with_the_same_key_replaces_the_old() {
    let relay = Relay::start(DerpConfig::default()).await;
    let mut b = Raw::connect(relay.addr(), [2; 32]).await;
    let mut a1 = Raw::connect(relay.addr(), [1; 32]).await;
    a1.send_packet(b.public, b"from a1").await;
    assert_eq!(b.next().await, Got::Packet(a1.public, b"from a1".to_vec()));

    let mut a2 = Raw::connect(relay.addr(), [1; 32]).await;
    assert!(a1.closed().await, "the older connection is closed");
    relay.wait_counter("replaced", |c| &c.replaced, 1).await;
    assert_eq!(relay.server.derp().clients(), 2);
    // Packets for the key reach the new connection, and B was not told the
    // key left (it did not).
    b.send_packet(a2.public, b"to a").await;
    assert_eq!(a2.next().await, Got::Packet(b.public, b"to a".to_vec()));
    assert!(b.round_trip(1).await.is_empty());
    a2.send_packet(b.public, b"from a2").await;
    assert_eq!(b.next().await, Got::Packet(a2.public, b"from a2".to_vec()));
    // When the key really leaves, B hears of it once.
    drop(a2);
    assert_eq!(
        b.next().await,
        Got::Gone(key(&[1; 32]), PeerGoneReason::Disconnected)
    );
    assert!(b.round_trip(2).await.is_empty());
    relay.server.shutdown().await;
}

async fn http(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    // The head is enough (a 426 keeps the connection open).
    let mut resp = Vec::new();
    let mut chunk = [0u8; 1024];
    while !resp.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(WAIT, tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => resp.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&resp).to_string()
}

#[tokio::test]
async fn probes_answer_and_other_upgrades_are_refused() {
    let relay = Relay::start(DerpConfig::default()).await;
    for req in [
        "GET /derp/probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "HEAD /derp/latency-check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let resp = http(relay.addr(), req).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{req}: {resp}");
    }
    let plain = http(
        relay.addr(),
        "GET /derp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 426"), "{plain}");
    let ws = http(
        relay.addr(),
        "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    assert!(ws.starts_with("HTTP/1.1 426"), "{ws}");
    // Upgrade tokens compare case-insensitively.
    let mut tcp = TcpStream::connect(relay.addr()).await.expect("connect");
    tcp.write_all(b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: derp\r\nConnection: upgrade\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 12];
    tcp.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"HTTP/1.1 101");
    relay.server.shutdown().await;
}

#[tokio::test]
async fn the_relay_key_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = || async {
        let store = Arc::new(Store::open(dir.path()).expect("store"));
        Server::builder(store)
            .bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind")
    };
    let first = start().await;
    let k1 = first.derp().public_key();
    assert_ne!(k1.as_bytes(), first.control_public().as_bytes());
    first.shutdown().await;
    let second = start().await;
    assert_eq!(second.derp().public_key(), k1);
    second.shutdown().await;
}

/// Registers a node with node key `public` in the relay's store.
fn register(relay: &Relay, public: PublicKey, machine: u8) -> coordinator::NodeId {
    let store = relay.server.store();
    let args = coordinator::admin::AuthKeyCreateArgs {
        reusable: true,
        ephemeral: false,
        tags: vec!["tag:relay-test".into()],
        expiry: Some("1h".into()),
    };
    let key = coordinator::admin::authkey_create(store, &args, std::time::SystemTime::now())
        .expect("auth key")
        .key;
    let req = coordinator::RegisterRequest {
        node_key: *public.as_bytes(),
        machine_key: [machine; 32],
        hostname: format!("relay-test-{machine}"),
        auth_key: Some(key),
        ..Default::default()
    };
    store
        .register(&req, std::time::SystemTime::now())
        .expect("register")
        .node
        .id
}

/// Upgrade and ClientInfo as `private`; true if the relay answered with
/// ServerInfo, false if it closed the connection instead.
async fn try_connect(addr: SocketAddr, private: [u8; 32]) -> (Raw, bool) {
    let mut raw = Raw::upgrade(addr).await;
    raw.public = key(&private);
    let hello = derp::client_info_frame(&private, &raw.server_key, &ClientInfo::ours());
    raw.tcp.write_all(&hello).await.expect("client info");
    let mut chunk = vec![0u8; 65536];
    loop {
        match raw.reader.next_frame().expect("frame") {
            Some(Frame::ServerInfo { .. }) => return (raw, true),
            Some(f) => panic!("{f:?} before ServerInfo"),
            None => {}
        }
        match tokio::time::timeout(WAIT, raw.tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (raw, false),
            Ok(Ok(n)) => raw.reader.push(&chunk[..n]),
            Err(_) => panic!("neither ServerInfo nor a close in {WAIT:?}"),
        }
    }
}

/// Issue 16 finding 3: the relay served any key whose ClientInfo box
/// opened, so two fresh keys could relay to each other. Now a key that is
/// not a node of this coordinator is refused after ClientInfo (Go's
/// `--verify-clients`), an allow-listed key is served, and a deleted
/// node's connection is closed.
#[tokio::test]
async fn only_registered_nodes_use_the_relay_and_deleted_ones_are_cut_off() {
    let allowed_private = [0x51; 32];
    let relay = Relay::start_verified(DerpConfig {
        reverify_interval: Duration::from_millis(100),
        allowed_keys: [key(&allowed_private)].into_iter().collect(),
        ..DerpConfig::default()
    })
    .await;
    // A stranger: refused, counted, never sees ServerInfo.
    let (_stranger, served) = try_connect(relay.addr(), [0x31; 32]).await;
    assert!(!served, "an unregistered key was served");
    relay
        .wait_counter("refused", |c| &c.refused_unknown_key, 1)
        .await;
    assert_eq!(relay.server.derp().clients(), 0);

    // A registered node and an allow-listed key are served and relay.
    let a_private = [0x41; 32];
    let a_id = register(&relay, key(&a_private), 0xa1);
    let (mut a, served) = try_connect(relay.addr(), a_private).await;
    assert!(served, "a registered node was refused");
    let (mut b, served) = try_connect(relay.addr(), allowed_private).await;
    assert!(served, "an allow-listed key was refused");
    b.send_packet(a.public, b"hello a").await;
    assert_eq!(a.next().await, Got::Packet(b.public, b"hello a".to_vec()));

    // The node is deleted: its connection closes within the re-check.
    assert!(relay.server.store().remove(a_id).expect("remove"));
    assert!(a.closed().await, "a deleted node stayed connected");
    relay.wait_counter("revoked", |c| &c.revoked, 1).await;
    // The allow-listed one stays.
    assert!(b.round_trip(7).await.is_empty());
}

/// Issue 16 finding 4: queues were bounded in packets only (1024 x 64 KiB
/// per destination), so receivers that stopped reading let an anonymous
/// sender pin hundreds of MiB. Now each queue has a byte budget
/// (drop-oldest) and the relay a total one, read from its own accounting.
#[tokio::test]
async fn receivers_that_stop_reading_hold_no_more_than_the_byte_budget() {
    const PER_QUEUE: usize = 512 << 10;
    const TOTAL: usize = 3 << 20;
    let relay = Relay::start(DerpConfig {
        queue_bytes: PER_QUEUE,
        total_queue_bytes: TOTAL,
        // Long enough that the stalled receivers stay for the whole test.
        write_timeout: Duration::from_secs(60),
        ..DerpConfig::default()
    })
    .await;
    // Ten receivers that never read.
    let mut receivers = Vec::new();
    for i in 0..10u8 {
        receivers.push(Raw::connect(relay.addr(), [0x60 + i; 32]).await);
    }
    let mut sender = Raw::connect(relay.addr(), [0x7f; 32]).await;
    let packet = vec![0xab; derp::MAX_PACKET_SIZE];
    let mut max_seen = 0;
    // 10 x 100 x 64 KiB = 62.5 MiB aimed at them.
    for round in 0..100 {
        for r in &receivers {
            sender.send_packet(r.public, &packet).await;
        }
        if round % 10 == 0 {
            max_seen = max_seen.max(relay.server.derp().queued_bytes());
        }
    }
    // Everything the sender wrote has been handled once a Ping is answered.
    sender.round_trip(1).await;
    max_seen = max_seen.max(relay.server.derp().queued_bytes());
    assert!(
        max_seen <= TOTAL,
        "relay holds {max_seen} bytes, budget {TOTAL}"
    );
    // The kernel's socket buffers take some of it; the rest hit the
    // budgets.
    assert!(
        relay.counter(|c| &c.dropped_memory) > 0,
        "the total budget never applied"
    );
    drop(receivers);
}

/// Issue 16: per-client rate limits, advertised in ServerInfo the way Go's
/// `serverInfo` carries them (`TokenBucketBytesPerSecond`,
/// `TokenBucketBytesBurst`; Go's clients then hold themselves to them) and
/// enforced by the relay, which reads no faster from a client over its
/// rate: 1 MiB sent at a relay allowing 1 MiB/s after a 128 KiB burst
/// takes most of a second to arrive, and all of it arrives.
#[tokio::test]
async fn client_rate_limits_are_advertised_and_enforced() {
    // The default: no limit and nothing advertised, as Go's derper.
    let relay = Relay::start(DerpConfig::default()).await;
    let a = Raw::connect(relay.addr(), [1; 32]).await;
    assert_eq!(a.info, derp::ServerInfo::ours());
    assert_eq!(coordinator::server::derp::DEFAULT_RATE_BYTES_PER_SEC, 0);

    const RATE: u32 = 1 << 20;
    const BURST: u32 = 128 << 10;
    let relay = Relay::start(DerpConfig {
        rate_bytes_per_sec: RATE,
        rate_burst_bytes: BURST,
        ..DerpConfig::default()
    })
    .await;
    let mut rx = Raw::connect(relay.addr(), [2; 32]).await;
    let mut tx = Raw::connect(relay.addr(), [3; 32]).await;
    assert_eq!(tx.info.token_bucket_bytes_per_second, RATE);
    assert_eq!(tx.info.token_bucket_bytes_burst, BURST);
    let dst = rx.public;
    let packet = vec![0x42; 32 << 10];
    let count = 32; // 1 MiB
    let start = std::time::Instant::now();
    let sender = tokio::spawn(async move {
        for _ in 0..count {
            tx.send_packet(dst, &packet).await;
        }
        tx
    });
    for i in 0..count {
        match tokio::time::timeout(WAIT, rx.next()).await {
            Ok(Got::Packet(_, p)) => assert_eq!(p.len(), 32 << 10),
            Ok(g) => panic!("packet {i}: {g:?}"),
            Err(_) => panic!("packet {i} not relayed in {WAIT:?}"),
        }
    }
    let took = start.elapsed();
    let _tx = sender.await.expect("sender");
    // (1 MiB - 128 KiB burst - one 64 KiB read) at 1 MiB/s: >= 0.8 s.
    assert!(
        took >= Duration::from_millis(750),
        "1 MiB relayed in {took:?} at a 1 MiB/s limit"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(relay.counter(|c| &c.rate_limited) > 0);
    assert_eq!(relay.counter(|c| &c.dropped_queue_full), 0);
}
