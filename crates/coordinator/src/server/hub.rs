//! The in-memory half of the coordinator: which nodes have a map stream
//! open, and the change events every stream turns into deltas.
//!
//! A node is online while it has a stream. A second stream from the same
//! node replaces the first: [`Hub::join`] closes the old one, and the old
//! one's [`Hub::leave`] then finds it is no longer current, so the node
//! does not go offline in between.
//!
//! Events are published after the store was written, and
//! [`Hub::publish_node`] reads the node and sends it under one lock, so two
//! concurrent writers can never leave peers with the older version last.

use crate::nodes::{Node, NodeId};
use crate::{Store, StoreError};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{broadcast, oneshot};

/// Events a stream can fall behind by before it resynchronises from the
/// store (a full `Peers` list) instead of replaying them.
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;

/// A change peers must hear about.
#[derive(Debug, Clone)]
pub enum HubEvent {
    /// The node was added or changed (as now stored).
    Changed(Arc<Node>),
    /// The node was deleted.
    Removed(NodeId),
    /// The node's stream opened (`true`) or closed (`false`) at `at`.
    Online {
        /// The node.
        id: NodeId,
        /// Whether it now has a stream.
        online: bool,
        /// When that happened (its new last-seen time).
        at: SystemTime,
    },
    /// The packet-filter policy was replaced: every stream recomputes its
    /// node's filter.
    PolicyChanged,
    /// Another process (the admin CLI) changed the database: every stream
    /// sends its node and the complete peer list again from the store, and
    /// ends if its node was deleted or expired.
    StoreChanged,
}

struct Session {
    generation: u64,
    close: oneshot::Sender<()>,
}

/// Connected streams and the change broadcast.
pub struct Hub {
    sessions: Mutex<HashMap<NodeId, Session>>,
    next_generation: AtomicU64,
    events: broadcast::Sender<HubEvent>,
    /// Serialises read-then-send in [`publish_node`](Self::publish_node).
    publish: Mutex<()>,
    /// Serialises a stream's join/leave with its store write, so the
    /// store's online flag ends as the hub's.
    pub(crate) transitions: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("connected", &self.connected())
            .finish_non_exhaustive()
    }
}

/// A joined stream's ticket: its generation and the signal that a newer
/// stream of the same node replaced it.
#[derive(Debug)]
pub struct Membership {
    /// Which stream of the node this is.
    pub generation: u64,
    /// Resolves when the stream must close (replaced, or the hub dropped).
    pub closed: oneshot::Receiver<()>,
}

impl Hub {
    /// A hub whose streams may fall `capacity` events behind.
    pub fn new(capacity: usize) -> Self {
        let (events, _) = broadcast::channel(capacity.max(16));
        Hub {
            sessions: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            events,
            publish: Mutex::new(()),
            transitions: tokio::sync::Mutex::new(()),
        }
    }

    /// Events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<HubEvent> {
        self.events.subscribe()
    }

    /// Records a new stream for `id`, closing the node's previous stream.
    pub fn join(&self, id: NodeId) -> Membership {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = oneshot::channel();
        let old = self
            .sessions
            .lock()
            .insert(id, Session { generation, close });
        if let Some(old) = old {
            let _ = old.close.send(());
        }
        Membership { generation, closed }
    }

    /// Forgets the stream `generation` of `id`. Returns whether it was the
    /// node's current stream (then the node is now offline).
    pub fn leave(&self, id: NodeId, generation: u64) -> bool {
        let mut sessions = self.sessions.lock();
        match sessions.get(&id) {
            Some(s) if s.generation == generation => {
                sessions.remove(&id);
                true
            }
            _ => false,
        }
    }

    /// Whether `id` has a stream open.
    pub fn is_connected(&self, id: NodeId) -> bool {
        self.sessions.lock().contains_key(&id)
    }

    /// How many nodes have a stream open.
    pub fn connected(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Closes the stream of `id`, if any (the node was removed).
    pub fn disconnect(&self, id: NodeId) {
        if let Some(s) = self.sessions.lock().remove(&id) {
            let _ = s.close.send(());
        }
    }

    /// Reads node `id` from `store` and tells every stream: as changed, or
    /// as removed if it is gone. Blocking (one SQLite read).
    pub fn publish_node(&self, store: &Store, id: NodeId) -> Result<(), StoreError> {
        let _order = self.publish.lock();
        let event = match store.node(id)? {
            Some(n) => HubEvent::Changed(Arc::new(n)),
            None => HubEvent::Removed(id),
        };
        // No receivers is fine: nobody is streaming.
        let _ = self.events.send(event);
        Ok(())
    }

    /// Tells every stream that `id` is gone.
    pub fn publish_removed(&self, id: NodeId) {
        let _order = self.publish.lock();
        let _ = self.events.send(HubEvent::Removed(id));
    }

    /// Tells every stream that the packet-filter policy changed.
    pub fn publish_policy_changed(&self) {
        let _order = self.publish.lock();
        let _ = self.events.send(HubEvent::PolicyChanged);
    }

    /// Tells every stream to resynchronise from the store.
    pub fn publish_store_changed(&self) {
        let _order = self.publish.lock();
        let _ = self.events.send(HubEvent::StoreChanged);
    }

    /// Tells every stream that `id` came online or went offline at `at`.
    pub fn publish_online(&self, id: NodeId, online: bool, at: SystemTime) {
        let _order = self.publish.lock();
        let _ = self.events.send(HubEvent::Online { id, online, at });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_stream_replaces_the_first() {
        let hub = Hub::new(16);
        let first = hub.join(NodeId(1));
        let second = hub.join(NodeId(1));
        assert!(
            first.closed.await.is_ok(),
            "the first stream is told to close"
        );
        assert!(!hub.leave(NodeId(1), first.generation), "stale leave");
        assert!(hub.is_connected(NodeId(1)));
        assert!(hub.leave(NodeId(1), second.generation));
        assert!(!hub.is_connected(NodeId(1)));
        assert_eq!(hub.connected(), 0);
    }

    #[tokio::test]
    async fn events_reach_subscribers() {
        let hub = Hub::new(16);
        let mut rx = hub.subscribe();
        hub.publish_removed(NodeId(3));
        hub.publish_online(NodeId(2), true, SystemTime::UNIX_EPOCH);
        assert!(matches!(rx.recv().await, Ok(HubEvent::Removed(NodeId(3)))));
        assert!(matches!(
            rx.recv().await,
            Ok(HubEvent::Online {
                id: NodeId(2),
                online: true,
                ..
            })
        ));
    }
}
