//! The running discovery: sources → members → health → the published set.
//!
//! ```text
//! refresh task (every cache TTL; sooner while degraded, see below; on
//!               refresh_now, a Kubernetes change, a change trigger such
//!               as the node's netmap)
//!   └ per cluster, concurrently: MagicDNS name / EndpointSlices / static list
//!       → members (cluster, addr) ─┐
//! health task (every interval) ────┤ consecutive successes / failures
//!                                  ▼
//!                      EndpointSet → tokio watch (subscribers)
//!                                  → inferadb_tailscale_discovered_endpoints
//! ```
//!
//! A cluster whose name does not exist (`not_found`: no pod online) becomes
//! empty; one whose lookup times out or errors keeps its previous members
//! (stale beats empty on a transient failure) and counts a failure.
//!
//! The cache TTL (default 300 s) is the steady-state period. Two things
//! make discovery refresh sooner, so a pod that comes, goes or comes back
//! is seen in seconds rather than at the next TTL:
//!
//! - **Change triggers** ([`DiscoveryBuilder::refresh_on`];
//!   [`DiscoveryBuilder::node`] adds the node's netmap): a change refreshes
//!   after `TRIGGER_SETTLE` (so MagicDNS, which rebuilds its zone from
//!   the same netmap, answers from the new one). MagicDNS answers come only
//!   from the netmap, so for the tailnet this alone keeps the set current.
//! - **Fast retry while degraded**: after a refresh in which a cluster came
//!   back empty or failed, or while an endpoint is unhealthy, the next
//!   refresh is `FAST_RETRY_MIN` (1 s) later, doubling after every such timed
//!   retry that is still degraded, up to the TTL; a refresh with every
//!   cluster found and every endpoint healthy goes back to the TTL. A
//!   health check turning an endpoint unhealthy starts the fast retry too.
//!   So a role started before its peers, or a lookup that failed once, is
//!   not stuck for a TTL.
//!
//! **Log levels**: `Failed to resolve Tailscale hostname` and `No Tailscale
//! endpoints discovered across any cluster` are INFO during the start-up
//! grace (`STARTUP_GRACE`, 60 s after discovery starts) for a cluster that
//! has never been found, since regions join one after another and a role
//! often starts before its peers; after that, or for a cluster that was
//! found before, they are WARN (the same text and fields either way, so the
//! guide's greps find both).

use crate::config::{
    ClusterTarget, DiscoveryConfig, DiscoveryMode, HealthCheckConfig, KubernetesConfig,
    LocalCluster, StaticEndpoint, STATIC_CLUSTER,
};
use crate::health;
use crate::kubernetes::{self, KubeClient, KubeError, KubeState};
use crate::metrics::DiscoveryMetrics;
use crate::net::{Connect, Resolve, ResolveFailure, SystemResolver, TcpConnector};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

/// How long after discovery starts a cluster that has never been found
/// logs its failures at INFO rather than WARN (see "Log levels").
const STARTUP_GRACE: Duration = Duration::from_secs(60);
/// Longest one MagicDNS lookup may take (the node's own retries fit).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the first refresh waits for the Kubernetes watcher's first list.
const KUBE_FIRST_LIST: Duration = Duration::from_secs(10);
/// The first delay of the fast retry while discovery is degraded (a
/// cluster empty or failed, an endpoint unhealthy); it doubles after each
/// timed retry still degraded, up to the cache TTL.
const FAST_RETRY_MIN: Duration = Duration::from_secs(1);
/// How long a change trigger (the node's netmap) waits before refreshing:
/// MagicDNS rebuilds its zone from the same netmap in a task of its own,
/// and changes come in bursts (a pod joining is several map messages).
const TRIGGER_SETTLE: Duration = Duration::from_millis(250);

/// One discovered endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// The cluster it belongs to (`local_cluster`, a remote cluster's
    /// `name`, or `static`).
    pub cluster: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether health checks pass (always `true` without health checks).
    pub healthy: bool,
}

/// The current endpoints, as subscribers see them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSet {
    /// Every endpoint, healthy or not, by cluster then address.
    pub endpoints: Vec<Endpoint>,
    /// Completed refreshes; 0 until discovery has run once.
    pub refreshes: u64,
}

impl EndpointSet {
    /// The healthy endpoints.
    pub fn healthy(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| e.healthy)
    }

    /// The endpoints of one cluster.
    pub fn cluster<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints.iter().filter(move |e| e.cluster == name)
    }

    /// Healthy addresses by cluster.
    pub fn healthy_by_cluster(&self) -> BTreeMap<String, Vec<SocketAddr>> {
        let mut m: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
        for e in self.healthy() {
            m.entry(e.cluster.clone()).or_default().push(e.addr);
        }
        m
    }

    /// Whether discovery has run at least once (readiness).
    pub fn is_ready(&self) -> bool {
        self.refreshes > 0
    }
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The Kubernetes client could not be set up.
    #[error(transparent)]
    Kubernetes(#[from] KubeError),
    /// The metrics could not be registered.
    #[error("registering discovery metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Discovery has stopped.
    #[error("discovery has stopped")]
    Stopped,
}

/// Where one cluster's members come from.
#[derive(Debug, Clone)]
enum Source {
    Dns(ClusterTarget),
    Kubernetes(KubernetesConfig),
    Static(Vec<StaticEndpoint>),
}

