//! The optional "early payload": the first plaintext a ts2021 server may
//! send inside Noise, before HTTP/2 begins.
//!
//! Layout (Go `control/ts2021/conn.go`): the 5-byte magic `ff ff ff 54 53`
//! (`"\xff\xff\xffTS"`), a BE u32 length (at most 10 MiB), then that many
//! bytes of JSON (`tailcfg.EarlyNoise`, e.g.
//! `{"nodeKeyChallenge":"chalpub:<hex>"}`). The client reads 9 bytes; when
//! they do not start with the magic, they are the first HTTP/2 frame header
//! and go back in front of the stream. So a server may send none (Go's
//! testcontrol does not; Headscale does). Parsing the JSON is the control
//! layer's business: this module hands over its bytes.

/// The magic that starts an early payload.
pub const MAGIC: [u8; 5] = *b"\xff\xff\xffTS";
/// Magic plus length: as long as an HTTP/2 frame header.
pub const HEADER_LEN: usize = 9;
/// The largest payload the Go client accepts (10 MiB).
pub const MAX_LEN: usize = 10 << 20;

/// Why an early payload could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EarlyPayloadError {
    /// The payload is longer than the 10 MiB the client accepts.
    #[error("early payload of {0} bytes exceeds {MAX_LEN}")]
    TooLong(u64),
    /// [`EarlyPayloadReader::push`] was called after it was done.
    #[error("early payload already read")]
    Finished,
}

/// The server's early payload as plaintext: magic, length, `json`. Seal it
/// with the transport before anything else.
pub fn encode(json: &[u8]) -> Result<Vec<u8>, EarlyPayloadError> {
    if json.len() > MAX_LEN {
        return Err(EarlyPayloadError::TooLong(json.len() as u64));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + json.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(json);
    Ok(out)
}

/// What [`EarlyPayloadReader::push`] found so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EarlyPayloadStatus {
    /// Not decided yet: push more plaintext.
    NeedMore,
    /// Decided.
    Done {
        /// The payload's JSON, or None when the server sent none.
        payload: Option<Vec<u8>>,
        /// The plaintext after it: the start of the HTTP/2 stream. Without
        /// an early payload this includes the 9 bytes looked at.
        rest: Vec<u8>,
    },
}

/// The client's reader of the early payload: push the server's first
/// plaintext until it says [`EarlyPayloadStatus::Done`]. It holds at most
/// 9 + 10 MiB bytes.
#[derive(Debug, Default)]
pub struct EarlyPayloadReader {
    buf: Vec<u8>,
    done: bool,
}

impl EarlyPayloadReader {
    /// A reader that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds decrypted bytes from the server.
    pub fn push(&mut self, plaintext: &[u8]) -> Result<EarlyPayloadStatus, EarlyPayloadError> {
        if self.done {
            return Err(EarlyPayloadError::Finished);
        }
        // Take only what the header and a declared payload need, so a large
        // push is not copied twice.
        let mut input = plaintext;
        if self.buf.len() < HEADER_LEN {
            let take = (HEADER_LEN - self.buf.len()).min(input.len());
            self.buf.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.buf.len() < HEADER_LEN {
                return Ok(EarlyPayloadStatus::NeedMore);
            }
            if self.buf[..MAGIC.len()] != MAGIC {
                self.done = true;
                let mut rest = std::mem::take(&mut self.buf);
                rest.extend_from_slice(input);
                return Ok(EarlyPayloadStatus::Done {
                    payload: None,
                    rest,
                });
            }
        }
        let declared = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
        let declared = declared as usize;
        if declared > MAX_LEN {
            self.done = true;
            self.buf = Vec::new();
            return Err(EarlyPayloadError::TooLong(declared as u64));
        }
        let total = HEADER_LEN + declared;
        let take = (total - self.buf.len()).min(input.len());
        self.buf.extend_from_slice(&input[..take]);
        input = &input[take..];
        if self.buf.len() < total {
            return Ok(EarlyPayloadStatus::NeedMore);
        }
        self.done = true;
        let mut payload = std::mem::take(&mut self.buf);
        payload.drain(..HEADER_LEN);
        Ok(EarlyPayloadStatus::Done {
            payload: Some(payload),
            rest: input.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &[u8] = br#"{"nodeKeyChallenge":"chalpub:0000000000000000000000000000000000000000000000000000000000000000"}"#;

    #[test]
    fn encodes_magic_length_json() {
        let p = encode(JSON).unwrap();
        assert_eq!(&p[..5], b"\xff\xff\xffTS");
        assert_eq!(&p[5..9], &(JSON.len() as u32).to_be_bytes());
        assert_eq!(&p[9..], JSON);
        assert!(matches!(
            encode(&vec![b' '; MAX_LEN + 1]),
            Err(EarlyPayloadError::TooLong(_))
        ));
    }

    #[test]
    fn reads_a_payload_byte_by_byte_then_hands_over_http2() {
        let mut wire = encode(JSON).unwrap();
        wire.extend_from_slice(b"\0\0\x12\x04\0\0\0\0\0"); // an h2 SETTINGS header
        let mut r = EarlyPayloadReader::new();
        for (i, b) in wire.iter().enumerate() {
            match r.push(std::slice::from_ref(b)).unwrap() {
                EarlyPayloadStatus::NeedMore => assert!(i < 9 + JSON.len() - 1),
                EarlyPayloadStatus::Done { payload, rest } => {
                    assert_eq!(i, 9 + JSON.len() - 1);
                    assert_eq!(payload.as_deref(), Some(JSON));
                    assert!(rest.is_empty());
                    break;
                }
            }
        }
        assert_eq!(r.push(b"x"), Err(EarlyPayloadError::Finished));

        let mut r = EarlyPayloadReader::new();
        let EarlyPayloadStatus::Done { payload, rest } = r.push(&wire).unwrap() else {
            panic!("whole payload in one push")
        };
        assert_eq!(payload.as_deref(), Some(JSON));
        assert_eq!(rest, b"\0\0\x12\x04\0\0\0\0\0");
    }

    #[test]
    fn no_magic_means_http2_from_the_first_byte() {
        let preface = b"\0\0\x12\x04\0\0\0\0\0\0\x03\0\0\0\x64";
        let mut r = EarlyPayloadReader::new();
        assert_eq!(r.push(&preface[..4]), Ok(EarlyPayloadStatus::NeedMore));
        assert_eq!(
            r.push(&preface[4..]),
            Ok(EarlyPayloadStatus::Done {
                payload: None,
                rest: preface.to_vec()
            })
        );
    }

    #[test]
    fn empty_payload_and_oversize_declaration() {
        let mut r = EarlyPayloadReader::new();
        assert_eq!(
            r.push(&encode(b"").unwrap()),
            Ok(EarlyPayloadStatus::Done {
                payload: Some(vec![]),
                rest: vec![]
            })
        );
        let mut r = EarlyPayloadReader::new();
        let mut hdr = MAGIC.to_vec();
        hdr.extend_from_slice(&((MAX_LEN + 1) as u32).to_be_bytes());
        assert_eq!(
            r.push(&hdr),
            Err(EarlyPayloadError::TooLong(MAX_LEN as u64 + 1))
        );
        let mut r = EarlyPayloadReader::new();
        hdr[5..9].copy_from_slice(&(MAX_LEN as u32).to_be_bytes());
        assert_eq!(r.push(&hdr), Ok(EarlyPayloadStatus::NeedMore));
    }
}
