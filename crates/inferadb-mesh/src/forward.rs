//! Loopback forwards for processes that are not Rust (curl, psql, a
//! browser): `--forward 127.0.0.1:LOCALPORT:HOST:PORT` listens on loopback
//! and carries each TCP connection over the tailnet to HOST:PORT (HOST a
//! MagicDNS name or a tailnet IP, resolved per connection so a name that
//! moves is followed); `--expose TAILNETPORT:127.0.0.1:PORT` makes a local
//! server reachable on the node's tailnet address.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use tailnet::Node;
use tokio::io::copy_bidirectional;

/// A `--forward LOCAL:HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The loopback address to listen on.
    pub local: SocketAddr,
    /// A MagicDNS name or a tailnet IP.
    pub host: String,
    /// The port on `host`.
    pub port: u16,
}

/// An `--expose TAILNETPORT:ADDR:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expose {
    /// The port on the node's tailnet addresses.
    pub tailnet_port: u16,
    /// The local server each connection is carried to.
    pub target: SocketAddr,
}

/// Why a `--forward` or `--expose` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// Not of the documented shape.
    #[error("{value:?}: expected {shape}")]
    Shape {
        /// What was given.
        value: String,
        /// What was expected.
        shape: &'static str,
    },
    /// A port that is not 1–65535.
    #[error("{value:?}: {port:?} is not a port (1-65535)")]
    Port {
        /// What was given.
        value: String,
        /// The bad port text.
        port: String,
    },
    /// A listening address that is not loopback.
    #[error("{value:?}: {addr} is not a loopback address; forwards listen on loopback only (127.0.0.1 or [::1]) so the tailnet is not opened to the network")]
    NotLoopback {
        /// What was given.
        value: String,
        /// The address.
        addr: IpAddr,
    },
}

const FORWARD_SHAPE: &str =
    "LOCALADDR:LOCALPORT:HOST:PORT, e.g. 127.0.0.1:5432:inferadb-control-0:5432";
const EXPOSE_SHAPE: &str = "TAILNETPORT:ADDR:PORT, e.g. 9090:127.0.0.1:8080";

fn port(value: &str, p: &str) -> Result<u16, SpecError> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(SpecError::Port {
            value: value.into(),
            port: p.into(),
        }),
    }
}

/// `ADDR:PORT` or `[V6]:PORT` from the front of `s`, with the rest after
/// the next `:`.
fn split_addr(s: &str) -> Option<(&str, &str)> {
    let end = if s.starts_with('[') {
        s.find("]:")? + 1
    } else {
        s.find(':')?
    };
    let after = s[end..].strip_prefix(':')?;
    let port_end = after.find(':').unwrap_or(after.len());
    let addr_len = end + 1 + port_end;
    Some((
        &s[..addr_len],
        s[addr_len..].strip_prefix(':').unwrap_or(""),
    ))
}

impl FromStr for Forward {
    type Err = SpecError;

    fn from_str(value: &str) -> Result<Self, SpecError> {
        let shape = || SpecError::Shape {
            value: value.into(),
            shape: FORWARD_SHAPE,
        };
        let (local, rest) = split_addr(value).ok_or_else(shape)?;
        let (host, p) = rest.rsplit_once(':').ok_or_else(shape)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(shape());
        }
        let (lip, lport) = local.rsplit_once(':').ok_or_else(shape)?;
        let lport = port(value, lport)?;
        let lip: IpAddr = lip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| shape())?;
        if !lip.is_loopback() {
            return Err(SpecError::NotLoopback {
                value: value.into(),
                addr: lip,
            });
        }
        Ok(Forward {
            local: SocketAddr::new(lip, lport),
            host: host.to_string(),
            port: port(value, p)?,
        })
    }
}

impl FromStr for Expose {
    type Err = SpecError;

    fn from_str(value: &str) -> Result<Self, SpecError> {
        let shape = || SpecError::Shape {
            value: value.into(),
            shape: EXPOSE_SHAPE,
        };
        let (tport, target) = value.split_once(':').ok_or_else(shape)?;
        let tailnet_port = port(value, tport)?;
        let target: SocketAddr = target.parse().map_err(|_| shape())?;
        if target.port() == 0 {
            return Err(SpecError::Port {
                value: value.into(),
                port: "0".into(),
            });
        }
        Ok(Expose {
            tailnet_port,
            target,
        })
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}:{}", self.local, self.host, self.port)
    }
}

impl fmt::Display for Expose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tailnet :{} -> {}", self.tailnet_port, self.target)
    }
}

/// Where `host` is now: a literal IP, or the first address MagicDNS gives
/// (IPv4 first).
async fn resolve(node: &Node, host: &str) -> anyhow::Result<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let mut addrs = node.resolve(host).await?;
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("{host}: MagicDNS has no address for it"))
}

