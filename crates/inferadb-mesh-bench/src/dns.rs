//! `inferadb-mesh bench dns`: queries per second through our MagicDNS
//! responder beside dnsmasq answering the same names from a hosts file, on
//! loopback, with the same load generator, so the figure is a ratio.

use crate::control as bench_control;
use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::UdpSocket;

/// Arguments of `bench dns`.
#[derive(Debug, Args)]
pub struct DnsArgs {
    /// Seconds of load per server.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Concurrent clients (each one query in flight).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Node names in the tailnet (queried round-robin).
    #[arg(long, default_value_t = 100)]
    names: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One server's result.
#[derive(Debug, Clone, Serialize)]
pub struct DnsResult {
    /// Which server.
    pub name: String,
    /// Answered queries per second (NOERROR with an answer).
    pub qps: Option<f64>,
    /// Median round trip, µs.
    pub p50_us: Option<f64>,
    /// 99th percentile round trip, µs.
    pub p99_us: Option<f64>,
    /// Queries not answered correctly (timeouts, wrong answers).
    pub failed: u64,
    /// Why it did not run, if it did not.
    pub note: Option<String>,
}

/// A DNS query for `name` type A (RD set), id `id`.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(12 + name.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}

/// Whether `resp` answers query `id` with NOERROR and at least one record.
pub fn answered(resp: &[u8], id: u16) -> bool {
    resp.len() >= 12
        && resp[0..2] == id.to_be_bytes()
        && resp[2] & 0x80 != 0
        && resp[3] & 0x0f == 0
        && u16::from_be_bytes([resp[6], resp[7]]) >= 1
}

/// Closed-loop load: `clients` sockets, one query in flight each, for
/// `duration`, names round-robin.
async fn load(
    server: SocketAddr,
    names: &[String],
    clients: usize,
    duration: Duration,
) -> DnsResult {
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let names = Arc::new(names.to_vec());
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (stop, failed, names) = (stop.clone(), failed.clone(), names.clone());
        tasks.push(tokio::spawn(async move {
            let mut rtts = Vec::new();
            let Ok(sock) = UdpSocket::bind("127.0.0.1:0").await else {
                return rtts;
            };
            if sock.connect(server).await.is_err() {
                return rtts;
            }
            let mut buf = [0u8; 1500];
            let mut i = c;
            let mut id = (c as u16).wrapping_mul(7919);
            while !stop.load(Ordering::Relaxed) {
                id = id.wrapping_add(1);
                let q = query(id, &names[i % names.len()]);
                i += clients;
                let t = Instant::now();
                if sock.send(&q).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let ok = loop {
                    match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
                        Ok(Ok(n)) if buf[..n].len() >= 2 && buf[0..2] != id.to_be_bytes() => {
                            continue; // a late answer to an earlier query
                        }
                        Ok(Ok(n)) => break answered(&buf[..n], id),
                        _ => break false,
                    }
                };
                if ok {
                    rtts.push(t.elapsed().as_secs_f64() * 1e6);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            rtts
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            all.extend(r);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
    };
    DnsResult {
        name: String::new(),
        qps: (!all.is_empty()).then(|| all.len() as f64 / secs),
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        failed: failed.load(Ordering::Relaxed),
        note: None,
    }
}

/// Our node joined to an in-process coordinator with `names` registered
/// peers, its MagicDNS responder on a loopback port. Returns the names
/// (FQDNs) with their addresses, the responder's address and what keeps
/// them alive.
async fn start_ours(
    names: usize,
    state: &std::path::Path,
) -> anyhow::Result<(
    Vec<(String, IpAddr)>,
    SocketAddr,
    tailnet::Node,
    coordinator::server::ServerHandle,
)> {
    let store = Arc::new(coordinator::Store::open(&state.join("coordinator"))?);
    let key = coordinator::admin::authkey_create(
        &store,
        &coordinator::admin::AuthKeyCreateArgs {
            reusable: true,
            ephemeral: false,
            tags: vec![],
            expiry: Some("1h".into()),
        },
        SystemTime::now(),
    )?
    .key;
    bench_control::preregister(&store, &key, "bench", names)
        .map_err(|e| anyhow::anyhow!("registering {names} nodes: {e}"))?;
    let server = coordinator::server::Server::builder(store.clone())
        .bind("127.0.0.1:0".parse()?)
        .await?;
    let node = tailnet::Node::builder()
        .control_url(format!("http://{}", server.local_addr()))
        .auth_key(key)
        .hostname("dns-bench")
        .state_dir(state.join("node"))
        .listen("127.0.0.1:0".parse()?)
        .dns_listen("127.0.0.1:0".parse()?)
        .up()
        .await?;
    let addr = node
        .dns_listen_addr()
        .context("the node has no loopback DNS listener")?;
    let base = store.base_domain()?;
    let list = store
        .nodes()?
        .into_iter()
        .map(|n| (format!("{}.", n.fqdn(&base)), IpAddr::V4(n.ipv4)))
        .collect();
    Ok((list, addr, node, server))
}

/// dnsmasq answering `names` from a hosts file on a loopback port, or why
/// it cannot.
fn start_dnsmasq(
    names: &[(String, IpAddr)],
    dir: &std::path::Path,
) -> Result<(tokio::process::Child, SocketAddr), String> {
    let bin = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or("dnsmasq not installed (apt-get install dnsmasq-base)")?;
    let hosts = dir.join("hosts");
    let text: String = names
        .iter()
        .map(|(n, ip)| format!("{ip} {}\n", n.trim_end_matches('.')))
        .collect();
    std::fs::write(&hosts, text).map_err(|e| e.to_string())?;
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        s.local_addr().map_err(|e| e.to_string())?.port()
    };
    let child = tokio::process::Command::new(bin)
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-daemon",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file",
            "--user=root",
            "--cache-size=10000",
            "--local-ttl=600",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--addn-hosts={}", hosts.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("dnsmasq: {e}"))?;
    Ok((child, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// Waits until `server` answers `name`.
async fn wait_answering(server: SocketAddr, name: &str) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0").await else {
        return false;
    };
    let mut buf = [0u8; 1500];
    for i in 0..50u16 {
        let _ = sock.send_to(&query(i, name), server).await;
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(100), sock.recv_from(&mut buf)).await
        {
            if answered(&buf[..n], i) {
                return true;
            }
        }
    }
    false
}

/// Runs the benchmark and prints the table (or JSON).
pub async fn run(a: DnsArgs) -> anyhow::Result<()> {
    if !(a.duration > 0.0 && a.duration <= 600.0) {
        bail!("--duration must be between 0 and 600 seconds");
    }
    if a.clients == 0 || a.clients > 1024 {
        bail!("--clients must be between 1 and 1024");
    }
    if a.names == 0 || a.names > 5000 {
        bail!("--names must be between 1 and 5000");
    }
    let duration = Duration::from_secs_f64(a.duration);
    let dir = tempfile::Builder::new()
        .prefix("inferadb-mesh-bench-dns-")
        .tempdir()?;
    eprintln!(
        "bench dns: {} names, {} clients, {:.1} s per server …",
        a.names + 1,
        a.clients,
        a.duration
    );
    let (names, ours_addr, node, server) = start_ours(a.names, dir.path()).await?;
    let fqdns: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let mut results = Vec::new();
    if !wait_answering(ours_addr, &fqdns[0]).await {
        bail!("our responder at {ours_addr} does not answer {}", fqdns[0]);
    }
    let mut ours = load(ours_addr, &fqdns, a.clients, duration).await;
    ours.name = "inferadb-mesh MagicDNS (loopback listener)".into();
    results.push(ours);
    match start_dnsmasq(&names, dir.path()) {
        Ok((child, addr)) => {
            let mut r = if wait_answering(addr, &fqdns[0]).await {
                load(addr, &fqdns, a.clients, duration).await
            } else {
                DnsResult {
                    name: String::new(),
                    qps: None,
                    p50_us: None,
                    p99_us: None,
                    failed: 0,
                    note: Some("dnsmasq started but did not answer".into()),
                }
            };
            r.name = "dnsmasq (hosts file, same names)".into();
            results.push(r);
            drop(child);
        }
        Err(note) => results.push(DnsResult {
            name: "dnsmasq".into(),
            qps: None,
            p50_us: None,
            p99_us: None,
            failed: 0,
            note: Some(note),
        }),
    }
    node.shutdown().await;
    server.shutdown().await;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "results": results }))?
        );
    } else {
        println!(
            "DNS: A queries for {} tailnet names over loopback UDP, {} clients, {:.1} s each",
            fqdns.len(),
            a.clients,
            a.duration
        );
        println!(
            "  {:<44} {:>10} {:>9} {:>9} {:>7}",
            "server", "qps", "p50 µs", "p99 µs", "failed"
        );
        for r in &results {
            let f = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
            println!(
                "  {:<44} {:>10} {:>9} {:>9} {:>7}{}",
                r.name,
                f(r.qps, 0),
                f(r.p50_us, 0),
                f(r.p99_us, 0),
                r.failed,
                r.note
                    .as_ref()
                    .map(|n| format!("  ({n})"))
                    .unwrap_or_default()
            );
        }
        if let (Some(o), Some(d)) = (results[0].qps, results.get(1).and_then(|r| r.qps)) {
            println!("  ours / dnsmasq: {:.2}×", o / d);
        }
    }
    if results[0].qps.is_none() {
        bail!("our responder answered no query");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_well_formed_and_answers_are_checked() {
        let q = query(0x1234, "a.tailnet.internal.");
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[12..14], &[1, b'a']);
        assert_eq!(&q[q.len() - 4..], &[0, 1, 0, 1]);
        let mut resp = q.clone();
        resp[2] |= 0x80;
        assert!(!answered(&resp, 0x1234), "no answer records");
        resp[7] = 1;
        assert!(answered(&resp, 0x1234));
        assert!(!answered(&resp, 0x1235));
        resp[3] = 3; // NXDOMAIN
        assert!(!answered(&resp, 0x1234));
    }
}
