//! `inferadb-mesh demo`: the seed's multi-region deployment in one process.
//!
//! The embedded coordinator; three regions as in the seed guide —
//! us-west-1 (2 engines + control), eu-west-1 (2 engines + control),
//! ap-southeast-1 (1 engine) — each node joined with its own region's
//! tagged pre-auth key (`tag:inferadb-<region>`), so MagicDNS groups the
//! hostnames `inferadb-engine-<n>` / `inferadb-control-0` per cluster. The
//! roles run in-process ([`crate::roles`]), each from a YAML file as
//! `inferadb-mesh engine|control --config` reads it. Then: discovery, the
//! endpoints per cluster, a vault created in us-west-1 through control's
//! `POST /v1/vaults` and its invalidation arriving at every engine in every
//! region, an optional bulk transfer between two engines, and one node's
//! status table. Every wait is bounded.

use crate::config::{ControlConfig, EngineConfig};
use crate::roles::{start_control, start_engine, Role};
use crate::seed_yaml;
use crate::services::{self, hex, Service, ServiceKind};
use anyhow::{bail, Context};
use inferadb_mesh_bench::util::{bounded, http};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Demo options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Bytes to move between two engines (0: skip the transfer).
    pub bytes: u64,
    /// Leave everything up, with the ports printed, until Ctrl-C.
    pub keep_running: bool,
}

/// The seed's regions: name, engines, whether it runs control.
const REGIONS: [(&str, usize, bool); 3] = [
    ("us-west-1", 2, true),
    ("eu-west-1", 2, true),
    ("ap-southeast-1", 1, false),
];
const SECRET: &str = "demo webhook secret, shared by control and the engines";
const TOKEN: &str = "demo-bearer-token";
const BULK_PORT: u16 = 5001;

fn step(msg: &str) {
    println!("==> {msg}");
}

/// One running role of the demo.
struct Member {
    region: &'static str,
    host: String,
    role: Role,
}

impl Member {
    fn ipv4(&self) -> String {
        self.role
            .node
            .ipv4()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into())
    }
}

/// The engine's `auth.discovery` in the demo's regions.
fn engine_yaml(region: &str) -> String {
    seed_yaml::engine_yaml(&seed_yaml::engine_discovery(&REGIONS, region), SECRET)
}

/// Control's `cache_invalidation` in the demo's regions.
fn control_yaml(region: &str) -> String {
    let d = seed_yaml::control_discovery(&REGIONS, region);
    seed_yaml::control_yaml(&d, TOKEN, 5000, 2, SECRET)
}

