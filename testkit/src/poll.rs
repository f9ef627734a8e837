//! Waiting in tests for what happens elsewhere, with a hang guard instead of a sleep.

use std::future::Future;
use std::time::Duration;

/// How long [`wait_until`] polls before it fails the test: a hang guard,
/// never a timing assertion.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(60);

/// Between two polls of [`wait_until`].
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `check` until it is true; panics ("timed out waiting until
/// {what}") after [`WAIT_DEADLINE`].
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT_DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn polls_until_true() {
        let polls = AtomicU32::new(0);
        wait_until("the third poll", || async {
            polls.fetch_add(1, Ordering::SeqCst) >= 2
        })
        .await;
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }
}
