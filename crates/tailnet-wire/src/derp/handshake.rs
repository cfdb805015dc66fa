//! The DERP handshake: NaCl boxes, ClientInfo / ServerInfo, the ServerKey
//! greeting, and the HTTP/1.1 upgrade around them.

use super::{
    DerpError, Frame, FrameType, BOX_TAG_LEN, DERP_PATH, MAX_CLIENT_INFO_LEN, MAX_INFO_LEN,
    MIN_CLIENT_INFO_LEN, NONCE_LEN, PROTOCOL_VERSION, PUBLIC_KEY_HEADER, UPGRADE_PROTOCOL,
    VERSION_HEADER,
};
use crate::PublicKey;
use crypto_box::aead::{generic_array::GenericArray, AeadInPlace};
use crypto_box::SalsaBox;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The public key of a Curve25519 private key.
fn public_of(private: &[u8; 32]) -> PublicKey {
    PublicKey::from_bytes(x25519_dalek::x25519(
        *private,
        x25519_dalek::X25519_BASEPOINT_BYTES,
    ))
}

fn salsa_box(private: &[u8; 32], peer: &PublicKey) -> SalsaBox {
    SalsaBox::new(
        &crypto_box::PublicKey::from(*peer.as_bytes()),
        &crypto_box::SecretKey::from(*private),
    )
}

/// Seals `msg` from `private` to `peer` with `nonce`: the nonce, then the
/// box (Poly1305 tag first, then the ciphertext), as Go's
/// `key.NodePrivate.SealTo` writes it. Use [`seal`] unless the nonce must
/// be fixed (tests).
pub fn seal_with_nonce(
    private: &[u8; 32],
    peer: &PublicKey,
    nonce: [u8; NONCE_LEN],
    msg: &[u8],
) -> Vec<u8> {
    let mut body = msg.to_vec();
    let mut out = Vec::with_capacity(NONCE_LEN + BOX_TAG_LEN + msg.len());
    out.extend_from_slice(&nonce);
    // XSalsa20-Poly1305 seals any length a Vec can hold; should it ever
    // refuse, the nonce alone goes out and will not open on the other side.
    if let Ok(tag) = salsa_box(private, peer).encrypt_in_place_detached(
        GenericArray::from_slice(&nonce),
        b"",
        &mut body,
    ) {
        out.extend_from_slice(&tag);
        out.extend_from_slice(&body);
    }
    out
}

/// [`seal_with_nonce`] with a random nonce from the operating system.
pub fn seal(private: &[u8; 32], peer: &PublicKey, msg: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    // getrandom only fails when the OS has no entropy source at all.
    getrandom::fill(&mut nonce).expect("operating system random source");
    seal_with_nonce(private, peer, nonce, msg)
}

/// Opens what [`seal`] made: `sealed` is the nonce followed by the box,
/// from `peer` to `private`.
pub fn open(private: &[u8; 32], peer: &PublicKey, sealed: &[u8]) -> Result<Vec<u8>, DerpError> {
    if sealed.len() < NONCE_LEN + BOX_TAG_LEN {
        return Err(DerpError::BoxOpen);
    }
    let (nonce, boxed) = sealed.split_at(NONCE_LEN);
    let (tag, ciphertext) = boxed.split_at(BOX_TAG_LEN);
    let mut body = ciphertext.to_vec();
    salsa_box(private, peer)
        .decrypt_in_place_detached(
            GenericArray::from_slice(nonce),
            b"",
            &mut body,
            GenericArray::from_slice(tag),
        )
        .map_err(|_| DerpError::BoxOpen)?;
    Ok(body)
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// What a client tells the server about itself (`derp.ClientInfo`). A Go
/// 1.90.9 client sends `{"version":2,"CanAckPings":true}`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Pre-shared key of trusted mesh peers, hex; absent for ordinary
    /// clients. Never printed.
    #[serde(rename = "meshKey", default, skip_serializing_if = "Option::is_none")]
    pub mesh_key: Option<String>,
    /// The client's protocol version.
    #[serde(rename = "version", default, skip_serializing_if = "is_zero")]
    pub version: u32,
    /// The client answers Ping with Pong.
    #[serde(rename = "CanAckPings", default)]
    pub can_ack_pings: bool,
    /// The client is a prober.
    #[serde(rename = "IsProber", default, skip_serializing_if = "is_false")]
    pub is_prober: bool,
}

impl ClientInfo {
    /// What our client sends: protocol version 2, answers pings.
    pub fn ours() -> Self {
        ClientInfo {
            version: PROTOCOL_VERSION,
            can_ack_pings: true,
            ..ClientInfo::default()
        }
    }
}

impl fmt::Debug for ClientInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientInfo")
            .field("mesh_key", &self.mesh_key.as_ref().map(|_| "<redacted>"))
            .field("version", &self.version)
            .field("can_ack_pings", &self.can_ack_pings)
            .field("is_prober", &self.is_prober)
            .finish()
    }
}

/// What the server tells a client (`derp.ServerInfo`): `{"version":2}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The server's protocol version.
    #[serde(rename = "version", default, skip_serializing_if = "is_zero")]
    pub version: u32,
    /// Advised send rate in bytes per second; 0 = no limit.
    #[serde(
        rename = "TokenBucketBytesPerSecond",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub token_bucket_bytes_per_second: u32,
    /// Advised burst in bytes; 0 = no limit.
    #[serde(
        rename = "TokenBucketBytesBurst",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub token_bucket_bytes_burst: u32,
}

