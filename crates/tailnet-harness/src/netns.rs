//! A stock wireguard-go in a network namespace of its own, for interop
//! tests: a veth pair links the namespace to the host (host end
//! 198.18.N.1/24, namespace end 198.18.N.2/24), wireguard-go runs on a TUN
//! device inside (tunnel address 100.64.N.2/32), and a node in the test
//! process binds its UDP socket to the host end of the veth.
//!
//! Every name (namespace, veth ends, wireguard-go interface) carries the
//! process id and a per-test tag, so tests run in parallel. [`WgGoNet`]'s
//! `Drop` stops the processes it started and deletes what it created, on
//! panic too.

use crate::capture::{drain_lines, CappedLog, SharedLog};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tailnet::{NodeConfig, PrivateKey, PublicKey};

/// Set to `1` to skip interop tests on machines that cannot run them.
pub const SKIP_ENV: &str = "TAILNET_SKIP_INTEROP";

/// The UDP port wireguard-go listens on inside its namespace.
pub const WG_PORT: u16 = 51820;

/// Tools the interop tests run, and what provides them.
const TOOLS: &[(&str, &str)] = &[
    ("wireguard-go", "Debian package wireguard-go"),
    ("wg", "Debian package wireguard-tools"),
    ("ip", "Debian package iproute2"),
    ("curl", "Debian package curl"),
    ("python3", "Debian package python3"),
];

/// Checks that this process can run the interop tests: root, the tools on
/// `PATH`, `/dev/net/tun`. Returns `false` (after saying so) when something
/// is missing and `TAILNET_SKIP_INTEROP=1` is set; panics with what is
/// missing otherwise.
pub fn interop_ready(test: &str) -> bool {
    let mut missing = Vec::new();
    if effective_uid() != Some(0) {
        missing.push(
            "root (network namespaces, veth pairs and TUN devices need it; run the test as root)"
                .to_string(),
        );
    }
    for (tool, provider) in TOOLS {
        if find_in_path(tool).is_none() {
            missing.push(format!("`{tool}` on PATH ({provider})"));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun (the tun kernel module)".to_string());
    }
    if missing.is_empty() {
        return true;
    }
    let what = missing.join("; ");
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        println!("SKIPPED {test}: missing {what} ({SKIP_ENV}=1 is set)");
        return false;
    }
    panic!(
        "{test} cannot run: missing {what}. scripts/install-test-deps.sh installs the tools; \
         set {SKIP_ENV}=1 to skip the wireguard-go interop tests instead"
    );
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    effective_uid() == Some(0)
}