impl Source {
    fn cluster(&self) -> &str {
        match self {
            Source::Dns(t) => &t.name,
            Source::Kubernetes(k) => &k.cluster,
            Source::Static(_) => STATIC_CLUSTER,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Health {
    healthy: bool,
    successes: u32,
    failures: u32,
}

impl Default for Health {
    fn default() -> Self {
        // Optimistic: a newly discovered endpoint is in DNS because its pod
        // is online; checks take it out if it does not answer.
        Health {
            healthy: true,
            successes: 0,
            failures: 0,
        }
    }
}

struct State {
    members: BTreeMap<(String, SocketAddr), Health>,
    refreshes: u64,
    /// Counts last logged per cluster (log on change only).
    logged: Option<BTreeMap<String, usize>>,
    /// Clusters found (one endpoint or more) at least once.
    ever_found: std::collections::BTreeSet<String>,
}

struct Shared {
    clusters: Vec<String>,
    tailscale: bool,
    metrics: DiscoveryMetrics,
    state: Mutex<State>,
    tx: watch::Sender<Arc<EndpointSet>>,
    /// Set by change triggers: refresh soon.
    changed: Arc<Notify>,
    /// Set by the health task when an endpoint turns unhealthy: start the
    /// fast retry.
    unhealthy: Notify,
    /// When discovery started (the start-up grace of the log levels).
    started: tokio::time::Instant,
}

impl Shared {
    /// Whether a failure of `cluster` is expected start-up noise (INFO):
    /// within the start-up grace and never found before.
    fn quiet(&self, cluster: &str) -> bool {
        start_up_noise(
            self.started.elapsed(),
            self.state.lock().ever_found.contains(cluster),
        )
    }
}

/// Whether a discovery failure `since_start` into discovery is expected
/// start-up noise (INFO): within the grace and for something never found.
fn start_up_noise(since_start: Duration, found_before: bool) -> bool {
    since_start < STARTUP_GRACE && !found_before
}

impl Shared {
    /// Publishes the members (if they changed) and updates the gauge.
    fn publish(&self) {
        let (set, counts) = {
            let st = self.state.lock();
            let endpoints: Vec<Endpoint> = st
                .members
                .iter()
                .map(|((cluster, addr), h)| Endpoint {
                    cluster: cluster.clone(),
                    addr: *addr,
                    healthy: h.healthy,
                })
                .collect();
            let mut counts: BTreeMap<&str, i64> =
                self.clusters.iter().map(|c| (c.as_str(), 0)).collect();
            for e in endpoints.iter().filter(|e| e.healthy) {
                if let Some(c) = counts.get_mut(e.cluster.as_str()) {
                    *c += 1;
                }
            }
            let counts: Vec<(String, i64)> = counts
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            (
                EndpointSet {
                    endpoints,
                    refreshes: st.refreshes,
                },
                counts,
            )
        };
        for (c, n) in counts {
            self.metrics
                .discovered_endpoints
                .with_label_values(&[c.as_str()])
                .set(n);
        }
        self.tx.send_if_modified(|cur| {
            if **cur == set {
                false
            } else {
                *cur = Arc::new(set);
                true
            }
        });
    }
}

/// The outcome of one cluster's lookup.
enum Found {
    /// These members, replacing the old ones.
    Members(Vec<SocketAddr>),
    /// A failure: keep the old members.
    Failed,
}

enum Command {
    Refresh(oneshot::Sender<()>),
}

/// Running discovery. Dropping it (or [`Discovery::shutdown`]) stops its
/// tasks; subscribers then see the channel close.
pub struct Discovery {
    shared: Arc<Shared>,
    rx: watch::Receiver<Arc<EndpointSet>>,
    commands: mpsc::Sender<Command>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("clusters", &self.shared.clusters)
            .finish()
    }
}

type Trigger = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Sets discovery up: [`Discovery::builder`].
pub struct DiscoveryBuilder<R, C> {
    config: DiscoveryConfig,
    resolver: R,
    connector: C,
    metrics: Option<DiscoveryMetrics>,
    /// Notified by the triggers.
    changed: Arc<Notify>,
    /// Tasks that follow a change source and notify `changed`.
    triggers: Vec<Trigger>,
}

impl Discovery {
    /// Discovery as `config` says, with the OS resolver and OS TCP until
    /// [`DiscoveryBuilder::resolver`] / [`DiscoveryBuilder::connector`] (or
    /// [`DiscoveryBuilder::node`]) say otherwise.
    pub fn builder(config: DiscoveryConfig) -> DiscoveryBuilder<SystemResolver, TcpConnector> {
        DiscoveryBuilder {
            config,
            resolver: SystemResolver,
            connector: TcpConnector,
            metrics: None,
            changed: Arc::new(Notify::new()),
            triggers: Vec::new(),
        }
    }

    /// The current set (cheap: an `Arc`).
    pub fn current(&self) -> Arc<EndpointSet> {
        self.rx.borrow().clone()
    }

    /// A change stream: a watch of the current set, marked changed whenever
    /// an endpoint comes, goes or changes health.
    pub fn subscribe(&self) -> watch::Receiver<Arc<EndpointSet>> {
        self.rx.clone()
    }

    /// The configured clusters.
    pub fn clusters(&self) -> &[String] {
        &self.shared.clusters
    }

    /// The metrics it updates.
    pub fn metrics(&self) -> &DiscoveryMetrics {
        &self.shared.metrics
    }

    /// Refreshes now (not waiting for the TTL) and returns the new set.
    pub async fn refresh_now(&self) -> Result<Arc<EndpointSet>, DiscoveryError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Refresh(tx))
            .await
            .map_err(|_| DiscoveryError::Stopped)?;
        rx.await.map_err(|_| DiscoveryError::Stopped)?;
        Ok(self.current())
    }

