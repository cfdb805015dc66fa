//! Nodes behind NATs find a direct path: each learns its public endpoint
//! from the coordinator's STUN server, reports it to control, and disco
//! punches through both NATs (a CallMeMaybe over the relay makes both
//! sides ping at once). Everything runs as the user runs it: the
//! coordinator, `up`, `status`, `ping`, curl through `--forward` /
//! `--expose`, and Go tsnet (Caddy), each in network namespaces of the
//! test's own (`tailnet_tests::netns::NatLab`).
//!
//! Each site's NAT maps its node's UDP port to another port and admits
//! nothing new from outside, so a node's own address (what it finds on its
//! interfaces) is useless to the other: the only direct path is between
//! the two STUN-learned addresses.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

mod common;

use common::{authkey, path, run, spawn_in, text, Proc};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tailnet_tests::caddy::{caddy_binary, Caddy, CaddyOptions};
use tailnet_tests::netns::{nat_ready, NatLab};

const NODE_PORT: u16 = 41641;
/// What each site's NAT maps the node's port to.
const MAPPED: [u16; 2] = [50000, 50001];
/// How long a direct path may take once traffic flows.
const DIRECT_WITHIN: Duration = Duration::from_secs(30);

/// A [`NatLab`] with the coordinator (control, DERP, STUN) on its
/// "internet": the router, at its address on site 0's link, which site 1
/// reaches through the router. Its DERP map names that address (the
/// listen address is the default `--derp-host`).
struct World {
    lab: NatLab,
    dir: tempfile::TempDir,
    url: String,
    key: String,
    _coord: Proc,
}

impl World {
    fn start(tag: char) -> World {
        World::start_with(tag, None)
    }

    /// [`World::start`], the coordinator sending `derp_map` (JSON) instead
    /// of its own one-region map.
    fn start_with(tag: char, derp_map: Option<&str>) -> World {
        let lab = NatLab::create(tag);
        let dir = tempfile::tempdir().expect("tempdir");
        let coord = dir.path().join("coord");
        let key = authkey(&coord, "tag:inferadb-us-west-1");
        let listen = format!("{}:8080", lab.sites[0].gateway);
        let map_file = dir.path().join("derp-map.json");
        let mut args = vec![
            "coordinator",
            "serve",
            "--listen",
            &listen,
            "--state-dir",
            path(&coord),
        ];
        if let Some(map) = derp_map {
            std::fs::write(&map_file, map).expect("write the DERP map");
            args.extend(["--derp-map", path(&map_file)]);
        }
        let (c, _) = spawn_in(Some(&lab.router), &args, "coordinator listening on");
        World {
            lab,
            dir,
            url: format!("http://{listen}"),
            key,
            _coord: c,
        }
    }

    fn state(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `up` as `name` in site `i` on [`NODE_PORT`]; its ready line.
    fn up(&self, i: usize, name: &str, extra: &[&str]) -> (Proc, Value) {
        let state = self.state(name);
        let listen = format!("0.0.0.0:{NODE_PORT}");
        let mut args = vec![
            "up",
            "--control-url",
            &self.url,
            "--auth-key",
            &self.key,
            "--hostname",
            name,
            "--state-dir",
            path(&state),
            "--listen",
            &listen,
        ];
        args.extend_from_slice(extra);
        let (p, line) = spawn_in(Some(&self.lab.sites[i].ns), &args, "\"state\":\"Running\"");
        (p, serde_json::from_str(&line).expect("ready line JSON"))
    }

    /// A file server on 127.0.0.1:8000 of site `i`, serving `blob`.
    fn serve_file(&self, i: usize, blob: &[u8]) -> Proc {
        let www = self.dir.path().join(format!("www{i}"));
        std::fs::create_dir_all(&www).expect("mkdir");
        std::fs::write(www.join("blob"), blob).expect("write blob");
        Proc(
            Command::new("ip")
                .args(["netns", "exec", &self.lab.sites[i].ns])
                .args([
                    "python3",
                    "-m",
                    "http.server",
                    "8000",
                    "--bind",
                    "127.0.0.1",
                ])
                .arg("--directory")
                .arg(&www)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 http.server"),
        )
    }

    /// Curl inside site `i` fetching `url`; the body.
    fn curl(&self, i: usize, url: &str) -> Vec<u8> {
        let ns = &self.lab.sites[i].ns;
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "curl",
                "-sS",
                "--fail",
                "--max-time",
                "60",
                url,
            ])
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "curl {url} in {ns}: {}",
            text(&out.stderr)
        );
        out.stdout
    }

    /// Where site `i`'s NAT maps its node's port: the only address at
    /// which anything outside reaches it.
    fn public(&self, i: usize) -> String {
        format!("{}:{}", self.lab.sites[i].ip, MAPPED[i])
    }
}

