//! What the benchmarks need of the product they measure.
//!
//! `inferadb-mesh` depends on this crate (its `bench` subcommand calls
//! [`crate::run`]), so this crate cannot name the product's roles or its
//! local API; the command implements [`Product`] and passes it in as a
//! type.

use inferadb_discovery::Discovery;
use inferadb_invalidation::Recorder;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tailnet::status::Status;

/// The product pieces `bench invalidation` and `bench tunnel` drive.
pub trait Product: 'static {
    /// A running engine or control.
    type Role: RunningRole;
    /// Starts an engine from a YAML configuration file, as `engine --config
    /// FILE` does (environment variables are not read).
    fn start_engine(config: PathBuf) -> impl Future<Output = anyhow::Result<Self::Role>> + Send;
    /// Starts control from a YAML configuration file, as `control --config
    /// FILE` does.
    fn start_control(config: PathBuf) -> impl Future<Output = anyhow::Result<Self::Role>> + Send;
    /// The status an `inferadb-mesh up` process with this state directory
    /// serves on its local API (what `status --json` prints).
    fn status(state_dir: PathBuf) -> impl Future<Output = anyhow::Result<Status>> + Send;
}

/// An engine or control started by [`Product`].
pub trait RunningRole: Send + 'static {
    /// Its tailnet node.
    fn node(&self) -> &tailnet::Node;
    /// Its HTTP server's OS address.
    fn http_addr(&self) -> SocketAddr;
    /// Its discovery (control: of the engines; engine: of control).
    fn discovery(&self) -> Arc<Discovery>;
    /// What an engine's invalidation receiver applied (None for control).
    fn received(&self) -> Option<Recorder>;
    /// Stops it.
    fn shutdown(self) -> impl Future<Output = ()> + Send;
}

/// [`Product::status`] as a plain function, for options that are not
/// generic.
pub type StatusFn = fn(PathBuf) -> Pin<Box<dyn Future<Output = anyhow::Result<Status>> + Send>>;
