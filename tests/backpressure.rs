//! Backpressure and bounded memory.
//!
//! 1. A writer faster than its reader is made to wait: once the sender's
//!    send buffer (which the autotuner may have grown, up to
//!    `tcp_buffer_max`) and the receiver's receive buffer (the window) are full,
//!    `write` stops accepting bytes until the reader reads again, and then
//!    every byte arrives intact.
//! 2. Pushing 1 GiB between two nodes in one process keeps the process's
//!    resident memory within a bound that does not grow with the data.
//!
//! Both tests read process-wide figures (RSS, and timing that the other
//! test's load would disturb), so they take turns.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use rand::Rng;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tailnet::NetstackConfig;
use tailnet_tests::*;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// One test at a time in this binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_waits_for_a_reader_that_stopped_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let cfg = NetstackConfig::default();
    let (tx_buf, rx_buf) = (cfg.tcp_tx_buffer as u64, cfg.tcp_rx_buffer as u64);
    let buffer_max = cfg.tcp_buffer_max as u64;
    // Bytes `write` may accept beyond the two buffers: none in principle
    // (in-flight segments sit in the sender's buffer until acknowledged and
    // the sender never exceeds the window); 64 KiB for window rounding.
    let slack = 64 * 1024;
    // Far more than both buffers can ever hold, so the writer must block.
    let total = 2 * (buffer_max + rx_buf);

    let (n1, n2) = pair().await;
    let listener = n2.tcp_listen(6001).unwrap();
    let dst = SocketAddr::new(n2.ipv4().unwrap(), 6001);
    let accepted = Arc::new(AtomicU64::new(0));
    // The largest the writer's send buffer was after any `write`: the
    // autotuner may grow it while the reader's window is still open.
    let send_capacity = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn({
        let accepted = accepted.clone();
        let send_capacity = send_capacity.clone();
        async move {
            let mut s = n1.tcp_connect(dst).await.unwrap();
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut sent = 0u64;
            while sent < total {
                let want = ((total - sent) as usize).min(buf.len());
                pattern(sent, &mut buf[..want]);
                // One `write` at a time, so the count is exactly what the
                // stack took.
                let n = s.write(&buf[..want]).await.unwrap();
                assert!(n > 0);
                h.update(&buf[..n]);
                sent += n as u64;
                send_capacity.fetch_max(s.info().send_capacity as u64, Relaxed);
                accepted.store(sent, Relaxed);
            }
            s.shutdown().await.unwrap();
            let digest: [u8; 32] = h.finalize().into();
            (n1, digest)
        }
    });
    // Accept, then do not read.
    let (mut reader, _) = within(10, "accept", listener.accept()).await.unwrap();

    // Wait for the writer to stall: no growth for 300 ms.
    let stalled_at = within(30, "the writer to stall", async {
        let mut last = accepted.load(Relaxed);
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = accepted.load(Relaxed);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= Duration::from_millis(300) {
                return now;
            }
        }
    })
    .await;
    let tx_cap = send_capacity.load(Relaxed);
    let rx_cap = reader.info().recv_capacity as u64;
    println!(
        "writer stalled after {stalled_at} bytes (send buffer {tx_cap}, from {tx_buf}; \
         receive buffer {rx_cap})"
    );
    // The reader never read, so its buffer never grew; the writer's may
    // have, but never past the node's per-connection cap.
    assert_eq!(
        rx_cap, rx_buf,
        "a reader that reads nothing grew its window"
    );
    assert!(
        tx_cap <= buffer_max,
        "send buffer grew to {tx_cap}, past tcp_buffer_max {buffer_max}"
    );
    assert!(
        stalled_at <= tx_cap + rx_cap + slack,
        "write accepted {stalled_at} bytes with the reader stopped; \
         buffers hold {tx_cap} + {rx_cap}"
    );
    assert!(
        stalled_at >= tx_buf,
        "writer stalled after only {stalled_at} bytes: the send buffer never filled"
    );
    assert!(stalled_at < total, "the writer never waited");

    // It stays stalled while nobody reads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        accepted.load(Relaxed),
        stalled_at,
        "write went on accepting bytes with the reader stopped"
    );

    // Reading again releases the writer, and the stream is intact.
    let got = within(60, "reading the rest", recv_all(&mut reader)).await;
    let (_n1, sent_digest) = writer.await.unwrap();
    assert_eq!(got, (total, sent_digest), "stream differs after the stall");
}

