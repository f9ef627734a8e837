//! The key builders over arbitrary batch ids, memory keys and namespaces
//! (as the API validates them): every key of a batch carries the batch's
//! hash tag, so a batch lives in one Redis Cluster slot; every key of a
//! memory scope carries the scope's; and two different ids never share a
//! prefix.

use proptest::prelude::*;
use volley_proto::BatchId;
use volley_store::MemoryScope;
use volley_store::keys;

/// The text between the first `{` and the next `}`: what Redis Cluster hashes.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    Some(&key[open + 1..open + 1 + close])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_batchs_keys_share_its_hash_tag(
        id in "[0-9a-f-]{1,40}",
        memory_key in "[A-Za-z0-9/._:-]{1,64}",
        priority in 0_u8..4,
    ) {
        let batch = BatchId::new(id.clone());
        let tag = format!("b:{id}");
        for key in [
            keys::meta(&batch),
            keys::spec(&batch),
            keys::state(&batch),
            keys::events(&batch),
            keys::leases(&batch),
            keys::owner(&batch),
            keys::ready(&batch, priority),
            keys::waiters(&batch, &memory_key),
            keys::memory(&MemoryScope::Batch(batch.clone()), &memory_key),
        ] {
            prop_assert_eq!(hash_tag(&key), Some(tag.as_str()), "{}", key);
        }
    }

    #[test]
    fn a_namespaces_keys_share_its_hash_tag(
        namespace in "[A-Za-z0-9/._:@-]{1,64}",
        memory_key in "[A-Za-z0-9/._:-]{1,64}",
    ) {
        let scope = MemoryScope::Shared(namespace.clone());
        let tag = format!("m:{namespace}");
        for key in [
            keys::memory(&scope, &memory_key),
            keys::changes(&scope),
            keys::revision(&scope),
            keys::chunk(&scope, "g1", 3),
        ] {
            prop_assert_eq!(hash_tag(&key), Some(tag.as_str()), "{}", key);
        }
    }

    #[test]
    fn different_batches_never_share_a_prefix(left in "[0-9a-f-]{1,20}", right in "[0-9a-f-]{1,20}") {
        prop_assume!(left != right);
        let left_prefix = keys::batch_prefix(&BatchId::new(left));
        let right_prefix = keys::batch_prefix(&BatchId::new(right));
        prop_assert!(!left_prefix.starts_with(&right_prefix) && !right_prefix.starts_with(&left_prefix));
    }
}
