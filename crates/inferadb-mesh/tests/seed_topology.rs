//! The seed's demo topology as a test: the embedded coordinator and three
//! regions as in `inferadb-mesh demo` — us-west-1 (2 engines + control),
//! eu-west-1 (2 engines + control), ap-southeast-1 (1 engine) — each role
//! started in-process from YAML with its region's tagged key, and control
//! health-checking what it discovers. Each region reaches the coordinator
//! through a TCP proxy of its own, so the test can cut one region's control
//! link and restore it (and the engine killed in step 2 through one of its
//! own, so its crash can be played alone).
//!
//! 1. Every control discovers exactly the engines of every cluster (their
//!    100.x addresses, port 8080) and every engine both controls (9090),
//!    by themselves: roles start together, before their peers, and no
//!    `refresh_now` is needed.
//! 2. eu-west-1's `inferadb-engine-1` is killed as in a crash (its control
//!    connection does not end, so control still lists it): us-west-1
//!    control's health checks mark it unhealthy within the health-check
//!    window. Then its connection ends and it leaves both controls' sets.
//! 3. It restarts on the same state directory (not ephemeral: same key,
//!    same address) and is back in us-west-1 control's healthy set within
//!    10 s.
//! 4. ap-southeast-1's control link is cut: us-west-1 and eu-west-1 keep
//!    discovering (refreshes give the right sets, and a new us-west-1
//!    engine is discovered by eu-west-1 control meanwhile); the cut engine
//!    keeps its netmap, its discovery of both controls and its tunnels to
//!    them. Control reports the cut engine offline, and MagicDNS service
//!    records leave offline nodes out, so meanwhile the others do not
//!    discover ap-southeast-1 (though its tunnels are up). Restored, it
//!    reconnects, catches up on what it missed, and is discovered again.
//!
//! Timings go to stderr (`--nocapture`).

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use coordinator::admin::{authkey_create, AuthKeyCreateArgs};
use coordinator::server::Server;
use coordinator::Store;
use inferadb_discovery::{Discovery, EndpointSet};
use inferadb_mesh::config::{ControlConfig, EngineConfig};
use inferadb_mesh::roles::{start_control, start_engine, Role};
use inferadb_mesh::seed_yaml::{self, CONTROL_PORT, ENGINE_PORT};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tailnet::BackendState;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const REGIONS: [(&str, usize, bool); 3] = [
    ("us-west-1", 2, true),
    ("eu-west-1", 2, true),
    ("ap-southeast-1", 1, false),
];
const SECRET: &str = "seed topology webhook secret, shared by all roles";
const TOKEN: &str = "seed-topology-token";
/// Control's health checks: a dead engine is unhealthy within
/// 300 ms × 2 + 1000 ms = 1.6 s.
const CONTROL_HEALTH: &str =
    "{interval_ms: 300, timeout_ms: 1000, unhealthy_threshold: 2, healthy_threshold: 1}";
/// The engines check control less often (the cut region's checks show its
/// tunnels still work).
const ENGINE_HEALTH: &str =
    "{interval_ms: 1000, timeout_ms: 1000, unhealthy_threshold: 2, healthy_threshold: 1}";
/// The engine killed and restarted: not ephemeral, so it keeps its key;
/// it reaches the coordinator through a proxy of its own, so its crash can
/// be played without touching its region's link.
const VICTIM: (&str, &str) = ("eu-west-1", "inferadb-engine-1");
/// Scheduling slack on the health-check window for a busy machine (the
/// window itself is pinned by inferadb-discovery's unit test on a paused
/// clock; here, 1.3–1.6 s is typical).
const WINDOW_SLACK: Duration = Duration::from_secs(1);

type View = BTreeMap<String, BTreeSet<SocketAddr>>;

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------
// A region's link to the coordinator.

/// The state of a proxied control link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Forwarding.
    Up,
    /// Cut: live connections are dropped (each end sees it end) and new
    /// ones closed at once.
    Cut,
    /// Held: nothing is forwarded and nothing is closed, as when a pod
    /// dies without its connections ending (a crash, a lost host): the
    /// coordinator goes on thinking the node is connected. Leaving this
    /// state drops the held connections.
    Held,
}

