//! [`NoiseStream`]: Noise records ⇄ a byte stream.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tailnet_wire::noise::{
    EarlyPayloadReader, EarlyPayloadStatus, RecordDecoder, Sealer, Transport, MAX_PLAINTEXT_LEN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the connection per call.
const READ_CHUNK: usize = 16 * 1024;

/// Most plaintext one `poll_write` accepts: 16 records' worth.
const WRITE_CHUNK: usize = 16 * MAX_PLAINTEXT_LEN;

/// Sealed bytes we hold before `poll_write` waits for the connection to
/// drain them.
const MAX_PENDING_OUT: usize = 64 * 1024;

/// A byte stream over an established ts2021 Noise transport.
///
/// Writes are sealed into records of at most 4096 bytes on the wire (the
/// limit of Go's reader, `shared/protocol/control.md` §3); reads open
/// records as they complete. Any record that fails to authenticate, has
/// the wrong type or is oversized ends the stream with
/// [`io::ErrorKind::InvalidData`]; a connection closed in the middle of a
/// record is [`io::ErrorKind::UnexpectedEof`].
#[derive(Debug)]
pub struct NoiseStream<IO> {
    io: IO,
    sealer: Sealer,
    decoder: RecordDecoder,
    /// Opened plaintext not yet handed to the reader, from `plain_pos`.
    plain: Vec<u8>,
    plain_pos: usize,
    raw: Box<[u8]>,
    /// Sealed records not yet written, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    read_eof: bool,
    /// Client side: the server's optional early payload is still to be
    /// recognised and stripped from the first plaintext.
    early: Option<EarlyPayloadReader>,
    /// The early payload's JSON, once seen.
    early_payload: Option<Vec<u8>>,
}

impl<IO> NoiseStream<IO> {
    /// Wraps `io`, whose next bytes in both directions are Noise records
    /// under `transport`.
    pub fn new(transport: Transport, io: IO) -> Self {
        Self::with_plaintext(transport, io, Vec::new())
    }

    /// Like [`new`](Self::new), with `plaintext` already opened from `io`
    /// (for example the bytes left after reading an early payload): the
    /// reader sees them first.
    pub fn with_plaintext(transport: Transport, io: IO, plaintext: Vec<u8>) -> Self {
        let (sealer, decoder) = transport.split();
        NoiseStream {
            io,
            sealer,
            decoder,
            plain: plaintext,
            plain_pos: 0,
            raw: vec![0; READ_CHUNK].into_boxed_slice(),
            out: Vec::new(),
            out_pos: 0,
            read_eof: false,
            early: None,
            early_payload: None,
        }
    }

    /// The client's stream: the server may start with an early payload
    /// (magic `ff ff ff 54 53`, BE length, JSON; `shared/protocol/control.md`
    /// §4), which is taken off the front of the stream before the reader
    /// sees HTTP/2. Without the magic, the first bytes are HTTP/2 as usual.
    pub fn client(transport: Transport, io: IO) -> Self {
        let mut s = Self::new(transport, io);
        s.early = Some(EarlyPayloadReader::new());
        s
    }

    /// The server's early payload JSON, once the reader has passed it.
    pub fn early_payload(&self) -> Option<&[u8]> {
        self.early_payload.as_deref()
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("control noise: {e}"))
}

