//! Where ops read and write memory: the coordinator over gRPC, or an in-process map.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;
use volley_proto::{BatchId, OpId};

/// Whose memory a call reads or writes: a batch's own, or a shared namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MemoryScope {
    Batch(BatchId),
    Namespace(String),
}

impl MemoryScope {
    /// The scope of an op's memory: its batch's `namespace` when set, else the batch itself.
    pub fn for_op(batch_id: &BatchId, namespace: &str) -> Self {
        if namespace.is_empty() {
            Self::Batch(batch_id.clone())
        } else {
            Self::Namespace(namespace.to_owned())
        }
    }
}

impl std::fmt::Display for MemoryScope {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Batch(batch_id) => write!(formatter, "batch {batch_id}"),
            Self::Namespace(namespace) => write!(formatter, "namespace {namespace}"),
        }
    }
}

/// A stored value and what the store knows about it (its content type,
/// empty when the writer gave none; its version, 1 on the first write and
/// +1 on each): the SDK's type, so one entry type serves both.
pub use volley_client::MemoryEntry;

/// How a write is made beyond its value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    pub content_type: Option<String>,
    /// The key expires this long after the write; `None`: never.
    pub ttl: Option<Duration>,
    /// Compare-and-set: write only if the key is at this version (0: only if
    /// it does not exist); otherwise [`MemoryError::VersionMismatch`].
    pub if_version: Option<u64>,
}

/// The op attempt a write comes from, so the coordinator can refuse writes of a stale attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryWriter {
    pub op_id: OpId,
    pub attempt: u32,
}

/// A failed memory call.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The coordinator could not be reached or failed transiently.
    #[error("memory service unavailable for key {key}: {message}")]
    Unavailable { key: String, message: String },
    /// A compare-and-set write found the key at another version.
    #[error("memory key {key} is not at the expected version: {message}")]
    VersionMismatch { key: String, message: String },
    /// `wait_for` gave up: the key did not appear in time.
    #[error("memory key {key} did not appear within {timeout:?}")]
    WaitTimedOut { key: String, timeout: Duration },
    /// The coordinator refused the call (bad key, too large, unknown batch,
    /// `incr` of a non-integer, a write from a stale attempt of the op).
    #[error("memory call for key {key} refused: {message}")]
    Refused { key: String, message: String },
}

impl MemoryError {
    /// Whether another attempt may succeed: an unreachable coordinator may
    /// come back, a key waited for may appear later. A version mismatch or a
    /// refusal stays what it is.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::WaitTimedOut { .. } => true,
            Self::VersionMismatch { .. } | Self::Refused { .. } => false,
        }
    }
}

/// The memory of batches and namespaces.
#[async_trait]
pub trait MemoryStore: Send + Sync + 'static {
    async fn get(&self, scope: &MemoryScope, key: &str)
    -> Result<Option<MemoryEntry>, MemoryError>;

    /// Writes the key and returns its new version. `writer` is set when an op
    /// writes while it runs.
    async fn put(
        &self,
        scope: &MemoryScope,
        key: &str,
        value: Vec<u8>,
        options: &PutOptions,
        writer: Option<&MemoryWriter>,
    ) -> Result<u64, MemoryError>;

    /// Removes the key; `false` if it was not set.
    async fn delete(&self, scope: &MemoryScope, key: &str) -> Result<bool, MemoryError>;

    /// Adds `delta` to the integer under the key (0 if unset) and returns the sum.
    async fn incr(&self, scope: &MemoryScope, key: &str, delta: i64) -> Result<i64, MemoryError>;

    /// The key's value once it exists; [`MemoryError::WaitTimedOut`] after
    /// `timeout` (`None`: wait as long as it takes).
    async fn wait_for(
        &self,
        scope: &MemoryScope,
        key: &str,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, MemoryError>;
}

/// An in-process [`MemoryStore`], for tests and embedded runs without a coordinator.
#[derive(Debug, Default)]
pub struct LocalMemory {
    // A std mutex: held only for a map operation, never across an await.
    entries: Mutex<HashMap<(MemoryScope, String), LocalEntry>>,
    /// Rung on every write, so `wait_for` re-checks instead of polling.
    written: Notify,
}

