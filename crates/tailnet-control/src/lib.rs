//! The tokio shell around the ts2021 control protocol.
//!
//! [`NoiseStream`] turns an established Noise [`Transport`] plus the raw
//! upgraded connection into an ordinary byte stream (`AsyncRead` +
//! `AsyncWrite`), so HTTP/2 (`h2`/`hyper`) runs on top of it unchanged, on
//! both sides: the node's control client and the embedded coordinator.
//!
//! [`Transport`]: tailnet_wire::noise::Transport

pub mod client;
mod noise_io;

pub use client::{fetch_server_key, ControlConn, ControlError, ControlUrl, MapStream};
pub use noise_io::NoiseStream;
