//! Hostile load against the release-shaped binary (issue 16): the
//! coordinator stays up when it runs out of file descriptors.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

mod common;

use common::{path, EXE};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Keeps at most this much of a child's stderr.
const STDERR_CAP: usize = 256 * 1024;

/// `GET /key` over a fresh connection; the status line, or why not.
fn get_key(addr: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /key?v=130 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.take(4096)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    if text.starts_with("HTTP/1.1 200") && text.contains("publicKey") {
        Ok(text)
    } else {
        Err(format!("unexpected answer: {text:?}"))
    }
}

/// Issue 16 finding 1: with the descriptor limit at 256, 300 idle
/// connections made `accept()` fail with EMFILE, which ended the accept
/// loop and the process. Now the loop backs off and retries: the
/// coordinator stays alive, logs the failure a bounded number of times,
/// and serves `/key` again once the connections close.
#[test]
fn coordinator_survives_running_out_of_file_descriptors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("coord");
    // `ulimit` in a shell that then execs the binary: the child we kill on
    // drop is the coordinator itself.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" \"$@\"")
        .arg(EXE)
        .args([
            "coordinator",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(path(&state))
        .env("INFERADB_MESH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coordinator");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let child = common::Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("coordinator listening on") {
                let _ = tx.send(line);
            }
        }
    });
    let log = Arc::new(Mutex::new(String::new()));
    let log_w = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = log_w.lock().expect("log");
            if l.len() + line.len() < STDERR_CAP {
                l.push_str(&line);
                l.push('\n');
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("coordinator printed no listening line in 30 s");
    let addr = listening_addr(&line);
    get_key(addr).expect("/key before the flood");

    // 300 idle connections: more than the process has descriptors.
    let conns: Vec<TcpStream> = (0..300)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    // Let the coordinator accept until it runs out.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut child = child;
    while Instant::now() < deadline && !log.lock().expect("log").contains("accept failed") {
        assert!(
            child.0.try_wait().expect("try_wait").is_none(),
            "coordinator exited under 300 idle connections: {}",
            log.lock().expect("log")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        log.lock().expect("log").contains("accept failed"),
        "the coordinator never ran out of descriptors; the test proves nothing: {}",
        log.lock().expect("log")
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "coordinator exited after running out of descriptors: {}",
        log.lock().expect("log")
    );
    drop(conns);

    // Serves again once they are gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = Err(String::new());
    while Instant::now() < deadline {
        last = get_key(addr);
        if last.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last.expect("/key after the connections closed");
    assert!(child.0.try_wait().expect("try_wait").is_none());
    // Logged, but not once per failed accept.
    let text = log.lock().expect("log").clone();
    let lines = text.matches("accept failed").count();
    assert!(
        (1..=5).contains(&lines),
        "{lines} accept-failure lines:\n{text}"
    );
    // And it stops cleanly: shutdown after accept errors panicked with
    // "JoinHandle polled after completion".
    let pid = child.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(100));
    let text = log.lock().expect("log").clone();
    assert!(status.success(), "{status}: {text}");
    assert!(!text.contains("panicked"), "{text}");
}

/// `--derp-allow-keys` names a bad line instead of starting with a
/// half-read allow-list.
#[test]
fn a_bad_derp_allow_list_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("allow");
    std::fs::write(
        &list,
        "# relay users\nnodekey:0000000000000000000000000000000000000000000000000000000000000001\nnot-a-key\n",
    )
    .expect("write");
    let out = common::run(&[
        "coordinator",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        path(&dir.path().join("coord")),
        "--derp-allow-keys",
        path(&list),
    ]);
    assert!(!out.status.success());
    let err = common::text(&out.stderr);
    assert!(err.contains("line 3: not a node key"), "{err}");
}

/// `coordinator serve --max-connections-per-ip 2 --header-timeout 1`: a
/// third connection from one address is closed at once, the idle ones
/// after about a second, and `/key` is served again.
#[test]
fn coordinator_limits_are_set_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_c, line) = common::spawn_until(
        &[
            "coordinator",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            path(&dir.path().join("coord")),
            "--max-connections-per-ip",
            "2",
            "--header-timeout",
            "1",
        ],
        "coordinator listening on",
    );
    let addr = listening_addr(&line);
    let closed_within = |s: &mut TcpStream, limit: Duration| {
        s.set_read_timeout(Some(limit)).expect("timeout");
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
        }
    };
    let mut a = TcpStream::connect(addr).expect("a");
    let mut b = TcpStream::connect(addr).expect("b");
    std::thread::sleep(Duration::from_millis(200));
    let mut c = TcpStream::connect(addr).expect("c");
    assert!(
        closed_within(&mut c, Duration::from_millis(500)),
        "third connection held"
    );
    let start = Instant::now();
    assert!(closed_within(&mut a, Duration::from_secs(5)), "idle a held");
    assert!(closed_within(&mut b, Duration::from_secs(5)), "idle b held");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    get_key(addr).expect("/key once the idle ones are gone");
}

