//! Idempotency keys of SubmitBatch and SpawnOps: a call retried after its
//! answer was lost (the connection broke, the coordinator died) must not
//! create a second batch or add its ops twice.
//!
//! A submission's key never needs a mapping of its own: the batch id is
//! derived from the tenant and the key, so claiming the id in the store *is*
//! writing the mapping, atomically with the creation and in the batch's own
//! cluster slot, and it lives exactly as long as the batch does. The tenant
//! is part of the derivation, so one tenant can never reach (or learn of)
//! another's batch through a key. A digest of the request, kept with the
//! batch, tells a retry (same digest: the same answer) from a reuse of the
//! key for another batch (an error). Spawn keys are kept per batch by
//! `add_ops`, with the first call's answer.

use sha2::{Digest, Sha256};
use volley_proto::BatchId;
pub use volley_proto::digest::{op_spawn_key, spawn_digest, submission_digest};

/// The longest idempotency key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// Why an idempotency key is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("idempotency key is {0} bytes; the most is {MAX_KEY_BYTES}")]
    TooLong(usize),
    #[error("idempotency key has a byte 0x{0:02x}: only printable ASCII (0x21..=0x7e) is allowed")]
    NotPrintable(u8),
}

/// Checks a key from a request: empty (no key), or at most
/// [`MAX_KEY_BYTES`] of printable ASCII without spaces, so it can be shown
/// in messages and logs as it is and typed on a command line.
pub fn check_key(key: &str) -> Result<(), KeyError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong(key.len()));
    }
    if let Some(byte) = key.bytes().find(|byte| !(0x21..=0x7e).contains(byte)) {
        return Err(KeyError::NotPrintable(byte));
    }
    Ok(())
}

/// The id of the batch an idempotent submission of `tenant` with `key`
/// creates: a UUID (version 8, "custom") made of the first 16 bytes of
/// SHA-256 over both, so it looks like every other batch id.
pub fn batch_id_for(tenant: &str, key: &str) -> BatchId {
    let mut hasher = Sha256::new();
    hasher.update(b"volley.v1 submit idempotency\0");
    hasher.update(tenant.as_bytes());
    hasher.update(b"\0");
    hasher.update(key.as_bytes());
    let hash = hasher.finalize();
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    BatchId::new(
        uuid::Builder::from_custom_bytes(bytes)
            .into_uuid()
            .to_string(),
    )
}

/// A test-only crash point, compiled into debug builds only: when the
/// environment variable `VOLLEY_TEST_FAULT` names `point`, the process
/// aborts on the spot, as a `kill -9` would end it there. The points:
/// `submit-stored` (a batch was stored, its answer not yet sent) and
/// `spawn-stored` (spawned ops were stored, the answer not yet sent). The
/// end-to-end tests of retried calls use them (cli/tests/idempotency_e2e.rs).
#[cfg(debug_assertions)]
pub(crate) fn fault_point(point: &str) {
    if std::env::var("VOLLEY_TEST_FAULT").is_ok_and(|fault| fault == point) {
        tracing::error!(point, "VOLLEY_TEST_FAULT: aborting");
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
pub(crate) fn fault_point(_point: &str) {}

/// What an idempotent spawn keeps in the store under its key: its digest
/// and the answer the first call gave.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SpawnRecord {
    pub digest: String,
    pub op_count: u32,
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_up_to_128_printable_bytes_pass() {
        assert_eq!(check_key(""), Ok(()));
        assert_eq!(check_key("retry-7f3a_b.c:d/e"), Ok(()));
        assert_eq!(check_key(&"k".repeat(128)), Ok(()));
    }

    #[test]
    fn long_or_unprintable_keys_are_refused_with_the_reason() {
        assert_eq!(check_key(&"k".repeat(129)), Err(KeyError::TooLong(129)));
        assert_eq!(
            check_key(&"k".repeat(1 << 20)),
            Err(KeyError::TooLong(1 << 20))
        );
        assert_eq!(check_key("a b"), Err(KeyError::NotPrintable(b' ')));
        assert_eq!(check_key("a\nb"), Err(KeyError::NotPrintable(b'\n')));
        assert_eq!(check_key("nul\0"), Err(KeyError::NotPrintable(0)));
        assert_eq!(check_key("é"), Err(KeyError::NotPrintable(0xc3)));
        assert_eq!(check_key("\x1b[31m"), Err(KeyError::NotPrintable(0x1b)));
        let message = check_key(&"k".repeat(200))
            .expect_err("too long")
            .to_string();
        assert_eq!(message, "idempotency key is 200 bytes; the most is 128");
    }

    #[test]
    fn batch_ids_are_per_tenant_and_key() {
        let first = batch_id_for("acme", "k1");
        assert_eq!(first, batch_id_for("acme", "k1"));
        assert_ne!(first, batch_id_for("acme", "k2"));
        assert_ne!(first, batch_id_for("globex", "k1"));
        // No ambiguity between the tenant and the key.
        assert_ne!(batch_id_for("a", "bc"), batch_id_for("ab", "c"));
        let parsed = uuid::Uuid::parse_str(first.as_str()).expect("a uuid");
        assert_eq!(parsed.get_version_num(), 8);
    }
}
