//! Small TCP/UDP services for tests, the demo and benchmarks. Each works on
//! any async byte stream, so the same code measures our netstack and the
//! kernel's TCP.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What a listener does with each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// Writes back everything it reads.
    Echo,
    /// Reads an 8-byte big-endian window in milliseconds, then discards
    /// everything; once the window has passed since the first data byte it
    /// answers with 8 bytes, the count received within the window
    /// (big-endian), and keeps discarding until EOF. Needs no half-close, so
    /// it measures paths that mishandle FIN. With the header's top bit
    /// ([`DISCARD_BUCKETS`]) set, the count is followed by a 4-byte number
    /// of 100 ms buckets and each bucket's byte count (8 bytes each), so
    /// the sender sees how fast the path ramped up.
    Discard,
    /// Reads to EOF, then answers `<bytes> <sha256 hex>\n`.
    Sha256,
    /// Reads an 8-byte big-endian length, sends that many bytes of
    /// [`pattern`], then closes.
    Source,
    /// UDP: sends every datagram back to its sender.
    UdpEcho,
    /// HTTP/1.1 with keep-alive: `GET` [`HTTP_BULK_PATH`] answers
    /// [`HTTP_BULK_LEN`] zero bytes (what a web server sends for a sparse
    /// file of that size), any other `GET` [`HTTP_SMALL_BODY`];
    /// other methods and requests with a body get `405` and a close.
    Http,
}

/// Top bit of [`ServiceKind::Discard`]'s window header: also report the
/// bytes received per [`BUCKET`].
pub const DISCARD_BUCKETS: u64 = 1 << 63;
/// The width of the discard service's (and the benchmarks') buckets.
pub const BUCKET: std::time::Duration = std::time::Duration::from_millis(100);
/// Most buckets reported (a 10-minute window).
const MAX_BUCKETS: usize = 6000;

/// The path of the large body of [`ServiceKind::Http`].
pub const HTTP_BULK_PATH: &str = "/bulk";
/// The length of that body: 1 TiB, more than any benchmark window reads.
pub const HTTP_BULK_LEN: u64 = 1 << 40;
/// The path benchmarks GET for small answers.
pub const HTTP_SMALL_PATH: &str = "/small";
/// The body of every other answer of [`ServiceKind::Http`]: 64 bytes.
pub const HTTP_SMALL_BODY: [u8; 64] = [b'x'; 64];

/// A service on a port, written `KIND:PORT` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// What it does.
    pub kind: ServiceKind,
    /// Where it listens.
    pub port: u16,
}

impl FromStr for Service {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, port) = s
            .split_once(':')
            .ok_or_else(|| format!("service {s:?} is not KIND:PORT"))?;
        let kind = match kind {
            "echo" => ServiceKind::Echo,
            "discard" => ServiceKind::Discard,
            "sha256" => ServiceKind::Sha256,
            "source" => ServiceKind::Source,
            "udp-echo" => ServiceKind::UdpEcho,
            "http" => ServiceKind::Http,
            other => {
                return Err(format!(
                    "unknown service {other:?}: use echo, discard, sha256, source, udp-echo or http"
                ))
            }
        };
        let port = port
            .parse()
            .map_err(|_| format!("service port {port:?} is not a number 1-65535"))?;
        Ok(Service { kind, port })
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = match self.kind {
            ServiceKind::Echo => "echo",
            ServiceKind::Discard => "discard",
            ServiceKind::Sha256 => "sha256",
            ServiceKind::Source => "source",
            ServiceKind::UdpEcho => "udp-echo",
            ServiceKind::Http => "http",
        };
        write!(f, "{k}:{}", self.port)
    }
}

/// The pattern repeats every 2^24 bytes (each byte depends on bits 0..24
/// of its offset), so one table serves every offset at memcpy speed and the
/// pattern never becomes the bottleneck of a throughput run.
const PATTERN_PERIOD: usize = 1 << 24;

