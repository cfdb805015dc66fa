use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Connection caps: at most `max` connections at once, at most `per_ip`
/// from one source address. Hold the [`ConnPermit`] for the connection's
/// life; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnGate {
    max: usize,
    per_ip: usize,
    state: Mutex<GateState>,
    counters: GateCounters,
}

#[derive(Debug, Default)]
struct GateState {
    open: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// What a [`ConnGate`] refused.
#[derive(Debug, Default)]
pub struct GateCounters {
    /// Refused because `max` connections were open.
    pub refused_total: AtomicU64,
    /// Refused because the source had `per_ip` connections open.
    pub refused_per_ip: AtomicU64,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The global cap.
    Total,
    /// The per-source cap.
    PerIp,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Total => "connection cap reached",
            Refused::PerIp => "per-source connection cap reached",
        })
    }
}

/// One admitted connection.
#[derive(Debug)]
pub struct ConnPermit {
    gate: Arc<ConnGate>,
    ip: Option<IpAddr>,
}

impl ConnGate {
    /// A gate admitting `max` connections, `per_ip` per source (both at
    /// least 1).
    pub fn new(max: usize, per_ip: usize) -> Arc<Self> {
        Arc::new(ConnGate {
            max: max.max(1),
            per_ip: per_ip.max(1),
            state: Mutex::new(GateState::default()),
            counters: GateCounters::default(),
        })
    }

    /// Admits a connection from `ip` (`None`: a source with no address,
    /// e.g. a Unix socket, only the global cap applies).
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnPermit, Refused> {
        let mut s = self.state.lock();
        if s.open >= self.max {
            self.counters.refused_total.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Total);
        }
        if let Some(ip) = ip {
            let n = s.by_ip.entry(ip).or_insert(0);
            if *n >= self.per_ip {
                self.counters.refused_per_ip.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::PerIp);
            }
            *n += 1;
        }
        s.open += 1;
        Ok(ConnPermit {
            gate: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.state.lock().open
    }

    /// Refusal counters.
    pub fn counters(&self) -> &GateCounters {
        &self.counters
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut s = self.gate.state.lock();
        s.open = s.open.saturating_sub(1);
        if let Some(ip) = self.ip {
            if let Some(n) = s.by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    s.by_ip.remove(&ip);
                }
            }
        }
    }
}