/// The address in the coordinator's "coordinator listening on http://…" line.
fn listening_addr(line: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .expect("URL in the listening line")
        .parse()
        .expect("address")
}

/// Resident set size of process `pid` in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    tailnet_harness::rss::of_pid(pid).expect("VmRSS") / 1024
}

/// Issue 16 finding 2: 10,000 idle and 200 slowloris connections stayed
/// open for a minute and took the coordinator from 14 to 149 MB. Now, with
/// 4,000 idle and 1,000 slowloris connections (headers trickled a line at a
/// time) and `--header-timeout 2`, every one is closed within the timeout
/// plus a margin, the coordinator's RSS grows by less than
/// [`RSS_BUDGET_KIB`] while they are held, and `/key` is served after.
#[test]
fn five_thousand_idle_and_slowloris_connections_are_closed_within_a_memory_budget() {
    const IDLE: usize = 4_000;
    const SLOW: usize = 1_000;
    /// Growth allowed while 5,000 connections wait for their headers:
    /// ~20 KiB each. Measured: ~15 KiB each (hyper's read buffer, the
    /// task, the timers), +74 MiB in a debug build.
    const RSS_BUDGET_KIB: u64 = 96 * 1024;
    // Ours and the coordinator's ends of 5,000 connections, and some room.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let needed = 6_000;
    if hard < needed {
        // Root (CI, and the namespace tests' requirement) may raise it.
        setrlimit(Resource::RLIMIT_NOFILE, needed, needed).unwrap_or_else(|e| {
            panic!("this test needs {needed} open files; the hard limit is {hard} ({e})")
        });
    } else if soft < needed {
        setrlimit(Resource::RLIMIT_NOFILE, needed, hard).expect("raise RLIMIT_NOFILE");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 6000 && exec \"$0\" \"$@\"")
        .arg(EXE)
        .args([
            "coordinator",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-connections-per-ip",
            "5500",
            "--header-timeout",
            "2",
            "--state-dir",
        ])
        .arg(path(&dir.path().join("coord")))
        .env("INFERADB_MESH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn coordinator");
    let stdout = child.stdout.take().expect("stdout");
    let pid = child.id();
    let child = common::Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("coordinator listening on") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("coordinator printed no listening line in 30 s");
    let addr = listening_addr(&line);
    get_key(addr).expect("/key before the flood");
    let base = rss_kib(pid);

    let start = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    let mut slow = Vec::with_capacity(SLOW);
    for i in 0..IDLE + SLOW {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        s.set_nonblocking(true).expect("nonblocking");
        if i < IDLE {
            idle.push(s);
        } else {
            s.write_all(b"GET /key?v=130 HTTP/1.1\r\nHost: x\r\n")
                .expect("request line");
            slow.push(s);
        }
    }
    let opened = start.elapsed();
    // Trickle a header line to each slow one every 250 ms, watch RSS,
    // and collect closes until all are closed or the deadline passes.
    let mut open: Vec<(TcpStream, bool)> = idle
        .into_iter()
        .map(|s| (s, false))
        .chain(slow.into_iter().map(|s| (s, true)))
        .collect();
    let mut peak = rss_kib(pid);
    // The last connection opened is closed 2 s after; 5 s of margin for a
    // loaded machine.
    let deadline = Instant::now() + Duration::from_secs(7);
    let mut buf = [0u8; 256];
    while !open.is_empty() && Instant::now() < deadline {
        peak = peak.max(rss_kib(pid));
        open.retain_mut(|(s, slowloris)| {
            match s.read(&mut buf) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
            if *slowloris && s.write_all(b"X-Slow: 1\r\n").is_err() {
                return false;
            }
            true
        });
        std::thread::sleep(Duration::from_millis(250));
    }
    let closed_after = start.elapsed();
    assert!(
        open.is_empty(),
        "{} of {} connections still open {closed_after:?} after the first \
         (header timeout 2 s; opening took {opened:?})",
        open.len(),
        IDLE + SLOW
    );
    assert!(
        child.0.id() == pid && rss_kib(pid) > 0,
        "the coordinator is gone"
    );
    let growth = peak.saturating_sub(base);
    eprintln!(
        "5,000 connections: opened in {opened:?}, all closed after {closed_after:?}, \
         RSS {base} KiB -> peak {peak} KiB (+{growth} KiB)"
    );
    assert!(
        growth <= RSS_BUDGET_KIB,
        "RSS grew by {growth} KiB (from {base} to {peak}), budget {RSS_BUDGET_KIB} KiB"
    );
    get_key(addr).expect("/key after the flood");
}

