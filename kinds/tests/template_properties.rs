//! Properties of the template parser and of `render_command`, over
//! arbitrary input: parsing never panics, and a value filled into a shell
//! command — whatever its bytes — reaches the program as exactly itself.

use proptest::prelude::*;
use serde_json::{Value, json};
use volley_kinds::template::{Reference, references, render, render_command};

/// Runs `args` as the process runner would and returns stdout.
fn run(args: &Value) -> String {
    let mut command = std::process::Command::new("sh");
    command.arg("-c").arg(args["cmd"].as_str().expect("cmd"));
    if let Some(env) = args["env"].as_object() {
        for (name, value) in env {
            command.env(name, value.as_str().expect("string"));
        }
    }
    String::from_utf8_lossy(&command.output().expect("sh runs").stdout).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parsing_never_panics(text in any::<String>()) {
        let args = json!({"cmd": text, "env": {"X": text.clone()}, "list": [text.clone()]});
        let _ = references(&args);
        let _ = render(&args, &|_| Some("v".to_owned()));
        let _ = render_command(&args, &|_| Some("v".to_owned()));
    }

    #[test]
    fn templates_with_shell_syntax_around_them_never_panic(
        before in "[ a-z'\"$(){}`\\\\;|&]{0,12}",
        after in "[ a-z'\"$(){}`\\\\;|&]{0,12}",
    ) {
        let cmd = format!("{before}${{ops.a.output}}{after}");
        let _ = render_command(&json!({"cmd": cmd}), &|_| Some("v".to_owned()));
    }
}

proptest! {
    // Each case starts `sh`: fewer cases, still well under a second each.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_filled_value_is_exactly_one_argument(value in "[^\\x00]{0,40}") {
        let lookup = |reference: &Reference| match reference {
            Reference::OpOutput(_) => Some(value.clone()),
            _ => None,
        };
        for cmd in [
            "printf '%s' ${ops.a.output}",
            "printf '%s' '${ops.a.output}'",
            "printf '%s' \"${ops.a.output}\"",
            "printf '%s' \"$(printf '%s' ${ops.a.output})\"",
        ] {
            let rendered = render_command(&json!({"cmd": cmd}), &lookup).expect("renders");
            let printed = run(&rendered);
            // `$(…)` drops trailing newlines, as the shell does.
            let expected = if cmd.contains("$(") {
                value.trim_end_matches('\n').to_owned()
            } else {
                value.clone()
            };
            prop_assert_eq!(printed, expected, "{}", cmd);
        }
    }
}
