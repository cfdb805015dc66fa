//! Transport records after the handshake.
//!
//! A record is type `0x04`, a BE u16 ciphertext length, then the
//! ChaCha20-Poly1305 ciphertext (plaintext + 16-byte tag, no associated
//! data), at most [`MAX_RECORD_LEN`] bytes in all. Each direction has its
//! own key and a counter from 0; the 12-byte nonce is 4 zero bytes and the
//! counter as a **big-endian** u64 (standard Noise puts it little-endian).
//! The counter value `u64::MAX` is never used, as in Go.

use super::{HEADER_LEN, MAX_PLAINTEXT_LEN, MAX_RECORD_LEN, MSG_TYPE_RECORD, TAG_LEN};
use crate::key::PublicKey;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};
use std::fmt;

/// Why records could not be sealed or opened. Every error from a
/// [`RecordDecoder`] is final: the stream is out of step, and the decoder
/// answers [`RecordError::Closed`] from then on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A header's type byte is not `0x04`.
    #[error("unexpected message type {0} in the transport, want 4")]
    UnexpectedType(u8),
    /// A header announces a record longer than 4096 bytes on the wire.
    #[error("record of {0} bytes exceeds the {MAX_RECORD_LEN}-byte limit")]
    Oversize(usize),
    /// A record did not authenticate (wrong key, wrong nonce, tampering, or
    /// shorter than a tag).
    #[error("record failed to authenticate")]
    BadTag,
    /// The counter reached `u64::MAX`: no more records under this key.
    #[error("record nonces exhausted for this key")]
    NonceExhausted,
    /// The AEAD refused to seal (it cannot for record-sized input).
    #[error("record sealing failed")]
    SealFailed,
    /// An earlier error ended this decoder.
    #[error("transport closed by an earlier error")]
    Closed,
}

