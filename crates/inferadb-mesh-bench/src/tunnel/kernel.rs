//! The kernel rows: wireguard-go and kernel TCP in network namespaces,
//! onetun in front of it, and our node to wireguard-go.

use super::*;
use std::net::Ipv4Addr;
use tailnet_harness::netns;

pub(crate) fn have(tool: &str) -> bool {
    netns::find_in_path(tool).is_some()
}

pub(crate) fn is_root() -> bool {
    netns::is_root()
}

/// Runs a command to completion off the runtime's threads (the harness's
/// [`netns::try_run`]); its stdout, trimmed.
pub(crate) async fn sh(args: &[&str]) -> anyhow::Result<String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        netns::try_run(&refs)
    })
    .await?
    .map_err(|e| anyhow::anyhow!(e))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Network namespaces, veths and wireguard-go instances of one benchmark,
/// removed on drop.
pub(crate) struct Netns {
    pub(crate) namespaces: Vec<String>,
    pub(crate) host_links: Vec<String>,
    pub(crate) children: Vec<std::process::Child>,
    /// Files to remove (wireguard-go's UAPI sockets, which it leaves).
    pub(crate) files: Vec<PathBuf>,
    /// Namespaces joined to the host by a veth pair (the harness's); they
    /// go after the processes above, when the fields drop.
    pub(crate) veths: Vec<netns::VethNs>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
        for l in &self.host_links {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", l])
                .stderr(Stdio::null())
                .status();
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

pub(crate) fn require_wireguard_go() -> anyhow::Result<()> {
    if !is_root() {
        bail!("needs root for network namespaces");
    }
    for t in ["wireguard-go", "wg", "ip"] {
        if !have(t) {
            bail!("{t} is not installed (scripts/install-test-deps.sh installs it)");
        }
    }
    Ok(())
}

/// One wireguard-go instance: where it runs and its one peer.
pub(crate) struct WgSpec<'a> {
    pub(crate) ns: &'a str,
    pub(crate) ifname: &'a str,
    pub(crate) key: &'a PrivateKey,
    pub(crate) port: u16,
    pub(crate) addr: &'a str,
    pub(crate) peer_key: tailnet::PublicKey,
    pub(crate) peer_endpoint: Option<SocketAddr>,
    pub(crate) peer_allowed: &'a str,
}

/// Starts wireguard-go as `spec` says.
pub(crate) async fn start_wireguard_go(env: &mut Netns, spec: WgSpec<'_>) -> anyhow::Result<()> {
    let WgSpec {
        ns,
        ifname,
        key,
        port,
        addr,
        peer_key,
        peer_endpoint,
        peer_allowed,
    } = spec;
    let sock = netns::wg_socket(ifname);
    // A socket left by an earlier instance of the same name would be taken
    // for this one's before it listens.
    let _ = std::fs::remove_file(&sock);
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "wireguard-go", "-f", ifname])
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start wireguard-go")?;
    env.children.push(child);
    env.files.push(sock.clone());
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = netns::WgConfig {
        ns,
        ifname,
        key,
        port,
        addr,
        peer_allowed,
        peer: Some((peer_key, peer_endpoint)),
    };
    // A few `wg` / `ip` commands during setup, before anything is timed.
    netns::wg_configure(&config, &std::env::temp_dir()).map_err(|e| anyhow::anyhow!(e))?;
    Ok(())
}

/// Sets kernel TCP's congestion control in namespace `ns` to the one
/// `--congestion` names (so both sides of a row run the same algorithm).
/// A namespace may only pick algorithms the host allows
/// (`net.ipv4.tcp_allowed_congestion_control`).
pub(crate) async fn kernel_congestion(ns: &str, opts: &TunnelOptions) -> anyhow::Result<()> {
    let Some(c) = opts.congestion else {
        return Ok(());
    };
    let algo = match c {
        tailnet::Congestion::Cubic => "cubic",
        tailnet::Congestion::Bbr => "bbr",
        tailnet::Congestion::Reno => "reno",
        tailnet::Congestion::None => bail!("kernel TCP has no 'none' congestion control"),
    };
    let key = format!("net.ipv4.tcp_congestion_control={algo}");
    sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", &key])
        .await
        .with_context(|| {
            format!(
                "kernel TCP cannot use {algo} in a namespace: add it to the host's \
                 net.ipv4.tcp_allowed_congestion_control"
            )
        })?;
    Ok(())
}

pub(crate) fn public_of(k: &PrivateKey) -> tailnet::PublicKey {
    NodeConfig::new(k.clone(), tunnel_addrs(1)).public_key()
}