/// A TCP proxy, 127.0.0.1:0 → the coordinator, whose link the test sets.
struct Proxy {
    addr: SocketAddr,
    link: watch::Sender<Link>,
    /// Connections forwarding bytes right now.
    forwarding: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (link, rx) = watch::channel(Link::Up);
        let forwarding = Arc::new(AtomicUsize::new(0));
        let active = forwarding.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = l.accept().await else {
                    continue;
                };
                let now = *rx.borrow();
                if now == Link::Cut {
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(client, upstream, rx.clone(), active.clone()));
            }
        });
        Proxy {
            addr,
            link,
            forwarding,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the link; cut or held, returns once no connection forwards
    /// any more (so nothing the nodes do next gets through).
    async fn set(&self, link: Link) {
        self.link.send_replace(link);
        if link == Link::Up {
            return;
        }
        let t = Instant::now();
        while self.forwarding.load(Ordering::SeqCst) > 0 {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "proxy connections still forwarding 5 s after {link:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// One proxied connection, for as long as the link lets it live.
async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut link: watch::Receiver<Link>,
    forwarding: Arc<AtomicUsize>,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    if *link.borrow() == Link::Up {
        forwarding.fetch_add(1, Ordering::SeqCst);
        let ended = tokio::select! {
            biased;
            _ = link.wait_for(|l| *l != Link::Up) => false,
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => true,
        };
        forwarding.fetch_sub(1, Ordering::SeqCst);
        if ended {
            return;
        }
    }
    let held = *link.borrow() == Link::Held;
    if held {
        // Both sockets stay open and silent until the link changes.
        let _ = link.wait_for(|l| *l != Link::Held).await;
    }
    // Dropping both ends them.
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.link.send_replace(Link::Cut);
        self.task.abort();
    }
}

// ---------------------------------------------------------------------
// Roles from YAML, as `inferadb-mesh engine|control --config` reads them.

fn key(store: &Store, region: &str) -> String {
    let args = AuthKeyCreateArgs {
        reusable: true,
        ephemeral: false,
        tags: vec![format!("tag:inferadb-{region}")],
        expiry: Some("1h".into()),
    };
    authkey_create(store, &args, SystemTime::now()).unwrap().key
}

/// The engine's `auth.discovery` in the seed's regions, health-checked.
fn engine_yaml(region: &str) -> String {
    let mut d = seed_yaml::engine_discovery(&REGIONS, region);
    d.health_check = Some(ENGINE_HEALTH);
    seed_yaml::engine_yaml(&d, SECRET)
}

/// Control's `cache_invalidation.discovery` in the seed's regions,
/// health-checked.
fn control_yaml(region: &str) -> String {
    let mut d = seed_yaml::control_discovery(&REGIONS, region);
    d.health_check = Some(CONTROL_HEALTH);
    seed_yaml::control_yaml(&d, TOKEN, 5000, 2, SECRET)
}

/// One role: where its YAML is, and the role once started.
struct Member {
    region: &'static str,
    host: String,
    file: PathBuf,
    role: Option<Role>,
}

impl Member {
    fn is_control(&self) -> bool {
        self.host.starts_with("inferadb-control")
    }

    fn role(&self) -> &Role {
        self.role
            .as_ref()
            .unwrap_or_else(|| panic!("{} {} is not running", self.region, self.host))
    }

    fn discovery(&self) -> &Discovery {
        &self.role().discovery
    }

    fn ip(&self) -> IpAddr {
        self.role().node.ipv4().expect("an IPv4 tailnet address")
    }

    fn name(&self) -> String {
        format!("{} {}", self.region, self.host)
    }
}

/// Writes the role's YAML and returns the member, not started.
fn member(dir: &Path, region: &'static str, host: &str, url: &str, key: &str) -> Member {
    let ephemeral = (region, host) != VICTIM;
    let mesh = seed_yaml::mesh_yaml(
        url,
        key,
        host,
        &dir.join(format!("{region}-{host}")),
        ephemeral,
    );
    let role = if host.starts_with("inferadb-control") {
        control_yaml(region)
    } else {
        engine_yaml(region)
    };
    let file = dir.join(format!("{region}-{host}.yaml"));
    std::fs::write(&file, format!("{mesh}{role}")).unwrap();
    Member {
        region,
        host: host.to_string(),
        file,
        role: None,
    }
}

/// Starts the role from its YAML file (bounded).
async fn start(file: PathBuf, control: bool, what: String) -> Role {
    let started = async {
        if control {
            let cfg = ControlConfig::load_from(Some(&file), Vec::new())
                .unwrap_or_else(|e| panic!("{what}: configuration: {e}"));
            start_control(cfg).await
        } else {
            let cfg = EngineConfig::load_from(Some(&file), Vec::new())
                .unwrap_or_else(|e| panic!("{what}: configuration: {e}"));
            start_engine(cfg).await
        }
    };
    match tokio::time::timeout(Duration::from_secs(40), started).await {
        Ok(Ok(role)) => role,
        Ok(Err(e)) => panic!("{what} did not start: {e}"),
        Err(_) => panic!("{what} did not start within 40 s"),
    }
}

// ---------------------------------------------------------------------
// Views of discovery.

/// Addresses by cluster (clusters with none left out).
fn view(set: &EndpointSet, healthy_only: bool) -> View {
    let mut m = View::new();
    for e in &set.endpoints {
        if e.healthy || !healthy_only {
            m.entry(e.cluster.clone()).or_default().insert(e.addr);
        }
    }
    m
}

/// Waits until `pred` holds for the discovery's published set, without
/// asking it to refresh: the background refresh must get there alone.
/// Returns how long it took.
async fn converge(
    d: &Discovery,
    secs: u64,
    what: &str,
    pred: impl FnMut(&Arc<EndpointSet>) -> bool,
) -> Duration {
    let t = Instant::now();
    let mut rx = d.subscribe();
    let outcome = match tokio::time::timeout(Duration::from_secs(secs), rx.wait_for(pred)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(true),
        Err(_) => Err(false),
    };
    match outcome {
        Ok(()) => t.elapsed(),
        Err(true) => panic!("{what}: discovery stopped"),
        Err(false) => panic!(
            "{what}: not within {secs} s (background refresh, no refresh_now); now: all {:?}, healthy {:?}",
            view(&d.current(), false),
            view(&d.current(), true)
        ),
    }
}

/// Polls `f` every 100 ms until it is true; panics with `what` and
/// `state()` after `secs`. Returns how long it took.
async fn until(
    secs: u64,
    what: &str,
    mut f: impl FnMut() -> bool,
    state: impl Fn() -> String,
) -> Duration {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > Duration::from_secs(secs) {
            panic!("{what}: not within {secs} s; {}", state());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.elapsed()
}

struct Topology {
    members: Vec<Member>,
}

impl Topology {
    fn get(&self, region: &str, host: &str) -> &Member {
        self.members
            .iter()
            .find(|m| m.region == region && m.host == host)
            .unwrap_or_else(|| panic!("no {region} {host}"))
    }

    fn get_mut(&mut self, region: &str, host: &str) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.region == region && m.host == host)
            .unwrap_or_else(|| panic!("no {region} {host}"))
    }

    fn running(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.role.is_some())
    }

    fn controls(&self) -> impl Iterator<Item = &Member> {
        self.running().filter(|m| m.is_control())
    }

    fn engines(&self) -> impl Iterator<Item = &Member> {
        self.running().filter(|m| !m.is_control())
    }

    /// What a control should discover: every running engine, by region.
    fn want_engines(&self) -> View {
        let mut v = View::new();
        for e in self.engines() {
            v.entry(e.region.to_string())
                .or_default()
                .insert(SocketAddr::new(e.ip(), ENGINE_PORT));
        }
        v
    }

    /// What an engine should discover: every control, by region.
    fn want_controls(&self) -> View {
        let mut v = View::new();
        for c in self.controls() {
            v.entry(c.region.to_string())
                .or_default()
                .insert(SocketAddr::new(c.ip(), CONTROL_PORT));
        }
        v
    }

    async fn shutdown(mut self) {
        for m in &mut self.members {
            if let Some(r) = m.role.take() {
                r.shutdown().await;
            }
        }
    }
}

