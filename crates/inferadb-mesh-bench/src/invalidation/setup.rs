//! Setting up a run: the embedded coordinator with a key per region, the
//! roles' YAML, starting and stopping many things at once, and this
//! process's CPU time and RSS.

use super::*;

pub(crate) fn step(msg: &str) {
    eprintln!("==> {msg}");
}

/// CPU time this process has used (user + system).
pub(crate) fn cpu_time() -> Option<Duration> {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    Some(tv(u.user_time()) + tv(u.system_time()))
}

pub(crate) fn rss_mib() -> Option<f64> {
    crate::control::rss_bytes().map(|b| round3(b as f64 / (1024.0 * 1024.0)))
}

/// Raises the soft open-file limit towards `needed` (up to the hard one);
/// a lower limit is left for the OS to report if it is hit.
pub(crate) fn raise_open_files(needed: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < needed {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, needed.min(hard), hard);
        }
    }
}

/// Starts `total` things, `concurrency` at once, printing progress; on
/// failure hands back what did start, so the caller can stop it.
pub(crate) async fn start_all<T, F, Fut>(
    what: &str,
    total: usize,
    concurrency: usize,
    make: F,
) -> Result<Vec<T>, (anyhow::Error, Vec<T>)>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..total {
        let gate = gate.clone();
        let fut = make(i);
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            (i, fut.await)
        });
    }
    let every = (total / 5).max(1);
    let mut started: Vec<(usize, T)> = Vec::with_capacity(total);
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, Ok(t))) => {
                started.push((i, t));
                let n = started.len();
                if n.is_multiple_of(every) || n == total {
                    step(&format!("starting {total} {what}… {n}/{total}"));
                }
            }
            Ok((_, Err(e))) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow::anyhow!("a start task failed: {e}"));
            }
        }
    }
    started.sort_by_key(|(i, _)| *i);
    let started = started.into_iter().map(|(_, t)| t).collect();
    match first_error {
        None => Ok(started),
        Some(e) => Err((e, started)),
    }
}

/// Stops roles concurrently.
pub(crate) async fn stop_roles<R: RunningRole>(roles: Vec<R>) {
    let mut set = tokio::task::JoinSet::new();
    for r in roles {
        set.spawn(r.shutdown());
    }
    while set.join_next().await.is_some() {}
}

/// Stops nodes concurrently.
pub(crate) async fn stop_nodes(nodes: Vec<tailnet::Node>) {
    let mut set = tokio::task::JoinSet::new();
    for n in nodes {
        set.spawn(async move { n.shutdown().await });
    }
    while set.join_next().await.is_some() {}
}

/// The embedded coordinator with one reusable key per region
/// (`tag:inferadb-<region>`).
pub(crate) async fn coordinator(
    dir: &Path,
) -> anyhow::Result<(coordinator::server::ServerHandle, String, Vec<String>)> {
    let store = Arc::new(coordinator::Store::open(&dir.join("coordinator"))?);
    let mut keys = Vec::new();
    for region in REGIONS {
        keys.push(
            coordinator::admin::authkey_create(
                &store,
                &coordinator::admin::AuthKeyCreateArgs {
                    reusable: true,
                    ephemeral: false,
                    tags: vec![format!("tag:inferadb-{region}")],
                    expiry: Some("2h".into()),
                },
                SystemTime::now(),
            )?
            .key,
        );
    }
    let server = coordinator::server::Server::builder(store)
        .bind("127.0.0.1:0".parse()?)
        .await?;
    let url = format!("http://{}", server.local_addr());
    Ok((server, url, keys))
}

/// An engine's `auth.discovery`: control, which runs in us-west-1 only.
pub fn engine_yaml(region: &str) -> String {
    let control = (REGIONS[0], "inferadb-control", CONTROL_PORT);
    let discovery = if region == REGIONS[0] {
        DiscoveryYaml {
            local_cluster: region,
            local: Some(format!(
                "{{type: tailscale, service_name: inferadb-control, port: {CONTROL_PORT}}}"
            )),
            ..DiscoveryYaml::default()
        }
    } else {
        DiscoveryYaml {
            local_cluster: region,
            local: Some("{type: none}".into()),
            remotes: vec![control],
            health_check: None,
        }
    };
    seed_yaml::engine_yaml(&discovery, SECRET)
}

/// Control's `cache_invalidation`: the engines of all three regions, no
/// health checks (the seed's default).
pub fn control_yaml() -> String {
    let discovery = DiscoveryYaml {
        local_cluster: REGIONS[0],
        remotes: REGIONS[1..]
            .iter()
            .map(|r| (*r, "inferadb-engine", ENGINE_PORT))
            .collect(),
        ..DiscoveryYaml::default()
    };
    seed_yaml::control_yaml(&discovery, TOKEN, TIMEOUT_MS, RETRIES, SECRET)
}
