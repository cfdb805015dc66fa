//! What every example shares: an embedded coordinator on loopback
//! (in-process, a dev-dependency of the examples only) and nodes joining
//! it with tagged auth keys. A real service joins Tailscale or Headscale
//! the same way: `Node::builder().control_url(..).auth_key(..)…up()`.

#![allow(dead_code)]

use coordinator::admin::{authkey_create, AuthKeyCreateArgs};
use coordinator::server::{Server, ServerHandle};
use coordinator::Store;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tailnet::Node;

/// A coordinator on 127.0.0.1 with its state in a temporary directory.
pub struct Tailnet {
    pub url: String,
    handle: ServerHandle,
    store: Arc<Store>,
    _dir: tempfile::TempDir,
}

impl Tailnet {
    pub async fn start() -> Result<Tailnet, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(Store::open(dir.path())?);
        let handle = Server::builder(store.clone())
            .bind("127.0.0.1:0".parse()?)
            .await?;
        Ok(Tailnet {
            url: format!("http://{}", handle.local_addr()),
            handle,
            store,
            _dir: dir,
        })
    }

    /// Joins a new ephemeral node named `host` with an auth key carrying
    /// `tags`.
    pub async fn join(
        &self,
        host: &str,
        tags: &[&str],
    ) -> Result<Node, Box<dyn std::error::Error>> {
        let args = AuthKeyCreateArgs {
            reusable: false,
            ephemeral: true,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            expiry: Some("1h".into()),
        };
        let key = authkey_create(&self.store, &args, SystemTime::now())?.key;
        let node = Node::builder()
            .control_url(&self.url)
            .auth_key(key)
            .hostname(host)
            .ephemeral(true)
            .listen("127.0.0.1:0".parse()?)
            .timeout(Duration::from_secs(30))
            .up()
            .await?;
        Ok(node)
    }

    pub async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}

/// `node`'s MagicDNS name (FQDN, no trailing dot).
pub fn fqdn(node: &Node) -> String {
    let netmap = node.watch_netmap().expect("joined through control");
    let name = netmap
        .borrow()
        .self_node()
        .map(|n| n.name.trim_end_matches('.').to_string())
        .unwrap_or_default();
    name
}

/// Waits until `node`'s netmap has a peer named `name` (an FQDN).
pub async fn wait_for_peer(node: &Node, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut rx = node.watch_netmap().expect("joined through control");
    let want = format!("{name}.");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if rx.borrow().peers().any(|p| p.name == want) {
                return Ok(());
            }
            rx.changed().await?;
        }
    })
    .await?
}