/// wireguard-go + kernel TCP between two namespaces.
pub(crate) async fn wireguard_go_path(opts: &TunnelOptions) -> anyhow::Result<PathResult> {
    require_wireguard_go()?;
    if let Some(cond) = &opts.wan {
        return wireguard_go_wan_path(opts, cond).await;
    }
    let id = std::process::id() % 10000;
    let (na, nb) = (format!("ibA{id}"), format!("ibB{id}"));
    let mut env = Netns {
        namespaces: vec![],
        host_links: vec![],
        children: vec![],
        files: vec![],
        veths: vec![],
    };
    for ns in [&na, &nb] {
        sh(&["ip", "netns", "add", ns]).await?;
        env.namespaces.push(ns.clone());
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]).await?;
        kernel_congestion(ns, opts).await?;
    }
    let (va, vb) = (format!("vbA{id}"), format!("vbB{id}"));
    sh(&[
        "ip", "link", "add", &va, "netns", &na, "type", "veth", "peer", "name", &vb, "netns", &nb,
    ])
    .await?;
    sh(&[
        "ip",
        "-n",
        &na,
        "addr",
        "add",
        "198.18.250.1/24",
        "dev",
        &va,
    ])
    .await?;
    sh(&[
        "ip",
        "-n",
        &nb,
        "addr",
        "add",
        "198.18.250.2/24",
        "dev",
        &vb,
    ])
    .await?;
    sh(&["ip", "-n", &na, "link", "set", &va, "up"]).await?;
    sh(&["ip", "-n", &nb, "link", "set", &vb, "up"]).await?;
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (ia, ib) = (format!("wbA{id}"), format!("wbB{id}"));
    start_wireguard_go(
        &mut env,
        WgSpec {
            ns: &na,
            ifname: &ia,
            key: &ka,
            port: 51820,
            addr: "100.64.251.1/32",
            peer_key: public_of(&kb),
            peer_endpoint: Some("198.18.250.2:51820".parse()?),
            peer_allowed: "100.64.251.2/32",
        },
    )
    .await?;
    start_wireguard_go(
        &mut env,
        WgSpec {
            ns: &nb,
            ifname: &ib,
            key: &kb,
            port: 51820,
            addr: "100.64.251.2/32",
            peer_key: public_of(&ka),
            peer_endpoint: Some("198.18.250.1:51820".parse()?),
            peer_allowed: "100.64.251.1/32",
        },
    )
    .await?;
    run_kernel_pair(opts, &mut env, &nb, &na, "100.64.251.2", None).await
}

/// wireguard-go + kernel TCP in two namespaces, each joined to the host by
/// a veth; their WireGuard endpoints are the relay's two sides on the host
/// (the host ends of their veths), so every datagram crosses it. Each
/// direction's retransmissions are its sending namespace's `RetransSegs`
/// over the run.
pub(crate) async fn wireguard_go_wan_path(
    opts: &TunnelOptions,
    cond: &WanCondition,
) -> anyhow::Result<PathResult> {
    let id = std::process::id() % 10000;
    let (mut env, a) = host_namespace('a').await?;
    let (env_b, b) = host_namespace('b').await?;
    let (na, nb) = (a.name.clone(), b.name.clone());
    kernel_congestion(&na, opts).await?;
    kernel_congestion(&nb, opts).await?;
    // One environment to tear down (namespaces after their processes).
    let mut env_b = env_b;
    env.veths.append(&mut env_b.veths);
    env.files.append(&mut env_b.files);
    let mut spec = RelaySpec::symmetric(
        SocketAddr::from((a.host, 0)),
        SocketAddr::from((b.host, 0)),
        cond,
        wan_seed(),
    );
    spec.peer_a = Some(SocketAddr::from((a.inner, 51820)));
    spec.peer_b = Some(SocketAddr::from((b.inner, 51820)));
    let relay = Relay::start(spec)?;
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (ia, ib) = (format!("wbWA{id}"), format!("wbWB{id}"));
    start_wireguard_go(
        &mut env,
        WgSpec {
            ns: &na,
            ifname: &ia,
            key: &ka,
            port: 51820,
            addr: "100.64.246.1/32",
            peer_key: public_of(&kb),
            peer_endpoint: Some(relay.addr_a()),
            peer_allowed: "100.64.246.2/32",
        },
    )
    .await?;
    start_wireguard_go(
        &mut env,
        WgSpec {
            ns: &nb,
            ifname: &ib,
            key: &kb,
            port: 51820,
            addr: "100.64.246.2/32",
            peer_key: public_of(&ka),
            peer_endpoint: Some(relay.addr_b()),
            peer_allowed: "100.64.246.1/32",
        },
    )
    .await?;
    let before = (netns_counters(&nb).await?, netns_counters(&na).await?);
    let mut r = run_kernel_pair(opts, &mut env, &nb, &na, "100.64.246.2", None).await?;
    let after = (netns_counters(&nb).await?, netns_counters(&na).await?);
    let delta = |a: u64, b: u64| a.saturating_sub(b);
    r.retrans = Some(delta(after.0 .0, before.0 .0));
    r.upload_retrans = Some(delta(after.1 .0, before.1 .0));
    // Losses the relay did not cause: wireguard-go's UDP socket overflowing.
    eprintln!(
        "bench: wireguard-go: UDP receive-buffer drops: {} in the server's namespace, {} in the client's",
        delta(after.0 .1, before.0 .1),
        delta(after.1 .1, before.1 .1)
    );
    r.path = Some(format!(
        "direct {}, {} (the WAN relay)",
        relay.addr_a(),
        relay.addr_b()
    ));
    drop(env);
    log_relay(&relay);
    Ok(r)
}

