//! The scale parts: apply of a real N-peer map (scale-apply) and the
//! coordinator pushing one change to N streaming nodes (scale-push).

use super::*;

pub(crate) fn check_scale_size(n: usize) -> Result<(), ControlBenchError> {
    if n == 0 || n > MAX_SCALE_PEERS {
        return Err(ControlBenchError::Size(n, MAX_SCALE_PEERS));
    }
    Ok(())
}

/// Median ms for a fresh running node to take `msg` as its first netmap,
/// and the median of the netmap half of it (`Netmap::apply`, `peers_of`).
pub(crate) async fn time_apply(
    msg: &MapResponse,
    samples: usize,
) -> Result<(f64, f64), ControlBenchError> {
    let me = msg
        .node
        .as_ref()
        .ok_or_else(|| ControlBenchError::Refused("the first map lacks our node".into()))?;
    let me_key = me.key;
    let addresses: Vec<IpAddr> = me.addresses.iter().map(|p| p.addr()).collect();
    let mut out = Vec::with_capacity(samples);
    let mut netmap_part = Vec::with_capacity(samples);
    for _ in 0..samples {
        let mut cfg = tailnet::NodeConfig::new(PrivateKey::generate(), addresses.clone());
        cfg.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let node = tailnet::Node::start(cfg).await?;
        let input = msg.clone();
        let t = Instant::now();
        let mut nm = Netmap::new();
        nm.apply(input)?;
        let peers = tailnet::control::peers_of(&nm, &me_key);
        netmap_part.push(ms(t.elapsed()));
        let probe = peers.last().map(|p| p.public_key);
        node.set_peers(peers).await?;
        // set_peers queues the change; the data plane has applied it when
        // the peer table shows the new peers.
        if let Some(k) = probe {
            let wait = async {
                while node.peer_stats(&k).is_none() {
                    tokio::task::yield_now().await;
                }
            };
            tokio::time::timeout(Duration::from_secs(30), wait)
                .await
                .map_err(|_| ControlBenchError::Timeout("the data plane applying peers".into()))?;
        }
        out.push(ms(t.elapsed()));
        node.shutdown().await;
    }
    Ok((
        percentile(&sorted(out), 0.5),
        percentile(&sorted(netmap_part), 0.5),
    ))
}

/// One size of scale-apply.
pub async fn measure_apply(
    peers: usize,
    opts: &BenchOptions,
) -> Result<ApplyCase, ControlBenchError> {
    check_scale_size(peers)?;
    let samples = opts.samples.max(1);
    let coord = Coord::start().await?;
    let (store, key) = (coord.store(), coord.auth_key.clone());
    blocking(move || preregister(&store, &key, "peer", peers).map(|_| ())).await?;

    let mut up = Vec::with_capacity(samples);
    for i in 0..samples {
        let t = Instant::now();
        let node = tailnet::Node::builder()
            .control_url(coord.url.clone())
            .auth_key(coord.auth_key.clone())
            .hostname(format!("apply-up-{i}"))
            .ephemeral(true)
            .listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .timeout(Duration::from_secs(30))
            .up()
            .await?;
        up.push(ms(t.elapsed()));
        let pk = node.public_key();
        node.shutdown().await;
        coord.remove_node(pk).await?;
    }

    // The first map message as a client receives it.
    let url = coord.control_url()?;
    let server = fetch_server_key(&url).await?;
    let node_key = PrivateKey::generate();
    let node_pub = NodePublic::from(public_of(&node_key));
    let conn = ControlConn::connect(&url, &PrivateKey::generate(), server).await?;
    register_on(&conn, node_pub, &coord.auth_key, "apply-probe").await?;
    let mut first = Vec::with_capacity(samples);
    let mut msg = None;
    for _ in 0..samples {
        let t = Instant::now();
        let mut stream = conn.map_stream(&stream_request(node_pub)).await?;
        let m = first_message(&mut stream).await?;
        first.push(ms(t.elapsed()));
        msg = Some(m);
    }
    drop(conn);
    let msg =
        msg.ok_or_else(|| ControlBenchError::Refused("no map message was received".into()))?;
    let first_map_bytes = serde_json::to_vec(&msg)?.len();
    coord.remove_node(node_pub.into()).await?;

    let (apply_ms, apply_netmap_ms) = time_apply(&msg, samples).await?;
    let mut online = msg;
    for p in &mut online.peers {
        p.online = Some(true);
    }
    let (apply_online_ms, _) = time_apply(&online, samples).await?;

    let (mut process_join_ms, mut process_rss_mib) = (None, None);
    if let Some(exe) = &opts.exe {
        let (p, d) = spawn_ours(exe, &coord.url, &coord.auth_key, "apply-process", &[]).await?;
        process_join_ms = Some(ms(d));
        tokio::time::sleep(opts.idle.min(Duration::from_secs(2))).await;
        process_rss_mib = p.rss().map(mib);
        p.stop().await;
    }
    coord.shutdown().await;
    Ok(ApplyCase {
        peers,
        samples,
        up_ms: percentile(&sorted(up), 0.5),
        first_map_ms: percentile(&sorted(first), 0.5),
        first_map_bytes,
        apply_ms,
        apply_netmap_ms,
        apply_online_ms,
        process_join_ms,
        process_rss_mib,
    })
}

/// Makes sure this process may open `needed` files (raising the soft limit
/// up to the hard one); says why not otherwise.
pub(crate) fn ensure_open_files(needed: u64) -> Result<(), String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| e.to_string())?;
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err(format!(
            "needs about {needed} open files; the hard limit is {hard} (raise it with ulimit -Hn)"
        ));
    }
    setrlimit(Resource::RLIMIT_NOFILE, needed, hard)
        .map_err(|e| format!("raising the open-file limit from {soft} to {needed}: {e}"))
}

