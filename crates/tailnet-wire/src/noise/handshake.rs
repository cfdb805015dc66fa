//! The two handshake messages: initiation (client → server) and response
//! (server → client), or an error frame instead of the response.

use super::{
    low_order, prologue, Transport, HEADER_LEN, INITIATION_HEADER_LEN, INITIATION_LEN,
    MSG_TYPE_ERROR, MSG_TYPE_INITIATION, MSG_TYPE_RESPONSE, PROTOCOL_NAME, RESPONSE_LEN, TAG_LEN,
};
use crate::key::PublicKey;
use zeroize::Zeroizing;

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The initiation is not exactly 101 bytes long.
    #[error("handshake initiation must be {INITIATION_LEN} bytes, got {0}")]
    InitiationSize(usize),
    /// The message type byte is not the one this step expects.
    #[error("unexpected handshake message type {0}")]
    UnexpectedType(u8),
    /// The header's length field is not the message's fixed payload length.
    #[error("handshake message length field is {found}, want {expected}")]
    Length {
        /// The payload length this message type has.
        expected: usize,
        /// The value in the header.
        found: usize,
    },
    /// The reply given to [`ClientHandshake::finish`] is shorter than its
    /// header says.
    #[error("handshake reply is incomplete: {got} of {needed} bytes")]
    Truncated {
        /// Bytes the frame needs (3 while the header is incomplete).
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// Bytes follow the reply frame: they are transport records and belong
    /// to the [`Transport`] (see [`reply_len`]).
    #[error("{0} bytes follow the handshake reply; pass them to the transport")]
    TrailingBytes(usize),
    /// The server sent an error frame instead of a response. The text is
    /// neither encrypted nor authenticated: a hint for logs, nothing more.
    #[error("server refused the handshake: {0:?}")]
    Refused(String),
    /// A handshake tag did not verify: wrong keys, another protocol version
    /// in the prologue, or tampering.
    #[error("handshake message failed to authenticate")]
    Decrypt,
    /// A peer's public key is a low-order point (its Diffie-Hellman result is
    /// all zeros), which Go refuses too.
    #[error("peer public key has low order")]
    LowOrderKey,
    /// The Noise library failed for a reason no input causes (e.g. the
    /// operating system's random source).
    #[error("noise handshake: {0}")]
    Internal(String),
}

impl HandshakeError {
    /// The text Go's server sends in an error frame (see [`error_frame`])
    /// for this failure, if it sends one: only for the checks before any
    /// cryptography. Cryptographic failures close the connection silently.
    pub fn refusal_text(&self) -> Option<&'static str> {
        match self {
            HandshakeError::InitiationSize(_) => Some("wrong handshake initiation size"),
            HandshakeError::UnexpectedType(_) => Some("unexpected handshake message type"),
            HandshakeError::Length { .. } => Some("wrong handshake initiation length"),
            _ => None,
        }
    }
}

fn internal(e: snow::Error) -> HandshakeError {
    match e {
        snow::Error::Decrypt => HandshakeError::Decrypt,
        other => HandshakeError::Internal(other.to_string()),
    }
}

fn builder<'a>() -> Result<snow::Builder<'a>, HandshakeError> {
    // A constant name snow supports: this never fails, but stays total.
    let params = PROTOCOL_NAME.parse().map_err(internal)?;
    Ok(snow::Builder::new(params))
}

/// An unauthenticated error frame as Go's server sends it in place of the
/// response: type `0x03`, BE u16 length, the text (cut to 65535 bytes).
pub fn error_frame(text: &str) -> Vec<u8> {
    let text = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(HEADER_LEN + text.len());
    out.push(MSG_TYPE_ERROR);
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text);
    out
}

/// How long the server's reply frame at the start of `buf` is: `Ok(None)`
/// until its 3-byte header is there, then the whole frame's length (51 for
/// a response, 3 + text length for an error frame). Read until `buf` holds
/// that many bytes, give exactly those to [`ClientHandshake::finish`], and
/// the bytes after them to the [`Transport`]: the server may send records
/// in the same segment.
pub fn reply_len(buf: &[u8]) -> Result<Option<usize>, HandshakeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([header[1], header[2]]));
    match header[0] {
        MSG_TYPE_RESPONSE if len == RESPONSE_LEN - HEADER_LEN => Ok(Some(RESPONSE_LEN)),
        MSG_TYPE_RESPONSE => Err(HandshakeError::Length {
            expected: RESPONSE_LEN - HEADER_LEN,
            found: len,
        }),
        MSG_TYPE_ERROR => Ok(Some(HEADER_LEN + len)),
        other => Err(HandshakeError::UnexpectedType(other)),
    }
}

/// The client's side of a handshake between sending the initiation and
/// reading the reply.
pub struct ClientHandshake {
    hs: snow::HandshakeState,
    machine_private: Zeroizing<[u8; 32]>,
    control_public: [u8; 32],
    protocol_version: u16,
}

