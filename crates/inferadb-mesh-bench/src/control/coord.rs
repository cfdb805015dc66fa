//! The embedded coordinator the joined parts (and `bench tunnel`'s
//! joined rows) run against, and nodes registered straight in its store.

use super::*;

/// An embedded coordinator in this process on 127.0.0.1 with a fresh store
/// and a reusable key (also what `bench tunnel`'s joined paths run on).
pub(crate) struct Coord {
    pub(crate) handle: ServerHandle,
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    /// A reusable pre-auth key.
    pub(crate) auth_key: String,
    pub(crate) _dir: tempfile::TempDir,
}

impl Coord {
    /// Starts it.
    pub(crate) async fn start() -> Result<Coord, ControlBenchError> {
        let dir = tempdir("bench-control-coord-")?;
        let path = dir.path().to_path_buf();
        let store = Arc::new(blocking(move || Store::open(&path).map_err(store_err)).await?);
        let handle = Server::builder(store.clone())
            // No keep-alives while we measure.
            .keepalive(Duration::from_secs(300), Duration::from_secs(10))
            // Every simulated node connects from 127.0.0.1.
            .limits(coordinator::server::Limits {
                max_connections: 1 << 20,
                max_connections_per_ip: 1 << 20,
                ..coordinator::server::ServerConfig::default().limits
            })
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await?;
        let spec = AuthKeySpec {
            reusable: true,
            ephemeral: false,
            tags: Vec::new(),
            expiry: Some(Duration::from_secs(3600)),
        };
        let auth_key = store
            .create_auth_key(&spec, SystemTime::now())
            .map_err(store_err)?
            .key;
        let url = format!("http://{}", handle.local_addr());
        Ok(Coord {
            handle,
            url,
            auth_key,
            _dir: dir,
        })
    }

    pub(crate) fn store(&self) -> Arc<Store> {
        self.handle.store().clone()
    }

    pub(crate) fn control_url(&self) -> Result<ControlUrl, ControlBenchError> {
        Ok(self.url.parse()?)
    }

    /// Forgets a node we started for a sample, so the next sample sees the
    /// same tailnet.
    pub(crate) async fn remove_node(&self, key: PublicKey) -> Result<(), ControlBenchError> {
        let store = self.store();
        blocking(move || {
            if let Some(n) = store.node_by_node_key(key.as_bytes()).map_err(store_err)? {
                store.remove(n.id).map_err(store_err)?;
            }
            Ok(())
        })
        .await
    }

    /// The tailnet IPv4 address of the registered node with this host name.
    pub(crate) async fn ipv4_of(&self, hostname: &str) -> Result<Ipv4Addr, ControlBenchError> {
        let store = self.store();
        let host = hostname.to_string();
        blocking(move || {
            let nodes = store.nodes().map_err(store_err)?;
            nodes
                .into_iter()
                .find(|n| n.hostname == host)
                .map(|n| n.ipv4)
                .ok_or_else(|| ControlBenchError::Refused(format!("no node named {host}")))
        })
        .await
    }

    /// Stops it.
    pub(crate) async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}

/// A node registered through the store that never runs.
pub(crate) struct Registered {
    pub(crate) machine: PrivateKey,
    pub(crate) node: NodePublic,
}

/// Registers `count` nodes named `{prefix}-{i}` straight through the
/// store, each with a disco key, two endpoints and a Hostinfo like a real
/// node's; they stay offline. Blocking.
pub(crate) fn preregister(
    store: &Store,
    auth_key: &str,
    prefix: &str,
    count: usize,
) -> Result<Vec<Registered>, ControlBenchError> {
    let mut out = Vec::with_capacity(count);
    let now = SystemTime::now();
    for i in 0..count {
        let machine = PrivateKey::generate();
        let node = NodePublic::from(public_of(&PrivateKey::generate()));
        let hostname = format!("{prefix}-{i}");
        let hostinfo = serde_json::to_value(Hostinfo {
            hostname: hostname.clone(),
            os: "linux".into(),
            ipn_version: "1.90.9".into(),
            ..Hostinfo::default()
        })?;
        let reg = store
            .register(
                &coordinator::RegisterRequest {
                    node_key: *node.as_bytes(),
                    old_node_key: None,
                    machine_key: *public_of(&machine).as_bytes(),
                    hostname,
                    hostinfo: Some(hostinfo),
                    auth_key: Some(auth_key.to_string()),
                    ephemeral: false,
                },
                now,
            )
            .map_err(store_err)?;
        let endpoints = vec![
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, (i % 250) as u8 + 1)),
                41641,
            ),
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 9, (i >> 8) as u8, i as u8)),
                41641,
            ),
        ];
        store
            .apply_map_update(
                reg.node.id,
                &coordinator::MapUpdate {
                    endpoints: Some(endpoints),
                    disco_key: Some(*public_of(&PrivateKey::generate()).as_bytes()),
                    hostinfo: None,
                    hostname: None,
                },
            )
            .map_err(store_err)?;
        out.push(Registered { machine, node });
    }
    Ok(out)
}

/// Registers `node` on `conn` with `auth_key`.
pub(crate) async fn register_on(
    conn: &ControlConn,
    node: NodePublic,
    auth_key: &str,
    hostname: &str,
) -> Result<(), ControlBenchError> {
    let resp = conn
        .register(&RegisterRequest {
            version: CAPABILITY_VERSION,
            node_key: node,
            auth: Some(RegisterAuth {
                auth_key: auth_key.to_string(),
            }),
            hostinfo: Some(Hostinfo {
                hostname: hostname.to_string(),
                os: "linux".into(),
                ..Hostinfo::default()
            }),
            ..RegisterRequest::default()
        })
        .await?;
    if !resp.error.is_empty() {
        return Err(ControlBenchError::Refused(redact_line(&resp.error)));
    }
    Ok(())
}

/// A streaming map request that reports nothing (so opening it changes
/// nothing peers would be told about, except that the node is online).
pub(crate) fn stream_request(node: NodePublic) -> MapRequest {
    MapRequest {
        version: CAPABILITY_VERSION,
        compress: "zstd".into(),
        keep_alive: true,
        node_key: node,
        stream: true,
        ..MapRequest::default()
    }
}

/// The first message of a map stream that is not a keep-alive.
pub(crate) async fn first_message(
    stream: &mut tailnet_control::MapStream,
) -> Result<MapResponse, ControlBenchError> {
    loop {
        match stream.next().await? {
            Some(m) if m.keep_alive => continue,
            Some(m) => return Ok(m),
            None => {
                return Err(ControlBenchError::Refused(
                    "the map stream ended before the first netmap".into(),
                ))
            }
        }
    }
}
