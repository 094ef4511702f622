//! Periodic work: key rotation, descriptor publication, expiry.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch};

use super::shared::{Command, Shared};
use crate::{
    epoch::EpochSchedule,
    net::{DESCRIPTOR_TOPIC, POLICY_TOPIC},
};

/// Periodic work: key rotation, descriptor publication, expiry.
pub(super) async fn maintain(
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let period = shared.config.epochs.period_secs;
    let tick = Duration::from_millis((period * 1000 / 4).clamp(250, 30_000));
    let republish = (period / 2)
        .min(shared.config.directory.max_age_secs / 3)
        .max(1);
    let mut last_epoch = u64::MAX;
    let mut last_publish = 0u64;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = interval.tick() => {}
            () = shared.republish.notified() => last_publish = 0,
        }
        let now = shared.now();
        if shared.exit().is_some_and(|exit| exit.stamp_bits_changed()) {
            // The exit's load asks other stamp bits than its descriptor
            // says: publish them now.
            last_publish = 0;
        }
        let epoch = EpochSchedule::new(period).epoch_at(now);
        shared.metrics.epoch.set(epoch as i64);
        if epoch != last_epoch || now.saturating_sub(last_publish) >= republish {
            let rotated = {
                let shared = shared.clone();
                tokio::task::spawn_blocking(move || {
                    let mut keys = shared.keys.write().unwrap_or_else(|e| e.into_inner());
                    keys.rotate(&shared.store, now, &mut rand::rng())
                })
                .await
            };
            match rotated {
                Ok(Ok(rotation))
                    if !rotation.deleted.is_empty() || !rotation.created.is_empty() =>
                {
                    tracing::info!(epoch, created = ?rotation.created, deleted = ?rotation.deleted, "rotated mix keys");
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "key rotation failed"),
                Err(e) => tracing::error!(error = %e, "key rotation task failed"),
            }
            match shared.sign_descriptor() {
                Ok(signed) => {
                    let _ = shared.offer(signed.clone());
                    let bytes = signed.to_bytes();
                    *shared
                        .own_descriptor
                        .write()
                        .unwrap_or_else(|e| e.into_inner()) = Some(signed);
                    let _ = commands.try_send(Command::Publish(DESCRIPTOR_TOPIC, bytes));
                    last_publish = now;
                    // The policy, for nodes that joined since it was last
                    // published; the opt-outs this exit holds, to the exits
                    // that hold each now.
                    if let Some(policy) = shared.policy.signed() {
                        let _ = commands.try_send(Command::Publish(POLICY_TOPIC, policy));
                    }
                    if let Some(exit) = shared.exit() {
                        let passed =
                            tokio::task::spawn_blocking(move || exit.pass_on_opt_outs()).await;
                        if let Ok(Err(e)) = passed {
                            tracing::error!(error = %e, "cannot pass on the opt-outs held");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot sign this node's descriptor"),
            }
            last_epoch = epoch;
        }
        let expired = shared
            .directory
            .write()
            .map(|mut d| {
                let n = d.expire(now);
                if d.roster().is_none() && shared.roster.serial() != 0 {
                    shared.roster.drop_held();
                    shared.metrics.roster_serial.set(0);
                    tracing::error!(
                        "the roster expired and no newer one came: this node admits no node until the directory authorities sign a new roster"
                    );
                }
                shared.metrics.directory_nodes.set(d.len() as i64);
                n
            })
            .unwrap_or(0);
        if expired > 0 {
            shared.refresh_addresses();
        }
        let store_shared = shared.clone();
        if let Ok(Ok(held)) = tokio::task::spawn_blocking(move || {
            store_shared
                .store
                .mailbox_expire(store_shared.clock.now_ms())?;
            store_shared.store.mailbox_len()
        })
        .await
        {
            shared.metrics.mailbox_replies.set(held as i64);
        }
    }
}