impl ServerInfo {
    /// What our server sends: protocol version 2, no rate limit.
    pub fn ours() -> Self {
        ServerInfo {
            version: PROTOCOL_VERSION,
            ..ServerInfo::default()
        }
    }
}

/// The server's greeting frame for `server_public`.
pub fn server_key_frame(server_public: &PublicKey) -> Vec<u8> {
    Frame::ServerKey {
        key: *server_public,
    }
    .to_vec()
}

/// The client's ClientInfo frame: its public key (derived from
/// `client_private`) and `info` sealed to the server.
pub fn client_info_frame(
    client_private: &[u8; 32],
    server_public: &PublicKey,
    info: &ClientInfo,
) -> Vec<u8> {
    // Serialising these plain fields cannot fail.
    let json = serde_json::to_vec(info).unwrap_or_default();
    let sealed = seal(client_private, server_public, &json);
    Frame::ClientInfo {
        key: public_of(client_private),
        sealed: &sealed,
    }
    .to_vec()
}

/// Checks a ClientInfo frame's size (56 bytes .. 256 KiB, as Go does),
/// opens its box with the server's private key and decodes the JSON.
/// `client` and `sealed` are the fields of [`Frame::ClientInfo`].
pub fn open_client_info(
    server_private: &[u8; 32],
    client: &PublicKey,
    sealed: &[u8],
) -> Result<ClientInfo, DerpError> {
    let len = super::KEY_LEN + sealed.len();
    if !(MIN_CLIENT_INFO_LEN..=MAX_CLIENT_INFO_LEN).contains(&len) {
        return Err(DerpError::ClientInfoLength { len });
    }
    let json = open(server_private, client, sealed)?;
    serde_json::from_slice(&json).map_err(|e| DerpError::Json {
        what: "ClientInfo",
        detail: e.to_string(),
    })
}

/// The server's ServerInfo frame, `info` sealed to the client.
pub fn server_info_frame(
    server_private: &[u8; 32],
    client: &PublicKey,
    info: &ServerInfo,
) -> Vec<u8> {
    let json = serde_json::to_vec(info).unwrap_or_default();
    let sealed = seal(server_private, client, &json);
    Frame::ServerInfo { sealed: &sealed }.to_vec()
}

/// Opens a ServerInfo box from `server_public` with the client's private
/// key.
pub fn open_server_info(
    client_private: &[u8; 32],
    server_public: &PublicKey,
    sealed: &[u8],
) -> Result<ServerInfo, DerpError> {
    if sealed.len() > NONCE_LEN + BOX_TAG_LEN + MAX_INFO_LEN {
        return Err(DerpError::Malformed {
            frame_type: FrameType::SERVER_INFO,
            what: "longer than 1 MiB",
        });
    }
    let json = open(client_private, server_public, sealed)?;
    serde_json::from_slice(&json).map_err(|e| DerpError::Json {
        what: "ServerInfo",
        detail: e.to_string(),
    })
}

/// The client's upgrade request for `host` (the DERP node's `HostName`,
/// as Go sends it; characters that cannot be in a header are dropped).
pub fn upgrade_request(host: &str) -> Vec<u8> {
    let host: String = host.chars().filter(|c| c.is_ascii_graphic()).collect();
    format!(
        "GET {DERP_PATH} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: inferadb-mesh\r\n\
         Upgrade: {UPGRADE_PROTOCOL}\r\nConnection: Upgrade\r\n\r\n"
    )
    .into_bytes()
}

/// Longest upgrade response head a client reads.
pub const MAX_UPGRADE_HEAD: usize = 8 << 10;

/// A `101` answer to the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeResponse {
    /// Bytes of the head (through the blank line); frames start after it.
    pub head_len: usize,
    /// `Derp-Public-Key`, when present and well formed.
    pub server_key: Option<PublicKey>,
    /// `Derp-Version`, when present and a number.
    pub version: Option<u32>,
}

/// Reads the server's answer to [`upgrade_request`] from the start of
/// `buf`: `Ok(None)` until the whole head is in, an error for anything but
/// `101` (like Go's client, only the status is required).
pub fn parse_upgrade_response(buf: &[u8]) -> Result<Option<UpgradeResponse>, DerpError> {
    let window = &buf[..buf.len().min(MAX_UPGRADE_HEAD)];
    let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() >= MAX_UPGRADE_HEAD {
            return Err(DerpError::Upgrade("response head too long".into()));
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&window[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.splitn(3, ' ');
    let proto = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !proto.starts_with("HTTP/1.") || code != "101" {
        let shown: String = status
            .chars()
            .filter(|c| !c.is_control())
            .take(80)
            .collect();
        return Err(DerpError::Upgrade(format!("status line {shown:?}")));
    }
    let mut resp = UpgradeResponse {
        head_len: end + 4,
        server_key: None,
        version: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case(PUBLIC_KEY_HEADER) {
            resp.server_key = hex::decode(value)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(PublicKey::from_bytes);
        } else if name.trim().eq_ignore_ascii_case(VERSION_HEADER) {
            resp.version = value.parse().ok();
        }
    }
    Ok(Some(resp))
}
