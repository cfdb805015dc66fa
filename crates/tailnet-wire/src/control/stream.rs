//! The map stream's framing: each message is a 4-byte **little-endian**
//! length, then that many bytes of payload; the payload is zstd-compressed
//! JSON when the `MapRequest` said `"Compress":"zstd"` (Go 1.90.9 always
//! does, and always decodes zstd), plain JSON otherwise
//! (`control/controlclient/direct.go` L1073-1100, `decodeMsg` L1246;
//! testcontrol `sendMapMsg` L1238, which refuses messages over 16 MiB).
//!
//! zstd: we use the `zstd` crate (C libzstd, built by `zstd-sys` with the
//! machine's C compiler; it builds here). `ruzstd` (pure Rust) was the
//! fallback had it not. Decompression is streamed with a cap, and the
//! decoder's window is limited to the decompressed-size cap, so a hostile
//! frame cannot make us allocate more than the limits allow.

use std::io::Read;

/// Compression of map frame payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain JSON (`"Compress":""`).
    None,
    /// zstd (`"Compress":"zstd"`).
    Zstd,
}

impl Compression {
    /// The compression a `MapRequest.Compress` value asks for (`"zstd"`
    /// → zstd; anything else → none).
    pub fn from_request(compress: &str) -> Self {
        if compress == "zstd" {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Size limits of one map frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Most payload bytes on the wire (after the 4-byte length).
    pub max_wire: usize,
    /// Most bytes of JSON after decompression.
    pub max_decoded: usize,
}

impl FrameLimits {
    /// 16 MiB on the wire (testcontrol's cap), 64 MiB decompressed.
    pub const DEFAULT: FrameLimits = FrameLimits {
        max_wire: 16 << 20,
        max_decoded: 64 << 20,
    };
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why the map stream cannot go on. Every decoder error is final: the
/// decoder keeps returning it (the Go client drops the poll on any error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapStreamError {
    /// A frame header announced more payload bytes than allowed.
    #[error("map frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload decompresses to more bytes than allowed.
    #[error("map frame decompresses to more than {max} bytes")]
    DecodedTooLarge {
        /// The limit.
        max: usize,
    },
    /// The payload is not valid zstd.
    #[error("map frame is not valid zstd: {0}")]
    Zstd(String),
    /// The stream ended inside a frame.
    #[error("map stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the unfinished frame.
        buffered: usize,
    },
}

/// Why a frame cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapEncodeError {
    /// The JSON is larger than the decoded-size limit.
    #[error("map message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// JSON length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The encoded payload is larger than the wire limit.
    #[error("encoded map frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Payload length after compression.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// zstd failed.
    #[error("zstd compression failed: {0}")]
    Zstd(String),
    /// The message could not be serialized.
    #[error("map message does not serialize: {0}")]
    Json(String),
}

/// Splits a map stream into frames and decompresses them, sans-IO: push
/// body chunks as they arrive ([`push`](Self::push)), then take every
/// complete frame ([`next_frame`](Self::next_frame)) until it returns
/// `Ok(None)`.
///
/// Memory: the decoder holds what was pushed and not yet taken. If the
/// caller drains after each push, that is at most one unfinished frame
/// (whose announced size was already checked against the limit) plus one
/// chunk.
#[derive(Debug)]
pub struct MapStreamDecoder {
    compression: Compression,
    limits: FrameLimits,
    buf: Vec<u8>,
    /// Consumed bytes at the front of `buf`.
    start: usize,
    failed: Option<MapStreamError>,
}

impl MapStreamDecoder {
    /// A decoder with [`FrameLimits::DEFAULT`].
    pub fn new(compression: Compression) -> Self {
        Self::with_limits(compression, FrameLimits::DEFAULT)
    }