/// TCP segments retransmitted and UDP datagrams dropped for a full
/// receive buffer in namespace `ns` so far (its `/proc/net/snmp`).
pub(crate) async fn netns_counters(ns: &str) -> anyhow::Result<(u64, u64)> {
    let snmp = sh(&["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"]).await?;
    Ok((
        snmp_counter(&snmp, "Tcp:", "RetransSegs").context("no Tcp RetransSegs")?,
        snmp_counter(&snmp, "Udp:", "RcvbufErrors").context("no Udp RcvbufErrors")?,
    ))
}

/// Counter `name` of protocol `proto` (`Tcp:`) in the text of
/// `/proc/net/snmp` (a line of names, then a line of values).
pub(crate) fn snmp_counter(snmp: &str, proto: &str, name: &str) -> Option<u64> {
    let mut lines = snmp.lines().filter(|l| l.starts_with(proto));
    let (names, values) = (lines.next()?, lines.next()?);
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Starts `bench-server` in `server_ns` on `server_ip`, then runs
/// `bench-client` (in `client_ns`, or on the host when None) against
/// `target` (defaults to the server address).
pub(crate) async fn run_kernel_pair(
    opts: &TunnelOptions,
    env: &mut Netns,
    server_ns: &str,
    client_ns: &str,
    server_ip: &str,
    host_target: Option<IpAddr>,
) -> anyhow::Result<PathResult> {
    start_bench_server(env, &opts.exe, server_ns, server_ip).await?;
    let exe = opts.exe.to_string_lossy().to_string();
    let dur = opts.duration.as_secs_f64().to_string();
    let samples = opts.rtt_samples.to_string();
    let out = match host_target {
        None => {
            sh(&[
                "ip",
                "netns",
                "exec",
                client_ns,
                &exe,
                "bench-client",
                "--target",
                server_ip,
                "--duration",
                &dur,
                "--samples",
                &samples,
            ])
            .await?
        }
        Some(t) => {
            let r = kernel_client(t, opts.duration, opts.rtt_samples).await?;
            serde_json::to_string(&r)?
        }
    };
    let r: ClientResult = serde_json::from_str(out.lines().last().unwrap_or(""))
        .with_context(|| format!("bench-client printed {out:?}"))?;
    Ok(PathResult::measured(
        Throughput {
            gbit: r.gbit_per_s,
            ramp_s: r.ramp_s,
        },
        Some(Throughput {
            gbit: r.upload_gbit_per_s,
            ramp_s: r.upload_ramp_s,
        }),
        (r.rtt_p50_us, r.rtt_p99_us),
    ))
}

/// Starts `bench-server` (kernel TCP) inside `ns` on `ip` and gives it
/// time to listen.
pub(crate) async fn start_bench_server(
    env: &mut Netns,
    exe: &std::path::Path,
    ns: &str,
    ip: &str,
) -> anyhow::Result<()> {
    let server = std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(["bench-server", "--bind", ip])
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start bench-server")?;
    env.children.push(server);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// A namespace joined to the host by a veth pair (the harness's
/// [`netns::VethNs`]: host end 198.18.N.1/24, namespace end 198.18.N.2/24,
/// N free on this host); `tag` (a lowercase letter) tells the rows apart.
pub(crate) async fn host_namespace(tag: char) -> anyhow::Result<(Netns, HostNs)> {
    let veth =
        netns::VethNs::try_create_named("ib", tag, 0, |_| false).map_err(|e| anyhow::anyhow!(e))?;
    let ns = HostNs {
        name: veth.ns.clone(),
        host: veth.host_ip,
        inner: veth.ns_ip,
        n: veth.n,
    };
    let env = Netns {
        namespaces: vec![],
        host_links: vec![],
        children: vec![],
        files: vec![],
        veths: vec![veth],
    };
    Ok((env, ns))
}

/// Where [`host_namespace`] put a namespace.
pub(crate) struct HostNs {
    /// The namespace's name.
    pub(crate) name: String,
    /// The host end's address.
    pub(crate) host: Ipv4Addr,
    /// The namespace end's address.
    pub(crate) inner: Ipv4Addr,
    /// The third octet of both (also used for the tunnel addresses
    /// 100.64.N.1 and .2).
    pub(crate) n: u8,
}

/// onetun (boringtun + smoltcp port forwarder) in front of wireguard-go:
/// the client speaks kernel TCP to onetun on loopback, onetun tunnels to
/// wireguard-go in a namespace where the server runs on kernel TCP.
pub(crate) async fn onetun_path(opts: &TunnelOptions) -> anyhow::Result<PathResult> {
    require_wireguard_go()?;
    if !have("onetun") {
        bail!("onetun is not installed (cargo install onetun)");
    }
    let id = std::process::id() % 10000;
    let (mut env, h) = host_namespace('c').await?;
    let (ns, n) = (h.name.clone(), h.n);
    let (kw, ko) = (PrivateKey::generate(), PrivateKey::generate());
    let iface = format!("wbC{id}");
    start_wireguard_go(
        &mut env,
        WgSpec {
            ns: &ns,
            ifname: &iface,
            key: &kw,
            port: 51820,
            addr: &format!("100.64.{n}.2/32"),
            peer_key: public_of(&ko),
            peer_endpoint: None,
            peer_allowed: &format!("100.64.{n}.1/32"),
        },
    )
    .await?;
    let (p1, p2) = (free_tcp_port()?, free_tcp_port()?);
    let onetun = std::process::Command::new("onetun")
        .arg(format!("127.0.0.1:{p1}:100.64.{n}.2:{SOURCE_PORT}"))
        .arg(format!("127.0.0.1:{p2}:100.64.{n}.2:{ECHO_PORT}"))
        .args(["--endpoint-addr", &format!("{}:51820", h.inner)])
        .args(["--endpoint-public-key", &public_of(&kw).to_base64()])
        .args(["--private-key", &ko.to_base64()])
        .args(["--source-peer-ip", &format!("100.64.{n}.1")])
        .args(["--keep-alive", "10"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(
            std::env::temp_dir().join("inferadb-mesh-bench-onetun.log"),
        )?)
        .spawn()
        .context("cannot start onetun")?;
    env.children.push(onetun);
    start_bench_server(&mut env, &opts.exe, &ns, &format!("100.64.{n}.2")).await?;
    let s = tokio::net::TcpStream::connect(("127.0.0.1", p1)).await?;
    s.set_nodelay(true)?;
    let gbit = tokio::time::timeout(
        opts.duration * 4 + Duration::from_secs(30),
        measure_throughput(s, opts.duration),
    )
    .await
    .context("onetun throughput run timed out")??;
    let s = tokio::net::TcpStream::connect(("127.0.0.1", p2)).await?;
    s.set_nodelay(true)?;
    let (p50, p99) =
        tokio::time::timeout(Duration::from_secs(60), measure_rtt(s, opts.rtt_samples))
            .await
            .context("onetun RTT run timed out")??;
    Ok(PathResult::measured(gbit, None, (p50, p99)))
}

/// Our node on the host ↔ wireguard-go in a namespace with kernel TCP
/// behind it: interop speed, and how our stack receives from a foreign
/// sender.
pub(crate) async fn tailnet_to_wireguard_go_path(
    opts: &TunnelOptions,
) -> anyhow::Result<PathResult> {
    require_wireguard_go()?;
    let id = std::process::id() % 10000;
    let (mut env, h) = host_namespace('d').await?;
    let (ns, n) = (h.name.clone(), h.n);
    let (kw, kn) = (PrivateKey::generate(), PrivateKey::generate());
    let mut cfg = NodeConfig::new(kn.clone(), vec![IpAddr::from([100, 64, n, 1])]);
    cfg.listen = SocketAddr::from((h.host, 0));
    cfg.netstack.mtu = opts.mtu;
    let node = Node::start(cfg).await?;
    let iface = format!("wbD{id}");
    start_wireguard_go(
        &mut env,
        WgSpec {
            ns: &ns,
            ifname: &iface,
            key: &kw,
            port: 51820,
            addr: &format!("100.64.{n}.2/32"),
            peer_key: public_of(&kn),
            peer_endpoint: Some(node.listen_addr()),
            peer_allowed: &format!("100.64.{n}.1/32"),
        },
    )
    .await?;
    node.set_peers(vec![PeerConfig {
        public_key: public_of(&kw),
        endpoint: Some(SocketAddr::from((h.inner, 51820))),
        allowed_ips: vec![format!("100.64.{n}.2/32").parse()?],
        persistent_keepalive: None,
        disco_key: None,
        home_derp: 0,
        endpoints: Vec::new(),
    }])
    .await?;
    start_bench_server(&mut env, &opts.exe, &ns, &format!("100.64.{n}.2")).await?;
    let r = measure_from_node(&node, IpAddr::from([100, 64, n, 2]), opts).await;
    node.shutdown().await;
    r
}

pub(crate) fn free_tcp_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
