//! Output of a peer process, kept up to a cap: the first half and the last
//! half of the bytes, the middle counted and dropped, so a peer that logs
//! without end (a reconnect loop, a debug log) cannot fill memory or a
//! pipe.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};

/// What a capped log keeps.
#[derive(Debug)]
pub struct CappedLog {
    cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    dropped: u64,
}

impl CappedLog {
    /// A log keeping at most `cap` bytes (half from the start, half from
    /// the end).
    pub fn new(cap: usize) -> Self {
        CappedLog {
            cap,
            head: Vec::new(),
            tail: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Appends `data`.
    pub fn push(&mut self, data: &[u8]) {
        let half = self.cap / 2;
        let room = half.saturating_sub(self.head.len());
        let (h, rest) = data.split_at(room.min(data.len()));
        self.head.extend_from_slice(h);
        for b in rest {
            if self.tail.len() == half {
                self.tail.pop_front();
                self.dropped += 1;
            }
            self.tail.push_back(*b);
        }
    }

    /// What is kept, with a marker line where bytes were dropped.
    pub fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped > 0 {
            s.push_str(&format!("\n[… {} bytes of log dropped …]\n", self.dropped));
        }
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        s.push_str(&String::from_utf8_lossy(&tail));
        s
    }

    /// Bytes dropped from the middle.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// A capped log shared between reader threads and its owner.
pub type SharedLog = Arc<Mutex<CappedLog>>;

/// Reads `r` line by line on a thread of its own until its end, appending
/// each line to `log` and handing it to `on_line` (which runs on that
/// thread, e.g. to note the time a marker appeared). The pipe is always
/// drained, so the process never blocks on a full pipe.
pub fn drain_lines<R, F>(r: R, log: SharedLog, mut on_line: F) -> std::thread::JoinHandle<()>
where
    R: Read + Send + 'static,
    F: FnMut(&str) + Send + 'static,
{
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if let Ok(mut l) = log.lock() {
                l.push(&buf);
            }
            on_line(&String::from_utf8_lossy(&buf));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_and_last_halves_and_counts_the_rest() {
        let mut l = CappedLog::new(8);
        l.push(b"abcd");
        assert_eq!(l.text(), "abcd");
        l.push(b"efghij");
        assert_eq!(l.dropped(), 2);
        assert_eq!(l.text(), "abcd\n[… 2 bytes of log dropped …]\nghij");
    }

    /// A peer that logs without end (tailscale-rs after its control
    /// connection drops) keeps only the cap, its first and last lines.
    #[test]
    fn a_long_log_keeps_its_head_and_tail_within_the_cap() {
        let cap = 256 << 10;
        let mut log = CappedLog::new(cap);
        for i in 0..50_000u32 {
            log.push(format!("line {i}\n").as_bytes());
        }
        assert!(log.head.len() + log.tail.len() <= cap);
        let text = log.text();
        assert!(text.starts_with("line 0\n"));
        assert!(text.ends_with("line 49999\n"));
        assert!(log.dropped() > 0 && text.contains("bytes of log dropped"));
    }

    #[test]
    fn drains_every_line_and_sees_each() {
        let log: SharedLog = Arc::new(Mutex::new(CappedLog::new(1 << 20)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let input: &'static [u8] = b"one\ntwo\nthree";
        drain_lines(input, log.clone(), move |line| {
            s.lock().unwrap().push(line.trim_end().to_string())
        })
        .join()
        .unwrap();
        assert_eq!(*seen.lock().unwrap(), ["one", "two", "three"]);
        assert_eq!(log.lock().unwrap().text(), "one\ntwo\nthree");
    }
}
