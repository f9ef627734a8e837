//! Typed args of the built-in kinds, so the coordinator rejects a bad `args`
//! before anything runs and the worker reads the same fields it was checked
//! against.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Every kind the stock worker runs without a user-registered handler.
/// Built-in kinds that touch files: a worker runs them only under a root.
pub const FILE_KINDS: &[&str] = &["read", "write", "glob", "grep"];

/// Built-in kinds that run host programs: only on workers that allow it.
pub const HOST_PROGRAM_KINDS: &[&str] = &["shell", "agent"];

pub const BUILTIN_KINDS: &[&str] = &[
    "noop",
    "echo",
    "sleep",
    "read",
    "write",
    "glob",
    "grep",
    "shell",
    "memory.put",
    "memory.get",
    "agent",
];

/// `noop`: no args (an empty object or no args at all).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NoopArgs {}

/// `echo`: its output is `text`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EchoArgs {
    pub text: String,
}

/// `sleep`: waits `ms` milliseconds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SleepArgs {
    pub ms: u64,
}

/// `read`: outputs the content of `path` (relative to the worker's root).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReadArgs {
    pub path: String,
}

/// `write`: writes (or appends) `content` to `path`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WriteArgs {
    pub path: String,
    pub content: String,
    #[serde(default)]
    pub append: bool,
}

/// `glob`: outputs the paths matching `pattern`, one a line, sorted.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GlobArgs {
    pub pattern: String,
}

/// `grep`: searches the regex `pattern` in `path`, or in every file matching
/// `glob` (exactly one of the two).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrepArgs {
    pub pattern: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
}

/// `shell`: runs `cmd` through the shell, in `cwd`, with `env` added.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShellArgs {
    pub cmd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `agent`: runs `cmd` through the shell like `shell`, but is meant to run
/// long and coordinate with other ops through memory: its environment names
/// the coordinator, its batch, op, attempt and memory namespace.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentArgs {
    pub cmd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `memory.put`: writes `value` under `key`, expiring after `ttl` (humantime).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryPutArgs {
    pub key: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// `memory.get`: outputs the value under `key`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryGetArgs {
    pub key: String,
}

/// The args of one built-in op, by kind.
#[derive(Debug, Clone)]
pub enum BuiltinArgs {
    Noop(NoopArgs),
    Echo(EchoArgs),
    Sleep(SleepArgs),
    Read(ReadArgs),
    Write(WriteArgs),
    Glob(GlobArgs),
    Grep(GrepArgs),
    Shell(ShellArgs),
    MemoryPut(MemoryPutArgs),
    MemoryGet(MemoryGetArgs),
    Agent(AgentArgs),
}

impl BuiltinArgs {
    /// The kind these args belong to, as written in a batch.
    pub fn kind(&self) -> &'static str {
        match self {
            BuiltinArgs::Noop(_) => "noop",
            BuiltinArgs::Echo(_) => "echo",
            BuiltinArgs::Sleep(_) => "sleep",
            BuiltinArgs::Read(_) => "read",
            BuiltinArgs::Write(_) => "write",
            BuiltinArgs::Glob(_) => "glob",
            BuiltinArgs::Grep(_) => "grep",
            BuiltinArgs::Shell(_) => "shell",
            BuiltinArgs::MemoryPut(_) => "memory.put",
            BuiltinArgs::MemoryGet(_) => "memory.get",
            BuiltinArgs::Agent(_) => "agent",
        }
    }
}

/// Args that do not fit their kind. `field` is `args.<name>` when one field
/// is to blame, `args` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ArgsError {
    pub field: String,
    pub message: String,
}

impl ArgsError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ArgsError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What one field of a kind's args holds, to name the field serde would not.
#[derive(Clone, Copy)]
enum FieldType {
    Text,
    OptionalText,
    Unsigned,
    Flag,
    TextMap,
}

type Schema = &'static [(&'static str, FieldType)];