fn pattern_byte(x: u64) -> u8 {
    (x ^ (x >> 8) ^ (x >> 16).wrapping_mul(31)) as u8
}

fn pattern_table() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..PATTERN_PERIOD as u64).map(pattern_byte).collect())
}

/// Deterministic bytes at `offset` of an endless stream, so both ends of a
/// transfer can compute its SHA-256 without sending it.
pub fn pattern(offset: u64, buf: &mut [u8]) {
    let table = pattern_table();
    let mut pos = (offset % PATTERN_PERIOD as u64) as usize;
    let mut done = 0;
    while done < buf.len() {
        let n = (buf.len() - done).min(PATTERN_PERIOD - pos);
        buf[done..done + n].copy_from_slice(&table[pos..pos + n]);
        done += n;
        pos = 0;
    }
}

/// SHA-256 of the first `len` bytes of [`pattern`].
pub fn pattern_sha256(len: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    while off < len {
        let n = ((len - off) as usize).min(buf.len());
        pattern(off, &mut buf[..n]);
        h.update(&buf[..n]);
        off += n as u64;
    }
    h.finalize().into()
}

/// Serves one connection of `kind`.
pub async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    kind: ServiceKind,
    mut s: S,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    match kind {
        ServiceKind::Echo => loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                s.shutdown().await?;
                return Ok(());
            }
            s.write_all(&buf[..n]).await?;
        },
        ServiceKind::Discard => {
            let mut hdr = [0u8; 8];
            s.read_exact(&mut hdr).await?;
            let hdr = u64::from_be_bytes(hdr);
            let want_buckets = hdr & DISCARD_BUCKETS != 0;
            let window = std::time::Duration::from_millis(hdr & !DISCARD_BUCKETS);
            let mut total = 0u64;
            let mut buckets: Vec<u64> = Vec::new();
            let mut start: Option<tokio::time::Instant> = None;
            let mut reported = false;
            let report = |total: u64, buckets: &[u64]| {
                let mut out = total.to_be_bytes().to_vec();
                if want_buckets {
                    let b = &buckets[..buckets.len().min(MAX_BUCKETS)];
                    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                    b.iter()
                        .for_each(|x| out.extend_from_slice(&x.to_be_bytes()));
                }
                out
            };
            loop {
                let n = match start {
                    Some(t0) if !reported => {
                        match tokio::time::timeout_at(t0 + window, s.read(&mut buf)).await {
                            Ok(r) => r?,
                            Err(_) => {
                                s.write_all(&report(total, &buckets)).await?;
                                reported = true;
                                continue;
                            }
                        }
                    }
                    _ => s.read(&mut buf).await?,
                };
                if n == 0 {
                    break;
                }
                let t0 = *start.get_or_insert_with(tokio::time::Instant::now);
                if !reported {
                    total += n as u64;
                    let i = (t0.elapsed().as_nanos() / BUCKET.as_nanos()) as usize;
                    if i < MAX_BUCKETS {
                        if buckets.len() <= i {
                            buckets.resize(i + 1, 0);
                        }
                        buckets[i] += n as u64;
                    }
                }
            }
            if !reported {
                s.write_all(&report(total, &buckets)).await?;
            }
            s.shutdown().await
        }
        ServiceKind::Sha256 => {
            let mut h = Sha256::new();
            let mut total = 0u64;
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                total += n as u64;
            }
            let line = format!("{total} {}\n", hex(&h.finalize()));
            s.write_all(line.as_bytes()).await?;
            s.shutdown().await
        }
        ServiceKind::Source => {
            let mut len = [0u8; 8];
            s.read_exact(&mut len).await?;
            let len = u64::from_be_bytes(len);
            let mut off = 0u64;
            while off < len {
                let n = ((len - off) as usize).min(buf.len());
                pattern(off, &mut buf[..n]);
                s.write_all(&buf[..n]).await?;
                off += n as u64;
            }
            s.shutdown().await
        }
        ServiceKind::UdpEcho => Ok(()),
        ServiceKind::Http => serve_http(s, buf).await,
    }
}

