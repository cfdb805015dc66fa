use super::*;
use http_body_util::Empty;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Body = Empty<bytes::Bytes>;

fn ok_service() -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<Body>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    hyper::service::service_fn(|_req| async {
        Ok::<_, Infallible>(hyper::Response::new(Body::new()))
    })
}

fn limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        ..Limits::default()
    }
}

/// A connection that sends nothing is closed after the header-read
/// timeout (hyper without a timer would hold it forever).
#[tokio::test(start_paused = true)]
async fn idle_http1_connection_is_closed_after_header_timeout() {
    let (mut client, server) = tokio::io::duplex(4096);
    let conn = tokio::spawn(
        limits()
            .http1()
            .serve_connection(hyper_util::rt::TokioIo::new(server), ok_service()),
    );
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 256];
    // The server closes: the client reads EOF (hyper may first write a 408).
    let n = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(n.is_ok(), "an idle connection was still open after 30 s");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(12),
        "closed after {took:?}, want the 10 s header-read timeout"
    );
    assert!(conn.await.expect("join").is_err());
}

/// Slowloris: headers trickled one byte every 2 s never finish; the
/// connection is closed at the header-read timeout all the same.
#[tokio::test(start_paused = true)]
async fn slowloris_http1_connection_is_closed_after_header_timeout() {
    let (mut client, server) = tokio::io::duplex(4096);
    let conn = tokio::spawn(
        limits()
            .http1()
            .serve_connection(hyper_util::rt::TokioIo::new(server), ok_service()),
    );
    let start = tokio::time::Instant::now();
    let request =
        b"GET / HTTP/1.1\r\nHost: example\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for b in request {
        if client.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        if conn.is_finished() {
            break;
        }
    }
    assert!(conn.is_finished(), "slowloris connection still open");
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(14),
        "closed after {took:?}, want about the 10 s header-read timeout"
    );
}

/// A well-behaved request is still answered.
#[tokio::test(start_paused = true)]
async fn prompt_request_is_answered() {
    let (mut client, server) = tokio::io::duplex(4096);
    tokio::spawn(
        limits()
            .http1()
            .serve_connection(hyper_util::rt::TokioIo::new(server), ok_service()),
    );
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = client.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
}

/// `IdleIo` fails a read after the idle timeout, and progress in either
/// direction pushes the deadline back.
#[tokio::test(start_paused = true)]
async fn idle_io_times_out_without_progress() {
    let (mut peer, ours) = tokio::io::duplex(64);
    let mut io = IdleIo::new(ours, Duration::from_secs(5));
    let start = tokio::time::Instant::now();
    // Progress at 3 s (a write) and 6 s (a read) keeps it alive.
    let driver = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(6)).await;
        peer.write_all(b"x").await.expect("peer write");
        let mut b = [0u8; 1];
        peer.read_exact(&mut b).await.expect("peer read");
        peer // kept open, silent
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    io.write_all(b"y").await.expect("write");
    let mut b = [0u8; 1];
    io.read_exact(&mut b).await.expect("read at 6 s");
    let err = io.read(&mut b).await.expect_err("silent peer");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(11) && took < Duration::from_secs(12),
        "timed out at {took:?}, want 6 s + 5 s"
    );
    drop(driver.await.expect("driver"));
}

/// A writer blocked on a peer that stops reading fails at the timeout.
#[tokio::test(start_paused = true)]
async fn idle_io_write_to_stalled_reader_times_out() {
    let (_peer, ours) = tokio::io::duplex(16);
    let mut io = IdleIo::new(ours, Duration::from_secs(5));
    let err = io.write_all(&[0u8; 1024]).await.expect_err("stalled");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
}

#[test]
fn gate_enforces_global_and_per_ip_caps() {
    let gate = ConnGate::new(3, 2);
    let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    let a1 = gate.admit(Some(a)).expect("a1");
    let _a2 = gate.admit(Some(a)).expect("a2");
    assert_eq!(gate.admit(Some(a)).unwrap_err(), Refused::PerIp);
    let _b1 = gate.admit(Some(b)).expect("b1");
    assert_eq!(gate.admit(Some(b)).unwrap_err(), Refused::Total);
    assert_eq!(gate.admit(None).unwrap_err(), Refused::Total);
    drop(a1);
    assert_eq!(gate.open(), 2);
    let _b2 = gate.admit(Some(b)).expect("slot freed");
    assert_eq!(
        gate.counters()
            .refused_per_ip
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        gate.counters()
            .refused_total
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn log_limiter_bounds_lines() {
    let lim = LogLimiter::new(Duration::from_secs(10));
    let mut lines = 0;
    let mut reported = 0;
    // 2,000 events over 60 s.
    for _ in 0..2000 {
        if let Some(s) = lim.allow() {
            lines += 1;
            reported += s + 1;
        }
        tokio::time::advance(Duration::from_millis(30)).await;
    }
    assert!(lines <= 7, "{lines} lines");
    // Every event is accounted for in a line, except the ones after the last.
    assert!(reported <= 2000 && reported > 1600, "{reported}");
}

#[tokio::test(start_paused = true)]
async fn accept_errors_back_off_and_never_give_up() {
    let mut errs = AcceptErrors::new("test");
    let e = io::Error::from_raw_os_error(24); // EMFILE
    let start = tokio::time::Instant::now();
    for _ in 0..200 {
        errs.failed(&e).await;
    }
    assert_eq!(errs.total(), 200);
    let took = start.elapsed();
    // Backoff capped at 1 s: ~190 s, not a spin and not unbounded.
    assert!(
        took >= Duration::from_secs(150) && took <= Duration::from_secs(200),
        "{took:?}"
    );
    errs.success();
    let t = tokio::time::Instant::now();
    errs.failed(&e).await;
    assert!(t.elapsed() < Duration::from_millis(10));
}