/// Runs the demo; returns an error if any check fails.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let state = tempfile::Builder::new()
        .prefix("inferadb-mesh-demo-")
        .tempdir()
        .context("temporary state directory")?;
    step(
        "starting the embedded coordinator on loopback (control protocol ts2021, state in SQLite)",
    );
    let store = Arc::new(coordinator::Store::open(&state.path().join("coordinator"))?);
    let mut keys = Vec::new();
    for (region, _, _) in REGIONS {
        let key = coordinator::admin::authkey_create(
            &store,
            &coordinator::admin::AuthKeyCreateArgs {
                reusable: true,
                ephemeral: false,
                tags: vec![format!("tag:inferadb-{region}")],
                expiry: Some("1h".into()),
            },
            SystemTime::now(),
        )?
        .key;
        keys.push(key);
    }
    let server = coordinator::server::Server::builder(store)
        .bind("127.0.0.1:0".parse()?)
        .await?;
    let url = format!("http://{}", server.local_addr());
    println!(
        "    control server {url}; one reusable pre-auth key per region: {}",
        REGIONS
            .iter()
            .map(|(r, _, _)| format!("tag:inferadb-{r}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let result = scenario(&opts, &url, &keys, state.path()).await;
    let members = match result {
        Ok(m) => m,
        Err((e, members)) => {
            for m in members {
                m.role.shutdown().await;
            }
            server.shutdown().await;
            return Err(e);
        }
    };

    if opts.keep_running {
        step("everything stays up; HTTP of each role on loopback (/metrics, /healthz, /readyz); Ctrl-C to stop");
        println!("    coordinator  {url}");
        for m in &members {
            let api = if m.role.kind == "control" {
                format!("  POST /v1/vaults (Authorization: Bearer {TOKEN})")
            } else {
                String::new()
            };
            println!(
                "    {:<15} {:<19} {:<15} http://{}{api}",
                m.region,
                m.host,
                m.ipv4(),
                m.role.http_addr
            );
        }
        crate::cli::shutdown_signal().await;
        step("stopping");
    }
    for m in members {
        m.role.shutdown().await;
    }
    server.shutdown().await;
    if !opts.keep_running {
        step(&format!(
            "done in {:.1} s: {} nodes in 3 regions joined, discovered each other over MagicDNS, and every engine received the vault's invalidation once",
            started.elapsed().as_secs_f64(),
            REGIONS.iter().map(|(_, e, c)| e + usize::from(*c)).sum::<usize>()
        ));
    }
    Ok(())
}

type Failed = (anyhow::Error, Vec<Member>);

/// The demo proper; on failure, hands back what it started so the caller
/// can stop it.
async fn scenario(
    opts: &DemoOptions,
    url: &str,
    keys: &[String],
    dir: &Path,
) -> Result<Vec<Member>, Failed> {
    let mut members: Vec<Member> = Vec::new();
    macro_rules! tryd {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Err((anyhow::Error::from(e), members)),
            }
        };
    }

    step("each region's nodes join with their region's key (userspace WireGuard + smoltcp, no TUN, no privileges)");
    for ((region, engines, control), key) in REGIONS.into_iter().zip(keys) {
        let mut hosts: Vec<String> = (0..engines)
            .map(|n| format!("inferadb-engine-{n}"))
            .collect();
        if control {
            hosts.push("inferadb-control-0".into());
        }
        for host in hosts {
            let t = Instant::now();
            let node_dir = dir.join(format!("{region}-{host}"));
            let file = dir.join(format!("{region}-{host}.yaml"));
            let is_control = host.starts_with("inferadb-control");
            let yaml = format!(
                "{}{}",
                seed_yaml::mesh_yaml(url, key, &host, &node_dir, true),
                if is_control {
                    control_yaml(region)
                } else {
                    engine_yaml(region)
                }
            );
            tryd!(
                std::fs::write(&file, yaml).with_context(|| format!("writing {}", file.display()))
            );
            let role = if is_control {
                let cfg = tryd!(ControlConfig::load_from(Some(&file), Vec::new())
                    .with_context(|| format!("{region} {host} configuration")));
                tryd!(
                    bounded(45, &format!("{region} {host} start"), async {
                        start_control(cfg)
                            .await
                            .with_context(|| format!("{region} {host} could not start"))
                    })
                    .await
                )
            } else {
                let cfg = tryd!(EngineConfig::load_from(Some(&file), Vec::new())
                    .with_context(|| format!("{region} {host} configuration")));
                tryd!(
                    bounded(45, &format!("{region} {host} start"), async {
                        start_engine(cfg)
                            .await
                            .with_context(|| format!("{region} {host} could not start"))
                    })
                    .await
                )
            };
            let m = Member { region, host, role };
            println!(
                "    {:<15} {:<19} Running in {:>4} ms  {:<15} {} (tailnet :{})",
                m.region,
                m.host,
                t.elapsed().as_millis(),
                m.ipv4(),
                m.role.kind,
                m.role.tailnet_port
            );
            members.push(m);
        }
    }

    step("discovery: each control resolves inferadb-engine.<region>.ts.net, each engine inferadb-control.<region>.ts.net, through its node's MagicDNS");
    println!("    (warnings on stderr from the first refreshes, made before every region had joined, are expected)");
    let want: Vec<(&str, usize)> = REGIONS.iter().map(|(r, e, _)| (*r, *e)).collect();
    for m in members.iter().filter(|m| m.role.kind == "control") {
        let discovery = m.role.discovery.clone();
        let region = m.region;
        let want = want.clone();
        let found = tryd!(
            bounded(
                30,
                &format!("{region} control discovering every engine (want {want:?})"),
                async {
                    loop {
                        let set = discovery.refresh_now().await.context("discovery refresh")?;
                        let by = set.healthy_by_cluster();
                        if want
                            .iter()
                            .all(|(c, n)| by.get(*c).map(Vec::len) == Some(*n))
                        {
                            return Ok(by);
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            )
            .await
        );
        println!("    {region} control: Discovered Tailscale endpoints across clusters");
        for (cluster, addrs) in &found {
            println!(
                "      cluster={cluster:<15} endpoint_count={} [{}]",
                addrs.len(),
                addrs
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    // The engines find control (local and remote) and go ready.
    let controls = REGIONS.iter().filter(|(_, _, c)| *c).count();
    for m in members.iter().filter(|m| m.role.kind == "engine") {
        let addr = m.role.http_addr;
        let discovery = m.role.discovery.clone();
        let what = format!(
            "{} {} discovering the {controls} controls and answering /readyz 200",
            m.region, m.host
        );
        let found = tryd!(
            bounded(30, &what, async {
                loop {
                    let set = discovery.refresh_now().await.context("discovery refresh")?;
                    if set.healthy().count() == controls {
                        if let Ok((200, _)) = http(addr, "GET", "/readyz", None, "").await {
                            return Ok(set);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await
        );
        println!(
            "    {:<15} {:<19} ready; control endpoints: {}",
            m.region,
            m.host,
            found
                .healthy()
                .map(|e| format!("{}={}", e.cluster, e.addr))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let Some(control) = members
        .iter()
        .find(|m| m.role.kind == "control" && m.region == "us-west-1")
    else {
        return Err((anyhow::anyhow!("no us-west-1 control"), members));
    };
    step(&format!(
        "POST /v1/vaults to us-west-1 control (http://{}, bearer token): a vault, and its invalidation to every engine",
        control.role.http_addr
    ));
    let (status, body) = tryd!(
        bounded(
            30,
            "POST /v1/vaults",
            http(
                control.role.http_addr,
                "POST",
                "/v1/vaults",
                Some(TOKEN),
                r#"{"name": "demo-vault"}"#,
            ),
        )
        .await
    );
    if status != 201 {
        return Err((
            anyhow::anyhow!("POST /v1/vaults answered {status}: {}", body.trim()),
            members,
        ));
    }
    let v: serde_json::Value = tryd!(serde_json::from_str(&body).context("POST /v1/vaults body"));
    let vault_id = v["id"].as_str().unwrap_or_default().to_string();
    let event_id = v["invalidation"]["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let engines = members.iter().filter(|m| m.role.kind == "engine").count();
    println!(
        "    201 Created: vault_id={vault_id}; invalidation {event_id}: targets {}, delivered {}",
        v["invalidation"]["targets"], v["invalidation"]["delivered"]
    );
    if v["invalidation"]["delivered"].as_u64() != Some(engines as u64) {
        return Err((
            anyhow::anyhow!("control delivered to fewer than the {engines} engines: {body}"),
            members,
        ));
    }
    let mut received = 0;
    for m in members.iter().filter(|m| m.role.kind == "engine") {
        let Some(rec) = m.role.received.as_ref() else {
            continue;
        };
        if !rec.wait_for(1, Duration::from_secs(10)).await {
            return Err((
                anyhow::anyhow!(
                    "{} {} did not receive the invalidation within 10 s",
                    m.region,
                    m.host
                ),
                members,
            ));
        }
        let n = rec.count_of(&event_id);
        let has_vault = rec.events().iter().any(|e| e.vault_id == vault_id);
        if n != 1 || !has_vault {
            return Err((
                anyhow::anyhow!(
                    "{} {} applied the event {n} times (vault {vault_id} seen: {has_vault}); expected once",
                    m.region,
                    m.host
                ),
                members,
            ));
        }
        received += 1;
        println!(
            "    {:<15} {:<19} {:<15} Vault cache invalidation received vault_id={vault_id} (receipts: {n})",
            m.region,
            m.host,
            m.ipv4()
        );
    }
    println!(
        "    {received}/{engines} engines in 3 regions received the invalidation exactly once"
    );

    if opts.bytes > 0 {
        let from = members
            .iter()
            .find(|m| m.role.kind == "engine" && m.region == "us-west-1");
        let to = members
            .iter()
            .find(|m| m.role.kind == "engine" && m.region == "ap-southeast-1");
        if let (Some(from), Some(to)) = (from, to) {
            tryd!(bulk(from, to, opts.bytes).await);
        }
    }

    let Some(control) = members
        .iter()
        .find(|m| m.role.kind == "control" && m.region == "us-west-1")
    else {
        return Err((anyhow::anyhow!("no us-west-1 control"), members));
    };
    step("us-west-1 inferadb-control-0's view, as `inferadb-mesh status` prints it");
    for line in control.role.node.status().to_table().lines() {
        println!("    {line}");
    }
    Ok(members)
}

/// `bytes` from one engine's node to another's over one TCP stream,
/// SHA-256 checked at both ends.
async fn bulk(from: &Member, to: &Member, bytes: u64) -> anyhow::Result<()> {
    services::spawn_on_node(
        &to.role.node,
        &[Service {
            kind: ServiceKind::Sha256,
            port: BULK_PORT,
        }],
    )?;
    let dst = to
        .role
        .node
        .ipv4()
        .context("the engine has an IPv4 address")?;
    step(&format!(
        "{} {} -> {} {} ({dst}:{BULK_PORT}): {} MiB over one TCP stream, SHA-256 checked at both ends",
        from.region,
        from.host,
        to.region,
        to.host,
        bytes >> 20
    ));
    let t = Instant::now();
    let expected = format!("{} {}", bytes, hex(&services::pattern_sha256(bytes)));
    let reply = bounded(120, "bulk transfer", async {
        let mut s = from
            .role
            .node
            .tcp_connect(SocketAddr::new(dst, BULK_PORT))
            .await?;
        let mut chunk = vec![0u8; 256 * 1024];
        let mut sent = 0u64;
        while sent < bytes {
            let n = ((bytes - sent) as usize).min(chunk.len());
            services::pattern(sent, &mut chunk[..n]);
            s.write_all(&chunk[..n]).await?;
            sent += n as u64;
        }
        s.shutdown().await?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).await?;
        Ok(reply)
    })
    .await?;
    let secs = t.elapsed().as_secs_f64();
    if reply.trim() != expected {
        bail!(
            "the engine received something else: {:?}, expected {expected:?}",
            reply.trim()
        );
    }
    println!(
        "    received {bytes} bytes, SHA-256 {}… matches; {secs:.2} s, {:.2} Gbit/s",
        &expected[expected.len() - 64..expected.len() - 48],
        bytes as f64 * 8.0 / secs / 1e9
    );
    Ok(())
}