    /// Waits until the first refresh has completed.
    pub async fn ready(&self) -> Result<Arc<EndpointSet>, DiscoveryError> {
        let mut rx = self.rx.clone();
        let set = rx
            .wait_for(|s| s.is_ready())
            .await
            .map_err(|_| DiscoveryError::Stopped)?;
        Ok(set.clone())
    }

    /// Stops the background tasks.
    pub fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl<R: Resolve, C: Connect> DiscoveryBuilder<R, C> {
    /// Resolves MagicDNS names with `resolver`.
    pub fn resolver<R2: Resolve>(self, resolver: R2) -> DiscoveryBuilder<R2, C> {
        DiscoveryBuilder {
            config: self.config,
            resolver,
            connector: self.connector,
            metrics: self.metrics,
            changed: self.changed,
            triggers: self.triggers,
        }
    }

    /// Runs health checks over `connector`.
    pub fn connector<C2: Connect>(self, connector: C2) -> DiscoveryBuilder<R, C2> {
        DiscoveryBuilder {
            config: self.config,
            resolver: self.resolver,
            connector,
            metrics: self.metrics,
            changed: self.changed,
            triggers: self.triggers,
        }
    }

    /// Resolves through the node's MagicDNS, health-checks over its
    /// tunnels, and refreshes whenever its netmap changes (MagicDNS answers
    /// from the netmap, so a pod joining, leaving or going offline is seen
    /// at once rather than at the next TTL).
    #[cfg(feature = "tailnet")]
    pub fn node(self, node: &tailnet::Node) -> DiscoveryBuilder<tailnet::Node, tailnet::Node> {
        let b = self.resolver(node.clone()).connector(node.clone());
        match node.watch_netmap() {
            Some(netmap) => b.refresh_on(netmap),
            None => b,
        }
    }

    /// Also refreshes whenever `changes` changes (250 ms later, so a burst
    /// of changes makes one or two refreshes). For sources whose
    /// answers follow something observable, like MagicDNS and the netmap.
    pub fn refresh_on<T: Send + Sync + 'static>(mut self, mut changes: watch::Receiver<T>) -> Self {
        let changed = self.changed.clone();
        self.triggers.push(Box::pin(async move {
            while changes.changed().await.is_ok() {
                changed.notify_one();
            }
        }));
        self
    }

    /// Updates these metrics (e.g. from [`DiscoveryMetrics::register`]);
    /// without, private unregistered ones.
    pub fn metrics(mut self, metrics: DiscoveryMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Registers new metrics into `registry` and updates them.
    pub fn registry(self, registry: &prometheus::Registry) -> Result<Self, DiscoveryError> {
        let m = DiscoveryMetrics::register(registry)?;
        Ok(self.metrics(m))
    }

    /// Starts the background tasks (on the current tokio runtime); the
    /// first refresh begins at once ([`Discovery::ready`] waits for it).
    pub fn start(self) -> Result<Discovery, DiscoveryError> {
        let config = self.config;
        let mut sources = Vec::new();
        match &config.mode {
            DiscoveryMode::None => sources.push(Source::Static(config.http_endpoints.clone())),
            DiscoveryMode::Kubernetes(k) => sources.push(Source::Kubernetes(k.clone())),
            DiscoveryMode::Tailscale(t) => {
                match &t.local {
                    LocalCluster::Tailscale(c) => sources.push(Source::Dns(c.clone())),
                    LocalCluster::Kubernetes(k) => sources.push(Source::Kubernetes(k.clone())),
                    LocalCluster::None => {}
                }
                sources.extend(t.remote_clusters.iter().cloned().map(Source::Dns));
            }
        }
        if !matches!(config.mode, DiscoveryMode::None) && !config.http_endpoints.is_empty() {
            tracing::warn!(
                mode = config.mode.name(),
                "http_endpoints are ignored when a discovery mode is set"
            );
        }
        // At most one Kubernetes source exists.
        let mut kube_rx: Option<watch::Receiver<KubeState>> = None;
        let mut tasks = Vec::new();
        for s in &sources {
            if let Source::Kubernetes(k) = s {
                let client = KubeClient::from_config(k)?;
                let (tx, rx) = watch::channel(None);
                tasks.push(tokio::spawn(kubernetes::run(client, k.port.clone(), tx)));
                kube_rx = Some(rx);
            }
        }
        let metrics = self.metrics.unwrap_or_default();
        let clusters = config.cluster_names();
        metrics.clusters_total.reset();
        metrics
            .clusters_total
            .inc_by(u64::try_from(clusters.len()).unwrap_or(u64::MAX));
        // Every configured cluster's failure series exists from the start
        // at 0, so a rate() over it (the dashboard's failure panel, an
        // alert) reads 0 rather than "no data" until the first failure.
        let resolved = matches!(config.mode, DiscoveryMode::Tailscale(_));
        for cluster in clusters.iter().filter(|_| resolved) {
            for reason in ["not_found", "timeout", "error"] {
                metrics
                    .cluster_discovery_failures
                    .with_label_values(&[cluster.as_str(), reason]);
            }
        }
        for s in &sources {
            if let Source::Kubernetes(k) = s {
                metrics
                    .cluster_discovery_failures
                    .with_label_values(&[k.cluster.as_str(), "kubernetes_api"]);
            }
        }
        let (tx, rx) = watch::channel(Arc::new(EndpointSet::default()));
        let shared = Arc::new(Shared {
            clusters,
            tailscale: matches!(config.mode, DiscoveryMode::Tailscale(_)),
            metrics,
            state: Mutex::new(State {
                members: BTreeMap::new(),
                refreshes: 0,
                logged: None,
                ever_found: Default::default(),
            }),
            started: tokio::time::Instant::now(),
            tx,
            changed: self.changed,
            unhealthy: Notify::new(),
        });
        shared.publish();
        let (ctx, crx) = mpsc::channel(16);
        for t in self.triggers {
            tasks.push(tokio::spawn(t));
        }
        let resolver = Arc::new(self.resolver);
        tasks.push(tokio::spawn(refresh_task(
            shared.clone(),
            sources,
            resolver,
            kube_rx,
            config.cache_ttl,
            crx,
        )));
        if let Some(h) = config.health_check.clone() {
            tasks.push(tokio::spawn(health_task(
                shared.clone(),
                Arc::new(self.connector),
                h,
            )));
        }
        Ok(Discovery {
            shared,
            rx,
            commands: ctx,
            tasks,
        })
    }
}

/// Why the refresh task woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The TTL or the fast retry's delay ran out.
    Timer,
    /// Asked (refresh_now), or a source or trigger said something changed.
    Asked,
}

