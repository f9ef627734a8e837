//! What a batch file's shape gets wrong, found all at once from its plain
//! YAML value once the typed reader has stopped at the first problem:
//! unknown fields (each with the close name, or the `args:` it belongs
//! under), a document that is no mapping at all, and bare-number durations
//! (milliseconds) small enough to be a forgotten unit.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_yaml::Value;

/// One problem in a batch file, where the file says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The op it is in (`None`: the batch, or no op could be named).
    pub op_id: Option<String>,
    /// The field to blame (`timout`, `backoff.inital`); empty for a
    /// problem of the whole file.
    pub field: String,
    /// The 1-based line, when it could be found.
    pub line: Option<usize>,
    pub message: String,
}

/// The fields a `#[serde(deny_unknown_fields)]` struct accepts, read from
/// serde's own list: adding a field to the schema adds it here.
pub(crate) fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("a probe for field names"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("a probe for field names"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _probed = T::deserialize(Probe(&mut fields));
    fields
}

/// The field lists of the schema's structs, by where they are in a file.
pub(crate) struct Schema {
    pub(crate) batch: &'static [&'static str],
    pub(crate) op: &'static [&'static str],
    pub(crate) backoff: &'static [&'static str],
    pub(crate) retry: &'static [&'static str],
}

/// Why `document` is no batch file at all, when it is not a mapping.
pub(crate) fn not_a_batch(document: &Value) -> Option<String> {
    let found = match document {
        Value::Mapping(_) => return None,
        Value::Null => "the file is empty".to_owned(),
        Value::String(_) => "line 1 is plain text".to_owned(),
        Value::Sequence(_) => "the file is a list; put it under `ops:`".to_owned(),
        Value::Bool(_) | Value::Number(_) => "the file holds a single value".to_owned(),
        Value::Tagged(_) => "the file holds a tagged value".to_owned(),
    };
    Some(format!(
        "a batch file is a YAML or JSON mapping with `ops:` (a list of ops, each with `id`, `kind` and `args`) and optional batch settings; {found}"
    ))
}

/// Every unknown field of the batch and of every op, in file order.
pub(crate) fn unknown_fields(text: &str, document: &Value, schema: &Schema) -> Found {
    let mut problems = Found::default();
    let Value::Mapping(batch) = document else {
        return problems;
    };
    let lines = Lines::new(text);
    for (key, value) in batch {
        let Some(key) = key.as_str() else { continue };
        if !schema.batch.contains(&key) {
            problems.push(|| FileProblem {
                op_id: None,
                field: key.to_owned(),
                line: lines.top_level(key),
                message: unknown_message(key, schema.batch, None),
            });
        } else if key == "retry" {
            nested_unknown(&mut problems, value, "retry", schema.retry, None, None);
        }
    }
    let Some(Value::Sequence(ops)) = batch.get("ops") else {
        return problems;
    };
    for (index, op) in ops.iter().enumerate() {
        let Value::Mapping(op_fields) = op else {
            continue;
        };
        let op_id = op_fields
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let kind = op_fields.get("kind").and_then(Value::as_str);
        for (key, value) in op_fields {
            let Some(key) = key.as_str() else { continue };
            let line = lines.op_field(index, key);
            if !schema.op.contains(&key) {
                problems.push(|| FileProblem {
                    op_id: op_id.clone(),
                    field: key.to_owned(),
                    line,
                    message: unknown_message(key, schema.op, kind),
                });
            } else if key == "backoff" {
                nested_unknown(
                    &mut problems,
                    value,
                    "backoff",
                    schema.backoff,
                    op_id.clone(),
                    line,
                );
            }
        }
    }
    problems
}

/// Unknown fields listed, at most: a generated file with the same typo in
/// every op needs one fix, not a million lines.
pub(crate) const MAX_LISTED: usize = 100;

/// The problems found: the first [`MAX_LISTED`], and how many in all. A
/// problem past the cap is counted, never built (its line is not looked
/// for).
#[derive(Default)]
pub(crate) struct Found {
    pub(crate) listed: Vec<FileProblem>,
    pub(crate) total: usize,
}

impl Found {
    fn push(&mut self, problem: impl FnOnce() -> FileProblem) {
        self.total += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(problem());
        }
    }
}

fn nested_unknown(
    problems: &mut Found,
    value: &Value,
    parent: &str,
    known: &[&str],
    op_id: Option<String>,
    line: Option<usize>,
) {
    let Value::Mapping(fields) = value else {
        return;
    };
    for key in fields.keys().filter_map(Value::as_str) {
        if !known.contains(&key) {
            problems.push(|| FileProblem {
                op_id: op_id.clone(),
                field: format!("{parent}.{key}"),
                line,
                message: unknown_message(key, known, None),
            });
        }
    }
}

/// `unknown field; did you mean `timeout`?`, or, for an arg of the op's
/// kind written at op level, where it belongs.
fn unknown_message(key: &str, known: &[&str], kind: Option<&str>) -> String {
    if let Some(kind) = kind
        && let Some(arg_names) = volley_kinds::builtin_arg_names(kind)
        && arg_names.contains(&key)
    {
        return format!(
            "unknown field: `{key}` belongs under `args:` (kind `{kind}` takes `{key}`); indent it under `args:`"
        );
    }
    match closest(key, known) {
        Some(close) => format!("unknown field; did you mean `{close}`?"),
        None => format!("unknown field; known fields are {}", quoted_list(known)),
    }
}

fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The known name within edit distance 2 of `key` (1 for names of three
/// letters or fewer, which are all close to each other).
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let bound = if key.len() <= 3 { 1 } else { 2 };
    let mut best: Option<(usize, &str)> = None;
    for candidate in known {
        if let Some(distance) = volley_plan::bounded_edit_distance(key, candidate, bound)
            && best.is_none_or(|(best_distance, _)| distance < best_distance)
        {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Durations below this, given as a bare number (milliseconds), are
/// warned about: `timeout: 30` is far more often 30 s than 30 ms.
pub(crate) const BARE_MILLIS_WARN_BELOW: u64 = 1000;

/// A warning for every duration field given as a bare number of
/// milliseconds in `1..BARE_MILLIS_WARN_BELOW`.
pub(crate) fn bare_millis_warnings(document: &Value) -> Vec<String> {
    let mut warnings = Vec::new();
    let Value::Mapping(batch) = document else {
        return warnings;
    };
    for field in ["wait_timeout", "deadline"] {
        if let Some(warning) = bare_millis(batch.get(field), field, None) {
            warnings.push(warning);
        }
    }
    let Some(Value::Sequence(ops)) = batch.get("ops") else {
        return warnings;
    };
    for op in ops {
        let Value::Mapping(op_fields) = op else {
            continue;
        };
        let op_id = op_fields.get("id").and_then(Value::as_str);
        for field in ["timeout", "wait_timeout"] {
            if let Some(warning) = bare_millis(op_fields.get(field), field, op_id) {
                warnings.push(warning);
            }
        }
        if let Some(Value::Mapping(backoff)) = op_fields.get("backoff") {
            for field in ["initial", "max"] {
                if let Some(warning) =
                    bare_millis(backoff.get(field), &format!("backoff.{field}"), op_id)
                {
                    warnings.push(warning);
                }
            }
        }
    }
    warnings
}

fn bare_millis(value: Option<&Value>, field: &str, op_id: Option<&str>) -> Option<String> {
    let millis = value?.as_u64()?;
    if millis == 0 || millis >= BARE_MILLIS_WARN_BELOW {
        return None;
    }
    let whose = match op_id {
        Some(op_id) => format!("op `{op_id}`"),
        None => "the batch".to_owned(),
    };
    Some(format!(
        "{whose}: `{field}: {millis}` is {millis} ms; write `{millis}s` if you meant seconds (write `{millis}ms` to silence this)"
    ))
}

/// Where keys are in a block-style YAML file: its top-level keys and each
/// op's own keys (not those nested in its `args`). Flow style and JSON
/// are not followed; their problems go without a line.
struct Lines<'a> {
    lines: Vec<&'a str>,
    /// For each op, its first line and its keys' column (0-based).
    ops: Vec<(usize, usize)>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        let lines: Vec<&str> = text.lines().collect();
        let mut ops = Vec::new();
        let ops_line = lines
            .iter()
            .position(|line| line.trim_end().starts_with("ops:"));
        if let Some(ops_line) = ops_line {
            let mut item_indent: Option<usize> = None;
            for (number, line) in lines.iter().enumerate().skip(ops_line + 1) {
                let trimmed = line.trim_start_matches(' ');
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                let indent = line.len() - trimmed.len();
                if indent == 0 && !trimmed.starts_with('-') {
                    break; // the next top-level key
                }
                if !trimmed.starts_with("- ") && trimmed != "-" {
                    continue;
                }
                match item_indent {
                    None => item_indent = Some(indent),
                    Some(item) if item != indent => continue,
                    Some(_) => {}
                }
                let after_dash = trimmed[1..].len() - trimmed[1..].trim_start_matches(' ').len();
                ops.push((number, indent + 1 + after_dash));
            }
        }
        Lines { lines, ops }
    }

    fn top_level(&self, key: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|line| key_of(line) == Some((0, key)))
            .map(|index| index + 1)
    }

    fn op_field(&self, op_index: usize, key: &str) -> Option<usize> {
        let (start, column) = *self.ops.get(op_index)?;
        let end = self
            .ops
            .get(op_index + 1)
            .map_or(self.lines.len(), |(next, _)| *next);
        (start..end)
            .find(|&number| {
                let line = self.lines[number];
                // The first line of the op holds `- key:`; read it as if
                // the dash were a space.
                let line = if number == start {
                    line.replacen('-', " ", 1)
                } else {
                    line.to_owned()
                };
                key_of(&line) == Some((column, key))
            })
            .map(|index| index + 1)
    }
}

/// The column and name of the key a `key: …` line opens.
fn key_of(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start_matches(' ');
    let column = line.len() - trimmed.len();
    let (key, _) = trimmed.split_once(':')?;
    let key = key.trim_end();
    let key = key
        .strip_prefix('"')
        .and_then(|key| key.strip_suffix('"'))
        .or_else(|| {
            key.strip_prefix('\'')
                .and_then(|key| key.strip_suffix('\''))
        })
        .unwrap_or(key);
    Some((column, key))
}