const NOOP_SCHEMA: Schema = &[];
const ECHO_SCHEMA: Schema = &[("text", FieldType::Text)];
const SLEEP_SCHEMA: Schema = &[("ms", FieldType::Unsigned)];
const READ_SCHEMA: Schema = &[("path", FieldType::Text)];
const WRITE_SCHEMA: Schema = &[
    ("path", FieldType::Text),
    ("content", FieldType::Text),
    ("append", FieldType::Flag),
];
const GLOB_SCHEMA: Schema = &[("pattern", FieldType::Text)];
const GREP_SCHEMA: Schema = &[
    ("pattern", FieldType::Text),
    ("path", FieldType::OptionalText),
    ("glob", FieldType::OptionalText),
];
const SHELL_SCHEMA: Schema = &[
    ("cmd", FieldType::Text),
    ("cwd", FieldType::OptionalText),
    ("env", FieldType::TextMap),
];
const AGENT_SCHEMA: Schema = &[
    ("cmd", FieldType::Text),
    ("cwd", FieldType::OptionalText),
    ("env", FieldType::TextMap),
];
const MEMORY_PUT_SCHEMA: Schema = &[
    ("key", FieldType::Text),
    ("value", FieldType::Text),
    ("ttl", FieldType::OptionalText),
];
const MEMORY_GET_SCHEMA: Schema = &[("key", FieldType::Text)];

/// Parses `args` for `kind`. `Ok(None)` when `kind` is not built in (its
/// worker checks its args). A `null` `args` counts as an empty object.
/// String fields may hold `${…}` templates; they are filled in at dispatch.
pub fn parse_args(kind: &str, args: &serde_json::Value) -> Result<Option<BuiltinArgs>, ArgsError> {
    let empty_object = serde_json::Value::Object(serde_json::Map::new());
    let args = if args.is_null() { &empty_object } else { args };
    if !args.is_object() {
        return if BUILTIN_KINDS.contains(&kind) {
            Err(ArgsError::new(
                "args",
                format!("must be an object, found {}", json_type_name(args)),
            ))
        } else {
            Ok(None)
        };
    }
    let parsed = match kind {
        "noop" => BuiltinArgs::Noop(typed(args, NOOP_SCHEMA)?),
        "echo" => BuiltinArgs::Echo(typed(args, ECHO_SCHEMA)?),
        "sleep" => BuiltinArgs::Sleep(typed(args, SLEEP_SCHEMA)?),
        "read" => BuiltinArgs::Read(typed(args, READ_SCHEMA)?),
        "write" => BuiltinArgs::Write(typed(args, WRITE_SCHEMA)?),
        "glob" => BuiltinArgs::Glob(typed(args, GLOB_SCHEMA)?),
        "grep" => {
            let grep: GrepArgs = typed(args, GREP_SCHEMA)?;
            match (&grep.path, &grep.glob) {
                (Some(_), Some(_)) => {
                    return Err(ArgsError::new(
                        "args.glob",
                        "give `path` or `glob`, not both",
                    ));
                }
                (None, None) => {
                    return Err(ArgsError::new(
                        "args.path",
                        "missing field `path` (or `glob`)",
                    ));
                }
                _ => {}
            }
            BuiltinArgs::Grep(grep)
        }
        "shell" => BuiltinArgs::Shell(typed(args, SHELL_SCHEMA)?),
        "agent" => BuiltinArgs::Agent(typed(args, AGENT_SCHEMA)?),
        "memory.put" => {
            let put: MemoryPutArgs = typed(args, MEMORY_PUT_SCHEMA)?;
            require_non_empty(&put.key, "args.key")?;
            BuiltinArgs::MemoryPut(put)
        }
        "memory.get" => {
            let get: MemoryGetArgs = typed(args, MEMORY_GET_SCHEMA)?;
            require_non_empty(&get.key, "args.key")?;
            BuiltinArgs::MemoryGet(get)
        }
        _ => return Ok(None),
    };
    Ok(Some(parsed))
}