/// The delay before the next timed refresh, and the fast retry's next
/// delay: while `degraded`, `retry` (at most the TTL); otherwise the TTL,
/// and the fast retry starts over.
fn next_delay(degraded: bool, retry: Duration, ttl: Duration) -> (Duration, Duration) {
    if degraded {
        (retry.min(ttl), retry)
    } else {
        (ttl, FAST_RETRY_MIN)
    }
}

async fn refresh_task<R: Resolve>(
    shared: Arc<Shared>,
    sources: Vec<Source>,
    resolver: Arc<R>,
    mut kube_rx: Option<watch::Receiver<KubeState>>,
    ttl: Duration,
    mut commands: mpsc::Receiver<Command>,
) {
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut retry = FAST_RETRY_MIN;
    loop {
        let degraded = refresh(&shared, &sources, &resolver, kube_rx.as_mut()).await;
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
        let (delay, r) = next_delay(degraded, retry, ttl);
        retry = r;
        let mut deadline = tokio::time::Instant::now() + delay;
        let wake = loop {
            let kube_changed = async {
                match kube_rx.as_mut() {
                    Some(rx) => {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break Wake::Timer,
                _ = kube_changed => break Wake::Asked,
                _ = shared.changed.notified() => {
                    tokio::time::sleep(TRIGGER_SETTLE).await;
                    break Wake::Asked;
                }
                _ = shared.unhealthy.notified() => {
                    // Re-resolve soon: the pod may be gone or replaced.
                    deadline = deadline.min(tokio::time::Instant::now() + retry.min(ttl));
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Refresh(w)) => {
                        waiters.push(w);
                        break Wake::Asked;
                    }
                    None => return,
                },
            }
        };
        // Timed retries back off; asked-for refreshes leave the pace as is.
        if wake == Wake::Timer && degraded {
            retry = retry.saturating_mul(2).min(ttl);
        }
    }
}

/// One refresh of every source, then members, logs and metrics. Returns
/// whether discovery is degraded: a cluster failed or is empty, or an
/// endpoint is unhealthy (the fast retry's condition).
async fn refresh<R: Resolve>(
    shared: &Arc<Shared>,
    sources: &[Source],
    resolver: &Arc<R>,
    kube_rx: Option<&mut watch::Receiver<KubeState>>,
) -> bool {
    let mut results: Vec<(String, Found)> = Vec::new();
    let mut dns = tokio::task::JoinSet::new();
    for s in sources {
        match s {
            Source::Dns(t) => {
                let (t, r, m) = (t.clone(), resolver.clone(), shared.metrics.clone());
                let quiet = shared.quiet(&t.name);
                dns.spawn(async move {
                    let found = resolve_cluster(&*r, &t, &m, quiet).await;
                    (t.name, found)
                });
            }
            Source::Static(list) => {
                results.push((STATIC_CLUSTER.to_string(), resolve_static(list).await));
            }
            Source::Kubernetes(_) => {}
        }
    }
    if let (Some(rx), Some(Source::Kubernetes(k))) = (
        kube_rx,
        sources.iter().find(|s| matches!(s, Source::Kubernetes(_))),
    ) {
        let state = match tokio::time::timeout(KUBE_FIRST_LIST, rx.wait_for(|s| s.is_some())).await
        {
            Ok(Ok(s)) => s.clone(),
            _ => None,
        };
        let found = match state {
            Some(Ok(addrs)) => Found::Members(addrs),
            Some(Err(e)) => {
                tracing::warn!(cluster = %k.cluster, error = %e, "Kubernetes endpoint discovery failed");
                shared
                    .metrics
                    .cluster_discovery_failures
                    .with_label_values(&[k.cluster.as_str(), "kubernetes_api"])
                    .inc();
                Found::Failed
            }
            None => {
                shared
                    .metrics
                    .cluster_discovery_failures
                    .with_label_values(&[k.cluster.as_str(), "kubernetes_api"])
                    .inc();
                Found::Failed
            }
        };
        results.push((k.cluster.clone(), found));
    }
    while let Some(r) = dns.join_next().await {
        if let Ok(r) = r {
            results.push(r);
        }
    }

    let failed = results.iter().any(|(_, f)| matches!(f, Found::Failed));
    let (counts, degraded) = {
        let mut st = shared.state.lock();
        for (cluster, found) in &results {
            let Found::Members(addrs) = found else {
                continue;
            };
            let old: BTreeMap<(String, SocketAddr), Health> = st
                .members
                .iter()
                .filter(|((c, _), _)| c == cluster)
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            st.members.retain(|(c, _), _| c != cluster);
            for a in addrs {
                let key = (cluster.clone(), *a);
                let h = old.get(&key).copied().unwrap_or_default();
                st.members.insert(key, h);
            }
            if !addrs.is_empty() {
                st.ever_found.insert(cluster.clone());
            }
        }
        st.refreshes += 1;
        let counts: BTreeMap<String, usize> = sources
            .iter()
            .map(|s| {
                let c = s.cluster().to_string();
                let n = st.members.keys().filter(|(mc, _)| *mc == c).count();
                (c, n)
            })
            .collect();
        // An empty static list is configuration, not a degraded source.
        let empty = sources.iter().any(|s| {
            !matches!(s, Source::Static(l) if l.is_empty())
                && counts.get(s.cluster()).copied().unwrap_or(0) == 0
        });
        let unhealthy = st.members.values().any(|h| !h.healthy);
        let changed = st.logged.as_ref() != Some(&counts);
        st.logged = Some(counts.clone());
        (changed.then_some(counts), failed || empty || unhealthy)
    };
    if let Some(counts) = counts {
        let total: usize = counts.values().sum();
        for s in sources {
            let c = s.cluster();
            let n = counts.get(c).copied().unwrap_or(0);
            if shared.tailscale {
                tracing::info!(cluster = %c, endpoint_count = n, "Discovered Tailscale endpoints across clusters");
            } else {
                tracing::info!(cluster = %c, endpoint_count = n, "Discovered endpoints");
            }
        }
        if total == 0 && shared.tailscale {
            log_none_found(shared);
        }
    } else if shared.tailscale && shared.state.lock().members.is_empty() {
        log_none_found(shared);
    }
    shared.publish();
    degraded
}

/// `No Tailscale endpoints discovered across any cluster`: INFO while
/// nothing was ever found within the start-up grace, else WARN.
fn log_none_found(shared: &Shared) {
    let quiet = start_up_noise(
        shared.started.elapsed(),
        !shared.state.lock().ever_found.is_empty(),
    );
    if quiet {
        tracing::info!("No Tailscale endpoints discovered across any cluster");
    } else {
        tracing::warn!("No Tailscale endpoints discovered across any cluster");
    }
}

/// `Failed to resolve Tailscale hostname …` at INFO when `quiet` (expected
/// start-up noise), else WARN; the same text and fields.
fn log_resolve_failure(quiet: bool, hostname: &str, cluster: &str, error: &dyn std::fmt::Display) {
    if quiet {
        tracing::info!(hostname = %hostname, cluster = %cluster, error = %error, "Failed to resolve Tailscale hostname");
    } else {
        tracing::warn!(hostname = %hostname, cluster = %cluster, error = %error, "Failed to resolve Tailscale hostname");
    }
}

async fn resolve_cluster<R: Resolve>(
    resolver: &R,
    target: &ClusterTarget,
    metrics: &DiscoveryMetrics,
    quiet: bool,
) -> Found {
    let hostname = target.hostname();
    let outcome = tokio::time::timeout(RESOLVE_TIMEOUT, resolver.resolve(&hostname)).await;
    let failure = match outcome {
        Ok(Ok(addrs)) => {
            metrics
                .dns_resolutions
                .with_label_values(&[hostname.as_str(), "success"])
                .inc();
            // One address per pod: a tailnet node has an IPv4 and an IPv6
            // address and the service name gives both, so keep IPv4 when
            // there is any (else IPv6); otherwise every pod would be
            // counted, and sent webhooks, twice.
            let any_v4 = addrs.iter().any(IpAddr::is_ipv4);
            let mut v: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|ip| ip.is_ipv4() == any_v4)
                .map(|ip: IpAddr| SocketAddr::new(ip, target.port))
                .collect();
            v.sort();
            v.dedup();
            return Found::Members(v);
        }
        Ok(Err(e)) => {
            let kind = R::classify(&e);
            log_resolve_failure(quiet, &hostname, &target.name, &e);
            kind
        }
        Err(_) => {
            log_resolve_failure(quiet, &hostname, &target.name, &"no answer in time");
            ResolveFailure::Timeout
        }
    };
    metrics
        .dns_resolutions
        .with_label_values(&[hostname.as_str(), failure.as_str()])
        .inc();
    metrics
        .cluster_discovery_failures
        .with_label_values(&[target.name.as_str(), failure.as_str()])
        .inc();
    match failure {
        // The name is gone: no pod of the service is online.
        ResolveFailure::NotFound => Found::Members(Vec::new()),
        _ => Found::Failed,
    }
}

