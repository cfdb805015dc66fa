//! MagicDNS end to end: nodes join our coordinator in-process, one of them
//! serves MagicDNS on a loopback port too, and `dig` (bind9-dnsutils)
//! asks it: node names, short names, PTR, extra records, service records
//! of a cluster of pods, NXDOMAIN, REFUSED, TC on UDP with the full answer
//! over TCP. `node.resolve` asks through the virtual interface. A second
//! test forwards outside names to an upstream (another node's responder)
//! and shows a dead upstream does not hold up tailnet answers.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use coordinator::admin::{authkey_create, AuthKeyCreateArgs};
use coordinator::server::{Server, ServerBuilder, ServerHandle};
use coordinator::Store;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tailnet::Node;
use tailnet_tests::within;
use tailnet_wire::control::{DnsRecord, Resolver};

const LIMIT: u64 = 90;
/// Pods of the service: 20 AAAA records (~610 bytes) overflow a 512-byte
/// UDP answer.
const PODS: usize = 20;
const CLUSTER_TAG: &str = "tag:inferadb-eu-west-1";
const SERVICE: &str = "inferadb-control.eu-west-1.ts.net";

fn key(dir: &Path, tags: &[&str]) -> String {
    let store = Store::open(dir).unwrap();
    let args = AuthKeyCreateArgs {
        reusable: true,
        ephemeral: false,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        expiry: Some("1h".into()),
    };
    authkey_create(&store, &args, SystemTime::now())
        .unwrap()
        .key
}

async fn coordinator(
    dir: &Path,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> ServerHandle {
    let store = Arc::new(Store::open(dir).expect("open store"));
    configure(Server::builder(store))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .expect("serve")
}

async fn join(url: &str, key: &str, host: &str, dns_listen: bool) -> Node {
    let mut b = Node::builder()
        .control_url(url)
        .auth_key(key)
        .hostname(host)
        .ephemeral(true)
        .listen("127.0.0.1:0".parse().unwrap())
        .timeout(Duration::from_secs(30));
    if dns_listen {
        b = b.dns_listen("127.0.0.1:0".parse().unwrap());
    }
    b.up().await.unwrap_or_else(|e| panic!("{host} joins: {e}"))
}

/// Waits until `node`'s netmap has `n` peers.
async fn wait_for_peer_count(node: &Node, n: usize) {
    let mut rx = node.watch_netmap().expect("joined through control");
    within(LIMIT, "the netmap update", async {
        loop {
            if rx.borrow().peers().len() >= n {
                return;
            }
            rx.changed().await.expect("netmap watch closed");
        }
    })
    .await;
}

/// What `dig` printed: the status, the header flags and the answer lines.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answers: Vec<String>,
    text: String,
}

impl Dig {
    fn values(&self) -> BTreeSet<String> {
        self.answers
            .iter()
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect()
    }
}

async fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let mut cmd = Command::new("dig");
    cmd.arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args([
            "+time=3",
            "+tries=1",
            "+nocmd",
            "+noall",
            "+comments",
            "+answer",
        ])
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("dig runs (install bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
        .to_string();
    let flags = text
        .split("flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .map(|f| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    Dig {
        status,
        flags,
        answers,
        text,
    }
}

