//! One streaming `/machine/map` long poll (control.md §7): the full first
//! message, keep-alives, and a delta for every hub event, until the client
//! goes away, a newer stream of the same node replaces it, or the server
//! shuts down. While it runs the node is online.

use super::hub::HubEvent;
use super::mapper::{self, is_visible_peer};
use super::{blocking, until_shutdown, Shared};
use crate::nodes::{Node, NodeId};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tailnet_wire::control::{Compression, FilterRule, MapResponse, MapStreamEncoder};
use tokio::sync::{broadcast, mpsc};
use tokio::time::{sleep_until, Instant};

/// How long a frame may wait for a client that does not read before the
/// stream is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a stream ended (for the log).
#[derive(Debug)]
enum End {
    ClientGone,
    Replaced,
    Shutdown,
    NodeRemoved,
    /// Its key expired (`coordinator nodes expire`, or its expiry passed):
    /// it was sent its node with the expiry, then the stream closed.
    NodeExpired,
    Failed(String),
}

struct Stream {
    shared: Arc<Shared>,
    id: NodeId,
    tx: mpsc::Sender<Bytes>,
    encoder: MapStreamEncoder,
    /// Peers the client has been told about (to turn "changed" into
    /// "removed" when a peer's key expires, and to resync).
    known: BTreeSet<NodeId>,
    /// The last packet filter sent.
    filter: Vec<FilterRule>,
}

/// Most queued events merged into one map message.
const MAX_BATCH: usize = 512;

pub(crate) fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() || max.is_zero() {
        return Duration::ZERO;
    }
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(u64::from_le_bytes(b) % nanos)
}

/// Runs the stream of node `id`, writing frames into `tx`.
pub async fn run_stream(
    shared: Arc<Shared>,
    id: NodeId,
    compression: Compression,
    tx: mpsc::Sender<Bytes>,
) {
    // Subscribe before reading the snapshot: nothing published after the
    // snapshot can be missed (a duplicate is harmless).
    let events = shared.hub.subscribe();
    let membership = {
        let _t = shared.hub.transitions.lock().await;
        let m = shared.hub.join(id);
        let now = SystemTime::now();
        let s = shared.clone();
        match blocking(move || s.store.set_online(id, true, now)).await {
            Ok(Ok(_)) => shared.hub.publish_online(id, true, now),
            Ok(Err(e)) => tracing::warn!(node = id.0, error = %e, "coordinator: marking online"),
            Err(e) => tracing::warn!(node = id.0, error = %e, "coordinator: marking online"),
        }
        m
    };
    shared
        .counters
        .streams_opened
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(node = id.0, "coordinator: map stream opened");
    let mut stream = Stream {
        shared: shared.clone(),
        id,
        tx,
        encoder: MapStreamEncoder::new(compression),
        known: BTreeSet::new(),
        filter: Vec::new(),
    };
    let end = stream.run(events, membership.closed).await;
    match &end {
        End::Failed(why) => tracing::warn!(node = id.0, %why, "coordinator: map stream failed"),
        _ => tracing::info!(node = id.0, why = ?end, "coordinator: map stream closed"),
    }

    let _t = shared.hub.transitions.lock().await;
    if shared.hub.leave(id, membership.generation) {
        let now = SystemTime::now();
        let s = shared.clone();
        match blocking(move || s.store.set_online(id, false, now)).await {
            Ok(Ok(_)) => shared.hub.publish_online(id, false, now),
            // Removed meanwhile: peers were told already.
            Ok(Err(crate::StoreError::NodeNotFound(_))) => {}
            Ok(Err(e)) => tracing::warn!(node = id.0, error = %e, "coordinator: marking offline"),
            Err(e) => tracing::warn!(node = id.0, error = %e, "coordinator: marking offline"),
        }
    }
}

impl Stream {
    async fn run(
        &mut self,
        mut events: broadcast::Receiver<HubEvent>,
        mut closed: tokio::sync::oneshot::Receiver<()>,
    ) -> End {
        if let Err(end) = self.send_full().await {
            return end;
        }
        let (every, spread) = (
            self.shared.config.keepalive,
            self.shared.config.keepalive_jitter,
        );
        let mut shutdown = self.shared.shutdown.clone();
        let mut next_keepalive = Instant::now() + every + jitter(spread);
        loop {
            let result = tokio::select! {
                _ = &mut closed => return End::Replaced,
                _ = self.tx.closed() => return End::ClientGone,
                _ = until_shutdown(&mut shutdown) => return End::Shutdown,
                _ = sleep_until(next_keepalive) => {
                    next_keepalive = Instant::now() + every + jitter(spread);
                    self.send(&MapResponse::keep_alive()).await
                }
                ev = events.recv() => match ev {
                    Ok(ev) => self.on_events(ev, &mut events).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(node = self.id.0, missed = n, "coordinator: stream resync");
                        self.resync().await
                    }
                    Err(broadcast::error::RecvError::Closed) => return End::Shutdown,
                },
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    async fn send(&mut self, msg: &MapResponse) -> Result<(), End> {
        let frame = self
            .encoder
            .encode_message(msg)
            .map_err(|e| End::Failed(e.to_string()))?;
        match tokio::time::timeout(SEND_TIMEOUT, self.tx.send(Bytes::from(frame))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::ClientGone),
            Err(_) => Err(End::Failed("client stopped reading".into())),
        }
    }

    async fn nodes(&self) -> Result<Vec<Node>, End> {
        let s = self.shared.clone();
        match blocking(move || s.store.nodes()).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(End::Failed(e.to_string())),
            Err(e) => Err(End::Failed(e.to_string())),
        }
    }