    /// A decoder with the given limits.
    pub fn with_limits(compression: Compression, limits: FrameLimits) -> Self {
        MapStreamDecoder {
            compression,
            limits,
            buf: Vec::new(),
            start: 0,
            failed: None,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> FrameLimits {
        self.limits
    }

    /// Bytes pushed and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends a chunk of the response body. Bytes pushed after an error
    /// are dropped.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame's payload (decompressed JSON), `Ok(None)`
    /// if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, MapStreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let pending = &self.buf[self.start..];
        let Some(header) = pending.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*header) as usize;
        if len > self.limits.max_wire {
            return Err(self.fail(MapStreamError::FrameTooLarge {
                len,
                max: self.limits.max_wire,
            }));
        }
        let Some(payload) = pending.get(4..4 + len) else {
            return Ok(None);
        };
        let decoded = match self.compression {
            Compression::None if len > self.limits.max_decoded => {
                Err(MapStreamError::DecodedTooLarge {
                    max: self.limits.max_decoded,
                })
            }
            Compression::None => Ok(payload.to_vec()),
            Compression::Zstd => zstd_decode(payload, self.limits.max_decoded),
        };
        self.start += 4 + len;
        // Give memory back once the front of the buffer is mostly consumed.
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        match decoded {
            Ok(d) => Ok(Some(d)),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Call when the body has ended: an error if it ended inside a frame
    /// (or the stream had already failed).
    pub fn finish(&self) -> Result<(), MapStreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(MapStreamError::Truncated { buffered }),
        }
    }

    fn fail(&mut self, e: MapStreamError) -> MapStreamError {
        self.buf = Vec::new();
        self.start = 0;
        self.failed = Some(e.clone());
        e
    }
}

/// Decompresses one or more concatenated zstd frames, refusing output
/// beyond `max` bytes.
fn zstd_decode(payload: &[u8], max: usize) -> Result<Vec<u8>, MapStreamError> {
    let zerr = |e: std::io::Error| MapStreamError::Zstd(e.to_string());
    let mut dec = zstd::stream::read::Decoder::with_buffer(payload).map_err(zerr)?;
    // The window never needs to exceed the output we accept; zstd's
    // minimum window log is 10 and its default cap 27.
    let window_log = usize::BITS - max.max(1).saturating_sub(1).leading_zeros();
    dec.window_log_max(window_log.clamp(10, 27)).map_err(zerr)?;
    let mut out = Vec::new();
    let cap = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    dec.take(cap).read_to_end(&mut out).map_err(zerr)?;
    if out.len() > max {
        return Err(MapStreamError::DecodedTooLarge { max });
    }
    Ok(out)
}

/// Frames map messages for the coordinator's side of the stream.
pub struct MapStreamEncoder {
    compression: Compression,
    limits: FrameLimits,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl std::fmt::Debug for MapStreamEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapStreamEncoder")
            .field("compression", &self.compression)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl MapStreamEncoder {
    /// zstd level used for map frames (zstd's default).
    pub const ZSTD_LEVEL: i32 = 3;

    /// An encoder with [`FrameLimits::DEFAULT`].
    pub fn new(compression: Compression) -> Self {
        Self::with_limits(compression, FrameLimits::DEFAULT)
    }

    /// An encoder with the given limits.
    pub fn with_limits(compression: Compression, limits: FrameLimits) -> Self {
        MapStreamEncoder {
            compression,
            limits,
            zstd: None,
        }
    }

    /// Appends one frame holding `json` to `out`.
    pub fn encode_into(&mut self, json: &[u8], out: &mut Vec<u8>) -> Result<(), MapEncodeError> {
        if json.len() > self.limits.max_decoded {
            return Err(MapEncodeError::MessageTooLarge {
                len: json.len(),
                max: self.limits.max_decoded,
            });
        }
        let compressed;
        let payload = match self.compression {
            Compression::None => json,
            Compression::Zstd => {
                let zerr = |e: std::io::Error| MapEncodeError::Zstd(e.to_string());
                let c = match &mut self.zstd {
                    Some(c) => c,
                    None => self
                        .zstd
                        .insert(zstd::bulk::Compressor::new(Self::ZSTD_LEVEL).map_err(zerr)?),
                };
                compressed = c.compress(json).map_err(zerr)?;
                &compressed[..]
            }
        };
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|_| payload.len() <= self.limits.max_wire)
            .ok_or(MapEncodeError::FrameTooLarge {
                len: payload.len(),
                max: self.limits.max_wire,
            })?;
        out.reserve(4 + payload.len());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(payload);
        Ok(())
    }

    /// One frame holding `json`.
    pub fn encode(&mut self, json: &[u8]) -> Result<Vec<u8>, MapEncodeError> {
        let mut out = Vec::new();
        self.encode_into(json, &mut out)?;
        Ok(out)
    }

    /// One frame holding `msg` serialized as JSON.
    pub fn encode_message<T: serde::Serialize>(
        &mut self,
        msg: &T,
    ) -> Result<Vec<u8>, MapEncodeError> {
        let json = serde_json::to_vec(msg).map_err(|e| MapEncodeError::Json(e.to_string()))?;
        self.encode(&json)
    }
}