/// A lightweight streaming node: one ts2021 connection, one map stream.
pub(crate) struct PushClient {
    pub(crate) idx: usize,
    pub(crate) url: ControlUrl,
    pub(crate) server: MachinePublic,
    pub(crate) reg: Registered,
    pub(crate) gate: Arc<tokio::sync::Semaphore>,
    pub(crate) ready: tokio::sync::mpsc::Sender<Result<(), String>>,
    pub(crate) events: tokio::sync::mpsc::UnboundedSender<(usize, Instant, Vec<NodePublic>)>,
    pub(crate) messages: Arc<AtomicU64>,
}

impl PushClient {
    async fn run(self) {
        let setup = async {
            let _permit = self.gate.acquire().await.map_err(|e| e.to_string())?;
            let conn = ControlConn::connect(&self.url, &self.reg.machine, self.server)
                .await
                .map_err(|e| e.to_string())?;
            let mut stream = conn
                .map_stream(&stream_request(self.reg.node))
                .await
                .map_err(|e| e.to_string())?;
            first_message(&mut stream)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((conn, stream))
        }
        .await;
        let (_conn, mut stream) = match setup {
            Ok(x) => {
                let _ = self.ready.send(Ok(())).await;
                x
            }
            Err(e) => {
                let _ = self.ready.send(Err(e)).await;
                return;
            }
        };
        while let Ok(Some(msg)) = stream.next().await {
            let at = Instant::now();
            self.messages.fetch_add(1, Ordering::Relaxed);
            let keys: Vec<NodePublic> = msg
                .peers_changed
                .iter()
                .chain(msg.peers.iter())
                .map(|p| p.key)
                .collect();
            if !keys.is_empty() {
                let _ = self.events.send((self.idx, at, keys));
            }
        }
    }
}

/// Waits until no stream has received anything for 300 ms (at most 3 min).
pub(crate) async fn quiesce(messages: &AtomicU64) {
    let start = Instant::now();
    let mut last = messages.load(Ordering::Relaxed);
    let mut still = Instant::now();
    while start.elapsed() < Duration::from_secs(180) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = messages.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still = Instant::now();
        } else if still.elapsed() >= Duration::from_millis(300) {
            return;
        }
    }
}

/// One size of scale-push; `Ok(Err(why))` when it cannot run here.
pub async fn measure_push(
    streams: usize,
    rounds: usize,
) -> Result<Result<PushCase, String>, ControlBenchError> {
    check_scale_size(streams)?;
    if let Err(why) = ensure_open_files(2 * streams as u64 + 256) {
        return Ok(Err(why));
    }
    let rounds = rounds.max(1);
    let coord = Coord::start().await?;
    let (store, key) = (coord.store(), coord.auth_key.clone());
    let regs = blocking(move || preregister(&store, &key, "stream", streams)).await?;
    let url = coord.control_url()?;
    let server = fetch_server_key(&url).await?;

    let gate = Arc::new(tokio::sync::Semaphore::new(16));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(streams);
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let messages = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let t0 = Instant::now();
    for (idx, reg) in regs.into_iter().enumerate() {
        let c = PushClient {
            idx,
            url: url.clone(),
            server,
            reg,
            gate: gate.clone(),
            ready: ready_tx.clone(),
            events: events_tx.clone(),
            messages: messages.clone(),
        };
        tasks.spawn(c.run());
    }
    drop((ready_tx, events_tx));
    for _ in 0..streams {
        match tokio::time::timeout(Duration::from_secs(180), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(ControlBenchError::Refused(redact_line(&e))),
            Ok(None) => return Err(ControlBenchError::Refused("a stream client ended".into())),
            Err(_) => {
                return Err(ControlBenchError::Timeout(format!(
                    "opening {streams} map streams"
                )))
            }
        }
    }
    let setup = t0.elapsed();
    quiesce(&messages).await;
    let setup_messages = messages.load(Ordering::Relaxed);

    let (mut all, mut p50, mut reg_ms) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let node = NodePublic::from(public_of(&PrivateKey::generate()));
        let conn = ControlConn::connect(&url, &PrivateKey::generate(), server).await?;
        while events.try_recv().is_ok() {}
        let t = Instant::now();
        register_on(&conn, node, &coord.auth_key, &format!("push-new-{r}")).await?;
        reg_ms.push(ms(t.elapsed()));
        let mut seen = HashSet::with_capacity(streams);
        let mut lat = Vec::with_capacity(streams);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < streams {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some((idx, at, keys))) => {
                    if keys.contains(&node) && seen.insert(idx) {
                        lat.push(ms(at.saturating_duration_since(t)));
                    }
                }
                Ok(None) => {
                    return Err(ControlBenchError::Refused("every stream ended".into()));
                }
                Err(_) => {
                    return Err(ControlBenchError::Timeout(format!(
                        "only {} of {streams} streams got the new node",
                        seen.len()
                    )))
                }
            }
        }
        let lat = sorted(lat);
        all.push(lat.last().copied().unwrap_or(0.0));
        p50.push(percentile(&lat, 0.5));
        drop(conn);
        quiesce(&messages).await;
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    coord.shutdown().await;
    Ok(Ok(PushCase {
        streams,
        setup_s: (setup.as_secs_f64() * 100.0).round() / 100.0,
        setup_messages,
        rounds,
        register_ms: percentile(&sorted(reg_ms), 0.5),
        all_ms: percentile(&sorted(all), 0.5),
        p50_ms: percentile(&sorted(p50), 0.5),
    }))
}
