//! Inbound streams: packets into the fair queue; directory and mailbox
//! requests, bounded in number and time.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use leak_protocol::sphinx::MailboxId;
use libp2p::PeerId;
use tokio::sync::{Semaphore, watch};

use super::shared::{REQUEST_TIMEOUT, Shared};
use crate::{net, queue::Pushed, relay::DropReason, safelog::Sensitive, wire};

/// Most concurrent inbound packet streams per peer.
const MAX_PACKET_STREAMS_PER_PEER: usize = 2;
/// Most concurrent directory requests, and mailbox exchanges, being served.
const MAX_CONCURRENT_REQUESTS: usize = 32;
/// Most mailbox streams one peer may hold open (a sender's agent keeps one
/// to its guard, and opens another when it thinks the first one died).
const MAX_MAILBOX_STREAMS_PER_PEER: usize = 2;
/// How long a mailbox stream may wait for its next request before the node
/// ends it (agents poll every 20 s on average; one that waited longer
/// opens a new stream).
const MAILBOX_IDLE: Duration = Duration::from_secs(300);

/// Open inbound streams of one kind, per peer, with a cap: a slot is taken
/// by [`StreamCounts::try_take`] and given back when dropped.
#[derive(Debug, Default, Clone)]
pub(super) struct StreamCounts(Arc<Mutex<HashMap<PeerId, usize>>>);

impl StreamCounts {
    /// A slot for one more stream of `peer`, unless it holds `max` already.
    fn try_take(&self, peer: PeerId, max: usize) -> Option<StreamSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(peer).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            counts: self.clone(),
            peer,
        })
    }
}

/// One open stream counted in a [`StreamCounts`].
pub(super) struct StreamSlot {
    counts: StreamCounts,
    peer: PeerId,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

pub(super) async fn accept_packets(
    mut incoming: net::Incoming,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (peer, stream) = tokio::select! {
            _ = shutdown.changed() => return,
            next = incoming.recv() => match next {
                Some(next) => next,
                None => return,
            },
        };
        let Some(slot) = shared
            .inbound_streams
            .try_take(peer, MAX_PACKET_STREAMS_PER_PEER)
        else {
            shared.drop_packet(DropReason::TooManyStreams);
            continue;
        };
        tokio::spawn(read_packets(peer, stream, shared.clone(), slot));
    }
}

async fn read_packets(
    peer: PeerId,
    mut stream: libp2p::Stream,
    shared: Arc<Shared>,
    _slot: StreamSlot,
) {
    let mut buf = Box::new([0u8; leak_protocol::PACKET_LEN]);
    loop {
        match wire::read_packet_with(&mut stream, &mut buf).await {
            Ok(Some(packet)) => {
                shared.metrics.packets_received.inc();
                shared.count_received(&peer);
                match shared.inbound.push(peer, packet) {
                    Pushed::Queued => {}
                    Pushed::QueuedEvictedOther => shared.drop_packet(DropReason::QueueFull),
                    Pushed::DroppedPeerFull => shared.drop_packet(DropReason::PeerQueueFull),
                    Pushed::Closed => break,
                }
                shared.metrics.queue_depth.set(shared.inbound.len() as i64);
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %Sensitive::new(e), "a packet stream ended");
                break;
            }
        }
    }
}

/// Serves each request stream of one protocol with `handle`, at most
/// [`MAX_CONCURRENT_REQUESTS`] at once (streams beyond that are dropped),
/// each within [`REQUEST_TIMEOUT`].
async fn serve_requests<F, Fut>(
    mut incoming: net::Incoming,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
    handle: F,
) where
    F: Fn(PeerId, libp2p::Stream) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    loop {
        let (peer, stream) = tokio::select! {
            _ = shutdown.changed() => return,
            next = incoming.recv() => match next { Some(n) => n, None => return },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let request = handle(peer, stream);
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(Err(e)) = tokio::time::timeout(REQUEST_TIMEOUT, request).await {
                tracing::debug!(error = %Sensitive::new(e), "a {what} request failed");
            }
        });
    }
}

pub(super) async fn serve_directories(
    incoming: net::Incoming,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    serve_requests(incoming, shutdown, "directory", move |peer, mut stream| {
        let shared = shared.clone();
        async move {
            let theirs = wire::read_directory_request(&mut stream).await?;
            let ours = shared.roster.serial();
            // A requester with a newer roster has it to give: ask for it
            // (a newcomer admitted by that roster is otherwise refused
            // here until the next pull), at most once in a while per peer,
            // since anyone can claim a newer serial.
            if theirs > ours && shared.may_prompt_fetch(peer) {
                tokio::spawn(super::fetch::fetch_directory(peer, shared.clone()));
            }
            let roster = (ours > theirs).then(|| shared.roster.signed()).flatten();
            let descriptors = shared
                .directory
                .read()
                .map(|d| d.signed())
                .unwrap_or_default();
            wire::write_directory(
                &mut stream,
                roster.as_deref().map(Vec::as_slice),
                &descriptors,
            )
            .await
        }
    })
    .await;
}

