//! Rounds of invalidations, each checked exactly once at every engine, and
//! the loopback path (the same fan-out over kernel TCP).

use super::*;

/// Waits until every recorder has applied `n` events (within the round's
/// limit); the time since `t0` when the last one had, or the index of the
/// first engine that had not.
pub(crate) async fn last_receipt(
    recorders: &[Recorder],
    n: usize,
    t0: Instant,
) -> Result<Duration, usize> {
    let deadline = t0 + ROUND_LIMIT;
    for (i, r) in recorders.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if !r.wait_for(n, left).await {
            return Err(i);
        }
    }
    Ok(t0.elapsed())
}

/// Every engine applied `event_id` exactly once.
pub(crate) fn check_once(
    recorders: &[Recorder],
    labels: &[String],
    event_id: &str,
) -> anyhow::Result<()> {
    for (r, label) in recorders.iter().zip(labels) {
        let n = r.count_of(event_id);
        if n != 1 {
            bail!("{label} applied event {event_id} {n} times; expected exactly once");
        }
    }
    Ok(())
}

/// After all rounds: each engine applied exactly the events sent, once
/// each, nothing else.
pub(crate) fn check_totals(
    recorders: &[Recorder],
    labels: &[String],
    sent: &[String],
) -> anyhow::Result<()> {
    for (r, label) in recorders.iter().zip(labels) {
        let got: Vec<String> = r.events().into_iter().map(|e| e.id).collect();
        if got.len() != sent.len() {
            bail!(
                "{label} applied {} events; {} were sent (each must arrive exactly once)",
                got.len(),
                sent.len()
            );
        }
        let mut a = got.clone();
        let mut b = sent.to_vec();
        a.sort();
        b.sort();
        if a != b {
            bail!("{label} applied events other than those sent: {got:?}");
        }
    }
    Ok(())
}

/// Timed rounds of one path: `round(i)` starts round `i` and returns
/// (send → answer, event id); receipts are awaited beside it.
pub(crate) struct Rounds {
    pub(crate) last: Vec<f64>,
    pub(crate) answer: Vec<f64>,
    pub(crate) cold: Option<f64>,
    pub(crate) sent: Vec<String>,
}

pub(crate) async fn run_rounds<F, Fut>(
    recorders: &[Recorder],
    labels: &[String],
    warmup: usize,
    rounds: usize,
    mut round: F,
) -> anyhow::Result<Rounds>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    let mut out = Rounds {
        last: Vec::with_capacity(rounds),
        answer: Vec::with_capacity(rounds),
        cold: None,
        sent: Vec::new(),
    };
    for i in 0..warmup + rounds {
        let t0 = Instant::now();
        let send = async {
            let r = round(i).await;
            (r, t0.elapsed())
        };
        let ((sent, answered), last) =
            tokio::join!(send, last_receipt(recorders, out.sent.len() + 1, t0));
        let event_id = sent.with_context(|| format!("round {}", i + 1))?;
        let last = match last {
            Ok(d) => d,
            Err(e) => bail!(
                "round {}: {} did not receive event {event_id} within {} s",
                i + 1,
                labels[e],
                ROUND_LIMIT.as_secs()
            ),
        };
        check_once(recorders, labels, &event_id)?;
        out.sent.push(event_id);
        if i == 0 && warmup > 0 {
            out.cold = Some(round3(ms(last)));
        }
        if i >= warmup {
            out.last.push(ms(last));
            out.answer.push(ms(answered));
        }
    }
    check_totals(recorders, labels, &out.sent)?;
    Ok(out)
}

/// Engine `i`'s region and host name: round-robin over the regions.
pub(crate) fn placement(i: usize) -> (&'static str, String) {
    (
        REGIONS[i % REGIONS.len()],
        format!("inferadb-engine-{}", i / REGIONS.len()),
    )
}

pub(crate) fn per_region(n: usize) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for i in 0..n {
        *m.entry(placement(i).0).or_insert(0) += 1;
    }
    m
}

/// The loopback baseline: `n` receivers on 127.0.0.1, one sender.
pub(crate) async fn loopback(n: usize, warmup: usize, rounds: usize) -> anyhow::Result<PathResult> {
    let secret = Secret::from_text(SECRET)?;
    let mut recorders = Vec::with_capacity(n);
    let mut handles: Vec<ReceiverHandle> = Vec::with_capacity(n);
    let mut targets = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let rec = Recorder::new();
        let receiver = Receiver::new(
            ReceiverConfig::new(secret.clone()),
            rec.clone(),
            ReceiverMetrics::unregistered(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        handles.push(receiver.serve(listener));
        let (region, host) = placement(i);
        targets.push(Target::new(region, addr));
        labels.push(format!("loopback receiver {region} {host} ({addr})"));
        recorders.push(rec);
    }
    let sender = Sender::new(
        TcpConnect,
        secret,
        Targets::fixed(targets),
        SenderConfig::from_seed(TIMEOUT_MS, RETRIES),
        SenderMetrics::unregistered(),
    );
    let r = run_rounds(&recorders, &labels, warmup, rounds, |i| {
        let sender = sender.clone();
        async move {
            let event =
                Invalidation::vault_created(format!("{}", 1_000_000 + i)).with_origin(REGIONS[0]);
            let report = sender.send(&event).await?;
            if !report.all_delivered() || report.deliveries.len() != n {
                let failed: Vec<String> = report
                    .failures()
                    .map(|d| format!("{}: {:?}", d.target, d.result))
                    .collect();
                bail!(
                    "the sender delivered to {} of {n} receivers: {failed:?}",
                    report
                        .deliveries
                        .iter()
                        .filter(|d| d.result.is_ok())
                        .count()
                );
            }
            Ok(report.event_id)
        }
    })
    .await;
    drop(handles);
    let r = r?;
    Ok(PathResult {
        path: "loopback",
        description: "Sender::send over kernel TCP on 127.0.0.1 → last receiver's receipt",
        last_receipt: Latency::of(r.last),
        answer: Latency::of(r.answer),
        cold_ms: r.cold,
        receipts: n * r.sent.len(),
        exactly_once: true,
    })
}