/// The TTL column of the answers.
fn ttls(d: &Dig) -> BTreeSet<String> {
    d.answers
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

fn set<I: IntoIterator<Item = S>, S: ToString>(items: I) -> BTreeSet<String> {
    items.into_iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_against_the_loopback_responder() {
    let dir = tempfile::tempdir().unwrap();
    let server = coordinator(dir.path(), |b| {
        b.dns_extra_records(vec![DnsRecord {
            name: "Grafana.Example.Internal".into(),
            record_type: "A".into(),
            value: "192.0.2.10".into(),
        }])
    })
    .await;
    let url = format!("http://{}", server.local_addr());
    let client_key = key(dir.path(), &["tag:client"]);
    let pod_key = key(dir.path(), &[CLUSTER_TAG]);

    let client = join(&url, &client_key, "client", true).await;
    let mut pods = Vec::new();
    let mut set_ = tokio::task::JoinSet::new();
    for i in 0..PODS {
        let (url, key) = (url.clone(), pod_key.clone());
        set_.spawn(async move {
            let host = format!("inferadb-control-{i}");
            (i, join(&url, &key, &host, false).await)
        });
    }
    while let Some(r) = set_.join_next().await {
        pods.push(r.unwrap());
    }
    pods.sort_by_key(|(i, _)| *i);
    let mut pods: Vec<Node> = pods.into_iter().map(|(_, n)| n).collect();
    wait_for_peer_count(&client, PODS).await;
    let dns = client.dns_listen_addr().expect("--dns-listen bound");

    let v4 = |n: &Node| n.ipv4().unwrap();
    let v6 = |n: &Node| *n.addresses().iter().find(|a| a.is_ipv6()).unwrap();

    // Node names, case-insensitive, trailing dot optional.
    let d = dig(dns, &["inferadb-control-0.tailnet.internal", "A"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert!(d.flags.contains(&"aa".to_string()), "{}", d.text);
    assert_eq!(d.values(), set([v4(&pods[0])]));
    assert_eq!(ttls(&d), set(["600"]), "node TTL: {}", d.text);
    let d = dig(dns, &["INFERADB-CONTROL-0.TailNet.Internal.", "AAAA"]).await;
    assert_eq!(d.values(), set([v6(&pods[0])]), "{}", d.text);

    // Short names through the search domain.
    let d = dig(dns, &["inferadb-control-1", "A"]).await;
    assert_eq!(d.values(), set([v4(&pods[1])]), "{}", d.text);

    // PTR, IPv4 and IPv6.
    let d = dig(dns, &["-x", &v4(&pods[2]).to_string()]).await;
    assert_eq!(
        d.values(),
        set(["inferadb-control-2.tailnet.internal."]),
        "{}",
        d.text
    );
    let d = dig(dns, &["-x", &v6(&pods[2]).to_string()]).await;
    assert_eq!(
        d.values(),
        set(["inferadb-control-2.tailnet.internal."]),
        "{}",
        d.text
    );
    let d = dig(dns, &["-x", "100.64.254.254"]).await;
    assert_eq!(d.status, "NXDOMAIN", "{}", d.text);

    // Extra records from the DNS config.
    let d = dig(dns, &["grafana.example.internal", "A"]).await;
    assert_eq!(d.values(), set(["192.0.2.10"]), "{}", d.text);

    // Service records: every pod of the cluster, short TTL.
    let d = dig(dns, &[SERVICE, "A"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert_eq!(d.values(), set(pods.iter().map(v4)), "{}", d.text);
    assert_eq!(ttls(&d), set(["5"]), "service TTL: {}", d.text);
    let d = dig(dns, &["inferadb-control-3.eu-west-1.ts.net", "A"]).await;
    assert_eq!(d.values(), set([v4(&pods[3])]), "{}", d.text);

    // NXDOMAIN inside tailnet zones; REFUSED outside with no upstream.
    for name in ["nope.tailnet.internal", "inferadb-engine.eu-west-1.ts.net"] {
        let d = dig(dns, &[name, "A"]).await;
        assert_eq!(d.status, "NXDOMAIN", "{name}: {}", d.text);
    }
    let d = dig(dns, &["example.com", "A"]).await;
    assert_eq!(d.status, "REFUSED", "{}", d.text);

    // A large answer: truncated on UDP (512 bytes without EDNS), whole
    // over TCP.
    let d = dig(dns, &["+noedns", "+ignore", SERVICE, "AAAA"]).await;
    assert!(d.flags.contains(&"tc".to_string()), "TC: {}", d.text);
    assert!(d.answers.is_empty(), "{}", d.text);
    let d = dig(dns, &["+tcp", SERVICE, "AAAA"]).await;
    assert!(!d.flags.contains(&"tc".to_string()), "{}", d.text);
    assert_eq!(d.values(), set(pods.iter().map(v6)), "{}", d.text);

    // node.resolve through the virtual interface (100.100.100.100 in the
    // client's own netstack), from the client and from a pod (self is a
    // member of its own service).
    let want: BTreeSet<IpAddr> = pods.iter().flat_map(|p| [v4(p), v6(p)]).collect();
    for who in [&client, &pods[5]] {
        let got = within(10, "resolve", who.resolve(SERVICE))
            .await
            .expect("resolves");
        assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), want);
        assert!(
            got[..PODS].iter().all(IpAddr::is_ipv4),
            "IPv4 first: {got:?}"
        );
    }
    let got = client.resolve("inferadb-control-7").await.unwrap();
    assert_eq!(got, vec![v4(&pods[7]), v6(&pods[7])]);
    let e = client.resolve("nope.tailnet.internal").await.unwrap_err();
    assert!(matches!(e, tailnet::ResolveError::NxDomain(_)), "{e}");
    let stats = client.dns_stats().unwrap();
    assert!(stats.queries >= 20 && stats.truncated >= 1, "{stats:?}");

    // A pod that leaves drops out of the service within seconds.
    let gone = pods.pop().unwrap();
    let gone_v4 = v4(&gone);
    gone.shutdown().await;
    drop(gone);
    within(LIMIT, "the departed pod leaves the service", async {
        loop {
            let d = dig(dns, &[SERVICE, "A"]).await;
            if d.values().len() == PODS - 1 && !d.values().contains(&gone_v4.to_string()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;

    client.shutdown().await;
    for p in pods {
        p.shutdown().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_names_are_forwarded_and_a_dead_upstream_blocks_nothing() {
    // The "upstream": another tailnet's node whose responder knows
    // outside.example.org as an extra record.
    let up_dir = tempfile::tempdir().unwrap();
    let up_server = coordinator(up_dir.path(), |b| {
        b.dns_extra_records(vec![DnsRecord {
            name: "outside.example.org".into(),
            record_type: String::new(),
            value: "192.0.2.77".into(),
        }])
    })
    .await;
    let up_node = join(
        &format!("http://{}", up_server.local_addr()),
        &key(up_dir.path(), &["tag:upstream"]),
        "upstream",
        true,
    )
    .await;
    let upstream = up_node.dns_listen_addr().unwrap();
    // A resolver that never answers.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let server = coordinator(dir.path(), |b| {
        b.dns_resolvers(vec![Resolver::new(upstream.to_string())])
    })
    .await;
    let node = join(
        &format!("http://{}", server.local_addr()),
        &key(dir.path(), &["tag:client"]),
        "client",
        true,
    )
    .await;
    let dns = node.dns_listen_addr().unwrap();

    let d = dig(dns, &["outside.example.org", "A"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert_eq!(d.values(), set(["192.0.2.77"]), "{}", d.text);
    let got = node.resolve("outside.example.org").await.unwrap();
    assert_eq!(got, vec!["192.0.2.77".parse::<IpAddr>().unwrap()]);
    // Names the upstream does not know come back as it says.
    let d = dig(dns, &["nothing.example.org", "A"]).await;
    assert_eq!(d.status, "REFUSED", "{}", d.text);

    // Point the node at the dead resolver: outside names fail after the
    // forward timeout, tailnet names answer at once meanwhile.
    let dir2 = tempfile::tempdir().unwrap();
    let server2 = coordinator(dir2.path(), |b| {
        b.dns_resolvers(vec![Resolver::new(dead_addr.to_string())])
    })
    .await;
    let node2 = join(
        &format!("http://{}", server2.local_addr()),
        &key(dir2.path(), &["tag:client"]),
        "client2",
        true,
    )
    .await;
    let dns2 = node2.dns_listen_addr().unwrap();
    let slow = tokio::spawn(async move {
        let t = Instant::now();
        let d = dig(dns2, &["+time=5", "outside.example.org", "A"]).await;
        (d, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let d = dig(dns2, &["client2.tailnet.internal", "A"]).await;
    let fast = t.elapsed();
    assert_eq!(d.values(), set([node2.ipv4().unwrap()]), "{}", d.text);
    assert!(
        fast < Duration::from_millis(1500),
        "tailnet answer took {fast:?}"
    );
    let (d, took) = slow.await.unwrap();
    assert_eq!(d.status, "SERVFAIL", "{}", d.text);
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(node2.dns_stats().unwrap().forward_failed >= 1);
    drop(dead);

    for n in [node, node2, up_node] {
        n.shutdown().await;
    }
    for s in [server, server2, up_server] {
        s.shutdown().await;
    }
}

/// One DNS-over-TCP exchange on `s`: a query for `name` (A); the reply's
/// length, or why not.
async fn tcp_query(s: &mut tokio::net::TcpStream, name: &str) -> std::io::Result<usize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut msg = (q.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(&q);
    s.write_all(&msg).await?;
    let len = s.read_u16().await?;
    let mut reply = vec![0u8; usize::from(len)];
    s.read_exact(&mut reply).await?;
    Ok(reply.len())
}

/// Issue 16 finding 9: MagicDNS over TCP had no connection cap. Now one
/// source address holds at most 32 connections: the 33rd is closed at
/// once unanswered, the 32 are still served, and a slot freed is usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magicdns_over_tcp_caps_connections_per_source() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let server = coordinator(dir.path(), |b| b).await;
    let url = format!("http://{}", server.local_addr());
    let key = key(dir.path(), &["tag:client"]);
    let node = join(&url, &key, "dnstcp", true).await;
    let dns = node.dns_listen_addr().expect("--dns-listen bound");
    let name = "dnstcp.tailnet.internal";

    let mut held = Vec::new();
    for i in 0..32 {
        let mut s = tokio::net::TcpStream::connect(dns).await.unwrap();
        within(10, "an answer under the cap", tcp_query(&mut s, name))
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        held.push(s);
    }
    let mut over = tokio::net::TcpStream::connect(dns).await.unwrap();
    // Closed without an answer (the query may or may not get written).
    let _ = tcp_query(&mut over, name).await;
    let mut buf = [0u8; 64];
    let n = within(5, "the over-cap connection closed", over.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "the 33rd connection from one address was served");
    // The held ones still work; one closed frees a slot.
    within(10, "a held connection", tcp_query(&mut held[31], name))
        .await
        .expect("held connection served");
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = tokio::net::TcpStream::connect(dns).await.unwrap();
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(2), tcp_query(&mut s, name)).await
        {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await;
}
