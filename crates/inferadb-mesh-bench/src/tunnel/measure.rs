//! The measurements every row shares: bulk throughput each way and
//! 64-byte round trips over any stream, and the kernel-TCP client the
//! namespaced rows run (`bench-client`).

use super::*;

/// Reads from a source service for `duration` from its first byte; returns
/// Gbit/s received (goodput). The direction is server → client on every
/// path, which needs no half-close and no pacing from the client: onetun
/// mishandles both (its event bus overflows under a fast local writer).
pub async fn measure_throughput<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    s.write_all(&u64::MAX.to_be_bytes()).await?;
    let mut buf = vec![0u8; 256 * 1024];
    count_for(duration, async || Ok(s.read(&mut buf).await?)).await
}

/// Calls `read` (bytes received, 0 at the end) for `duration` from the
/// first bytes it returns, which start the clock and are not counted;
/// returns the mean and the ramp-up from [`BUCKET`]-wide counts.
pub(crate) async fn count_for(
    duration: Duration,
    mut read: impl AsyncFnMut() -> anyhow::Result<usize>,
) -> anyhow::Result<Throughput> {
    let first = tokio::time::timeout(Duration::from_secs(30), read())
        .await
        .context("no data within 30 s")??;
    if first == 0 {
        bail!("the server closed at once");
    }
    let start = tokio::time::Instant::now();
    let end = start + duration;
    let mut total = 0u64;
    let mut buckets = vec![0u64; (duration.as_nanos() / BUCKET.as_nanos()) as usize];
    loop {
        match tokio::time::timeout_at(end, read()).await {
            Ok(Ok(0)) => bail!("the server closed early"),
            Ok(Ok(n)) => {
                total += n as u64;
                let i = (start.elapsed().as_nanos() / BUCKET.as_nanos()) as usize;
                if let Some(b) = buckets.get_mut(i) {
                    *b += n as u64;
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => break,
        }
    }
    Ok(Throughput::of(total, duration, &buckets))
}

/// Most bytes one upload run writes: a path that buffers without bound
/// must not take the machine's memory with it.
pub(crate) const MAX_PUSH: u64 = 8 << 30;

/// Pushes data to a discard service for `duration`; returns Gbit/s and the
/// ramp-up as the receiver counted them within its window (no half-close
/// needed).
pub async fn measure_upload<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let (mut r, mut w) = tokio::io::split(s);
    w.write_all(&(duration.as_millis() as u64 | DISCARD_BUCKETS).to_be_bytes())
        .await?;
    let writer = async {
        let chunk = vec![0x5au8; 256 * 1024];
        let mut sent = 0u64;
        while sent < MAX_PUSH && w.write_all(&chunk).await.is_ok() {
            sent += chunk.len() as u64;
        }
        // Keep the stream open until the count is read.
        std::future::pending::<()>().await
    };
    let reader = async {
        let mut count = [0u8; 8];
        r.read_exact(&mut count)
            .await
            .context("discard service did not report its byte count")?;
        let mut n = [0u8; 4];
        r.read_exact(&mut n)
            .await
            .context("discard service did not report its buckets")?;
        let n = (u32::from_be_bytes(n) as usize).min(6000);
        let mut raw = vec![0u8; n * 8];
        r.read_exact(&mut raw).await?;
        let buckets: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
            .collect();
        anyhow::Ok((u64::from_be_bytes(count), buckets))
    };
    let (count, buckets) = tokio::time::timeout(duration * 3 + Duration::from_secs(30), async {
        tokio::select! {
            c = reader => c,
            () = writer => unreachable!("the writer waits forever"),
        }
    })
    .await
    .context("no byte count from the discard service in time")??;
    Ok(Throughput::of(count, duration, &buckets))
}

/// Sends 64-byte messages to an echo service one at a time; returns the
/// p50 and p99 round trip in microseconds.
pub async fn measure_rtt<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    samples: usize,
) -> anyhow::Result<(f64, f64)> {
    let msg = [0x42u8; 64];
    let mut buf = [0u8; 64];
    time_round_trips(samples, async || {
        s.write_all(&msg).await?;
        s.read_exact(&mut buf).await?;
        Ok(())
    })
    .await
}

/// Times `samples` calls of `round_trip` after 20 warm-up ones (they pay
/// for handshakes and slow start); returns p50 and p99 in microseconds.
pub(crate) async fn time_round_trips(
    samples: usize,
    mut round_trip: impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64)> {
    for _ in 0..20 {
        round_trip().await?;
    }
    let mut v = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        let t = Instant::now();
        round_trip().await?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Ok((pct(0.50), pct(0.99)))
}

/// Result of `bench-client` (kernel TCP), printed as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientResult {
    /// Gbit/s, server → client.
    pub gbit_per_s: f64,
    /// Gbit/s, client → server.
    pub upload_gbit_per_s: f64,
    /// Seconds to 90 % of the plateau, server → client.
    #[serde(default)]
    pub ramp_s: Option<f64>,
    /// The same, client → server.
    #[serde(default)]
    pub upload_ramp_s: Option<f64>,
    /// p50 µs.
    pub rtt_p50_us: f64,
    /// p99 µs.
    pub rtt_p99_us: f64,
}

/// The kernel-TCP client used for the peers' paths.
pub async fn kernel_client(
    target: IpAddr,
    duration: Duration,
    samples: usize,
) -> anyhow::Result<ClientResult> {
    let s = tokio::net::TcpStream::connect((target, SOURCE_PORT)).await?;
    s.set_nodelay(true)?;
    let down = measure_throughput(s, duration).await?;
    let s = tokio::net::TcpStream::connect((target, DISCARD_PORT)).await?;
    s.set_nodelay(true)?;
    let up = measure_upload(s, duration).await?;
    let s = tokio::net::TcpStream::connect((target, ECHO_PORT)).await?;
    s.set_nodelay(true)?;
    let (p50, p99) = measure_rtt(s, samples).await?;
    Ok(ClientResult {
        gbit_per_s: down.gbit,
        upload_gbit_per_s: up.gbit,
        ramp_s: down.ramp_s,
        upload_ramp_s: up.ramp_s,
        rtt_p50_us: p50,
        rtt_p99_us: p99,
    })
}