/// The 12-byte nonce for `counter`: 4 zero bytes, then the counter
/// big-endian.
pub(crate) fn record_nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// The sending half: turns plaintext into records.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    next_nonce: u64,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("next_nonce", &self.next_nonce)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    fn new(key: &[u8; 32]) -> Self {
        Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
            next_nonce: 0,
        }
    }

    /// Seals `plaintext` into as many records as it needs (4077 plaintext
    /// bytes each) and returns their wire bytes. Empty input gives no
    /// record, like Go's `Write`.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::new();
        self.seal_into(plaintext, &mut out)?;
        Ok(out)
    }

    /// [`seal`](Self::seal), appending to `out`. Either every record is
    /// appended or, on error, none.
    pub fn seal_into(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        let records = plaintext.len().div_ceil(MAX_PLAINTEXT_LEN);
        if records as u64 > u64::MAX - self.next_nonce {
            return Err(RecordError::NonceExhausted);
        }
        let start = out.len();
        out.reserve(plaintext.len() + records * (HEADER_LEN + TAG_LEN));
        for chunk in plaintext.chunks(MAX_PLAINTEXT_LEN) {
            if let Err(e) = self.seal_record(chunk, out) {
                out.truncate(start);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Appends exactly one record holding `chunk` (at most 4077 bytes; may
    /// be empty: Go's reader accepts empty records, its writer never sends
    /// them).
    pub(crate) fn seal_record(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        debug_assert!(chunk.len() <= MAX_PLAINTEXT_LEN);
        if self.next_nonce == u64::MAX {
            return Err(RecordError::NonceExhausted);
        }
        let start = out.len();
        out.push(MSG_TYPE_RECORD);
        out.extend_from_slice(&((chunk.len() + TAG_LEN) as u16).to_be_bytes());
        out.extend_from_slice(chunk);
        let nonce = Nonce::from(record_nonce(self.next_nonce));
        match self
            .cipher
            .encrypt_in_place_detached(&nonce, &[], &mut out[start + HEADER_LEN..])
        {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                self.next_nonce += 1;
                Ok(())
            }
            Err(_) => {
                out.truncate(start);
                Err(RecordError::SealFailed)
            }
        }
    }

    /// How many records this half has sealed (the next nonce counter).
    pub fn records_sealed(&self) -> u64 {
        self.next_nonce
    }

    #[cfg(test)]
    pub(crate) fn set_next_nonce(&mut self, n: u64) {
        self.next_nonce = n;
    }
}

/// The receiving half: takes bytes from the connection in chunks of any
/// size and yields the plaintext of every complete record. It holds at
/// most one incomplete record (under 4096 bytes) between calls.
pub struct RecordDecoder {
    cipher: ChaCha20Poly1305,
    next_nonce: u64,
    partial: Vec<u8>,
    closed: bool,
}

impl fmt::Debug for RecordDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordDecoder")
            .field("next_nonce", &self.next_nonce)
            .field("buffered", &self.partial.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// The whole record length a complete 3-byte header announces.
fn record_len(header: &[u8]) -> Result<usize, RecordError> {
    if header[0] != MSG_TYPE_RECORD {
        return Err(RecordError::UnexpectedType(header[0]));
    }
    let total = HEADER_LEN + usize::from(u16::from_be_bytes([header[1], header[2]]));
    if total > MAX_RECORD_LEN {
        return Err(RecordError::Oversize(total));
    }
    Ok(total)
}

impl RecordDecoder {
    fn new(key: &[u8; 32]) -> Self {
        RecordDecoder {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
            next_nonce: 0,
            partial: Vec::new(),
            closed: false,
        }
    }

    /// Feeds `chunk` (any number of bytes as read from the connection) and
    /// returns the plaintext of the records it completes.
    pub fn open(&mut self, chunk: &[u8]) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::new();
        self.open_into(chunk, &mut out)?;
        Ok(out)
    }

    /// [`open`](Self::open), appending plaintext to `out`. On error, `out`
    /// keeps the plaintext of the authenticated records before the bad one.
    pub fn open_into(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        if self.closed {
            return Err(RecordError::Closed);
        }
        let r = self.open_inner(chunk, out);
        if r.is_err() {
            self.closed = true;
            self.partial = Vec::new();
        }
        r
    }

    fn open_inner(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        // Complete the record left over from the last call.
        if !self.partial.is_empty() {
            if self.partial.len() < HEADER_LEN {
                let take = (HEADER_LEN - self.partial.len()).min(chunk.len());
                self.partial.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                if self.partial.len() < HEADER_LEN {
                    return Ok(());
                }
            }
            let total = record_len(&self.partial)?;
            let take = (total - self.partial.len()).min(chunk.len());
            self.partial.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.partial.len() < total {
                return Ok(());
            }
            let record = std::mem::take(&mut self.partial);
            self.open_record(&record[HEADER_LEN..], out)?;
            self.partial = record;
            self.partial.clear();
        }
        // Whole records straight from the chunk, then keep the remainder.
        loop {
            if chunk.len() < HEADER_LEN {
                self.partial.extend_from_slice(chunk);
                return Ok(());
            }
            let total = record_len(chunk)?;
            if chunk.len() < total {
                self.partial.extend_from_slice(chunk);
                return Ok(());
            }
            self.open_record(&chunk[HEADER_LEN..total], out)?;
            chunk = &chunk[total..];
        }
    }

    fn open_record(&mut self, ciphertext: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        if self.next_nonce == u64::MAX {
            return Err(RecordError::NonceExhausted);
        }
        let Some(body_len) = ciphertext.len().checked_sub(TAG_LEN) else {
            return Err(RecordError::BadTag);
        };
        let (body, tag) = ciphertext.split_at(body_len);
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| RecordError::BadTag)?;
        let start = out.len();
        out.extend_from_slice(body);
        let nonce = Nonce::from(record_nonce(self.next_nonce));
        if self
            .cipher
            .decrypt_in_place_detached(&nonce, &[], &mut out[start..], &Tag::from(tag))
            .is_err()
        {
            out.truncate(start);
            return Err(RecordError::BadTag);
        }
        self.next_nonce += 1;
        Ok(())
    }

    /// Bytes of an incomplete record held until more arrive.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// How many records this half has opened (the next nonce counter).
    pub fn records_opened(&self) -> u64 {
        self.next_nonce
    }

    /// True once an error has ended this decoder.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    #[cfg(test)]
    pub(crate) fn set_next_nonce(&mut self, n: u64) {
        self.next_nonce = n;
    }
}

/// An established ts2021 connection's cryptographic state, both
/// directions. Feed it what the socket reads ([`open`](Self::open)) and
/// write what it seals ([`seal`](Self::seal)); [`split`](Self::split) gives
/// the halves to separate reader and writer tasks.
pub struct Transport {
    sealer: Sealer,
    decoder: RecordDecoder,
    peer: PublicKey,
    protocol_version: u16,
    handshake_hash: [u8; 32],
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("peer", &self.peer)
            .field("protocol_version", &self.protocol_version)
            .field("sealer", &self.sealer)
            .field("decoder", &self.decoder)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub(crate) fn new(
        tx_key: &[u8; 32],
        rx_key: &[u8; 32],
        peer: PublicKey,
        protocol_version: u16,
        handshake_hash: [u8; 32],
    ) -> Self {
        Transport {
            sealer: Sealer::new(tx_key),
            decoder: RecordDecoder::new(rx_key),
            peer,
            protocol_version,
            handshake_hash,
        }
    }

    /// A transport from raw direction keys, without a handshake: for
    /// fuzzing the record layer only (a handshake costs a dozen X25519
    /// operations per input). Never use it on a connection.
    #[doc(hidden)]
    pub fn from_keys_for_testing(tx_key: [u8; 32], rx_key: [u8; 32]) -> Self {
        Transport::new(&tx_key, &rx_key, PublicKey::from_bytes([0; 32]), 0, [0; 32])
    }

    /// See [`Sealer::seal`].
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, RecordError> {
        self.sealer.seal(plaintext)
    }

    /// See [`Sealer::seal_into`].
    pub fn seal_into(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        self.sealer.seal_into(plaintext, out)
    }

    /// See [`RecordDecoder::open`].
    pub fn open(&mut self, chunk: &[u8]) -> Result<Vec<u8>, RecordError> {
        self.decoder.open(chunk)
    }

    /// See [`RecordDecoder::open_into`].
    pub fn open_into(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        self.decoder.open_into(chunk, out)
    }

    /// The peer's static key: the control key on the client, the client's
    /// machine key on the server.
    pub fn peer(&self) -> PublicKey {
        self.peer
    }

    /// The protocol (capability) version from the initiation.
    pub fn protocol_version(&self) -> u16 {
        self.protocol_version
    }

    /// The Noise handshake hash, equal on both sides; binds other messages
    /// to this connection.
    pub fn handshake_hash(&self) -> [u8; 32] {
        self.handshake_hash
    }

    /// The sending half.
    pub fn sealer(&mut self) -> &mut Sealer {
        &mut self.sealer
    }

    /// The receiving half.
    pub fn decoder(&mut self) -> &mut RecordDecoder {
        &mut self.decoder
    }

    /// Splits into the sending and the receiving half.
    pub fn split(self) -> (Sealer, RecordDecoder) {
        (self.sealer, self.decoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Transport, Transport) {
        let peer = PublicKey::from_bytes([9; 32]);
        let a = Transport::new(&[1; 32], &[2; 32], peer, 130, [0; 32]);
        let b = Transport::new(&[2; 32], &[1; 32], peer, 130, [0; 32]);
        (a, b)
    }

    #[test]
    fn record_sizes_at_the_limit() {
        let (mut a, mut b) = pair();
        let wire = a.seal(&[7u8; MAX_PLAINTEXT_LEN]).unwrap();
        assert_eq!(wire.len(), MAX_RECORD_LEN, "4077 bytes fill one record");
        assert_eq!(&wire[..3], &[4, 0x0f, 0xfd], "length 4093 big-endian");
        assert_eq!(b.open(&wire).unwrap(), vec![7u8; MAX_PLAINTEXT_LEN]);

        let wire = a.seal(&[8u8; MAX_PLAINTEXT_LEN + 1]).unwrap();
        assert_eq!(wire.len(), MAX_RECORD_LEN + HEADER_LEN + 1 + TAG_LEN);
        assert_eq!(&wire[MAX_RECORD_LEN..MAX_RECORD_LEN + 3], &[4, 0, 17]);
        assert_eq!(b.open(&wire).unwrap(), vec![8u8; MAX_PLAINTEXT_LEN + 1]);
        assert_eq!(a.sealer.records_sealed(), 3);
        assert_eq!(b.decoder.records_opened(), 3);
    }

    #[test]
    fn empty_input_seals_nothing_but_empty_records_open() {
        let (mut a, mut b) = pair();
        assert!(a.seal(&[]).unwrap().is_empty());
        let mut wire = Vec::new();
        a.sealer.seal_record(&[], &mut wire).unwrap();
        assert_eq!(wire.len(), HEADER_LEN + TAG_LEN);
        a.seal_into(b"x", &mut wire).unwrap();
        assert_eq!(b.open(&wire).unwrap(), b"x");
        assert_eq!(b.decoder.records_opened(), 2);
    }

    #[test]
    fn oversize_and_wrong_type_are_refused_from_the_header() {
        let (_, mut b) = pair();
        // 3 + 4094 = 4097 on the wire: refused before any body arrives.
        assert_eq!(b.open(&[4, 0x0f, 0xfe]), Err(RecordError::Oversize(4097)));
        assert_eq!(b.open(&[4, 0, 16]), Err(RecordError::Closed));

        let (_, mut b) = pair();
        assert_eq!(b.open(&[4, 0x0f]), Ok(vec![]));
        assert_eq!(b.open(&[0xff]), Err(RecordError::Oversize(3 + 0x0fff)));

        let (_, mut b) = pair();
        assert_eq!(
            b.open(b"HTTP/1.1 400"),
            Err(RecordError::UnexpectedType(b'H'))
        );
        let (_, mut b) = pair();
        assert_eq!(b.open(&[2, 0, 48]), Err(RecordError::UnexpectedType(2)));
    }

    #[test]
    fn short_and_tampered_records_fail() {
        let (mut a, mut b) = pair();
        assert_eq!(b.open(&[4, 0, 15]), Ok(vec![]));
        assert_eq!(b.open(&[0; 15]), Err(RecordError::BadTag));

        let (_, mut b2) = pair();
        let mut wire = a.seal(b"hello").unwrap();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        assert_eq!(b2.open(&wire), Err(RecordError::BadTag));
        assert!(b2.decoder.is_closed());
        assert_eq!(b2.open(&[]), Err(RecordError::Closed));
    }

    #[test]
    fn plaintext_before_a_bad_record_is_kept() {
        let (mut a, mut b) = pair();
        let mut wire = a.seal(b"good").unwrap();
        let mut bad = a.seal(b"evil").unwrap();
        bad[5] ^= 0x80;
        wire.extend_from_slice(&bad);
        let mut out = Vec::new();
        assert_eq!(b.open_into(&wire, &mut out), Err(RecordError::BadTag));
        assert_eq!(out, b"good");
    }

    #[test]
    fn nonce_exhaustion_is_an_error_both_ways() {
        let (mut a, mut b) = pair();
        a.sealer.set_next_nonce(u64::MAX - 1);
        b.decoder.set_next_nonce(u64::MAX - 1);
        // Two records would need nonce u64::MAX: nothing is sealed.
        let mut out = Vec::new();
        assert_eq!(
            a.seal_into(&[0u8; MAX_PLAINTEXT_LEN + 1], &mut out),
            Err(RecordError::NonceExhausted)
        );
        assert!(out.is_empty());
        let wire = a.seal(b"last").unwrap();
        assert_eq!(b.open(&wire).unwrap(), b"last");
        assert_eq!(a.seal(b"one more"), Err(RecordError::NonceExhausted));
        // The peer refuses a record at u64::MAX even if it were valid.
        let mut forged = Transport::new(&[1; 32], &[2; 32], a.peer(), 130, [0; 32]);
        forged.sealer.set_next_nonce(u64::MAX);
        assert_eq!(forged.seal(b"x"), Err(RecordError::NonceExhausted));
        assert_eq!(b.open(&[4, 0, 16]), Ok(vec![]));
        assert_eq!(b.open(&[0; 16]), Err(RecordError::NonceExhausted));
    }

    #[test]
    fn split_halves_keep_working() {
        let (a, b) = pair();
        let (mut tx, _) = a.split();
        let (_, mut rx) = b.split();
        let wire = tx.seal(b"half").unwrap();
        assert_eq!(rx.open(&wire).unwrap(), b"half");
        assert!(format!("{tx:?}{rx:?}").contains("next_nonce: 1"));
    }
}
