//! Cache invalidation for InferaDB over the tailnet.
//!
//! Control fans an [`Invalidation`] out to every engine with a [`Sender`]
//! (HTTP/1.1 `POST /v1/invalidate` over any [`Connect`]: the tailnet node
//! or plain TCP), signed with a shared [`Secret`]; each engine runs a
//! [`Receiver`] that verifies the signature and its timestamp, applies each
//! event id once (retries and replays are duplicates) through an
//! [`Invalidate`], and logs `Vault cache invalidation received vault_id=…`.
//!
//! ```no_run
//! # async fn demo(node: tailnet::Node, listener: tailnet::TcpListener,
//! #               targets: Vec<inferadb_invalidation::Target>) -> Result<(), Box<dyn std::error::Error>> {
//! use inferadb_invalidation::*;
//! let secret = Secret::from_text("a shared secret of 16+ bytes")?;
//! // Engine
//! let receiver = Receiver::new(ReceiverConfig::new(secret.clone()), Recorder::new(),
//!                              ReceiverMetrics::unregistered());
//! let _server = receiver.serve(listener);
//! // Control
//! let sender = Sender::new(node, secret, Targets::fixed(targets),
//!                          SenderConfig::from_seed(5000, 2), SenderMetrics::unregistered());
//! let report = sender.send(&Invalidation::vault_created("12345")).await?;
//! assert!(report.all_delivered());
//! # Ok(()) }
//! ```

pub mod connect;
mod dedupe;
pub mod event;
pub mod metrics;
pub mod receiver;
pub mod sender;
pub mod signature;

pub use connect::{Accept, Connect, TcpConnect};
pub use event::{EventError, Invalidation, InvalidationKind};
pub use metrics::{ReceiverMetrics, SenderMetrics};
pub use receiver::{
    from_fn, CacheInvalidator, FnInvalidate, Invalidate, InvalidateError, Receiver, ReceiverConfig,
    ReceiverHandle, Recorder, VaultCache, DEFAULT_PATH,
};
pub use sender::{
    AttemptError, Delivery, DeliveryReport, SendError, Sender, SenderConfig, Target, Targets,
};
pub use signature::{
    AuthError, HeaderError, Secret, SecretError, SignatureHeader, DEFAULT_TOLERANCE,
    SIGNATURE_HEADER,
};