/// Serves opt-out batches other exits send (an exit only: a relay reads
/// nothing of them and resets the stream). The sender is the peer of the
/// connection, which libp2p authenticated.
pub(super) async fn serve_opt_outs(
    incoming: net::Incoming,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    serve_requests(incoming, shutdown, "opt-out", move |peer, mut stream| {
        let shared = shared.clone();
        async move {
            let (Some(exit), Some(from)) = (shared.exit(), leak_net::node_id_of(&peer)) else {
                return Ok(());
            };
            let batch = wire::read_opt_outs(&mut stream).await?;
            match exit.take_opt_outs(from, &batch).await {
                Ok(_) => wire::ack_opt_outs(&mut stream).await,
                Err(e) => {
                    tracing::error!(error = %e, "cannot keep opt-outs from another exit");
                    Ok(())
                }
            }
        }
    })
    .await;
}

/// Sends an opt-out batch to exit `to` (best effort: the holders pass
/// what they hold on again at each republication).
pub(super) async fn send_opt_outs(shared: Arc<Shared>, to: leak_protocol::NodeId, batch: Vec<u8>) {
    let Some(peer) = crate::identity::peer_id_of(&to) else {
        return;
    };
    let sent = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut stream = shared.open_stream(peer, wire::OPT_OUT_PROTOCOL).await?;
        wire::send_opt_outs(&mut stream, &batch).await
    })
    .await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %Sensitive::new(e), "sending opt-outs failed"),
        Err(_) => tracing::debug!("sending opt-outs timed out"),
    }
}

/// Serves mailbox streams: each carries exchanges until its peer ends it or
/// leaves it idle for [`MAILBOX_IDLE`]; at most
/// [`MAX_MAILBOX_STREAMS_PER_PEER`] per peer (more are reset and counted),
/// at most [`MAX_CONCURRENT_REQUESTS`] exchanges at once, each within
/// [`REQUEST_TIMEOUT`].
pub(super) async fn serve_mailboxes(
    mut incoming: net::Incoming,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let exchanges = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    let streams = StreamCounts::default();
    loop {
        let (peer, stream) = tokio::select! {
            _ = shutdown.changed() => return,
            next = incoming.recv() => match next { Some(n) => n, None => return },
        };
        let Some(slot) = streams.try_take(peer, MAX_MAILBOX_STREAMS_PER_PEER) else {
            shared.metrics.inbound_streams_refused.inc();
            continue;
        };
        tokio::spawn(serve_mailbox_stream(
            stream,
            shared.clone(),
            exchanges.clone(),
            slot,
        ));
    }
}

async fn serve_mailbox_stream(
    mut stream: libp2p::Stream,
    shared: Arc<Shared>,
    exchanges: Arc<Semaphore>,
    _slot: StreamSlot,
) {
    loop {
        let capability =
            match tokio::time::timeout(MAILBOX_IDLE, wire::next_mailbox_request(&mut stream)).await
            {
                Ok(Ok(Some(capability))) => capability,
                Ok(Ok(None)) => {
                    let _ = futures::AsyncWriteExt::close(&mut stream).await;
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %Sensitive::new(e), "a mailbox request failed");
                    return;
                }
                // Idle: dropping the stream resets it.
                Err(_) => return,
            };
        let Ok(Ok(_permit)) =
            tokio::time::timeout(REQUEST_TIMEOUT, exchanges.clone().acquire_owned()).await
        else {
            return;
        };
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            answer_mailbox(&mut stream, &shared, capability),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %Sensitive::new(e), "a mailbox request failed");
                return;
            }
            Err(_) => return,
        }
    }
}

/// One mailbox exchange: the answer, then, once the client acknowledged
/// it, the deletion of the replies it carried and the confirmation.
async fn answer_mailbox(
    stream: &mut libp2p::Stream,
    shared: &Arc<Shared>,
    capability: [u8; 32],
) -> std::io::Result<()> {
    let mailbox = MailboxId::from_capability(&capability).0;
    let now = shared.clock.now_ms();
    // A read transaction over a few cached pages: no need for a blocking
    // thread (and the wake-ups it costs every poll).
    let held = shared
        .store
        .mailbox_peek(&mailbox, now)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let (seqs, replies): (Vec<u64>, Vec<Vec<u8>>) =
        held.into_iter().take(wire::MAILBOX_ANSWER_SLOTS).unzip();
    // Filler is random bytes: to the client a slot without a reply looks
    // like one sealed for someone else, and never opens.
    let (answer, carried) = wire::mailbox_answer(&replies, |slot| {
        rand::Rng::fill_bytes(&mut rand::rng(), slot)
    });
    if wire::answer_mailbox(stream, &answer).await? {
        let seqs: Vec<u64> = seqs.into_iter().take(carried).collect();
        if !seqs.is_empty() {
            let store = shared.clone();
            let held = tokio::task::spawn_blocking(move || {
                store.store.mailbox_remove(&mailbox, &seqs)?;
                store.store.mailbox_len()
            })
            .await
            .map_err(std::io::Error::other)?
            .map_err(|e| std::io::Error::other(e.to_string()))?;
            shared.metrics.mailbox_replies.set(held as i64);
        }
        wire::confirm_mailbox_deletion(stream).await?;
    }
    Ok(())
}