async fn resolve_static(list: &[StaticEndpoint]) -> Found {
    let mut out = Vec::new();
    for e in list {
        if let Ok(ip) = e.host.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, e.port));
            continue;
        }
        match SystemResolver.resolve(&e.host).await {
            Ok(ips) => out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, e.port))),
            Err(err) => {
                tracing::warn!(endpoint = %e, error = %err, "Failed to resolve static endpoint")
            }
        }
    }
    out.sort();
    out.dedup();
    Found::Members(out)
}

/// Checks every member each interval. A round does not wait for the
/// previous one: a check that takes its whole timeout (a dead pod over a
/// tunnel: no handshake, no answer) does not delay the next, so checks
/// stay an interval apart and a dead endpoint is unhealthy within
/// [`HealthCheckConfig::detection_window`] (interval × unhealthy_threshold
/// plus timeout), even when the timeout is longer than the interval (then
/// up to timeout / interval checks of one endpoint are in flight).
/// Results apply as they arrive.
async fn health_task<C: Connect>(shared: Arc<Shared>, connector: Arc<C>, cfg: HealthCheckConfig) {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let path: Arc<str> = cfg.path.clone().into();
    let mut checks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let targets: Vec<(String, SocketAddr)> =
                    shared.state.lock().members.keys().cloned().collect();
                for (cluster, addr) in targets {
                    let (c, p, timeout) = (connector.clone(), path.clone(), cfg.timeout);
                    checks.spawn(async move {
                        let r = health::check(&*c, addr, &p, timeout).await;
                        (cluster, addr, r)
                    });
                }
            }
            Some(done) = checks.join_next() => {
                let Ok((cluster, addr, r)) = done else { continue };
                let turned_unhealthy = apply_check(&shared, &cfg, cluster, addr, r);
                shared.publish();
                if turned_unhealthy {
                    shared.unhealthy.notify_one();
                }
            }
        }
    }
}