/// Binds every forward's loopback listener (so a port in use fails before
/// anything runs) and carries connections until the node stops.
pub async fn start_forwards(node: &Node, forwards: &[Forward]) -> anyhow::Result<()> {
    for fwd in forwards {
        let listener = tokio::net::TcpListener::bind(fwd.local)
            .await
            .map_err(|e| anyhow::anyhow!("--forward {fwd}: cannot listen on {}: {e}", fwd.local))?;
        let node = node.clone();
        let fwd = fwd.clone();
        tokio::spawn(async move {
            loop {
                let (mut local, from) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(forward = %fwd, error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = local.set_nodelay(true);
                let node = node.clone();
                let fwd = fwd.clone();
                tokio::spawn(async move {
                    let result = async {
                        let ip = resolve(&node, &fwd.host).await?;
                        let mut remote = node.tcp_connect(SocketAddr::new(ip, fwd.port)).await?;
                        tracing::info!(forward = %fwd, %from, to = %ip, "forwarding a connection");
                        copy_bidirectional(&mut local, &mut remote).await?;
                        anyhow::Ok(())
                    }
                    .await;
                    if let Err(e) = result {
                        tracing::warn!(forward = %fwd, %from, error = %e, "forwarded connection failed");
                    }
                });
            }
        });
    }
    Ok(())
}

/// Listens on each exposed tailnet port and carries connections to the
/// local server, until the node stops.
pub fn start_exposes(node: &Node, exposes: &[Expose]) -> anyhow::Result<()> {
    for exp in exposes {
        let listener = node
            .tcp_listen(exp.tailnet_port)
            .map_err(|e| anyhow::anyhow!("--expose {exp}: {e}"))?;
        let exp = *exp;
        tokio::spawn(async move {
            while let Ok((mut remote, from)) = listener.accept().await {
                tokio::spawn(async move {
                    let result = async {
                        let mut local = tokio::net::TcpStream::connect(exp.target).await?;
                        let _ = local.set_nodelay(true);
                        tracing::info!(expose = %exp, %from, "carrying a tailnet connection");
                        copy_bidirectional(&mut remote, &mut local).await?;
                        anyhow::Ok(())
                    }
                    .await;
                    if let Err(e) = result {
                        tracing::warn!(expose = %exp, %from, error = %e, "exposed connection failed");
                    }
                });
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_parse_names_ips_and_v6_loopback() {
        let f: Forward = "127.0.0.1:5432:inferadb-control-0:9090".parse().unwrap();
        assert_eq!(f.local, "127.0.0.1:5432".parse().unwrap());
        assert_eq!((f.host.as_str(), f.port), ("inferadb-control-0", 9090));
        let f: Forward = "127.0.0.1:80:inferadb-control.eu-west-1.ts.net:9090"
            .parse()
            .unwrap();
        assert_eq!(f.host, "inferadb-control.eu-west-1.ts.net");
        let f: Forward = "[::1]:8080:100.64.0.7:80".parse().unwrap();
        assert_eq!(f.local, "[::1]:8080".parse().unwrap());
        assert_eq!(f.host, "100.64.0.7");
        let f: Forward = "127.0.0.1:8080:[fd7a:115c:a1e0::7]:80".parse().unwrap();
        assert_eq!(f.host, "fd7a:115c:a1e0::7");
    }

    #[test]
    fn forward_errors_name_the_problem() {
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:80",
            "127.0.0.1:80:host",
            "x:1:h:2",
        ] {
            let e = bad.parse::<Forward>().unwrap_err();
            assert!(matches!(e, SpecError::Shape { .. }), "{bad}: {e}");
        }
        let e = "127.0.0.1:0:h:1".parse::<Forward>().unwrap_err();
        assert!(e.to_string().contains("is not a port"), "{e}");
        let e = "127.0.0.1:80:h:99999".parse::<Forward>().unwrap_err();
        assert!(e.to_string().contains("\"99999\""), "{e}");
        let e = "0.0.0.0:80:h:1".parse::<Forward>().unwrap_err();
        assert!(e.to_string().contains("not a loopback address"), "{e}");
    }

    #[test]
    fn exposes_parse() {
        let e: Expose = "9090:127.0.0.1:8080".parse().unwrap();
        assert_eq!(e.tailnet_port, 9090);
        assert_eq!(e.target, "127.0.0.1:8080".parse().unwrap());
        let e: Expose = "80:[::1]:8080".parse().unwrap();
        assert_eq!(e.target, "[::1]:8080".parse().unwrap());
        for bad in [
            "9090",
            "9090:127.0.0.1",
            "0:127.0.0.1:80",
            "80:127.0.0.1:0",
            "a:b:c",
        ] {
            assert!(bad.parse::<Expose>().is_err(), "{bad}");
        }
    }
}