#[derive(Debug)]
struct LocalEntry {
    entry: MemoryEntry,
    expires_at: Option<Instant>,
}

impl LocalEntry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

impl LocalMemory {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(MemoryScope, String), LocalEntry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn live_entry(&self, scope: &MemoryScope, key: &str) -> Option<MemoryEntry> {
        let mut entries = self.lock();
        let map_key = (scope.clone(), key.to_owned());
        match entries.get(&map_key) {
            Some(stored) if stored.is_live(Instant::now()) => Some(stored.entry.clone()),
            Some(_) => {
                entries.remove(&map_key);
                None
            }
            None => None,
        }
    }
}

#[async_trait]
impl MemoryStore for LocalMemory {
    async fn get(
        &self,
        scope: &MemoryScope,
        key: &str,
    ) -> Result<Option<MemoryEntry>, MemoryError> {
        Ok(self.live_entry(scope, key))
    }

    async fn put(
        &self,
        scope: &MemoryScope,
        key: &str,
        value: Vec<u8>,
        options: &PutOptions,
        _writer: Option<&MemoryWriter>,
    ) -> Result<u64, MemoryError> {
        let now = Instant::now();
        let version = {
            let mut entries = self.lock();
            let map_key = (scope.clone(), key.to_owned());
            let current_version = entries
                .get(&map_key)
                .filter(|stored| stored.is_live(now))
                .map_or(0, |stored| stored.entry.version);
            if let Some(expected) = options.if_version
                && expected != current_version
            {
                return Err(MemoryError::VersionMismatch {
                    key: key.to_owned(),
                    message: format!("expected version {expected}, found {current_version}"),
                });
            }
            let version = current_version + 1;
            entries.insert(
                map_key,
                LocalEntry {
                    entry: MemoryEntry {
                        value,
                        content_type: options.content_type.clone().unwrap_or_default(),
                        version,
                    },
                    expires_at: options.ttl.map(|ttl| now + ttl),
                },
            );
            version
        };
        self.written.notify_waiters();
        Ok(version)
    }

    async fn delete(&self, scope: &MemoryScope, key: &str) -> Result<bool, MemoryError> {
        let now = Instant::now();
        let removed = self.lock().remove(&(scope.clone(), key.to_owned()));
        Ok(removed.is_some_and(|stored| stored.is_live(now)))
    }