/// The arg names a built-in kind takes, `None` for a kind not built in: a
/// batch file reader uses them to say "`cmd` belongs under `args:`".
pub fn builtin_arg_names(kind: &str) -> Option<Vec<&'static str>> {
    let schema = match kind {
        "noop" => NOOP_SCHEMA,
        "echo" => ECHO_SCHEMA,
        "sleep" => SLEEP_SCHEMA,
        "read" => READ_SCHEMA,
        "write" => WRITE_SCHEMA,
        "glob" => GLOB_SCHEMA,
        "grep" => GREP_SCHEMA,
        "shell" => SHELL_SCHEMA,
        "agent" => AGENT_SCHEMA,
        "memory.put" => MEMORY_PUT_SCHEMA,
        "memory.get" => MEMORY_GET_SCHEMA,
        _ => return None,
    };
    Some(schema.iter().map(|(name, _)| *name).collect())
}

fn require_non_empty(value: &str, field: &str) -> Result<(), ArgsError> {
    if value.is_empty() {
        Err(ArgsError::new(field, "must not be empty"))
    } else {
        Ok(())
    }
}

/// Deserializes the common (valid) case directly; only on failure walks the
/// schema to find which field is to blame, since serde's messages for wrong
/// types do not name the field.
fn typed<T: DeserializeOwned>(args: &serde_json::Value, schema: Schema) -> Result<T, ArgsError> {
    match T::deserialize(args) {
        Ok(parsed) => Ok(parsed),
        Err(error) => {
            Err(diagnose(args, schema).unwrap_or_else(|| ArgsError::new("args", error.to_string())))
        }
    }
}

fn diagnose(args: &serde_json::Value, schema: Schema) -> Option<ArgsError> {
    let object = args.as_object()?;
    for name in object.keys() {
        if !schema.iter().any(|(known, _)| known == name) {
            let expected = if schema.is_empty() {
                "this kind takes no args".to_owned()
            } else {
                let names: Vec<String> = schema
                    .iter()
                    .map(|(known, _)| format!("`{known}`"))
                    .collect();
                format!("expected one of {}", names.join(", "))
            };
            return Some(ArgsError::new(
                format!("args.{name}"),
                format!("unknown field `{name}`, {expected}"),
            ));
        }
    }
    for (name, field_type) in schema {
        let field = format!("args.{name}");
        let Some(value) = object.get(*name) else {
            if matches!(field_type, FieldType::Text | FieldType::Unsigned) {
                return Some(ArgsError::new(field, format!("missing field `{name}`")));
            }
            continue;
        };
        let outcome = match field_type {
            FieldType::Text => String::deserialize(value).map(drop),
            FieldType::OptionalText => Option::<String>::deserialize(value).map(drop),
            FieldType::Unsigned => u64::deserialize(value).map(drop),
            FieldType::Flag => bool::deserialize(value).map(drop),
            FieldType::TextMap => BTreeMap::<String, String>::deserialize(value).map(drop),
        };
        if let Err(error) = outcome {
            return Some(ArgsError::new(field, error.to_string()));
        }
    }
    None
}