impl std::fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandshake")
            .field(
                "control_public",
                &PublicKey::from_bytes(self.control_public),
            )
            .field("protocol_version", &self.protocol_version)
            .finish_non_exhaustive()
    }
}

impl ClientHandshake {
    /// Starts a handshake with the control server whose Noise key (`/key`'s
    /// `publicKey`) is `control_public`, as the machine `machine_private`.
    /// Returns the state to finish with and the 101-byte initiation: BE u16
    /// `protocol_version` (the capability version, 130 for Go v1.90.9),
    /// type `0x01`, BE u16 length 96, then the Noise message (ephemeral key,
    /// encrypted machine key, tag).
    ///
    /// Fails with [`HandshakeError::LowOrderKey`] for a low-order (e.g. all
    /// zero) control key, as Go does.
    pub fn start(
        machine_private: [u8; 32],
        control_public: [u8; 32],
        protocol_version: u16,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        Self::start_inner(machine_private, control_public, protocol_version, None)
    }

    /// [`start`](Self::start) with a chosen ephemeral private key, for test
    /// vectors and fuzzing only: reusing an ephemeral key breaks the
    /// handshake's security.
    #[doc(hidden)]
    pub fn start_with_fixed_ephemeral_for_testing(
        machine_private: [u8; 32],
        control_public: [u8; 32],
        protocol_version: u16,
        ephemeral_private: [u8; 32],
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        Self::start_inner(
            machine_private,
            control_public,
            protocol_version,
            Some(&ephemeral_private),
        )
    }

    fn start_inner(
        machine_private: [u8; 32],
        control_public: [u8; 32],
        protocol_version: u16,
        ephemeral_private: Option<&[u8; 32]>,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let machine_private = Zeroizing::new(machine_private);
        if low_order(&machine_private, &control_public) {
            return Err(HandshakeError::LowOrderKey);
        }
        let prologue = prologue(protocol_version);
        let mut b = builder()?
            .local_private_key(&machine_private[..])
            .and_then(|b| b.remote_public_key(&control_public))
            .and_then(|b| b.prologue(&prologue))
            .map_err(internal)?;
        if let Some(e) = ephemeral_private {
            b = b.fixed_ephemeral_key_for_testing_only(e);
        }
        let mut hs = b.build_initiator().map_err(internal)?;

        let mut msg = vec![0u8; INITIATION_LEN];
        msg[0..2].copy_from_slice(&protocol_version.to_be_bytes());
        msg[2] = MSG_TYPE_INITIATION;
        msg[3..5].copy_from_slice(&((INITIATION_LEN - INITIATION_HEADER_LEN) as u16).to_be_bytes());
        let n = hs
            .write_message(&[], &mut msg[INITIATION_HEADER_LEN..])
            .map_err(internal)?;
        if n != INITIATION_LEN - INITIATION_HEADER_LEN {
            return Err(HandshakeError::Internal(format!(
                "initiation payload is {n} bytes, want 96"
            )));
        }
        Ok((
            ClientHandshake {
                hs,
                machine_private,
                control_public,
                protocol_version,
            },
            msg,
        ))
    }

    /// The protocol version this handshake announced.
    pub fn protocol_version(&self) -> u16 {
        self.protocol_version
    }

    /// Completes the handshake with the server's reply frame: exactly the
    /// [`reply_len`] bytes, a 51-byte response or an error frame
    /// ([`HandshakeError::Refused`]). Returns the transport; its peer is the
    /// control key.
    pub fn finish(mut self, reply: &[u8]) -> Result<Transport, HandshakeError> {
        let needed = reply_len(reply)?.ok_or(HandshakeError::Truncated {
            needed: HEADER_LEN,
            got: reply.len(),
        })?;
        if reply.len() < needed {
            return Err(HandshakeError::Truncated {
                needed,
                got: reply.len(),
            });
        }
        if reply.len() > needed {
            return Err(HandshakeError::TrailingBytes(reply.len() - needed));
        }
        if reply[0] == MSG_TYPE_ERROR {
            let text = String::from_utf8_lossy(&reply[HEADER_LEN..]).into_owned();
            return Err(HandshakeError::Refused(text));
        }
        let mut server_ephemeral = [0u8; 32];
        server_ephemeral.copy_from_slice(&reply[HEADER_LEN..HEADER_LEN + 32]);
        if low_order(&self.machine_private, &server_ephemeral) {
            return Err(HandshakeError::LowOrderKey);
        }
        let mut payload = [0u8; TAG_LEN];
        let n = self
            .hs
            .read_message(&reply[HEADER_LEN..], &mut payload)
            .map_err(internal)?;
        if n != 0 || !self.hs.is_handshake_finished() {
            return Err(HandshakeError::Internal(
                "response did not finish the handshake".into(),
            ));
        }
        let hash = handshake_hash(&self.hs)?;
        let (c2s, s2c) = self.hs.dangerously_get_raw_split();
        let (c2s, s2c) = (Zeroizing::new(c2s), Zeroizing::new(s2c));
        Ok(Transport::new(
            &c2s,
            &s2c,
            PublicKey::from_bytes(self.control_public),
            self.protocol_version,
            hash,
        ))
    }
}

