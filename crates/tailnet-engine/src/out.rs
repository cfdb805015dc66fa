//! Datagrams for the UDP socket, encrypted straight into one buffer so
//! runs of equal-size datagrams to one destination can leave as one GSO
//! send without another copy.

use std::net::SocketAddr;

/// Datagrams waiting to be sent, back to back in one buffer.
#[derive(Debug, Default)]
pub struct Outgoing {
    buf: Vec<u8>,
    items: Vec<(SocketAddr, usize, usize)>,
}

impl Outgoing {
    /// Lets `fill` write one datagram of at most `max_len` bytes for `dest`
    /// in place; it returns the length written, or None to write nothing.
    pub fn push_with(
        &mut self,
        dest: SocketAddr,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) {
        let start = self.buf.len();
        self.buf.resize(start + max_len, 0);
        match fill(&mut self.buf[start..]) {
            Some(n) if n <= max_len => {
                self.buf.truncate(start + n);
                self.items.push((dest, start, n));
            }
            _ => self.buf.truncate(start),
        }
    }

    /// Queues a copy of `data` for `dest`.
    pub fn push(&mut self, dest: SocketAddr, data: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(data);
        self.items.push((dest, start, data.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The datagram queued last.
    pub fn last(&self) -> Option<&[u8]> {
        let (_, start, len) = *self.items.last()?;
        self.buf.get(start..start + len)
    }

    /// The queued datagrams, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.items
            .iter()
            .filter_map(|&(dest, start, len)| Some((dest, self.buf.get(start..start + len)?)))
    }

    /// Drops the datagrams whose destination fails `keep` (their bytes
    /// stay in the buffer until it is cleared; runs are re-formed around
    /// the gaps).
    pub fn retain(&mut self, mut keep: impl FnMut(&SocketAddr) -> bool) {
        self.items.retain(|(dest, _, _)| keep(dest));
    }

    /// The datagrams as (destination, start, length) in [`Outgoing::bytes`].
    pub fn items(&self) -> &[(SocketAddr, usize, usize)] {
        &self.items
    }

    /// The buffer the datagrams sit in, back to back.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets the first datagram.
    pub fn remove_first(&mut self) {
        if !self.items.is_empty() {
            self.items.remove(0);
        }
        if self.items.is_empty() {
            self.buf.clear();
        }
    }

    /// Forgets every datagram (after they were sent).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }
}
