//! One HTTP health check: `GET <path>` over a [`Connect`]ion, healthy on a
//! 2xx status line within the timeout. Only the status line is read; the
//! connection is closed after it.

use crate::net::Connect;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No status line within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The answer is not HTTP.
    #[error("not an HTTP status line")]
    NotHttp,
    /// A status other than 2xx.
    #[error("status {0}")]
    Status(u16),
}

/// Longest status line read.
const MAX_LINE: usize = 1024;

/// Checks `addr`: `Ok(status)` for 2xx.
pub async fn check<C: Connect>(
    connector: &C,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<u16, CheckError> {
    tokio::time::timeout(timeout, check_inner(connector, addr, path))
        .await
        .map_err(|_| CheckError::Timeout(timeout))?
}

async fn check_inner<C: Connect>(
    connector: &C,
    addr: SocketAddr,
    path: &str,
) -> Result<u16, CheckError> {
    let mut s = connector.connect(addr).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: inferadb-discovery\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    let line = loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            break &buf[..i];
        }
        if buf.len() > MAX_LINE {
            return Err(CheckError::NotHttp);
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(CheckError::NotHttp);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let line = std::str::from_utf8(line).map_err(|_| CheckError::NotHttp)?;
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(CheckError::NotHttp);
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or(CheckError::NotHttp)?;
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(CheckError::Status(status))
    }
}
