//! `inferadb-mesh dns query NAME [TYPE]`: ask a running node's MagicDNS,
//! through its local API (`--state-dir`) or directly at its
//! `--dns-listen` address (`--server`).

use crate::localapi;
use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tailnet::dns::ParsedResponse;
use tailnet::RecordType;

/// `inferadb-mesh dns …`.
#[derive(Debug, Subcommand)]
pub enum DnsCommand {
    /// Look a name up through a running node's MagicDNS.
    #[command(after_help = "Examples:
  inferadb-mesh dns query inferadb-control.eu-west-1.ts.net --state-dir /var/lib/inferadb-mesh
  inferadb-mesh dns query 100.64.0.2 PTR --state-dir /var/lib/inferadb-mesh
  inferadb-mesh dns query db AAAA --server 127.0.0.1:5353")]
    Query(QueryArgs),
}

/// Arguments of `dns query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The name (an IP address with type PTR is turned into its reverse
    /// name).
    name: String,
    /// Record type: A, AAAA, PTR, ANY, TXT, …
    #[arg(default_value = "A")]
    qtype: String,
    /// Ask the node running with this state directory (its local API; `up`,
    /// `engine` and `control` all serve it).
    #[arg(long, value_name = "DIR", env = "INFERADB_MESH_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Ask a MagicDNS listener directly (a node's `up --dns-listen`); wins
    /// over --state-dir.
    #[arg(long)]
    server: Option<SocketAddr>,
    /// Print JSON instead of dig-like lines.
    #[arg(long)]
    json: bool,
}

/// One answer record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsAnswer {
    /// Owner name.
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub rtype: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// The data, as dig prints it.
    pub data: String,
}

/// The JSON of a query's outcome (the local API's DNS answer).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsReply {
    /// NOERROR, NXDOMAIN, REFUSED, …
    pub status: String,
    /// The answer was truncated.
    pub truncated: bool,
    /// The answer section.
    pub answers: Vec<DnsAnswer>,
}

impl From<ParsedResponse> for DnsReply {
    fn from(r: ParsedResponse) -> Self {
        DnsReply {
            status: format!("{:?}", r.rcode).to_uppercase(),
            truncated: r.truncated,
            answers: r
                .answers
                .into_iter()
                .map(|(name, t, ttl, data)| DnsAnswer {
                    name,
                    rtype: t.to_string(),
                    ttl,
                    data,
                })
                .collect(),
        }
    }
}

/// `NAME` and `TYPE` as a query: the type parsed, an address given with
/// PTR turned into its reverse name.
pub fn query_of(name: &str, qtype: &str) -> Result<(String, RecordType), String> {
    let t: RecordType = qtype
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("unknown record type {qtype:?}"))?;
    let name = match (t, name.parse::<std::net::IpAddr>()) {
        (RecordType::PTR, Ok(ip)) => reverse_name(ip),
        _ => name.to_string(),
    };
    Ok((name, t))
}

fn reverse_name(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        std::net::IpAddr::V6(a) => {
            let mut s = String::new();
            for b in a.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa"
        }
    }
}

/// Asks `server` directly: UDP, then TCP if the answer was truncated.
async fn ask_server(server: SocketAddr, name: &str, t: RecordType) -> anyhow::Result<DnsReply> {
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x4d44, |d| d.subsec_nanos() as u16);
    let query = tailnet_dns_query(name, t, id)?;
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    let mut buf = vec![0u8; 65535];
    let mut parsed = None;
    for _ in 0..3 {
        sock.send(&query).await?;
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await {
            parsed = Some(tailnet::dns::parse_response(&buf[..n], id)?);
            break;
        }
    }
    let mut parsed = parsed.with_context(|| format!("no answer from {server}"))?;
    if parsed.truncated {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(server).await?;
        let mut out = u16::try_from(query.len())?.to_be_bytes().to_vec();
        out.extend_from_slice(&query);
        s.write_all(&out).await?;
        let n = usize::from(s.read_u16().await?);
        let mut body = vec![0u8; n];
        s.read_exact(&mut body).await?;
        parsed = tailnet::dns::parse_response(&body, id)?;
    }
    Ok(parsed.into())
}

fn tailnet_dns_query(name: &str, t: RecordType, id: u16) -> anyhow::Result<Vec<u8>> {
    Ok(tailnet::dns::build_query(name, t, id)?)
}

/// Runs `dns …`.
pub async fn run(cmd: DnsCommand) -> anyhow::Result<()> {
    let DnsCommand::Query(args) = cmd;
    let (name, t) = query_of(&args.name, &args.qtype).map_err(anyhow::Error::msg)?;
    let reply = match (&args.server, &args.state_dir) {
        (Some(server), _) => ask_server(*server, &name, t).await?,
        (None, Some(dir)) => {
            let socket = localapi::socket_path(dir);
            let body = localapi::fetch_dns(&socket, &name, &t.to_string())
                .await
                .map_err(|e| e.with_state_dir(dir))?;
            serde_json::from_slice(&body).context("the node's DNS answer is not JSON")?
        }
        (None, None) => anyhow::bail!("give --state-dir DIR (a running node) or --server ADDR"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        println!(
            ";; status: {}{}",
            reply.status,
            if reply.truncated { ", truncated" } else { "" }
        );
        for a in &reply.answers {
            println!("{}\t{}\tIN\t{}\t{}", a.name, a.ttl, a.rtype, a.data);
        }
    }
    if reply.status != "NOERROR" {
        std::process::exit(1);
    }
    Ok(())
}
