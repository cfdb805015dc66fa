//! A tailscale-rs node for our interop tests.
//!
//! `tsrs-peer --control-url URL --key-file PATH --hostname NAME --listen PORT[,PORT…]`
//! with the auth key in `TS_AUTH_KEY`. It joins, serves a TCP echo on each
//! listed port of its tailnet IPv4 address and prints `READY <ipv4>`. Then it
//! reads commands on stdin, one a line:
//!
//! - `dial <ip>:<port>`: connect, send a line, expect it echoed; prints
//!   `DIAL OK <addr>` or `DIAL FAIL <addr> <reason>` (10 s budget).
//!
//! It exits when stdin closes, so a test that drops its handle stops it.

use std::{net::SocketAddr, time::Duration};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

struct Args {
    control_url: url::Url,
    key_file: String,
    hostname: String,
    tags: Vec<String>,
    listen: Vec<u16>,
}

fn parse_args() -> Result<Args, String> {
    let mut control_url = None;
    let mut key_file = None;
    let mut hostname = "tsrs-peer".to_string();
    let mut tags = Vec::new();
    let mut listen = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--control-url" => {
                control_url = Some(value.parse().map_err(|e| format!("--control-url: {e}"))?)
            }
            "--key-file" => key_file = Some(value),
            "--hostname" => hostname = value,
            "--tags" => tags = value.split(',').map(str::to_string).collect(),
            "--listen" => {
                for p in value.split(',') {
                    listen.push(p.parse().map_err(|e| format!("--listen {p}: {e}"))?);
                }
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Args {
        control_url: control_url.ok_or("--control-url is required")?,
        key_file: key_file.ok_or("--key-file is required")?,
        hostname,
        tags,
        listen,
    })
}

async fn dial(dev: &tailscale::Device, addr: SocketAddr) -> Result<(), String> {
    let mut conn = dev
        .tcp_connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    conn.write_all(b"hello from tailscale-rs\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 24];
    conn.read_exact(&mut buf)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if &buf != b"hello from tailscale-rs\n" {
        return Err(format!(
            "echo mismatch: {:?}",
            String::from_utf8_lossy(&buf)
        ));
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TSRS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = parse_args().map_err(|e| format!("tsrs-peer: {e}"))?;
    let auth_key = std::env::var("TS_AUTH_KEY").ok();

    let mut config = tailscale::Config::default_with_key_file(&args.key_file).await?;
    config.control_server_url = args.control_url;
    config.requested_hostname = Some(args.hostname);
    config.requested_tags = args.tags;
    let dev = tailscale::Device::new(&config, auth_key).await?;
    let ip = dev.ipv4_addr().await?;

    for port in &args.listen {
        let listener = dev.tcp_listen((ip, *port).into()).await?;
        tokio::spawn(async move {
            loop {
                let Ok(conn) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = tokio::io::split(conn);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
    }
    println!("READY {ip}");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("dial"), Some(addr)) => match addr.parse::<SocketAddr>() {
                Ok(addr) => {
                    match tokio::time::timeout(Duration::from_secs(10), dial(&dev, addr)).await {
                        Ok(Ok(())) => println!("DIAL OK {addr}"),
                        Ok(Err(e)) => println!("DIAL FAIL {addr} {e}"),
                        Err(_) => println!("DIAL FAIL {addr} timeout"),
                    }
                }
                Err(e) => println!("DIAL FAIL {addr} bad address: {e}"),
            },
            _ => println!("ERROR unknown command: {line}"),
        }
    }
    let _ = dev.shutdown(Some(Duration::from_secs(2))).await;
    Ok(())
}
