//! Doorbells: the pub/sub listener that forwards published bells into the broadcast channel.

use super::*;

pub(super) async fn subscribe(client: &redis::Client) -> redis::RedisResult<PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(keys::DOORBELL_CHANNEL).await?;
    Ok(pubsub)
}

/// Forwards published batch ids into the broadcast channel until shutdown;
/// after losing the subscription, resubscribes with doubling backoff and
/// sends `Resync`, since bells may have been missed meanwhile.
pub(super) async fn listen_doorbells(
    client: redis::Client,
    first: PubSub,
    sender: broadcast::Sender<Doorbell>,
    shutdown: CancellationToken,
) {
    let mut live = Some(first);
    let mut backoff = RESUBSCRIBE_MIN_BACKOFF;
    loop {
        let pubsub = match live.take() {
            Some(pubsub) => pubsub,
            None => {
                let attempt = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    attempt = subscribe(&client) => attempt,
                };
                match attempt {
                    Ok(pubsub) => {
                        backoff = RESUBSCRIBE_MIN_BACKOFF;
                        tracing::info!("doorbell subscription restored");
                        let _ = sender.send(Doorbell::Resync);
                        pubsub
                    }
                    Err(error) => {
                        tracing::warn!(%error, ?backoff, "doorbell resubscribe failed");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(RESUBSCRIBE_MAX_BACKOFF);
                        continue;
                    }
                }
            }
        };
        let mut messages = pubsub.into_on_message();
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                message = messages.next() => message,
            };
            let Some(message) = message else {
                tracing::warn!("doorbell subscription lost");
                break;
            };
            let payload = String::from_utf8_lossy(message.get_payload_bytes()).into_owned();
            match parse_bell(&payload) {
                // No receiver is fine: the bell is only a hint.
                Some(bell) => {
                    let _ = sender.send(bell);
                }
                None => tracing::debug!(payload, "unknown doorbell payload"),
            }
        }
    }
}

/// Reads a doorbell payload (see [`keys::DOORBELL_CHANNEL`]).
pub(super) fn parse_bell(payload: &str) -> Option<Doorbell> {
    if let Some(batch) = payload.strip_prefix(keys::BELL_BATCH) {
        return Some(Doorbell::Batch(BatchId::new(batch)));
    }
    if let Some(batch) = payload.strip_prefix(keys::BELL_EVENTS) {
        return Some(Doorbell::Events(BatchId::new(batch)));
    }
    if let Some(batch) = payload.strip_prefix(keys::BELL_STARTED) {
        return Some(Doorbell::Started(BatchId::new(batch)));
    }
    if let Some(batch) = payload.strip_prefix(keys::BELL_ENDED) {
        return Some(Doorbell::Ended(BatchId::new(batch)));
    }
    if let Some(batch) = payload.strip_prefix(keys::BELL_BATCH_MEMORY) {
        return Some(Doorbell::Memory(MemoryScope::Batch(BatchId::new(batch))));
    }
    payload
        .strip_prefix(keys::BELL_SHARED_MEMORY)
        .map(|namespace| Doorbell::Memory(MemoryScope::Shared(namespace.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bells_are_told_apart() {
        assert_eq!(
            parse_bell("b:0193"),
            Some(Doorbell::Batch(BatchId::new("0193")))
        );
        assert_eq!(
            parse_bell("mb:0193"),
            Some(Doorbell::Memory(MemoryScope::Batch(BatchId::new("0193"))))
        );
        assert_eq!(
            parse_bell("m:team"),
            Some(Doorbell::Memory(MemoryScope::Shared("team".to_owned())))
        );
        assert_eq!(
            parse_bell("n:0193"),
            Some(Doorbell::Started(BatchId::new("0193")))
        );
        assert_eq!(
            parse_bell("e:0193"),
            Some(Doorbell::Ended(BatchId::new("0193")))
        );
        assert_eq!(parse_bell("0193"), None);
    }
}