impl<IO: AsyncWrite + Unpin> NoiseStream<IO> {
    /// Writes sealed bytes until none are pending.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for NoiseStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(early) = this.early.as_mut() {
                if !this.plain.is_empty() {
                    match early.push(&this.plain[this.plain_pos..]).map_err(invalid)? {
                        EarlyPayloadStatus::NeedMore => {
                            this.plain.clear();
                            this.plain_pos = 0;
                        }
                        EarlyPayloadStatus::Done { payload, rest } => {
                            this.early = None;
                            this.early_payload = payload;
                            this.plain = rest;
                            this.plain_pos = 0;
                        }
                    }
                }
            }
            if this.early.is_none() && this.plain_pos < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_pos);
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                if this.plain_pos == this.plain.len() {
                    this.plain.clear();
                    this.plain_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            let mut raw = ReadBuf::new(&mut this.raw);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut raw))?;
            let got = raw.filled().len();
            if got == 0 {
                this.read_eof = true;
                if this.decoder.buffered() > 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "control noise: connection closed inside a record",
                    )));
                }
                return Poll::Ready(Ok(()));
            }
            this.decoder
                .open_into(&this.raw[..got], &mut this.plain)
                .map_err(invalid)?;
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for NoiseStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() - this.out_pos >= MAX_PENDING_OUT {
            ready!(this.poll_drain(cx))?;
        }
        let take = buf.len().min(WRITE_CHUNK);
        this.sealer
            .seal_into(&buf[..take], &mut this.out)
            .map_err(invalid)?;
        // Start the write now; what the socket does not take yet stays
        // pending for the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (Transport, Transport) {
        let a = [7u8; 32];
        let b = [9u8; 32];
        (
            Transport::from_keys_for_testing(a, b),
            Transport::from_keys_for_testing(b, a),
        )
    }

    #[tokio::test]
    async fn large_writes_arrive_intact_in_records_go_accepts() {
        let (ta, tb) = pair();
        let (x, y) = tokio::io::duplex(8192);
        let mut a = NoiseStream::new(ta, x);
        let mut b = NoiseStream::new(tb, y);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let send = data.clone();
        let w = tokio::spawn(async move {
            a.write_all(&send).await.unwrap();
            a.shutdown().await.unwrap();
            a
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        let a = w.await.unwrap();
        // 300,000 bytes need at least ceil(300000 / 4077) records.
        assert!(a.sealer.records_sealed() >= 300_000u64.div_ceil(MAX_PLAINTEXT_LEN as u64));
    }

    #[tokio::test]
    async fn a_tampered_record_ends_the_stream_with_invalid_data() {
        let (ta, tb) = pair();
        let mut sealer = ta.split().0;
        let mut wire = sealer.seal(b"hello").unwrap();
        wire[5] ^= 1;
        let (mut x, y) = tokio::io::duplex(8192);
        x.write_all(&wire).await.unwrap();
        let mut b = NoiseStream::new(tb, y);
        let mut buf = [0u8; 16];
        let err = b.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_connection_closed_inside_a_record_is_unexpected_eof() {
        let (ta, tb) = pair();
        let mut sealer = ta.split().0;
        let wire = sealer.seal(b"hello").unwrap();
        let (mut x, y) = tokio::io::duplex(8192);
        x.write_all(&wire[..wire.len() - 3]).await.unwrap();
        drop(x);
        let mut b = NoiseStream::new(tb, y);
        let mut buf = [0u8; 16];
        let err = b.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn the_client_strips_an_early_payload_and_reads_http2_after_it() {
        let (ta, tb) = pair();
        let mut sealer = ta.split().0;
        let json = br#"{"nodeKeyChallenge":"chalpub:00"}"#;
        let mut plain = tailnet_wire::noise::early::encode(json).unwrap();
        plain.extend_from_slice(b"PRI * HTTP/2.0");
        // Split across records at awkward places.
        let mut wire = Vec::new();
        for chunk in plain.chunks(4) {
            wire.extend(sealer.seal(chunk).unwrap());
        }
        let (mut x, y) = tokio::io::duplex(8192);
        x.write_all(&wire).await.unwrap();
        drop(x);
        let mut b = NoiseStream::client(tb, y);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"PRI * HTTP/2.0");
        assert_eq!(b.early_payload(), Some(&json[..]));

        // Without the magic nothing is taken away.
        let (ta, tb) = pair();
        let mut sealer = ta.split().0;
        let (mut x, y) = tokio::io::duplex(8192);
        x.write_all(&sealer.seal(b"\0\0\x12\x04\0\0\0\0\0rest").unwrap())
            .await
            .unwrap();
        drop(x);
        let mut b = NoiseStream::client(tb, y);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"\0\0\x12\x04\0\0\0\0\0rest");
        assert_eq!(b.early_payload(), None);
    }
}