/// A raw DERP client over blocking TCP: the upgrade, ServerKey, ClientInfo
/// as `private`, ServerInfo. Returns the stream.
fn derp_connect(addr: SocketAddr, private: &tailnet_wire::PrivateKey) -> TcpStream {
    use tailnet_wire::derp::{self, ClientInfo, Frame, FrameReader};
    let mut s = TcpStream::connect(addr).expect("connect to the relay");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(&derp::upgrade_request("127.0.0.1"))
        .expect("upgrade request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_len = loop {
        if let Some(r) = derp::parse_upgrade_response(&buf).expect("a 101") {
            break r.head_len;
        }
        let n = s.read(&mut chunk).expect("read the 101");
        assert!(n > 0, "closed during the upgrade");
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut reader = FrameReader::new(derp::MAX_FRAME_LEN);
    reader.push(&buf[head_len..]);
    let mut next = |s: &mut TcpStream, reader: &mut FrameReader| loop {
        if let Some(f) = reader.next_frame().expect("a frame") {
            return match f {
                Frame::ServerKey { key } => Some(key),
                Frame::ServerInfo { .. } => None,
                f => panic!("unexpected {f:?}"),
            };
        }
        let n = s.read(&mut chunk).expect("read a frame");
        assert!(n > 0, "the relay closed the connection");
        reader.push(&chunk[..n]);
    };
    let server_key = next(&mut s, &mut reader).expect("ServerKey first");
    s.write_all(&derp::client_info_frame(
        private.as_bytes(),
        &server_key,
        &ClientInfo::ours(),
    ))
    .expect("ClientInfo");
    assert!(next(&mut s, &mut reader).is_none(), "ServerInfo");
    s
}

/// Issue 16 finding 4: the relay's queues were bounded in packets, not
/// bytes: a sender aiming 64 KiB packets at receivers that stopped
/// reading took the relay from 15 to 274 MB (815 MB with four). Now ten
/// receivers that never read, sent 187.5 MiB between them, raise the
/// coordinator's RSS by no more than their queue budgets (2 MiB each)
/// plus [`SLACK_KIB`].
#[test]
fn receivers_that_stop_reading_raise_relay_rss_by_no_more_than_the_budget() {
    use tailnet_wire::derp::{self, Frame};
    /// Budgets: ten queues of 2 MiB (the default `DerpConfig::queue_bytes`).
    const QUEUES_KIB: u64 = 10 * 2 * 1024;
    /// Packets being written, the allocator, the connections' buffers.
    const SLACK_KIB: u64 = 24 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("coord");
    let (child, line) = common::spawn_until(
        &[
            "coordinator",
            "serve",
            "--listen",
            "127.0.0.1:0",
            // The raw clients are not registered nodes.
            "--derp-open",
            "--state-dir",
            path(&state),
        ],
        "coordinator listening on",
    );
    let pid = child.0.id();
    let addr = listening_addr(&line);
    let keys: Vec<tailnet_wire::PrivateKey> = (0..11)
        .map(|_| tailnet_wire::PrivateKey::generate())
        .collect();
    // Ten receivers that never read after the handshake.
    let receivers: Vec<TcpStream> = keys[..10].iter().map(|k| derp_connect(addr, k)).collect();
    let mut sender = derp_connect(addr, &keys[10]);
    let base = rss_kib(pid);
    let packet = vec![0xab; derp::MAX_PACKET_SIZE];
    let mut peak = base;
    // 300 rounds of 64 KiB to each: 187.5 MiB (the kernel's socket
    // buffers take a few MiB per receiver; without the byte budgets the
    // relay held the rest).
    for round in 0..300 {
        for k in &keys[..10] {
            let frame = Frame::SendPacket {
                dst: tailnet_wire::disco::public_of(k),
                packet: &packet,
            }
            .to_vec();
            sender.write_all(&frame).expect("send");
        }
        if round % 10 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    // Everything sent has been handled once a Ping is answered.
    sender
        .write_all(&Frame::Ping { data: [7; 8] }.to_vec())
        .expect("ping");
    let mut reader = derp::FrameReader::new(derp::MAX_FRAME_LEN);
    let mut chunk = [0u8; 4096];
    'pong: loop {
        while let Some(f) = reader.next_frame().expect("frame") {
            if matches!(f, Frame::Pong { data } if data == [7; 8]) {
                break 'pong;
            }
        }
        let n = sender.read(&mut chunk).expect("read the pong");
        assert!(n > 0, "the relay closed the sender");
        reader.push(&chunk[..n]);
    }
    for _ in 0..5 {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let growth = peak.saturating_sub(base);
    eprintln!("ten stalled receivers: RSS {base} KiB -> peak {peak} KiB (+{growth} KiB)");
    assert!(
        growth <= QUEUES_KIB + SLACK_KIB,
        "RSS grew by {growth} KiB; queue budgets {QUEUES_KIB} KiB + slack {SLACK_KIB} KiB"
    );
    drop(receivers);
}
