//! Tailscale control-protocol data, sans-IO: the JSON bodies a ts2021
//! client and a coordination server exchange, the rules for folding map
//! responses into a network map, and the length-prefixed (zstd) framing of
//! the map stream.
//!
//! Compatible with Go tailscale v1.90.9 (capability version 130) and
//! Headscale. Sources, all in `tailscale/tailscale` at tag `v1.90.9`:
//! `tailcfg/tailcfg.go`, `tailcfg/derpmap.go`, `types/dnstype/dnstype.go`,
//! `types/key/`, `types/opt/bool.go`, `control/controlclient/{direct,map}.go`.
//!
//! JSON conventions, matching Go's `encoding/json` as the Go peers use it:
//! - Field names are Go's (PascalCase with Go's acronyms: `ID`, `DERPMap`,
//!   `AllowedIPs`), except where Go tags them (`/key`'s `publicKey`,
//!   `omitDefaultRegions`, `sshHostKeys`). On decode a key matches a field
//!   exactly, else case-insensitively, as in Go ([`go_json`]; tailscale-rs
//!   writes `HostInfo`, `PreferredDerp`).
//! - Unknown fields are ignored on decode (forward compatible).
//! - Fields Go tags `omitempty` are left out when empty on encode; Go
//!   `null` for a slice, map or key decodes as empty / zero.
//! - Keys are `nodekey:`/`mkey:`/`discokey:` + 64 hex ([`keys`]); `""` is
//!   never written (Go rejects the whole message for one).
//! - Times are RFC 3339 ([`Timestamp`]); addresses are prefixes
//!   (`100.64.0.1/32`), endpoints `ip:port`, integer map keys decimal
//!   strings.
//! - Tailnet-lock (TKA) signatures, SSH policy and a few other optional
//!   fields are not modelled; they are ignored on decode and not written.
//!
//! Modules: [`messages`] (register, map, `/key`), [`node`] (`Node`,
//! `Hostinfo`, `PeerChange`), [`dns`], [`filter`], [`derp`], [`netmap`]
//! (applying map responses), [`stream`] (map frames).

pub mod derp;
pub mod dns;
pub mod filter;
pub mod go_json;
pub mod keys;
pub mod messages;
pub mod netmap;
pub mod node;
pub mod redact;
mod serde_util;
pub mod stream;
pub mod time;

pub use derp::{DerpHomeParams, DerpMap, DerpNode, DerpRegion};
pub use dns::{DnsConfig, DnsRecord, Resolver};
pub use filter::{CapGrant, FilterRule, NetPortRange, PortRange};
pub use keys::{DiscoPublic, MachinePublic, NodePublic};
pub use messages::{
    endpoint_type, Login, MapRequest, MapResponse, OverTlsPublicKeyResponse, PingRequest,
    RegisterAuth, RegisterRequest, RegisterResponse, User, UserProfile,
};
pub use netmap::{Changes, Netmap, NetmapError};
pub use node::{CapMap, Hostinfo, NetInfo, Node, NodeId, PeerChange, Service, UserId};
pub use redact::redact_auth_keys;
pub use stream::{
    Compression, FrameLimits, MapEncodeError, MapStreamDecoder, MapStreamEncoder, MapStreamError,
};
pub use time::{TimeError, Timestamp};

/// The capability version we speak (Go tailscale v1.90.9's
/// `tailcfg.CurrentCapabilityVersion`). It goes in `/key?v=`, the Noise
/// prologue, and `RegisterRequest`/`MapRequest.Version`.
pub const CAPABILITY_VERSION: i32 = 130;

/// Most bytes the Go client reads of a `/key` response.
pub const MAX_KEY_RESPONSE: usize = 64 << 10;

/// Most bytes the Go client reads of a register response (or any other
/// plain JSON response).
pub const MAX_REGISTER_RESPONSE: usize = 1 << 20;

/// Path of the key bootstrap request (`GET /key?v=130`).
pub const KEY_PATH: &str = "/key";
/// Path of the register request inside the Noise connection.
pub const REGISTER_PATH: &str = "/machine/register";
/// Path of the map request inside the Noise connection.
pub const MAP_PATH: &str = "/machine/map";

#[cfg(test)]
mod go_json_tests;
#[cfg(test)]
mod tests;