    async fn incr(&self, scope: &MemoryScope, key: &str, delta: i64) -> Result<i64, MemoryError> {
        let now = Instant::now();
        let sum = {
            let mut entries = self.lock();
            let map_key = (scope.clone(), key.to_owned());
            let (current, version, expires_at) = match entries.get(&map_key) {
                Some(stored) if stored.is_live(now) => {
                    let text = String::from_utf8_lossy(&stored.entry.value);
                    let current = text
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| MemoryError::Refused {
                            key: key.to_owned(),
                            message: "the value is not an integer".to_owned(),
                        })?;
                    (current, stored.entry.version, stored.expires_at)
                }
                _ => (0, 0, None),
            };
            let sum = current
                .checked_add(delta)
                .ok_or_else(|| MemoryError::Refused {
                    key: key.to_owned(),
                    message: format!("{current} + {delta} overflows"),
                })?;
            entries.insert(
                map_key,
                LocalEntry {
                    entry: MemoryEntry {
                        value: sum.to_string().into_bytes(),
                        content_type: String::new(),
                        version: version + 1,
                    },
                    expires_at,
                },
            );
            sum
        };
        self.written.notify_waiters();
        Ok(sum)
    }

    async fn wait_for(
        &self,
        scope: &MemoryScope,
        key: &str,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, MemoryError> {
        let wait = async {
            loop {
                // Registered before the check, so a write between the check
                // and the await still wakes us.
                let written = self.written.notified();
                tokio::pin!(written);
                written.as_mut().enable();
                if let Some(entry) = self.live_entry(scope, key) {
                    return entry.value;
                }
                written.await;
            }
        };
        match timeout {
            None => Ok(wait.await),
            Some(limit) => {
                tokio::time::timeout(limit, wait)
                    .await
                    .map_err(|_| MemoryError::WaitTimedOut {
                        key: key.to_owned(),
                        timeout: limit,
                    })
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::sync::Arc;

    use super::*;

    fn batch(name: &str) -> MemoryScope {
        MemoryScope::Batch(BatchId::new(name))
    }

    async fn put(memory: &LocalMemory, scope: &MemoryScope, key: &str, value: &str) -> u64 {
        memory
            .put(
                scope,
                key,
                value.as_bytes().to_vec(),
                &PutOptions::default(),
                None,
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn local_memory_is_per_scope() {
        let memory = LocalMemory::default();
        put(&memory, &batch("a"), "k", "v").await;
        let entry = memory.get(&batch("a"), "k").await.unwrap().unwrap();
        assert_eq!((entry.value.as_slice(), entry.version), (&b"v"[..], 1));
        assert_eq!(memory.get(&batch("b"), "k").await.unwrap(), None);
        let shared = MemoryScope::Namespace("a".to_owned());
        assert_eq!(memory.get(&shared, "k").await.unwrap(), None);
    }

    #[test]
    fn scope_of_an_op_prefers_its_namespace() {
        let batch_id = BatchId::new("b1");
        assert_eq!(
            MemoryScope::for_op(&batch_id, ""),
            MemoryScope::Batch(batch_id.clone())
        );
        assert_eq!(
            MemoryScope::for_op(&batch_id, "swarm"),
            MemoryScope::Namespace("swarm".to_owned())
        );
    }

    #[tokio::test]
    async fn versions_and_compare_and_set() {
        let memory = LocalMemory::default();
        let scope = batch("a");
        assert_eq!(put(&memory, &scope, "k", "1").await, 1);
        assert_eq!(put(&memory, &scope, "k", "2").await, 2);
        let stale = PutOptions {
            if_version: Some(1),
            ..PutOptions::default()
        };
        let error = memory
            .put(&scope, "k", b"3".to_vec(), &stale, None)
            .await
            .unwrap_err();
        assert!(
            matches!(error, MemoryError::VersionMismatch { .. }),
            "{error}"
        );
        assert!(!error.is_retryable());
        let fresh = PutOptions {
            if_version: Some(2),
            ..PutOptions::default()
        };
        assert_eq!(
            memory
                .put(&scope, "k", b"3".to_vec(), &fresh, None)
                .await
                .unwrap(),
            3
        );
        let create_only = PutOptions {
            if_version: Some(0),
            ..PutOptions::default()
        };
        assert_eq!(
            memory
                .put(&scope, "new", b"x".to_vec(), &create_only, None)
                .await
                .unwrap(),
            1
        );
        assert!(memory.delete(&scope, "k").await.unwrap());
        assert!(!memory.delete(&scope, "k").await.unwrap());
    }

    #[tokio::test]
    async fn expired_keys_are_gone() {
        let memory = LocalMemory::default();
        let scope = batch("a");
        let already_expired = PutOptions {
            ttl: Some(Duration::ZERO),
            ..PutOptions::default()
        };
        memory
            .put(&scope, "k", b"v".to_vec(), &already_expired, None)
            .await
            .unwrap();
        assert_eq!(memory.get(&scope, "k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn incr_counts_from_zero_and_refuses_text() {
        let memory = LocalMemory::default();
        let scope = batch("a");
        assert_eq!(memory.incr(&scope, "n", 2).await.unwrap(), 2);
        assert_eq!(memory.incr(&scope, "n", -5).await.unwrap(), -3);
        put(&memory, &scope, "text", "hello").await;
        let error = memory.incr(&scope, "text", 1).await.unwrap_err();
        assert!(matches!(error, MemoryError::Refused { .. }), "{error}");
    }

    #[tokio::test]
    async fn wait_for_wakes_on_write_and_times_out() {
        let memory = Arc::new(LocalMemory::default());
        let scope = batch("a");
        let error = memory
            .wait_for(&scope, "k", Some(Duration::from_millis(10)))
            .await
            .unwrap_err();
        assert!(matches!(error, MemoryError::WaitTimedOut { .. }), "{error}");
        assert!(error.is_retryable());

        let waiter = {
            let memory = Arc::clone(&memory);
            let scope = scope.clone();
            tokio::spawn(async move { memory.wait_for(&scope, "k", None).await })
        };
        put(&memory, &scope, "k", "here").await;
        let value = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(value, b"here");
    }
}
