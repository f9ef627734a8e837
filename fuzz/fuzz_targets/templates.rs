//! The template parser and both renderers on arbitrary strings: in a
//! shell `cmd` no filled value may appear in the command text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volley_kinds::template::{references, render, render_command};

fuzz_target!(|input: (String, String)| {
    let (cmd, value) = input;
    let args = serde_json::json!({"cmd": cmd, "env": {"X": value.clone()}});
    let _ = references(&args);
    let _ = render(&args, &|_| Some(value.clone()));
    let marker = "\u{1}volley-fuzz-marker\u{1}";
    if !cmd.contains(marker)
        && let Ok(rendered) = render_command(&args, &|_| Some(marker.to_owned()))
        && let Some(text) = rendered["cmd"].as_str()
    {
        assert!(!text.contains(marker), "a value was pasted into the command");
    }
});
