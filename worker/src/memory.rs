//! Where the memory kinds read and write: the coordinator over gRPC, or an in-process map.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use volley_proto::BatchId;

/// A failed memory call.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The coordinator could not be reached or failed transiently.
    #[error("memory service unavailable for key {key}: {message}")]
    Unavailable { key: String, message: String },
    /// The coordinator refused the call (bad key, too large, unknown batch).
    #[error("memory call for key {key} refused: {message}")]
    Refused { key: String, message: String },
}

impl MemoryError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// The memory of batches, keyed by batch and key.
#[async_trait]
pub trait MemoryStore: Send + Sync + 'static {
    async fn get(&self, batch_id: &BatchId, key: &str) -> Result<Option<Vec<u8>>, MemoryError>;
    async fn put(&self, batch_id: &BatchId, key: &str, value: Vec<u8>) -> Result<(), MemoryError>;
}

/// An in-process [`MemoryStore`], for tests and embedded runs without a coordinator.
#[derive(Debug, Default)]
pub struct LocalMemory {
    // A std mutex: held only for a map lookup, never across an await.
    entries: Mutex<HashMap<(BatchId, String), Vec<u8>>>,
}

#[async_trait]
impl MemoryStore for LocalMemory {
    async fn get(&self, batch_id: &BatchId, key: &str) -> Result<Option<Vec<u8>>, MemoryError> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(entries.get(&(batch_id.clone(), key.to_owned())).cloned())
    }

    async fn put(&self, batch_id: &BatchId, key: &str, value: Vec<u8>) -> Result<(), MemoryError> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.insert((batch_id.clone(), key.to_owned()), value);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_memory_is_per_batch() {
        let memory = LocalMemory::default();
        let batch_a = BatchId::new("a");
        let batch_b = BatchId::new("b");
        memory.put(&batch_a, "k", b"v".to_vec()).await.unwrap();
        assert_eq!(
            memory.get(&batch_a, "k").await.unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(memory.get(&batch_b, "k").await.unwrap(), None);
    }
}
