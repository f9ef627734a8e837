//! The batch-file reader (YAML and JSON) on arbitrary bytes; a batch it
//! reads goes on to the planner.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(batch) = volley_client::parse_batch(text, "fuzz.yaml") {
        let _ = volley_plan::plan(&batch, &|_| true, &volley_plan::Limits::default());
    }
});
