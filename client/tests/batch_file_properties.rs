//! The batch-file reader over arbitrary text: it never panics, never hangs
//! on deep nesting, and a batch it writes out as JSON reads back the same.

use proptest::prelude::*;
use volley_client::parse_batch;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse_batch(&text, "any.yaml");
    }

    #[test]
    fn yaml_shaped_text_never_panics(text in "[a-z:{}\\[\\]\\- \n'\"#,0-9]{0,200}") {
        let _ = parse_batch(&text, "shaped.yaml");
    }

    #[test]
    fn deep_nesting_is_refused(depth in 65_usize..5_000, open in prop::sample::select(vec!['[', '{'])) {
        let close = if open == '[' { ']' } else { '}' };
        let text = format!(
            "name: deep\nops:\n  - {{id: a, kind: echo, args: {{text: {}x{}}}}}\n",
            open.to_string().repeat(depth),
            close.to_string().repeat(depth)
        );
        let error = parse_batch(&text, "deep.yaml").expect_err("too deep");
        prop_assert!(error.to_string().contains("nested deeper"), "{}", error);
    }

    #[test]
    fn generated_batches_read_back(ids in prop::collection::btree_set("[a-z][a-z0-9_-]{0,8}", 1..20)) {
        let ops: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| serde_json::json!({"id": id, "kind": "echo", "args": {"text": id}}))
            .collect();
        let text = serde_json::json!({"name": "generated", "ops": ops}).to_string();
        let batch = parse_batch(&text, "generated.json").expect("valid");
        let read: Vec<&str> = batch.ops.iter().map(|op| op.id.as_str()).collect();
        let written: Vec<&str> = ids.iter().map(String::as_str).collect();
        prop_assert_eq!(read, written);
    }
}