fn json_type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_builtin_kind_parses_good_args() {
        let cases = [
            ("noop", json!({})),
            ("echo", json!({"text": "hi ${ops.a.output}"})),
            ("sleep", json!({"ms": 5})),
            ("read", json!({"path": "a.txt"})),
            (
                "write",
                json!({"path": "a.txt", "content": "x", "append": true}),
            ),
            ("glob", json!({"pattern": "*.rs"})),
            ("grep", json!({"pattern": "fn", "glob": "**/*.rs"})),
            (
                "shell",
                json!({"cmd": "ls", "cwd": "src", "env": {"A": "1"}}),
            ),
            ("memory.put", json!({"key": "k", "value": "v", "ttl": "1h"})),
            ("memory.get", json!({"key": "k"})),
            (
                "agent",
                json!({"cmd": "./swarm.sh", "cwd": "agents", "env": {"ROLE": "architect"}}),
            ),
        ];
        for (kind, args) in &cases {
            let parsed = parse_args(kind, args).unwrap().unwrap();
            assert_eq!(parsed.kind(), *kind);
        }
        assert_eq!(cases.len(), BUILTIN_KINDS.len());
    }

    #[test]
    fn noop_accepts_missing_args() {
        assert!(matches!(
            parse_args("noop", &serde_json::Value::Null),
            Ok(Some(BuiltinArgs::Noop(_)))
        ));
    }

    #[test]
    fn unknown_kind_is_not_checked() {
        assert!(
            parse_args("wordcount", &json!({"anything": 1}))
                .unwrap()
                .is_none()
        );
        assert!(
            parse_args("wordcount", &json!("not an object"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn missing_field_is_named() {
        let error = parse_args("echo", &json!({})).unwrap_err();
        assert_eq!(error.field, "args.text");
        assert_eq!(error.message, "missing field `text`");
    }

    #[test]
    fn unknown_field_is_named() {
        let error = parse_args("echo", &json!({"text": "x", "txet": "y"})).unwrap_err();
        assert_eq!(error.field, "args.txet");
        assert!(
            error.message.contains("unknown field `txet`"),
            "{}",
            error.message
        );
        let error = parse_args("noop", &json!({"x": 1})).unwrap_err();
        assert_eq!(error.field, "args.x");
    }

    #[test]
    fn wrong_type_is_named() {
        let error = parse_args("sleep", &json!({"ms": "soon"})).unwrap_err();
        assert_eq!(error.field, "args.ms");
        assert!(error.message.contains("invalid type"), "{}", error.message);
        let error = parse_args("shell", &json!({"cmd": "ls", "env": {"A": 1}})).unwrap_err();
        assert_eq!(error.field, "args.env");
    }

    #[test]
    fn agent_args_are_checked_and_run_host_programs() {
        let parsed = parse_args("agent", &json!({"cmd": "run-agent", "env": {"A": "1"}}))
            .unwrap()
            .unwrap();
        let BuiltinArgs::Agent(agent) = parsed else {
            panic!("not agent args: {parsed:?}");
        };
        assert_eq!(agent.cmd, "run-agent");
        assert_eq!(agent.cwd, None);
        assert_eq!(agent.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(
            parse_args("agent", &json!({})).unwrap_err().field,
            "args.cmd"
        );
        assert_eq!(
            parse_args("agent", &json!({"cmd": "x", "role": "y"}))
                .unwrap_err()
                .field,
            "args.role"
        );
        assert_eq!(
            parse_args("agent", &json!([1, 2])).unwrap_err().field,
            "args"
        );
        assert!(HOST_PROGRAM_KINDS.contains(&"agent"));
        assert!(BUILTIN_KINDS.contains(&"agent"));
    }

    #[test]
    fn args_must_be_an_object() {
        let error = parse_args("echo", &json!([1])).unwrap_err();
        assert_eq!(error.field, "args");
    }

    #[test]
    fn grep_needs_exactly_one_of_path_and_glob() {
        assert_eq!(
            parse_args("grep", &json!({"pattern": "x"}))
                .unwrap_err()
                .field,
            "args.path"
        );
        let both = json!({"pattern": "x", "path": "a", "glob": "*"});
        assert_eq!(parse_args("grep", &both).unwrap_err().field, "args.glob");
    }

    #[test]
    fn memory_keys_must_not_be_empty() {
        assert_eq!(
            parse_args("memory.get", &json!({"key": ""}))
                .unwrap_err()
                .field,
            "args.key"
        );
        let put = json!({"key": "", "value": "v"});
        assert_eq!(
            parse_args("memory.put", &put).unwrap_err().field,
            "args.key"
        );
    }
}