fn effective_uid() -> Option<u32> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Where `tool` is on `PATH` (an executable file), if anywhere.
pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Runs a command to completion; panics with its output if it fails.
pub fn run(args: &[&str]) -> Output {
    try_run(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a command to completion; on failure, one message with the command
/// and its output.
pub fn try_run(args: &[&str]) -> Result<Output, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

/// wireguard-go's control (UAPI) socket for interface `ifname`.
pub fn wg_socket(ifname: &str) -> PathBuf {
    Path::new("/var/run/wireguard").join(format!("{ifname}.sock"))
}

/// What [`wg_configure`] sets on a running wireguard-go interface.
pub struct WgConfig<'a> {
    /// The namespace it runs in.
    pub ns: &'a str,
    /// Its interface name.
    pub ifname: &'a str,
    /// Its private key.
    pub key: &'a PrivateKey,
    /// Its UDP listen port.
    pub port: u16,
    /// Its tunnel address (CIDR), e.g. `100.64.7.2/32`.
    pub addr: &'a str,
    /// The peer's tunnel addresses (CIDR), routed through the interface
    /// and the peer's allowed IPs.
    pub peer_allowed: &'a str,
    /// The peer, when known now: its key and endpoint (none: it is learnt
    /// from the peer's first packet).
    pub peer: Option<(PublicKey, Option<SocketAddr>)>,
}

/// Configures wireguard-go's interface as `c` says: the private key
/// (through a 0600 file in `key_dir`, removed after), listen port and
/// peer, the address, link up, a route to the peer. wireguard-go must be
/// listening on [`wg_socket`] already.
pub fn wg_configure(c: &WgConfig<'_>, key_dir: &Path) -> Result<(), String> {
    let key_file = key_dir.join(format!("{}.key", c.ifname));
    let _ = std::fs::remove_file(&key_file);
    write_private(&key_file, &c.key.to_base64())
        .map_err(|e| format!("cannot write {}: {e}", key_file.display()))?;
    let key_path = key_file.to_string_lossy().into_owned();
    let port = c.port.to_string();
    let mut args = vec![
        "ip",
        "netns",
        "exec",
        c.ns,
        "wg",
        "set",
        c.ifname,
        "private-key",
        &key_path,
        "listen-port",
        &port,
    ];
    let (pk, ep);
    if let Some((key, endpoint)) = &c.peer {
        pk = key.to_base64();
        args.extend(["peer", &pk, "allowed-ips", c.peer_allowed]);
        if let Some(e) = endpoint {
            ep = e.to_string();
            args.extend(["endpoint", &ep]);
        }
    }
    let set = try_run(&args);
    let _ = std::fs::remove_file(&key_file);
    set?;
    try_run(&["ip", "-n", c.ns, "addr", "add", c.addr, "dev", c.ifname])?;
    try_run(&["ip", "-n", c.ns, "link", "set", c.ifname, "up"])?;
    try_run(&[
        "ip",
        "-n",
        c.ns,
        "route",
        "add",
        c.peer_allowed,
        "dev",
        c.ifname,
    ])?;
    Ok(())
}

/// Runs a command to completion, ignoring failure (for cleanup).
pub(crate) fn run_quiet(args: &[&str]) -> Option<Output> {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .ok()
}

/// Serialises the choice of N between the tests of one process.
static CHOOSE: Mutex<()> = Mutex::new(());

/// A wireguard-go instance in a namespace of its own. See the module docs.
pub struct WgGoNet {
    /// The namespace and its veth pair (`net.ns`, `net.host_ip`, … through
    /// `Deref`): bind the node's UDP to `host_ip`; `ns_ip` is
    /// wireguard-go's endpoint.
    veth: VethNs,
    /// The wireguard-go interface's name (inside the namespace).
    pub ifname: String,
    /// 100.64.N.1: the node's tunnel address.
    pub node_tunnel_ip: Ipv4Addr,
    /// 100.64.N.2: wireguard-go's tunnel address.
    pub wg_tunnel_ip: Ipv4Addr,
    /// wireguard-go's public key.
    pub wg_public_key: PublicKey,
    /// A scratch directory, removed on drop.
    pub dir: PathBuf,
    children: Vec<(String, Child, SharedLog)>,
}

/// Most bytes kept of each process's output that [`WgGoNet::spawn`] starts.
pub const CHILD_LOG_CAP: usize = 1 << 20;

impl std::ops::Deref for WgGoNet {
    type Target = VethNs;
    fn deref(&self) -> &VethNs {
        &self.veth
    }
}

impl WgGoNet {
    /// Creates the namespace and veth pair and starts wireguard-go with a
    /// fresh key listening on [`WG_PORT`], its interface up with
    /// 100.64.N.2/32 and a route to 100.64.N.1/32. The peer (the node) is
    /// added later with [`WgGoNet::set_peer`]. `tag` (one lowercase letter)
    /// tells this process's tests apart; `slot` (0 or 1) spreads their N.
    pub fn create(tag: char, slot: u8) -> WgGoNet {
        assert!(tag.is_ascii_lowercase() && slot < 2);
        let pid = std::process::id();
        let veth = VethNs::create_named("wg", tag, slot, |id| {
            Path::new("/var/run/wireguard")
                .join(format!("wgt{id}.sock"))
                .exists()
        });
        let n = veth.n;
        let ifname = format!("wgt{}", veth.id);
        let dir = std::env::temp_dir().join(format!(
            "tailnet-wgt-{pid}-{tag}-{:08x}",
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let key = PrivateKey::generate();
        let wg_public_key =
            NodeConfig::new(key.clone(), vec![Ipv4Addr::LOCALHOST.into()]).public_key();
        let mut net = WgGoNet {
            veth,
            ifname,
            node_tunnel_ip: Ipv4Addr::new(100, 64, n, 1),
            wg_tunnel_ip: Ipv4Addr::new(100, 64, n, 2),
            wg_public_key,
            dir,
            children: Vec::new(),
        };

        // wireguard-go in the foreground, as our child (`ip netns exec`
        // execs it in place, so the child's pid is wireguard-go's).
        let ifname = net.ifname.clone();
        net.spawn_env(
            "wireguard-go",
            &[("LOG_LEVEL", "verbose")],
            &["wireguard-go", "-f", &ifname],
        );
        let sock = wg_socket(&ifname);
        net.wait_until(
            "wireguard-go's control socket",
            Duration::from_secs(10),
            || sock.exists(),
        );
        let configured = wg_configure(
            &WgConfig {
                ns: &net.veth.ns,
                ifname: &ifname,
                key: &key,
                port: WG_PORT,
                addr: &format!("{}/32", net.wg_tunnel_ip),
                peer_allowed: &format!("{}/32", net.node_tunnel_ip),
                peer: None,
            },
            &net.dir,
        );
        if let Err(e) = configured {
            panic!("{e}");
        }
        net
    }

    /// wireguard-go's endpoint: 198.18.N.2:[`WG_PORT`].
    pub fn wg_endpoint(&self) -> SocketAddr {
        SocketAddr::from((self.ns_ip, WG_PORT))
    }

    /// Where the node's UDP socket should bind: 198.18.N.1, any port.
    pub fn node_listen(&self) -> SocketAddr {
        SocketAddr::from((self.host_ip, 0))
    }

    /// Tells wireguard-go about the node: its key, endpoint and 100.64.N.1/32.
    pub fn set_peer(&self, node_key: &PublicKey, node_endpoint: SocketAddr) {
        self.exec(&[
            "wg",
            "set",
            &self.ifname,
            "peer",
            &node_key.to_base64(),
            "endpoint",
            &node_endpoint.to_string(),
            "allowed-ips",
            &format!("{}/32", self.node_tunnel_ip),
        ]);
    }

    /// The command line that runs `args` inside the namespace.
    pub fn command(&self, args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = ["ip", "netns", "exec", &self.ns]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// Runs `args` inside the namespace; panics with its output on failure.
    pub fn exec(&self, args: &[&str]) -> Output {
        let cmd = self.command(args);
        let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
        run(&refs)
    }

    /// Starts `args` inside the namespace as a child that lives until drop;
    /// its output is kept up to [`CHILD_LOG_CAP`] bytes, printed if the
    /// test fails.
    pub fn spawn(&mut self, name: &str, args: &[&str]) {
        self.spawn_env(name, &[], args)
    }

    fn spawn_env(&mut self, name: &str, env: &[(&str, &str)], args: &[&str]) {
        let cmd = self.command(args);
        let mut child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", cmd.join(" ")));
        let log: SharedLog = Arc::new(Mutex::new(CappedLog::new(CHILD_LOG_CAP)));
        if let Some(out) = child.stdout.take() {
            drain_lines(out, log.clone(), |_| {});
        }
        if let Some(err) = child.stderr.take() {
            drain_lines(err, log.clone(), |_| {});
        }
        self.children.push((name.to_string(), child, log));
    }

    /// Polls `ready` every 50 ms; panics after `limit` or if a child of
    /// ours has exited meanwhile.
    pub fn wait_until(&mut self, what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if ready() {
                return;
            }
            for (name, child, log) in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    let out = log.lock().map(|l| l.text()).unwrap_or_default();
                    panic!("{name} exited ({status}) while waiting for {what}:\n{out}");
                }
            }
            if start.elapsed() > limit {
                panic!("{what} not ready within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `wg show <if>` from inside the namespace, for diagnostics (it
    /// hides the private key; `dump` would print it).
    pub fn wg_show(&self) -> String {
        let cmd = self.command(&["wg", "show", &self.ifname]);
        let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
        match run_quiet(&refs) {
            Some(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            None => "(wg show did not run)".into(),
        }
    }
}

/// Picks the third octet: derived from the pid and `slot`, skipping any N
/// whose 198.18.N.0/24 already has an address on this host.
fn choose_n(pid: u32, slot: u8) -> Result<u8, String> {
    let out = try_run(&["ip", "-4", "-o", "addr", "show"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let used = |n: u32| text.contains(&format!("inet 198.18.{n}."));
    let base = (pid % 125) * 2 + u32::from(slot); // 0..=249
    (0..250u32)
        .map(|k| (base + k) % 250 + 1)
        .find(|n| !used(*n))
        .map(|n| n as u8)
        .ok_or_else(|| "every 198.18.N.0/24 (N in 1..=250) is in use on this host".to_string())
}

/// Writes `text` and a newline to a new file only its owner may read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{text}")
}

impl Drop for WgGoNet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {}: wg show ---\n{}", self.ifname, self.wg_show());
            for (name, _, log) in &self.children {
                let out = log.lock().map(|l| l.text()).unwrap_or_default();
                eprintln!("--- {name} output ---\n{out}");
            }
        }
        // SIGTERM first so wireguard-go removes its control socket.
        for (_, child, _) in &mut self.children {
            if let Ok(None) = child.try_wait() {
                let _ = run_quiet(&["kill", "-TERM", &child.id().to_string()]);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (_, child, _) in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    _ => break,
                }
            }
        }
        let _ = std::fs::remove_file(wg_socket(&self.ifname));
        let _ = std::fs::remove_dir_all(&self.dir);
        // The namespace and veth go when `veth` drops, after this.
    }
}

/// Checks that this process can make network namespaces: root and `ip` on
/// `PATH`. Returns `false` after printing a `SKIPPED` line for `test` when
/// not (there is nothing to install that would help a non-root run).
pub fn netns_ready(test: &str) -> bool {
    let mut missing = Vec::new();
    if effective_uid() != Some(0) {
        missing.push("root (network namespaces and veth pairs need it)");
    }
    if find_in_path("ip").is_none() {
        missing.push("`ip` on PATH (Debian package iproute2)");
    }
    if missing.is_empty() {
        return true;
    }
    println!("SKIPPED {test}: missing {}", missing.join("; "));
    false
}

/// A bare network namespace joined to the host by a veth pair: host end
/// 198.18.N.1/24, namespace end 198.18.N.2/24, `lo` up, no other route.
/// The namespace reaches the host only at 198.18.N.1 (not 127.0.0.1), and
/// a host socket bound to 127.0.0.1 cannot send to 198.18.N.2 (a loopback
/// source is martian off `lo`). `Drop` deletes both, on panic too; stop
/// the processes running inside first.
pub struct VethNs {
    /// The third octet of the addresses.
    pub n: u8,
    /// The namespace's name.
    pub ns: String,
    /// The host end of the veth pair.
    pub host_veth: String,
    /// 198.18.N.1: the host end.
    pub host_ip: Ipv4Addr,
    /// 198.18.N.2: the namespace end.
    pub ns_ip: Ipv4Addr,
    /// What makes this pair's names unique (pid, tag, a suffix).
    pub id: String,
    made_ns: bool,
    made_veth: bool,
}

impl VethNs {
    /// Creates the namespace and the veth pair. `tag` (one lowercase
    /// letter) tells this process's tests apart.
    pub fn create(tag: char) -> VethNs {
        VethNs::create_named("vn", tag, 1, |_| false)
    }

    /// [`VethNs::create`] with interface names `<prefix>h<id>` (host) and
    /// `<prefix>n<id>` (namespace), N spread by `slot` (0 or 1), and an
    /// id skipped when `taken(id)` says something else of the caller's
    /// already uses it.
    pub fn create_named(prefix: &str, tag: char, slot: u8, taken: impl Fn(&str) -> bool) -> VethNs {
        VethNs::try_create_named(prefix, tag, slot, taken).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`VethNs::create_named`] that says what failed instead of
    /// panicking (for the benchmarks); what was made is deleted.
    pub fn try_create_named(
        prefix: &str,
        tag: char,
        slot: u8,
        taken: impl Fn(&str) -> bool,
    ) -> Result<VethNs, String> {
        if !tag.is_ascii_lowercase() {
            return Err(format!("namespace tag {tag:?} is not a lowercase letter"));
        }
        let pid = std::process::id();
        let guard = CHOOSE.lock().unwrap_or_else(|e| e.into_inner());
        let mut names = None;
        for k in 0..36u32 {
            let Some(suffix) = std::char::from_digit(k, 36) else {
                break;
            };
            let id = format!("{}{tag}{suffix}", pid % 10000);
            let (host_veth, ns_veth) = (format!("{prefix}h{id}"), format!("{prefix}n{id}"));
            let ns = format!("tailnet-{prefix}-{pid}-{tag}{suffix}");
            let in_use = Path::new("/sys/class/net").join(&host_veth).exists()
                || Path::new("/sys/class/net").join(&ns_veth).exists()
                || Path::new("/var/run/netns").join(&ns).exists()
                || taken(&id);
            if !in_use {
                names = Some((id, host_veth, ns_veth, ns));
                break;
            }
        }
        let (id, host_veth, ns_veth, ns) =
            names.ok_or("no free interface names for this pid (stale test leftovers?)")?;
        let n = choose_n(pid, slot)?;
        let mut net = VethNs {
            n,
            ns,
            host_veth,
            host_ip: Ipv4Addr::new(198, 18, n, 1),
            ns_ip: Ipv4Addr::new(198, 18, n, 2),
            id,
            made_ns: false,
            made_veth: false,
        };
        let ns = net.ns.clone();
        try_run(&["ip", "netns", "add", &ns])?;
        net.made_ns = true;
        try_run(&[
            "ip",
            "link",
            "add",
            &net.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &ns_veth,
        ])?;
        net.made_veth = true;
        try_run(&["ip", "link", "set", &ns_veth, "netns", &ns])?;
        try_run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", net.host_ip),
            "dev",
            &net.host_veth,
        ])?;
        // The address is on the host now: the next caller sees N taken.
        drop(guard);
        try_run(&["ip", "link", "set", &net.host_veth, "up"])?;
        try_run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        try_run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", net.ns_ip),
            "dev",
            &ns_veth,
        ])?;
        try_run(&["ip", "-n", &ns, "link", "set", &ns_veth, "up"])?;
        Ok(net)
    }
}

impl Drop for VethNs {
    fn drop(&mut self) {
        // The veth first, and synchronously: a deleted namespace is torn
        // down later by the kernel, taking its veth end (and so the host
        // end) with it at an unknown moment.
        if self.made_veth {
            let _ = run_quiet(&["ip", "link", "del", &self.host_veth]);
            let gone = Path::new("/sys/class/net").join(&self.host_veth);
            let deadline = Instant::now() + Duration::from_secs(5);
            while gone.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if self.made_ns {
            let _ = run_quiet(&["ip", "netns", "del", &self.ns]);
        }
    }
}

pub use crate::nat::{nat_ready, NatLab, NatSite};
