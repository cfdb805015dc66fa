use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A byte stream that fails with [`io::ErrorKind::TimedOut`] once neither
/// direction made progress for `timeout`: a peer that stops reading and
/// writing cannot hold the connection. Reads and writes keep their own
/// timers (they may be polled from different tasks after a split) over a
/// shared "last progress" instant.
#[derive(Debug)]
pub struct IdleIo<IO> {
    inner: IO,
    timeout: Duration,
    last: Instant,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
}

impl<IO> IdleIo<IO> {
    /// Wraps `inner`; the clock starts now.
    pub fn new(inner: IO, timeout: Duration) -> Self {
        let now = Instant::now();
        IdleIo {
            inner,
            timeout,
            last: now,
            read_timer: Box::pin(tokio::time::sleep_until(now + timeout)),
            write_timer: Box::pin(tokio::time::sleep_until(now + timeout)),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.inner
    }
}

fn expired(
    last: Instant,
    timeout: Duration,
    timer: &mut Pin<Box<Sleep>>,
    cx: &mut Context<'_>,
) -> bool {
    let deadline = last + timeout;
    if Instant::now() >= deadline {
        return true;
    }
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    // Registers the waker; fires only at the deadline.
    timer.as_mut().poll(cx).is_ready() && Instant::now() >= deadline
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle too long")
}

impl<IO: AsyncRead + Unpin> AsyncRead for IdleIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if expired(this.last, this.timeout, &mut this.read_timer, cx) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for IdleIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if expired(this.last, this.timeout, &mut this.write_timer, cx) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if expired(this.last, this.timeout, &mut this.write_timer, cx) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => {
                if expired(this.last, this.timeout, &mut this.write_timer, cx) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
            r => r,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