/// `want` without `addr`.
fn only_without(want: &View, addr: SocketAddr) -> View {
    let mut v = want.clone();
    for s in v.values_mut() {
        s.remove(&addr);
    }
    v.retain(|_, s| !s.is_empty());
    v
}

/// `want` restricted to the clusters in `clusters`.
fn only(want: &View, clusters: &[&str]) -> View {
    want.iter()
        .filter(|(c, _)| clusters.contains(&c.as_str()))
        .map(|(c, s)| (c.clone(), s.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_topology_discovery_failures_and_a_cut_region() {
    // Warnings (failed lookups, unhealthy endpoints, reconnects) show with
    // a failure; RUST_LOG says more.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("coordinator")).unwrap());
    let keys: BTreeMap<&str, String> = REGIONS
        .iter()
        .map(|(r, _, _)| (*r, key(&store, r)))
        .collect();
    let server = Server::builder(store)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut proxies: BTreeMap<&str, Proxy> = BTreeMap::new();
    for (r, _, _) in REGIONS {
        proxies.insert(r, Proxy::start(server.local_addr()).await);
    }
    let victim_link = Proxy::start(server.local_addr()).await;

    let mut members = Vec::new();
    for (region, engines, control) in REGIONS {
        let mut hosts: Vec<String> = (0..engines)
            .map(|n| format!("inferadb-engine-{n}"))
            .collect();
        if control {
            hosts.push("inferadb-control-0".into());
        }
        for h in hosts {
            let url = if (region, h.as_str()) == VICTIM {
                victim_link.url()
            } else {
                proxies[region].url()
            };
            members.push(member(dir.path(), region, &h, &url, &keys[region]));
        }
    }
    // The health-check key shape control accepts (beside `mode`).
    let window = {
        let cfg = ControlConfig::load_from(
            Some(&members.iter().find(|m| m.is_control()).unwrap().file),
            Vec::new(),
        )
        .unwrap();
        cfg.discovery_config
            .health_check
            .as_ref()
            .expect("control's health_check is on")
            .detection_window()
    };

    // All roles at once: each one's discovery starts before its peers
    // have joined.
    let t = Instant::now();
    let mut starting = tokio::task::JoinSet::new();
    for (i, m) in members.iter().enumerate() {
        let f = start(m.file.clone(), m.is_control(), m.name());
        starting.spawn(async move { (i, f.await) });
    }
    while let Some(r) = starting.join_next().await {
        let (i, role) = r.expect("a role's start task");
        members[i].role = Some(role);
    }
    let mut topo = Topology { members };
    eprintln!("8 roles joined and serving in {}", secs(t.elapsed()));

    // ---- 1. exactly the right endpoints, per cluster.
    let want_engines = topo.want_engines();
    let want_controls = topo.want_controls();
    assert_eq!(want_engines.values().map(BTreeSet::len).sum::<usize>(), 5);
    assert_eq!(want_controls.values().map(BTreeSet::len).sum::<usize>(), 2);
    for m in topo.running() {
        let want = if m.is_control() {
            &want_engines
        } else {
            &want_controls
        };
        let took = converge(
            m.discovery(),
            20,
            &format!("{} discovers exactly {want:?}", m.name()),
            |s| view(s, false) == *want && view(s, true) == *want,
        )
        .await;
        // A refresh agrees.
        let set = m.discovery().refresh_now().await.unwrap();
        assert_eq!(view(&set, false), *want, "{} after refresh_now", m.name());
        eprintln!(
            "{:<34} discovered {:?} ({} after the roles were up)",
            m.name(),
            want.iter()
                .map(|(c, s)| (c.as_str(), s.len()))
                .collect::<Vec<_>>(),
            secs(took)
        );
    }
    // The addresses are the 100.x tailnet addresses.
    for a in want_engines
        .values()
        .chain(want_controls.values())
        .flatten()
    {
        let IpAddr::V4(v4) = a.ip() else {
            panic!("{a} is not IPv4");
        };
        assert!(
            v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]),
            "{a} is not in 100.64.0.0/10"
        );
    }

    // ---- 2. kill eu-west-1's inferadb-engine-1, as a crash: its control
    // connection is held open, so control still counts it online and
    // MagicDNS still lists it; only the health checks can tell.
    let us_control = ("us-west-1", "inferadb-control-0");
    let eu_control = ("eu-west-1", "inferadb-control-0");
    let victim_ip = topo.get(VICTIM.0, VICTIM.1).ip();
    let dead = SocketAddr::new(victim_ip, ENGINE_PORT);
    converge(
        topo.get(us_control.0, us_control.1).discovery(),
        10,
        "us-west-1 control counts every engine healthy before the kill",
        |s| view(s, true) == want_engines,
    )
    .await;
    victim_link.set(Link::Held).await;
    let victim = topo.get_mut(VICTIM.0, VICTIM.1).role.take().unwrap();
    let t = Instant::now();
    victim.shutdown().await;
    converge(
        topo.get(us_control.0, us_control.1).discovery(),
        10,
        &format!("us-west-1 control marks the dead {dead} unhealthy (window {window:?})"),
        |s| s.endpoints.iter().any(|e| e.addr == dead && !e.healthy),
    )
    .await;
    let took = t.elapsed();
    // Marked by the health checks: still listed (control and MagicDNS
    // know nothing yet).
    assert_eq!(
        view(
            &topo.get(us_control.0, us_control.1).discovery().current(),
            false
        ),
        want_engines,
        "us-west-1 control still lists every engine, the dead one unhealthy"
    );
    eprintln!(
        "killed {} {dead} (crash): unhealthy at us-west-1 control after {} (window {})",
        VICTIM.1,
        secs(took),
        secs(window)
    );
    assert!(
        took <= window + WINDOW_SLACK,
        "{dead} marked unhealthy after {took:?}: over the health-check window {window:?} (+{WINDOW_SLACK:?} for a busy machine)"
    );
    // The others stay healthy (a check that times out on an overloaded
    // machine may mark one unhealthy for a moment: the next success makes
    // it healthy again, healthy_threshold 1).
    let want_alive = only_without(&want_engines, dead);
    converge(
        topo.get(us_control.0, us_control.1).discovery(),
        10,
        "us-west-1 control's healthy set: every engine but the dead one",
        |s| view(s, true) == want_alive,
    )
    .await;
    // Its connection ends (control notices the node gone): it leaves the
    // set at both controls; the rest stays.
    let t = Instant::now();
    victim_link.set(Link::Up).await;
    for c in [us_control, eu_control] {
        converge(
            topo.get(c.0, c.1).discovery(),
            10,
            &format!("{} {} drops {dead} and keeps the others", c.0, c.1),
            |s| view(s, false) == want_alive && view(s, true) == want_alive,
        )
        .await;
    }
    eprintln!(
        "its control connection ended: out of both controls' sets {} later",
        secs(t.elapsed())
    );

    // ---- 3. it comes back on the same state directory.
    let t = Instant::now();
    let file = topo.get(VICTIM.0, VICTIM.1).file.clone();
    let role = start(file, false, format!("{} {} (restart)", VICTIM.0, VICTIM.1)).await;
    let started = t.elapsed();
    assert_eq!(
        role.node.ipv4(),
        Some(victim_ip),
        "the restarted engine keeps its key, so its address"
    );
    topo.get_mut(VICTIM.0, VICTIM.1).role = Some(role);
    let back = converge(
        topo.get(us_control.0, us_control.1).discovery(),
        10,
        &format!("us-west-1 control has {dead} healthy again"),
        |s| s.healthy().any(|e| e.addr == dead),
    )
    .await;
    let since = started + back;
    assert!(since <= Duration::from_secs(10), "back after {since:?}");
    eprintln!(
        "restarted {}: joined in {}, healthy at us-west-1 control {} later ({} since the restart)",
        VICTIM.1,
        secs(started),
        secs(back),
        secs(since)
    );
    for c in [us_control, eu_control] {
        converge(
            topo.get(c.0, c.1).discovery(),
            10,
            &format!("{} {} has every engine again", c.0, c.1),
            |s| view(s, true) == want_engines,
        )
        .await;
    }

    // ---- 4. cut ap-southeast-1's control link.
    let ap = ("ap-southeast-1", "inferadb-engine-0");
    let ap_ip = topo.get(ap.0, ap.1).ip();
    let ap_netmap = topo.get(ap.0, ap.1).role().node.watch_netmap().unwrap();
    let t_cut = Instant::now();
    proxies["ap-southeast-1"].set(Link::Cut).await;
    // Control sees the stream end and tells the others it is offline.
    let us_node = topo.get(us_control.0, us_control.1).role().node.clone();
    let ap_online = |n: &tailnet::Node| {
        n.status()
            .peer
            .values()
            .find(|p| p.tailscale_ips.contains(&ap_ip))
            .map(|p| p.online)
    };
    let offline = until(
        10,
        "us-west-1 control's netmap shows ap-southeast-1's engine offline",
        || ap_online(&us_node) == Some(false),
        || format!("online: {:?}", ap_online(&us_node)),
    )
    .await;
    eprintln!(
        "cut ap-southeast-1: offline at control after {}",
        secs(offline)
    );
    // A new engine joins us-west-1 meanwhile.
    let new = ("us-west-1", "inferadb-engine-2");
    let mut m = member(
        dir.path(),
        new.0,
        new.1,
        &proxies[new.0].url(),
        &keys[new.0],
    );
    let t = Instant::now();
    m.role = Some(start(m.file.clone(), false, m.name()).await);
    let joined = t.elapsed();
    let new_addr = SocketAddr::new(m.ip(), ENGINE_PORT);
    topo.members.push(m);
    let want_cut = only(&topo.want_engines(), &["us-west-1", "eu-west-1"]);
    for c in [eu_control, us_control] {
        let took = converge(
            topo.get(c.0, c.1).discovery(),
            10,
            &format!(
                "{} {} discovers the new {new_addr} during the cut",
                c.0, c.1
            ),
            |s| only(&view(s, true), &["us-west-1", "eu-west-1"]) == want_cut,
        )
        .await;
        let set = topo.get(c.0, c.1).discovery().refresh_now().await.unwrap();
        assert_eq!(
            only(&view(&set, false), &["us-west-1", "eu-west-1"]),
            want_cut,
            "{} {} refreshed during the cut",
            c.0,
            c.1
        );
        assert_eq!(
            set.cluster("ap-southeast-1").count(),
            0,
            "{} {}: the cut engine is offline at control, so not in MagicDNS's service records",
            c.0,
            c.1
        );
        eprintln!(
            "{} {} found the new us-west-1 engine {} after it joined",
            c.0,
            c.1,
            secs(took)
        );
    }
    // The cut engine: still on its last netmap (so it never heard of the
    // new engine), still discovering both controls, its tunnels to them
    // still up.
    let ap_role = topo.get(ap.0, ap.1).role();
    assert!(
        !ap_netmap
            .borrow()
            .peers()
            .any(|p| p.addresses.iter().any(|a| a.addr() == new_addr.ip())),
        "the cut engine heard of the new engine: the cut is not real"
    );
    let set = ap_role.discovery.refresh_now().await.unwrap();
    assert_eq!(view(&set, false), want_controls, "the cut engine's refresh");
    for c in want_controls.values().flatten() {
        let status = inferadb_discovery::health::check(
            &ap_role.node,
            *c,
            "/healthz",
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|e| panic!("the cut engine reaches control {c} over its tunnel: {e}"));
        assert_eq!(status, 200);
    }
    converge(
        &ap_role.discovery,
        10,
        "the cut engine's health checks find both controls healthy",
        |s| view(s, true) == want_controls,
    )
    .await;
    assert_eq!(ap_role.node.backend_state(), BackendState::Running);
    eprintln!(
        "cut engine: controls discovered and reachable; new engine joined in {}; cut for {}",
        secs(joined),
        secs(t_cut.elapsed())
    );

    // Restore: it reconnects (backoff 0.5 s doubling, ±25 %), gets the
    // full map with what it missed, and control has it online again.
    let t = Instant::now();
    proxies["ap-southeast-1"].set(Link::Up).await;
    let mut nm = ap_netmap.clone();
    let caught_up = matches!(
        tokio::time::timeout(
            Duration::from_secs(20),
            nm.wait_for(|n| {
                n.peers()
                    .any(|p| p.addresses.iter().any(|a| a.addr() == new_addr.ip()))
            }),
        )
        .await,
        Ok(Ok(_))
    );
    assert!(
        caught_up,
        "the ap-southeast-1 engine did not reconnect and catch up within 20 s of the restore"
    );
    let reconnected = t.elapsed();
    until(
        10,
        "us-west-1 control's netmap shows ap-southeast-1's engine online again",
        || ap_online(&us_node) == Some(true),
        || format!("online: {:?}", ap_online(&us_node)),
    )
    .await;
    assert_eq!(ap_role.node.backend_state(), BackendState::Running);
    assert_eq!(ap_role.node.status().backend_state, BackendState::Running);
    let want_all = topo.want_engines();
    for c in [us_control, eu_control] {
        converge(
            topo.get(c.0, c.1).discovery(),
            10,
            &format!("{} {} discovers every engine after the restore", c.0, c.1),
            |s| view(s, true) == want_all && view(s, false) == want_all,
        )
        .await;
    }
    converge(
        &ap_role.discovery,
        10,
        "the ap-southeast-1 engine still discovers both controls",
        |s| view(s, true) == want_controls,
    )
    .await;
    eprintln!(
        "restored ap-southeast-1: reconnected and caught up in {}, discovered again after {}; whole test {}",
        secs(reconnected),
        secs(t.elapsed()),
        secs(t0.elapsed())
    );

    topo.shutdown().await;
    drop(proxies);
    drop(victim_link);
    server.shutdown().await;
}