fn handshake_hash(hs: &snow::HandshakeState) -> Result<[u8; 32], HandshakeError> {
    hs.get_handshake_hash()
        .try_into()
        .map_err(|_| HandshakeError::Internal("handshake hash is not 32 bytes".into()))
}

/// The coordinator's side of a handshake. It needs no state between
/// messages: one call answers an initiation.
#[derive(Debug)]
pub struct ServerHandshake(());

impl ServerHandshake {
    /// Answers the client's 101-byte `initiation` (decoded from the
    /// [`HANDSHAKE_HEADER`](super::HANDSHAKE_HEADER)) as the control server
    /// with Noise key `control_private`. Returns the 51-byte response to
    /// write after the `101` reply, the transport, the client's machine
    /// public key (authenticated by the handshake: compare it with the
    /// node's `Machine`) and the client's protocol version.
    ///
    /// Any version is accepted here, as in Go; the caller decides which it
    /// serves. For the failures Go answers with an error frame,
    /// [`HandshakeError::refusal_text`] gives the text to send with
    /// [`error_frame`].
    pub fn respond(
        control_private: [u8; 32],
        initiation: &[u8],
    ) -> Result<(Vec<u8>, Transport, PublicKey, u16), HandshakeError> {
        Self::respond_inner(control_private, initiation, None)
    }

    /// [`respond`](Self::respond) with a chosen ephemeral private key, for
    /// test vectors and fuzzing only.
    #[doc(hidden)]
    pub fn respond_with_fixed_ephemeral_for_testing(
        control_private: [u8; 32],
        initiation: &[u8],
        ephemeral_private: [u8; 32],
    ) -> Result<(Vec<u8>, Transport, PublicKey, u16), HandshakeError> {
        Self::respond_inner(control_private, initiation, Some(&ephemeral_private))
    }

    fn respond_inner(
        control_private: [u8; 32],
        initiation: &[u8],
        ephemeral_private: Option<&[u8; 32]>,
    ) -> Result<(Vec<u8>, Transport, PublicKey, u16), HandshakeError> {
        let control_private = Zeroizing::new(control_private);
        // Go's order: size, type, length; then the cryptography.
        if initiation.len() != INITIATION_LEN {
            return Err(HandshakeError::InitiationSize(initiation.len()));
        }
        let version = u16::from_be_bytes([initiation[0], initiation[1]]);
        if initiation[2] != MSG_TYPE_INITIATION {
            return Err(HandshakeError::UnexpectedType(initiation[2]));
        }
        let len = usize::from(u16::from_be_bytes([initiation[3], initiation[4]]));
        if len != INITIATION_LEN - INITIATION_HEADER_LEN {
            return Err(HandshakeError::Length {
                expected: INITIATION_LEN - INITIATION_HEADER_LEN,
                found: len,
            });
        }
        let noise = &initiation[INITIATION_HEADER_LEN..];
        let mut client_ephemeral = [0u8; 32];
        client_ephemeral.copy_from_slice(&noise[..32]);
        if low_order(&control_private, &client_ephemeral) {
            return Err(HandshakeError::LowOrderKey);
        }

        let prologue = prologue(version);
        let mut b = builder()?
            .local_private_key(&control_private[..])
            .and_then(|b| b.prologue(&prologue))
            .map_err(internal)?;
        if let Some(e) = ephemeral_private {
            b = b.fixed_ephemeral_key_for_testing_only(e);
        }
        let mut hs = b.build_responder().map_err(internal)?;
        let mut payload = [0u8; TAG_LEN];
        let n = hs.read_message(noise, &mut payload).map_err(internal)?;
        if n != 0 {
            return Err(HandshakeError::Internal(
                "initiation carried a payload".into(),
            ));
        }
        let machine: [u8; 32] = hs
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| HandshakeError::Internal("no client static key".into()))?;
        if low_order(&control_private, &machine) {
            return Err(HandshakeError::LowOrderKey);
        }

        let mut response = vec![0u8; RESPONSE_LEN];
        response[0] = MSG_TYPE_RESPONSE;
        response[1..3].copy_from_slice(&((RESPONSE_LEN - HEADER_LEN) as u16).to_be_bytes());
        let n = hs
            .write_message(&[], &mut response[HEADER_LEN..])
            .map_err(internal)?;
        if n != RESPONSE_LEN - HEADER_LEN || !hs.is_handshake_finished() {
            return Err(HandshakeError::Internal(
                "response did not finish the handshake".into(),
            ));
        }
        let hash = handshake_hash(&hs)?;
        let (c2s, s2c) = hs.dangerously_get_raw_split();
        let (c2s, s2c) = (Zeroizing::new(c2s), Zeroizing::new(s2c));
        let peer = PublicKey::from_bytes(machine);
        let transport = Transport::new(&s2c, &c2s, peer, version, hash);
        Ok((response, transport, peer, version))
    }
}