/// Samples this process's RSS every few milliseconds on its own thread (so
/// a busy runtime cannot delay the samples) and keeps the highest.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl RssSampler {
    fn start() -> RssSampler {
        let peak = Arc::new(AtomicU64::new(rss_bytes()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (peak, stop) = (peak.clone(), stop.clone());
            move || {
                let mut samples = 0u64;
                while !stop.load(Relaxed) {
                    peak.fetch_max(rss_bytes(), Relaxed);
                    samples += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                samples
            }
        });
        RssSampler {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Relaxed)
    }

    /// Stops sampling; returns the peak and the number of samples.
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Relaxed);
        let samples = self.thread.take().unwrap().join().unwrap();
        (self.peak(), samples)
    }
}

/// Writes `total` bytes cycling through `block`; returns their SHA-256.
async fn send_cycled<W: AsyncWrite + Unpin>(w: &mut W, block: &[u8], total: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut sent = 0u64;
    while sent < total {
        let at = (sent % block.len() as u64) as usize;
        let n = (block.len() - at)
            .min(256 * 1024)
            .min((total - sent) as usize);
        let chunk = &block[at..at + n];
        h.update(chunk);
        w.write_all(chunk).await.unwrap();
        sent += n as u64;
    }
    h.finalize().into()
}

/// Bytes pushed in the memory test.
const PUSH: u64 = 1 << 30;

/// Bound on RSS growth during the push.
///
/// What the push legitimately holds, per node (two nodes, one connection):
/// - TCP buffers: 4 MiB receive + 2 MiB send per connection end, allocated
///   zeroed (untouched pages cost nothing) and touched in full by a long
///   transfer: 6 MiB per node;
/// - the netstack's inbound queue: at most 8192 packets of at most 1280
///   bytes (~10 MiB, ~12 MiB with allocator rounding), plus a data-plane
///   batch of 256;
/// - one burst of outbound packets (512 × 1280 bytes, < 1 MiB) and their
///   encrypted copies (< 1 MiB);
/// - the UDP receive batch: 16 × 64 KiB = 1 MiB, and a 64 KiB send batch.
///
/// That is ~22 MiB per node, ~45 MiB for both, plus the test's own 256 KiB
/// read and write buffers. The kernel's UDP socket buffers are not in RSS.
/// malloc may keep freed memory in per-thread arenas rather than return it,
/// so allow a factor of about four on top: 192 MiB. Anything that grows
/// with the data — a leak per packet, an unbounded queue — at a fifth of
/// the 1 GiB pushed or more breaks this bound.
const RSS_GROWTH_BOUND: u64 = 192 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_while_pushing_1_gib() {
    let _serial = SERIAL.lock().await;
    let (n1, n2) = pair().await;
    let listener = n2.tcp_listen(6002).unwrap();
    let dst = SocketAddr::new(n2.ipv4().unwrap(), 6002);
    // Warm up: a handshake and a small exchange, so the baseline includes
    // what any running pair holds, not what this transfer adds.
    {
        let mut s = n1.tcp_connect(dst).await.unwrap();
        let (mut a, _) = listener.accept().await.unwrap();
        s.write_all(b"warm-up").await.unwrap();
        let mut buf = [0u8; 7];
        a.read_exact(&mut buf).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The data: a random block of odd length, repeated. Generating 1 GiB
    // byte by byte in this unoptimised test crate would take longer than
    // moving it; and with the odd length no packet or buffer boundary lines
    // up with a repeat, so a lost, duplicated or reordered segment still
    // changes the SHA-256.
    let mut block = vec![0u8; (1 << 20) + 7];
    rand::rng().fill(&mut block[..]);

    let baseline = rss_bytes();
    let sampler = RssSampler::start();
    let started = Instant::now();
    let sender = tokio::spawn({
        let n1 = n1.clone();
        async move {
            let mut s = n1.tcp_connect(dst).await.unwrap();
            let h = send_cycled(&mut s, &block, PUSH).await;
            s.shutdown().await.unwrap();
            h
        }
    });
    let (mut s, _) = within(10, "accept", listener.accept()).await.unwrap();
    let got = within(240, "1 GiB push", recv_all(&mut s)).await;
    let sent = sender.await.unwrap();
    let elapsed = started.elapsed();
    let (peak, samples) = sampler.finish();
    assert_eq!(got, (PUSH, sent), "1 GiB stream differs");

    let growth = peak.saturating_sub(baseline);
    println!(
        "1 GiB in {:.1} s ({:.0} MiB/s); RSS baseline {} MiB, peak {} MiB, growth {} MiB over {samples} samples",
        elapsed.as_secs_f64(),
        PUSH as f64 / MIB as f64 / elapsed.as_secs_f64(),
        baseline / MIB,
        peak / MIB,
        growth / MIB,
    );
    assert!(samples >= 10, "too few RSS samples ({samples})");
    assert!(
        growth < RSS_GROWTH_BOUND,
        "RSS grew by {} MiB while pushing 1 GiB (bound {} MiB)",
        growth / MIB,
        RSS_GROWTH_BOUND / MIB
    );
}