/// Counts one check's result; returns whether the endpoint just turned
/// unhealthy.
fn apply_check(
    shared: &Shared,
    cfg: &HealthCheckConfig,
    cluster: String,
    addr: SocketAddr,
    r: Result<u16, health::CheckError>,
) -> bool {
    let mut st = shared.state.lock();
    // Gone since the check started: nothing to update.
    let Some(h) = st.members.get_mut(&(cluster.clone(), addr)) else {
        return false;
    };
    match r {
        Ok(_) => {
            h.failures = 0;
            h.successes = h.successes.saturating_add(1);
            if !h.healthy && h.successes >= cfg.healthy_threshold {
                h.healthy = true;
                tracing::info!(cluster = %cluster, endpoint = %addr, "Endpoint healthy again");
            }
            false
        }
        Err(e) => {
            h.successes = 0;
            h.failures = h.failures.saturating_add(1);
            if h.healthy && h.failures >= cfg.unhealthy_threshold {
                h.healthy = false;
                tracing::warn!(cluster = %cluster, endpoint = %addr, error = %e, "Endpoint unhealthy");
                return true;
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    //! The refresh pace on tokio's paused clock: the fast retry while a
    //! cluster is empty (and its backoff to the TTL), change triggers, and
    //! an unhealthy endpoint starting the fast retry.

    use super::*;
    use crate::config::TailscaleConfig;
    use std::collections::HashMap;
    use std::io;

    /// Name → addresses (missing: NXDOMAIN), counting lookups per name.
    #[derive(Clone, Default)]
    struct Fake {
        answers: Arc<Mutex<HashMap<String, Vec<IpAddr>>>>,
        lookups: Arc<Mutex<HashMap<String, u32>>>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("no such name")]
    struct NotFound;

    impl Fake {
        fn set(&self, name: &str, ips: &[&str]) {
            let ips = ips.iter().map(|s| s.parse().unwrap()).collect();
            self.answers.lock().insert(name.into(), ips);
        }
        fn lookups(&self, name: &str) -> u32 {
            self.lookups.lock().get(name).copied().unwrap_or(0)
        }
    }

    impl Resolve for Fake {
        type Error = NotFound;
        async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, NotFound> {
            *self.lookups.lock().entry(name.into()).or_default() += 1;
            self.answers.lock().get(name).cloned().ok_or(NotFound)
        }
        fn classify(_: &NotFound) -> ResolveFailure {
            ResolveFailure::NotFound
        }
    }

    /// Health checks: 200 from every address except `down`, which
    /// refuses connections, and `silent`, which never answers (a dead pod
    /// over a tunnel).
    #[derive(Clone, Default)]
    struct Checks {
        down: Arc<Mutex<Vec<IpAddr>>>,
        silent: Arc<Mutex<Vec<IpAddr>>>,
    }

    impl Connect for Checks {
        type Stream = tokio::io::DuplexStream;
        async fn connect(&self, addr: SocketAddr) -> io::Result<tokio::io::DuplexStream> {
            if self.down.lock().contains(&addr.ip()) {
                return Err(io::ErrorKind::ConnectionRefused.into());
            }
            if self.silent.lock().contains(&addr.ip()) {
                std::future::pending::<()>().await;
            }
            let (client, mut server) = tokio::io::duplex(1024);
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
            });
            Ok(client)
        }
    }

    const US: &str = "inferadb-engine.us-west-1.ts.net";
    const EU: &str = "inferadb-engine.eu-west-1.ts.net";

    fn target(name: &str) -> ClusterTarget {
        ClusterTarget {
            name: name.into(),
            tailscale_domain: format!("{name}.ts.net"),
            service_name: "inferadb-engine".into(),
            port: 8080,
        }
    }

    fn config(health: Option<HealthCheckConfig>) -> DiscoveryConfig {
        DiscoveryConfig {
            mode: DiscoveryMode::Tailscale(TailscaleConfig {
                local_cluster: "us-west-1".into(),
                local: LocalCluster::Tailscale(target("us-west-1")),
                remote_clusters: vec![target("eu-west-1")],
            }),
            http_endpoints: Vec::new(),
            cache_ttl: Duration::from_secs(300),
            health_check: health,
        }
    }

    fn addrs(set: &EndpointSet, cluster: &str) -> Vec<String> {
        set.cluster(cluster).map(|e| e.addr.to_string()).collect()
    }

    /// Sleeps `secs` of paused time in small steps, so every timer due on
    /// the way fires in order.
    async fn pass(secs: f64) {
        let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
        while tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[test]
    fn the_next_delay_is_the_retry_while_degraded_else_the_ttl() {
        let ttl = Duration::from_secs(300);
        let s = Duration::from_secs;
        assert_eq!(next_delay(true, s(1), ttl), (s(1), s(1)));
        assert_eq!(next_delay(true, s(512), ttl), (ttl, s(512)));
        assert_eq!(next_delay(false, s(64), ttl), (ttl, FAST_RETRY_MIN));
        // A TTL under the fast retry's first step: the TTL.
        let short = Duration::from_millis(500);
        assert_eq!(next_delay(true, s(1), short), (short, s(1)));
    }

    /// Issue 17: the demo printed 16 WARN lines of clusters not joined
    /// yet. Only the first minute of something never found is quiet; a
    /// cluster lost after it was found, or never found for a minute, warns.
    #[test]
    fn only_start_up_failures_of_never_found_clusters_are_quiet() {
        let s = Duration::from_secs;
        assert!(start_up_noise(s(0), false));
        assert!(start_up_noise(s(59), false));
        assert!(!start_up_noise(STARTUP_GRACE, false), "a minute on: WARN");
        assert!(!start_up_noise(s(1), true), "found, then lost: WARN");
        assert!(!start_up_noise(s(3600), true));
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_cluster_is_retried_fast_then_backs_off_to_the_ttl() {
        let r = Fake::default();
        r.set(US, &["100.64.0.1"]);
        let d = Discovery::builder(config(None))
            .resolver(r.clone())
            .start()
            .unwrap();
        let set = d.ready().await.unwrap();
        assert_eq!(addrs(&set, "eu-west-1"), Vec::<String>::new());
        assert_eq!(r.lookups(EU), 1);
        // Refreshes at 1, 3, 7, 15, 31, 63, 127, 255 s, then every TTL
        // (the ninth waits min(256 s, TTL)).
        pass(0.5).await;
        assert_eq!(r.lookups(EU), 1, "not before the first retry");
        pass(1.0).await;
        assert_eq!(r.lookups(EU), 2, "the first retry, 1 s after");
        pass(254.0).await;
        assert_eq!(r.lookups(EU), 9, "doubling: 1 3 7 15 31 63 127 255");
        pass(256.0).await;
        assert_eq!(r.lookups(EU), 10, "then min(256 s, TTL): 511");
        pass(299.0).await;
        assert_eq!(r.lookups(EU), 10, "capped at the TTL");
        pass(2.0).await;
        assert_eq!(r.lookups(EU), 11, "811 s");

        // The cluster comes up: found at the next retry (at most a TTL
        // here; a trigger would be sooner), then the steady TTL.
        r.set(EU, &["100.64.1.1"]);
        pass(300.0).await;
        assert_eq!(addrs(&d.current(), "eu-west-1"), ["100.64.1.1:8080"]);
        let n = r.lookups(EU);
        pass(290.0).await;
        assert_eq!(r.lookups(EU), n, "healthy and complete: the TTL again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_role_started_before_its_peers_finds_them_within_seconds() {
        let r = Fake::default();
        let d = Discovery::builder(config(None))
            .resolver(r.clone())
            .start()
            .unwrap();
        assert!(d.ready().await.unwrap().endpoints.is_empty());
        pass(2.0).await;
        r.set(US, &["100.64.0.1"]);
        r.set(EU, &["100.64.1.1", "100.64.1.2"]);
        // Retries at 1, 3 s: found by 3 s, with no trigger at all.
        pass(1.5).await;
        let set = d.current();
        assert_eq!(addrs(&set, "us-west-1"), ["100.64.0.1:8080"]);
        assert_eq!(
            addrs(&set, "eu-west-1"),
            ["100.64.1.1:8080", "100.64.1.2:8080"]
        );
        let n = r.lookups(EU);
        pass(299.0).await;
        assert_eq!(r.lookups(EU), n, "found: back to the TTL");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_refreshes_at_once_and_the_ttl_holds_otherwise() {
        let r = Fake::default();
        r.set(US, &["100.64.0.1"]);
        r.set(EU, &["100.64.1.1"]);
        let (tx, rx) = watch::channel(0u32);
        let d = Discovery::builder(config(None))
            .resolver(r.clone())
            .refresh_on(rx)
            .start()
            .unwrap();
        d.ready().await.unwrap();
        // Nothing degraded, nothing triggered: no refresh before the TTL.
        pass(100.0).await;
        assert_eq!(r.lookups(EU), 1);
        // A pod joins: the trigger refreshes within the settle delay.
        r.set(EU, &["100.64.1.1", "100.64.1.2"]);
        let mut sub = d.subscribe();
        tx.send_replace(1);
        let t = tokio::time::Instant::now();
        sub.wait_for(|s| s.cluster("eu-west-1").count() == 2)
            .await
            .unwrap();
        assert!(t.elapsed() <= TRIGGER_SETTLE + Duration::from_millis(10));
        // A burst of changes: a refresh or two, not one each.
        let before = r.lookups(EU);
        for i in 2..20 {
            tx.send_replace(i);
        }
        pass(1.0).await;
        let burst = r.lookups(EU) - before;
        assert!((1..=2).contains(&burst), "{burst} refreshes for a burst");
        // And the TTL still refreshes in the steady state.
        let n = r.lookups(EU);
        pass(300.0).await;
        assert_eq!(r.lookups(EU), n + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_turning_unhealthy_starts_the_fast_retry() {
        let r = Fake::default();
        r.set(US, &["100.64.0.1"]);
        r.set(EU, &["100.64.1.1"]);
        let checks = Checks::default();
        let health = HealthCheckConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            healthy_threshold: 1,
            unhealthy_threshold: 2,
            ..HealthCheckConfig::default()
        };
        let d = Discovery::builder(config(Some(health)))
            .resolver(r.clone())
            .connector(checks.clone())
            .start()
            .unwrap();
        d.ready().await.unwrap();
        pass(10.0).await;
        assert_eq!(r.lookups(EU), 1, "all healthy: the TTL pace");
        // The eu pod dies and a new one (new address) replaces it; nothing
        // tells discovery but the failing checks.
        checks.down.lock().push("100.64.1.1".parse().unwrap());
        r.set(EU, &["100.64.1.2"]);
        pass(0.35).await;
        assert!(
            d.current().endpoints.iter().any(|e| !e.healthy),
            "unhealthy after two failed checks: {:?}",
            d.current()
        );
        pass(1.0).await;
        let set = d.current();
        assert_eq!(addrs(&set, "eu-west-1"), ["100.64.1.2:8080"]);
        assert!(set.endpoints.iter().all(|e| e.healthy), "{set:?}");
        let n = r.lookups(EU);
        pass(100.0).await;
        assert_eq!(r.lookups(EU), n, "healthy again: the TTL pace");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_endpoint_is_unhealthy_within_the_window_with_a_long_timeout() {
        let r = Fake::default();
        r.set(US, &["100.64.0.1"]);
        r.set(EU, &["100.64.1.1"]);
        let checks = Checks::default();
        // Timeout over the interval: checks of one endpoint overlap.
        let health = HealthCheckConfig {
            interval: Duration::from_millis(300),
            timeout: Duration::from_millis(1000),
            healthy_threshold: 1,
            unhealthy_threshold: 2,
            ..HealthCheckConfig::default()
        };
        let window = health.detection_window();
        let d = Discovery::builder(config(Some(health)))
            .resolver(r)
            .connector(checks.clone())
            .start()
            .unwrap();
        d.ready().await.unwrap();
        // Die at every offset within an interval: unhealthy within the
        // window each time, the other endpoint healthy throughout.
        for offset_ms in [0u64, 100, 250] {
            pass(1.0 + offset_ms as f64 / 1000.0).await;
            assert!(d.current().endpoints.iter().all(|e| e.healthy));
            let t = tokio::time::Instant::now();
            checks.silent.lock().push("100.64.1.1".parse().unwrap());
            let mut rx = d.subscribe();
            let set = rx
                .wait_for(|s| s.endpoints.iter().any(|e| !e.healthy))
                .await
                .unwrap()
                .clone();
            assert!(
                t.elapsed() <= window,
                "unhealthy after {:?}, window {window:?}",
                t.elapsed()
            );
            assert_eq!(set.healthy_by_cluster()["us-west-1"].len(), 1);
            // Back: it answers again.
            checks.silent.lock().clear();
            rx.wait_for(|s| s.endpoints.iter().all(|e| e.healthy))
                .await
                .unwrap();
        }
    }
}