/// [`ServiceKind::Http`] on one connection; `buf` holds what has been
/// read and not yet handled.
async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    mut buf: Vec<u8>,
) -> std::io::Result<()> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut have = 0;
    let mut zeros = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if have == buf.len() {
                return Err(bad("HTTP request head too large"));
            }
            let n = s.read(&mut buf[have..]).await?;
            if n == 0 {
                return Ok(());
            }
            have += n;
        };
        let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("HTTP head not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let mut request = lines.next().unwrap_or("").split(' ');
        let (method, path, version) = (
            request.next().unwrap_or(""),
            request.next().unwrap_or(""),
            request.next().unwrap_or(""),
        );
        let (mut close, mut body) = (version != "HTTP/1.1", false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                close = true;
            }
            body |= name.eq_ignore_ascii_case("transfer-encoding")
                || (name.eq_ignore_ascii_case("content-length") && value != "0");
        }
        let get = method == "GET" || method == "HEAD";
        if !get || body {
            s.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await?;
            return s.shutdown().await;
        }
        let bulk = path == HTTP_BULK_PATH;
        let len = if bulk {
            HTTP_BULK_LEN
        } else {
            HTTP_SMALL_BODY.len() as u64
        };
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
        )
        .into_bytes();
        // A small answer goes out in one write (one segment, as a web
        // server's buffered writer sends it).
        if method == "GET" && !bulk {
            answer.extend_from_slice(&HTTP_SMALL_BODY);
        }
        s.write_all(&answer).await?;
        let mut left = if method == "GET" && bulk { len } else { 0 };
        if left > 0 && zeros.is_empty() {
            zeros = vec![0u8; 256 * 1024];
        }
        while left > 0 {
            let n = (left as usize).min(zeros.len());
            s.write_all(&zeros[..n]).await?;
            left -= n as u64;
        }
        buf.copy_within(end..have, 0);
        have -= end;
        if close {
            return s.shutdown().await;
        }
    }
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Starts `services` on a tailnet node; they run until the node stops.
pub fn spawn_on_node(node: &tailnet::Node, services: &[Service]) -> anyhow::Result<()> {
    for svc in services {
        let svc = *svc;
        if svc.kind == ServiceKind::UdpEcho {
            let sock = node.udp_bind(svc.port)?;
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                    let _ = sock.send_to(&buf[..n], from).await;
                }
            });
            continue;
        }
        let l = node.tcp_listen(svc.port)?;
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    if let Err(e) = handle(svc.kind, s).await {
                        tracing::debug!(service = %svc, error = %e, "service connection ended");
                    }
                });
            }
        });
    }
    Ok(())
}

/// Starts `services` on the kernel's TCP/UDP at `ip` (benchmarks of other
/// paths run the same code over kernel sockets).
pub async fn spawn_on_kernel(ip: std::net::IpAddr, services: &[Service]) -> anyhow::Result<()> {
    for svc in services {
        let svc = *svc;
        if svc.kind == ServiceKind::UdpEcho {
            let sock = tokio::net::UdpSocket::bind((ip, svc.port)).await?;
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                    let _ = sock.send_to(&buf[..n], from).await;
                }
            });
            continue;
        }
        let l = tokio::net::TcpListener::bind((ip, svc.port)).await?;
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = handle(svc.kind, s).await;
                });
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pattern_table_matches_the_formula_across_the_period_boundary() {
        let mut buf = vec![0u8; 1000];
        let off = super::PATTERN_PERIOD as u64 - 500;
        super::pattern(off, &mut buf);
        for (i, b) in buf.iter().enumerate() {
            assert_eq!(*b, super::pattern_byte(off + i as u64));
        }
    }
}
