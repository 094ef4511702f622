//! One writer task per next hop, each with a bounded queue.

use std::sync::Arc;

use leak_protocol::Packet;
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::shared::{REQUEST_TIMEOUT, Shared};
use crate::{queue::Pushed, relay::DropReason, safelog::Sensitive, wire};

/// Queues `packet` on the link to `peer`, starting a writer if needed.
pub(super) fn send_to(shared: &Arc<Shared>, peer: PeerId, packet: Packet) {
    if peer == shared.local_peer {
        // A path may pass through this node twice; skip the network.
        match shared.inbound.push(peer, packet) {
            Pushed::Queued | Pushed::QueuedEvictedOther => {
                shared.metrics.packets_forwarded.inc();
            }
            _ => shared.drop_packet(DropReason::QueueFull),
        }
        return;
    }
    let mut links = shared.links.lock().unwrap_or_else(|e| e.into_inner());
    let sender = links.entry(peer).or_insert_with(|| {
        let (tx, rx) = mpsc::channel(shared.config.limits.link_queue);
        tokio::spawn(write_link(peer, rx, shared.clone()));
        tx
    });
    match sender.try_send(packet) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => shared.drop_packet(DropReason::LinkCongested),
        Err(mpsc::error::TrySendError::Closed(packet)) => {
            // The writer ended (link failed); start a fresh one.
            let (tx, rx) = mpsc::channel(shared.config.limits.link_queue);
            let _ = tx.try_send(packet);
            tokio::spawn(write_link(peer, rx, shared.clone()));
            links.insert(peer, tx);
        }
    }
}

async fn open_packet_stream(shared: &Arc<Shared>, peer: PeerId) -> Option<libp2p::Stream> {
    let mut control = shared
        .control
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match tokio::time::timeout(
        REQUEST_TIMEOUT,
        control.open_stream(peer, wire::PACKET_PROTOCOL),
    )
    .await
    {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %Sensitive::new(e), "cannot open a link to the next hop");
            None
        }
        Err(_) => None,
    }
}

/// Writes packets to one next hop over a long-lived stream, reopening it once
/// if it fails; when the hop is unreachable the queued packets are dropped.
/// Ends when the node stops, even while dialling a hop that is gone (a
/// dial waits up to [`REQUEST_TIMEOUT`]): the node's shutdown waits for
/// every task holding its state, and a node that keeps sending (its loops)
/// always has links in flight.
async fn write_link(peer: PeerId, mut rx: mpsc::Receiver<Packet>, shared: Arc<Shared>) {
    let mut stopping = shared.stopping.clone();
    let stopped = tokio::select! {
        _ = stopping.wait_for(|stop| *stop) => true,
        () = carry(peer, &mut rx, &shared) => false,
    };
    if stopped {
        rx.close();
        while rx.try_recv().is_ok() {
            shared.drop_packet(DropReason::Shutdown);
        }
    }
    drop(rx);
    let mut links = shared.links.lock().unwrap_or_else(|e| e.into_inner());
    if links.get(&peer).is_some_and(mpsc::Sender::is_closed) {
        links.remove(&peer);
    }
}

/// The packets of one link, written in order until the queue closes or the
/// hop cannot be reached.
async fn carry(peer: PeerId, rx: &mut mpsc::Receiver<Packet>, shared: &Arc<Shared>) {
    let mut stream = open_packet_stream(shared, peer).await;
    while let Some(packet) = rx.recv().await {
        let mut sent = false;
        for _attempt in 0..2 {
            if stream.is_none() {
                stream = open_packet_stream(shared, peer).await;
            }
            let Some(s) = stream.as_mut() else {
                break;
            };
            if wire::write_packet(s, &packet).await.is_ok() {
                sent = true;
                break;
            }
            stream = None;
        }
        if sent {
            shared.metrics.packets_forwarded.inc();
        } else {
            shared.drop_packet(DropReason::NextHopUnreachable);
            // Drain what is queued for this dead link rather than retrying
            // each; close first so nothing slips in uncounted.
            rx.close();
            while rx.try_recv().is_ok() {
                shared.drop_packet(DropReason::NextHopUnreachable);
            }
            return;
        }
    }
}