/// `status --json` of the node in `state`.
fn status(state: &Path) -> Value {
    let out = run(&["status", "--json", "--state-dir", path(state)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// `status --json` of the node in `state`: the peer named `name`.
fn peer(state: &Path, name: &str) -> Value {
    status(state)["Peer"]
        .as_object()
        .and_then(|m| m.values().find(|p| p["HostName"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// Polls the node in `state` until its path to `name` is direct at `want`
/// (or [`DIRECT_WITHIN`] passes), pinging it meanwhile so discovery has
/// traffic to run on; the peer's status.
fn wait_direct(state: &Path, name: &str, want: &str) -> Value {
    let start = Instant::now();
    loop {
        let p = peer(state, name);
        if p["CurAddr"] == want || start.elapsed() > DIRECT_WITHIN {
            eprintln!("after {:?}: {name}: {p}", start.elapsed());
            return p;
        }
        let _ = run(&[
            "ping",
            name,
            "--state-dir",
            path(state),
            "-c",
            "1",
            "--timeout",
            "1",
        ]);
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn assert_direct(p: &Value, want: &str) {
    assert_eq!(p["CurAddr"], want, "direct at the STUN endpoint: {p}");
    assert_eq!(p["Relay"], "", "not relayed: {p}");
}

/// 8 MiB that no two offsets of which look alike.
fn blob() -> Vec<u8> {
    (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
fn two_nodes_behind_nats_go_direct_through_stun_endpoints() {
    if !nat_ready("two_nodes_behind_nats_go_direct_through_stun_endpoints") {
        return;
    }
    let w = World::start('s');
    for (i, mapped) in MAPPED.iter().enumerate() {
        w.lab.nat_udp(i, Some(NODE_PORT), *mapped);
    }
    let blob = blob();
    let _web = w.serve_file(1, &blob);
    let _b = w.up(1, "nat-b", &["--expose", "8080:127.0.0.1:8000"]);
    let _a = w.up(0, "nat-a", &["--forward", "127.0.0.1:9000:nat-b:8080"]);
    let (a, b) = (w.state("nat-a"), w.state("nat-b"));

    // Traffic starts path discovery; the first bytes may go through the
    // relay while the NATs are being punched.
    let got = w.curl(0, "http://127.0.0.1:9000/blob");
    assert!(
        got == blob,
        "the first transfer arrived intact ({} bytes)",
        got.len()
    );
    assert_direct(&wait_direct(&a, "nat-b", &w.public(1)), &w.public(1));
    assert_direct(&wait_direct(&b, "nat-a", &w.public(0)), &w.public(0));

    // `ping` says so, like `tailscale ping`.
    let out = run(&["ping", "nat-b", "--state-dir", path(&a), "-c", "1"]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains(&format!("via {}", w.public(1))), "{said}");

    // A second transfer over the punched path, and the path holds.
    let got = w.curl(0, "http://127.0.0.1:9000/blob");
    assert!(got == blob, "the second transfer arrived intact");
    assert_direct(&peer(&a, "nat-b"), &w.public(1));
}

/// Go tsnet (Caddy) behind one NAT, our node behind the other: Go's
/// netcheck asks our STUN server, ours asks it too, and the two disco
/// implementations punch through both NATs. Then our node GETs Caddy's
/// page, and Caddy reverse-proxies over the tailnet to a server exposed
/// on our node, both on the direct path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_node_and_go_tsnet_behind_nats_go_direct() {
    const TEST: &str = "our_node_and_go_tsnet_behind_nats_go_direct";
    if !nat_ready(TEST) || caddy_binary(TEST).is_none() {
        return;
    }
    let w = World::start('g');
    w.lab.nat_udp(0, Some(NODE_PORT), MAPPED[0]);
    // tsnet binds a random UDP port: map every UDP port of its site.
    w.lab.nat_udp(1, None, MAPPED[1]);
    let blob = blob();
    let _files = w.serve_file(0, &blob);
    let (_a, ready) = w.up(
        0,
        "nat-a",
        &[
            "--expose",
            "8081:127.0.0.1:8000",
            "--forward",
            "127.0.0.1:9000:web:80",
            "--forward",
            "127.0.0.1:9001:web:8080",
        ],
    );
    let our_ip = ready["addresses"][0]
        .as_str()
        .expect("our tailnet address")
        .parse()
        .expect("an IP");
    let mut opts = CaddyOptions::new(&w.url, &w.key, "web");
    opts.netns = Some(w.lab.sites[1].ns.clone());
    opts.proxy = Some((8080, std::net::SocketAddr::new(our_ip, 8081)));
    let Some(mut web) = Caddy::start(opts).expect("caddy spawns") else {
        return;
    };
    web.wait_running(Duration::from_secs(60))
        .await
        .expect("Caddy's tsnet joins from behind its NAT");
    let a = w.state("nat-a");

    // Our node → Go: Caddy's page, then the path.
    let page = tokio::task::block_in_place(|| w.curl(0, "http://127.0.0.1:9000/"));
    assert_eq!(text(&page), "hello from web");
    let p = tokio::task::block_in_place(|| wait_direct(&a, "web", &w.public(1)));
    assert_direct(&p, &w.public(1));
    // Go → our node: tsnet says it uses our STUN endpoint.
    let line = web
        .wait_for_log(&format!("now using {}", w.public(0)), DIRECT_WITHIN)
        .await
        .expect("tsnet goes direct to our NAT's mapping");
    eprintln!("tsnet: {line}");

    // Caddy reverse-proxies through tsnet to the server on our node.
    let got = tokio::task::block_in_place(|| w.curl(0, "http://127.0.0.1:9001/blob"));
    assert!(
        got == blob,
        "8 MiB through Caddy's proxy arrived intact ({} bytes)",
        got.len()
    );
    let p = tokio::task::block_in_place(|| peer(&a, "web"));
    assert_direct(&p, &w.public(1));
}

/// Two DERP regions (two relays on the "internet"), each site nearer one:
/// its STUN answers only from there, so A homes at region 900 and B at
/// 901, and no UDP passes between the sites. A packet for a peer must go
/// to the peer's home region, the only relay it is connected to: A opens
/// a second DERP connection to 901 on demand, B one to 900, and an 8 MiB
/// transfer crosses both relays intact. `status` shows each node's home
/// (`Self.Relay`) and the region each peer is reached through.
#[test]
fn peers_homed_in_different_regions_relay_through_each_others_home() {
    if !nat_ready("peers_homed_in_different_regions_relay_through_each_others_home") {
        return;
    }
    let map = r#"{"Regions":{
        "900":{"RegionID":900,"RegionCode":"near0","RegionName":"Site 0's relay","Nodes":[
            {"Name":"900a","RegionID":900,"HostName":"198.51.100.1","IPv4":"198.51.100.1","IPv6":"none",
             "DERPPort":8080,"STUNPort":8080,"InsecureForTests":true}]},
        "901":{"RegionID":901,"RegionCode":"near1","RegionName":"Site 1's relay","Nodes":[
            {"Name":"901a","RegionID":901,"HostName":"203.0.113.1","IPv4":"203.0.113.1","IPv6":"none",
             "DERPPort":8080,"STUNPort":8080,"InsecureForTests":true}]}
    }}"#;
    let w = World::start_with('m', Some(map));
    // Region 901's relay: another coordinator, used only for its DERP
    // relay and STUN. Not the control listener, so the nodes speak TLS to
    // it as Go would (the map's InsecureForTests skips verification of its
    // self-signed certificate; vendor-notes/derp.md).
    let relay2 = w.dir.path().join("relay2");
    let tls = coordinator::testing::self_signed(w.dir.path(), [203, 0, 113, 1].into());
    let (_relay2, _) = spawn_in(
        Some(&w.lab.router),
        &[
            "coordinator",
            "serve",
            "--listen",
            "203.0.113.1:8080",
            "--state-dir",
            path(&relay2),
            // Its relay serves nodes registered with the other coordinator.
            "--derp-open",
            "--tls-cert",
            path(&tls.cert),
            "--tls-key",
            path(&tls.key),
        ],
        "coordinator listening on",
    );
    w.lab.nft(
        &w.lab.router,
        "table inet sites {\n\tchain between { type filter hook forward priority 0; meta l4proto udp drop; }\n}\n",
    );
    for (i, other) in [(0, "203.0.113.1"), (1, "198.51.100.1")] {
        w.lab.nft(
            &w.lab.sites[i].ns,
            &format!(
                "table ip far {{\n\tchain out {{ type filter hook output priority 0; \
                 ip daddr {other} udp dport 8080 drop; }}\n}}\n"
            ),
        );
    }
    let blob = blob();
    let _files = w.serve_file(1, &blob);
    let _b = w.up(1, "far-b", &["--expose", "8080:127.0.0.1:8000"]);
    let _a = w.up(0, "far-a", &["--forward", "127.0.0.1:9000:far-b:8080"]);
    let (a, b) = (w.state("far-a"), w.state("far-b"));

    // Both start at the lowest region; the first STUN round moves B.
    let start = Instant::now();
    let homes = loop {
        let homes = (
            status(&a)["Self"]["Relay"].clone(),
            status(&b)["Self"]["Relay"].clone(),
        );
        if (homes.0 == "near0" && homes.1 == "near1") || start.elapsed() > Duration::from_secs(15) {
            break homes;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        homes,
        (Value::from("near0"), Value::from("near1")),
        "homes by STUN latency"
    );

    let got = w.curl(0, "http://127.0.0.1:9000/blob");
    assert!(
        got == blob,
        "8 MiB across two relays arrived intact ({} bytes)",
        got.len()
    );
    let (to_b, to_a) = (peer(&a, "far-b"), peer(&b, "far-a"));
    assert_eq!(
        (&to_b["Relay"], &to_b["CurAddr"]),
        (&Value::from("near1"), &Value::from("")),
        "A reaches B through B's home: {to_b}"
    );
    assert_eq!(
        (&to_a["Relay"], &to_a["CurAddr"]),
        (&Value::from("near0"), &Value::from("")),
        "B reaches A through A's home: {to_a}"
    );

    // `ping` says so, like `tailscale ping`: every pong through B's home
    // region, then "direct connection not established" and exit 1.
    let out = run(&["ping", "far-b", "--state-dir", path(&a), "-c", "2"]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert_eq!(said.lines().count(), 2, "{said}");
    assert!(
        said.lines().all(|l| l.contains("via DERP(near1)")),
        "{said}"
    );
    assert_eq!(
        text(&out.stderr).trim(),
        "direct connection not established"
    );
}