    async fn send_full(&mut self) -> Result<(), End> {
        let nodes = self.nodes().await?;
        let now = SystemTime::now();
        let me = nodes
            .iter()
            .find(|n| n.id == self.id)
            .ok_or(End::NodeRemoved)?;
        if me.key_expired(now) {
            return self.end_expired(me).await;
        }
        let filter = self.shared.policy().packet_filter_for(me, &nodes);
        let msg = mapper::full_map(me, &nodes, filter.clone(), &self.shared.ctx, now);
        self.known = msg.peers.iter().map(|p| NodeId(p.id)).collect();
        self.filter = filter;
        self.send(&msg).await
    }

    /// After missing events: the complete peer list again (or, with no
    /// peers left, the removal of every peer the client knew).
    async fn resync(&mut self) -> Result<(), End> {
        let nodes = self.nodes().await?;
        let now = SystemTime::now();
        let me = nodes
            .iter()
            .find(|n| n.id == self.id)
            .ok_or(End::NodeRemoved)?;
        if me.key_expired(now) {
            return self.end_expired(me).await;
        }
        let mut msg = mapper::self_changed(me, &self.shared.ctx.base_domain);
        msg.peers = mapper::peers(self.id, &nodes, &self.shared.ctx.base_domain, now);
        let now_known: BTreeSet<NodeId> = msg.peers.iter().map(|p| NodeId(p.id)).collect();
        if msg.peers.is_empty() {
            msg.peers_removed = self.known.iter().map(|i| i.0).collect();
        }
        self.known = now_known;
        self.refilter(&mut msg, &nodes);
        self.send(&msg).await
    }

    /// Tells the client its node (with the expiry that has passed, so it
    /// knows to log in again), then ends the stream.
    async fn end_expired(&mut self, me: &Node) -> Result<(), End> {
        let msg = mapper::self_changed(me, &self.shared.ctx.base_domain);
        self.send(&msg).await?;
        Err(End::NodeExpired)
    }

    /// Adds the packet filter to `msg` when the policy gives a different
    /// one now.
    fn refilter(&mut self, msg: &mut MapResponse, nodes: &[Node]) {
        let Some(me) = nodes.iter().find(|n| n.id == self.id) else {
            return;
        };
        let filter = self.shared.policy().packet_filter_for(me, nodes);
        if filter != self.filter {
            self.filter = filter.clone();
            msg.packet_filter = Some(filter);
        }
    }

    /// Handles `first` and every event already queued behind it (up to
    /// [`MAX_BATCH`]) as one message: when many nodes come online at once
    /// (a coordinator restart, a fleet rolling out) each stream sends a few
    /// merged messages instead of one per node.
    async fn on_events(
        &mut self,
        first: HubEvent,
        events: &mut broadcast::Receiver<HubEvent>,
    ) -> Result<(), End> {
        let mut batch: Option<MapResponse> = None;
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(ev) = next.take() {
            handled += 1;
            if matches!(ev, HubEvent::StoreChanged) {
                // A full resync supersedes every delta batched so far.
                return self.resync().await;
            }
            if let Some(msg) = self.event_message(ev).await? {
                match batch.as_mut() {
                    Some(b) => mapper::merge_delta(b, msg),
                    None => batch = Some(msg),
                }
            }
            if handled >= MAX_BATCH {
                break;
            }
            match events.try_recv() {
                Ok(ev) => next = Some(ev),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    tracing::debug!(node = self.id.0, missed = n, "coordinator: stream resync");
                    return self.resync().await;
                }
                Err(_) => {}
            }
        }
        let Some(mut msg) = batch else {
            return Ok(());
        };
        if self.shared.policy().depends_on_peers() && msg.packet_filter.is_none() {
            let nodes = self.nodes().await?;
            self.refilter(&mut msg, &nodes);
        }
        self.send(&msg).await
    }

    /// The delta one event means for this stream, if any.
    async fn event_message(&mut self, ev: HubEvent) -> Result<Option<MapResponse>, End> {
        let base = &self.shared.ctx.base_domain;
        let msg = match ev {
            HubEvent::Changed(node) if node.id == self.id => {
                if node.key_expired(SystemTime::now()) {
                    return self.end_expired(&node).await.map(|()| None);
                }
                mapper::self_changed(&node, base)
            }
            HubEvent::Changed(node) => {
                if is_visible_peer(self.id, &node, SystemTime::now()) {
                    self.known.insert(node.id);
                    mapper::peer_changed(&node, base)
                } else if self.known.remove(&node.id) {
                    mapper::peers_removed(vec![node.id])
                } else {
                    return Ok(None);
                }
            }
            HubEvent::Removed(id) if id == self.id => return Err(End::NodeRemoved),
            HubEvent::Removed(id) => {
                if !self.known.remove(&id) {
                    return Ok(None);
                }
                mapper::peers_removed(vec![id])
            }
            HubEvent::Online { id, online, at } => {
                if !self.known.contains(&id) {
                    return Ok(None);
                }
                mapper::peer_online(id, online, at)
            }
            // Handled by `on_events` (a resync).
            HubEvent::StoreChanged => return Ok(None),
            HubEvent::PolicyChanged => {
                let nodes = self.nodes().await?;
                let mut msg = MapResponse::default();
                self.refilter(&mut msg, &nodes);
                if msg.packet_filter.is_none() {
                    return Ok(None);
                }
                msg
            }
        };
        Ok(Some(msg))
    }
}
