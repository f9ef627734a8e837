//! `foreach:` on an op of a batch file — one op written once and run over a
//! list, a range or a glob of files — expanded here, on the client, into
//! ordinary named ops before anything is validated or sent.
//!
//! Expanding before the planner sees the batch means every expansion is
//! checked like a hand-written op (ids, references, hazards across all of
//! them, the batch's limits) by the code that checks every other op, and
//! the coordinator, the store and the workers need not know `foreach`
//! exists.
//!
//! An item is data, never code or a template: in the `cmd` of a program
//! (`shell`, `agent`) `${item}` becomes a quoted reference to an
//! environment variable holding the value
//! ([`volley_kinds::template::quote_variables`], the path
//! `${ops.ID.output}` takes), so `$(touch pwned)` as an item is printed,
//! not run; in every other string the value is pasted with its `${`
//! escaped as `$${`, so an item spelling `${memory.K}` or `${secret.S}`
//! stays that text.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Component, Path};

use serde::Deserialize;
use serde::de::Deserializer;
use serde_json::Value;
use volley_proto::v1;

/// The most ops one `foreach` may expand into.
pub const MAX_EXPANSION: usize = 10_000;

/// The most ops all the `foreach`s of a batch may expand into together.
pub const MAX_EXPANDED_OPS: usize = 100_000;

/// The longest item text used in an expanded op's id (`test-unit`); longer
/// items are numbered instead.
const MAX_ID_ITEM_LEN: usize = 48;

/// Where the items of a `foreach` come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Foreach {
    /// `foreach: [a, b, c]` or `foreach: [{suite: a, n: 1}, …]`.
    List(Vec<Item>),
    /// `foreach: {range: [1, 200]}`: the integers from the first to the
    /// last, both included.
    Range { first: i64, last: i64 },
    /// `foreach: {glob: "tests/*.py"}`: the files matching the pattern,
    /// relative to the batch file's directory, sorted.
    Glob(String),
}

/// One item: a scalar (`${item}`) or a mapping of scalars (`${item.F}`).
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Scalar(String),
    Fields(BTreeMap<String, String>),
}

impl Item {
    fn label(&self) -> String {
        match self {
            Item::Scalar(text) => text.clone(),
            Item::Fields(fields) => {
                let pairs: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| format!("{name}: {value}"))
                    .collect();
                format!("{{{}}}", pairs.join(", "))
            }
        }
    }
}

/// Why a `foreach` could not be expanded. Names the op, the line of its
/// `foreach` (when found), the item (1-based, with its text) and the
/// field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ForeachError {
    pub op_id: String,
    pub line: Option<usize>,
    /// The item's number (from 1) and text.
    pub item: Option<(usize, String)>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ForeachError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "op `{}`", self.op_id)?;
        if let Some(line) = self.line {
            write!(formatter, " (line {line})")?;
        }
        if let Some((number, text)) = &self.item {
            write!(formatter, " item {number} (`{}`)", shorten(text))?;
        }
        write!(formatter, ": field `{}`: {}", self.field, self.message)
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= 60 {
        text.to_owned()
    } else {
        let head: String = text.chars().take(57).collect();
        format!("{head}…")
    }
}

/// `deserialize_with` for an op's `foreach`: kept as read, checked by
/// [`expand`], whose errors name the op, the field and the line.
pub(crate) fn foreach_field<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Value>, D::Error> {
    let value: Option<Value> = Option::deserialize(deserializer)?;
    Ok(value.filter(|value| !value.is_null()))
}

const EXPECTED: &str =
    "expected a list (`[a, b]`), `{range: [FIRST, LAST]}` or `{glob: \"PATTERN\"}`";

impl Foreach {
    /// Reads a `foreach` value, refusing one that could expand into more
    /// than [`MAX_EXPANSION`] ops.
    pub fn from_value(value: Value) -> Result<Foreach, String> {
        match value {
            Value::Array(items) => {
                if items.is_empty() {
                    return Err("an empty list: give at least one item".to_owned());
                }
                if items.len() > MAX_EXPANSION {
                    return Err(format!(
                        "{} items: a `foreach` expands into at most {MAX_EXPANSION} ops",
                        items.len()
                    ));
                }
                items
                    .into_iter()
                    .enumerate()
                    .map(|(index, item)| {
                        item_from_value(item)
                            .map_err(|message| format!("item {}: {message}", index + 1))
                    })
                    .collect::<Result<_, _>>()
                    .map(Foreach::List)
            }
            Value::Object(map) if map.len() == 1 => {
                let Some((key, inner)) = map.into_iter().next() else {
                    return Err(EXPECTED.to_owned());
                };
                match (key.as_str(), inner) {
                    ("range", Value::Array(bounds)) => {
                        let [first, last] = bounds.as_slice() else {
                            return Err("`range` takes two integers, `[FIRST, LAST]`".to_owned());
                        };
                        let (Some(first), Some(last)) = (first.as_i64(), last.as_i64()) else {
                            return Err("`range` takes two integers, `[FIRST, LAST]`".to_owned());
                        };
                        if last < first {
                            return Err(format!(
                                "`range: [{first}, {last}]` is empty: the last must not be below the first"
                            ));
                        }
                        let count = i128::from(last) - i128::from(first) + 1;
                        if count > MAX_EXPANSION as i128 {
                            return Err(format!(
                                "`range: [{first}, {last}]` has {count} items: a `foreach` expands into at most {MAX_EXPANSION} ops"
                            ));
                        }
                        Ok(Foreach::Range { first, last })
                    }
                    ("glob", Value::String(pattern)) => {
                        check_glob(&pattern)?;
                        Ok(Foreach::Glob(pattern))
                    }
                    ("range", _) => Err("`range` takes two integers, `[FIRST, LAST]`".to_owned()),
                    ("glob", _) => Err("`glob` takes a pattern, like `\"tests/*.py\"`".to_owned()),
                    (other, _) => Err(format!("unknown source `{other}`: {EXPECTED}")),
                }
            }
            _ => Err(EXPECTED.to_owned()),
        }
    }

    /// The items, globs resolved against `base_dir`.
    fn items(&self, base_dir: &Path) -> Result<Vec<Item>, String> {
        match self {
            Foreach::List(items) => Ok(items.clone()),
            Foreach::Range { first, last } => Ok((*first..=*last)
                .map(|number| Item::Scalar(number.to_string()))
                .collect()),
            Foreach::Glob(pattern) => glob_items(pattern, base_dir),
        }
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn item_from_value(value: Value) -> Result<Item, String> {
    if let Some(text) = scalar_text(&value) {
        if text.contains('\0') {
            return Err("holds a NUL byte, which no command or file name can carry".to_owned());
        }
        return Ok(Item::Scalar(text));
    }
    let Value::Object(map) = value else {
        return Err(
            "an item is a string, a number, a boolean or a mapping of those (`{suite: api, n: 1}`)"
                .to_owned(),
        );
    };
    let mut fields = BTreeMap::new();
    for (name, field) in map {
        if name.is_empty()
            || !name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
        {
            return Err(format!(
                "field `{name}`: a field's name is letters, digits and `_`"
            ));
        }
        let Some(text) = scalar_text(&field) else {
            return Err(format!(
                "field `{name}`: a field's value is a string, a number or a boolean, not a list or a mapping"
            ));
        };
        if text.contains('\0') {
            return Err(format!("field `{name}`: holds a NUL byte"));
        }
        fields.insert(name, text);
    }
    Ok(Item::Fields(fields))
}

/// A glob stays inside the batch file's directory.
fn check_glob(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("an empty `glob` pattern".to_owned());
    }
    let path = Path::new(pattern);
    if path.is_absolute()
        || path
            .components()
            .any(|component| matches!(component, Component::ParentDir | Component::Prefix(_)))
    {
        return Err(format!(
            "`glob: {pattern}`: a glob is relative to the batch file's directory and stays inside it (no leading `/`, no `..`)"
        ));
    }
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|_| ())
        .map_err(|error| format!("`glob: {pattern}`: {error}"))
}

fn glob_items(pattern: &str, base_dir: &Path) -> Result<Vec<Item>, String> {
    let matcher = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|error| format!("`glob: {pattern}`: {error}"))?
        .compile_matcher();
    // Walk only below the pattern's literal directory (`tests/` of
    // `tests/*.py`), and no deeper than it can match without `**`.
    let components: Vec<&str> = pattern.split('/').filter(|part| !part.is_empty()).collect();
    let literal: Vec<&str> = components
        .iter()
        .take_while(|part| !part.contains(['*', '?', '[', '{']))
        .copied()
        .collect();
    let literal_len = literal.len().min(components.len().saturating_sub(1));
    let root = literal[..literal_len]
        .iter()
        .fold(base_dir.to_path_buf(), |path, part| path.join(part));
    let depth = if pattern.contains("**") {
        usize::MAX
    } else {
        components.len() - literal_len
    };
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(&root)
        .follow_links(false)
        .min_depth(1)
        .max_depth(depth)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
    {
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(relative) = entry.path().strip_prefix(base_dir) else {
            continue;
        };
        let Some(text) = relative.to_str() else {
            continue;
        };
        let text = text.replace(std::path::MAIN_SEPARATOR, "/");
        if matcher.is_match(&text) {
            found.push(text);
            if found.len() > MAX_EXPANSION {
                return Err(format!(
                    "`glob: {pattern}` matches more than {MAX_EXPANSION} files: a `foreach` expands into at most {MAX_EXPANSION} ops"
                ));
            }
        }
    }
    if found.is_empty() {
        return Err(format!(
            "`glob: {pattern}` matches no file under {} (a glob is relative to the batch file's directory)",
            base_dir.display()
        ));
    }
    found.sort();
    Ok(found.into_iter().map(Item::Scalar).collect())
}

/// The ops of a batch file as read, each with its `foreach` if it has one.
#[derive(Default)]
pub(crate) struct ReadOps {
    pub ops: Vec<v1::Op>,
    pub foreach: Vec<(usize, Value)>,
}

/// Expands every `foreach` of `ops` in place: each such op becomes its
/// expansions, in item order, and an `after:` naming it names them all.
/// `text` (the file) is only read to find the line of each `foreach`.
pub fn expand(
    ops: &mut Vec<v1::Op>,
    foreach: Vec<(usize, Value)>,
    base_dir: &Path,
    text: &str,
) -> Result<(), ForeachError> {
    if foreach.is_empty() {
        return Ok(());
    }
    let lines = foreach_lines(text);
    let mut expansions: HashMap<usize, Vec<v1::Op>> = HashMap::new();
    let mut total = 0usize;
    for (number, (index, source)) in foreach.into_iter().enumerate() {
        let Some(template) = ops.get(index) else {
            continue;
        };
        let line = lines.get(number).copied();
        let fail = |item: Option<(usize, String)>, field: &str, message: String| ForeachError {
            op_id: template.id.clone(),
            line,
            item,
            field: field.to_owned(),
            message,
        };
        let items = Foreach::from_value(source)
            .and_then(|source| source.items(base_dir))
            .map_err(|message| fail(None, "foreach", message))?;
        total += items.len();
        if total > MAX_EXPANDED_OPS {
            return Err(fail(
                None,
                "foreach",
                format!(
                    "the batch's `foreach`s expand into more than {MAX_EXPANDED_OPS} ops together"
                ),
            ));
        }
        let ids = expanded_ids(&template.id, &items);
        let mut expanded = Vec::with_capacity(items.len());
        for (position, (item, id)) in items.iter().zip(ids).enumerate() {
            let op = expand_one(template, item, position + 1, id).map_err(|(field, message)| {
                fail(Some((position + 1, item.label())), &field, message)
            })?;
            expanded.push(op);
        }
        expansions.insert(index, expanded);
    }
    // The group ids, for `after:`.
    let groups: HashMap<String, Vec<String>> = expansions
        .iter()
        .filter_map(|(index, expanded)| {
            let id = ops.get(*index)?.id.clone();
            Some((id, expanded.iter().map(|op| op.id.clone()).collect()))
        })
        .collect();
    let group_of: HashMap<&String, &String> = groups
        .iter()
        .flat_map(|(group, ids)| ids.iter().map(move |id| (id, group)))
        .collect();
    let written: Vec<v1::Op> = std::mem::take(ops);
    let mut seen: HashSet<String> = HashSet::with_capacity(written.len() + total);
    let mut clash: Option<ForeachError> = None;
    for (index, op) in written.into_iter().enumerate() {
        let produced = match expansions.remove(&index) {
            Some(expanded) => expanded,
            None => vec![op],
        };
        for mut op in produced {
            if !seen.insert(op.id.clone())
                && let Some(group) = group_of.get(&op.id)
                && clash.is_none()
            {
                clash = Some(ForeachError {
                    op_id: (*group).clone(),
                    line: None,
                    item: None,
                    field: "id".to_owned(),
                    message: format!(
                        "its expansion `{}` has the id of another op: rename one of them",
                        op.id
                    ),
                });
            }
            if op.after.iter().any(|after| groups.contains_key(after)) {
                op.after = op
                    .after
                    .iter()
                    .flat_map(|after| match groups.get(after) {
                        Some(ids) => ids.clone(),
                        None => vec![after.clone()],
                    })
                    .collect();
            }
            if clash.is_none() {
                clash = group_reference(&op, &groups);
            }
            ops.push(op);
        }
    }
    match clash {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// A `${ops.G.…}` in `op`'s args where `G` is a `foreach` op: there is no
/// op `G` any more, only its expansions, and no one value to fill in.
fn group_reference(op: &v1::Op, groups: &HashMap<String, Vec<String>>) -> Option<ForeachError> {
    let mut rest = op.args_json.as_str();
    while let Some(at) = rest.find("${ops.") {
        rest = &rest[at + "${ops.".len()..];
        let named = rest.split(['.', '}']).next().unwrap_or_default();
        let Some(members) = groups.get(named) else {
            continue;
        };
        let first = members.first().map_or("", String::as_str);
        let last = members.last().map_or("", String::as_str);
        return Some(ForeachError {
            op_id: op.id.clone(),
            line: None,
            item: None,
            field: "args".to_owned(),
            message: format!(
                "`${{ops.{named}.…}}` names the foreach op `{named}`, which became {} ops (`{first}` … `{last}`) with no one value: name one of them (`${{ops.{first}.output}}`), or give each a `store_as: {named}/${{item}}` and read those keys (`volley memory ls {named}/`)",
                members.len()
            ),
        });
    }
    None
}

/// The line (from 1) of each `foreach` key in the file, in order.
fn foreach_lines(text: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate() {
        // A YAML comment's `foreach:` is no key.
        let mut rest = line.split(" #").next().unwrap_or(line);
        if rest.trim_start().starts_with('#') {
            continue;
        }
        while let Some(at) = rest.find("foreach") {
            let after = rest[at + "foreach".len()..].trim_start_matches('"');
            if after.trim_start().starts_with(':') {
                lines.push(number + 1);
            }
            rest = &rest[at + "foreach".len()..];
        }
    }
    lines
}

/// `<id>-<item>` when every item is a short scalar spelled with the
/// characters of an id (and `/`, written `_`: `tests/a.py` gives
/// `py-tests_a.py`) and no two are alike; otherwise `<id>-<n>`, counting
/// from 1.
fn expanded_ids(id: &str, items: &[Item]) -> Vec<String> {
    let named: Option<Vec<String>> = items
        .iter()
        .map(|item| match item {
            Item::Scalar(text)
                if !text.is_empty()
                    && text.len() <= MAX_ID_ITEM_LEN
                    && text
                        .bytes()
                        .all(|byte| byte == b'/' || volley_kinds::template::is_id_byte(byte)) =>
            {
                Some(text.replace('/', "_"))
            }
            _ => None,
        })
        .collect();
    if let Some(named) = named {
        let distinct: HashSet<&String> = named.iter().collect();
        if distinct.len() == named.len() {
            return named.iter().map(|name| format!("{id}-{name}")).collect();
        }
    }
    (1..=items.len())
        .map(|number| format!("{id}-{number}"))
        .collect()
}

/// A placeholder found in a string.
enum Placeholder<'a> {
    Item,
    Field(&'a str),
    Index,
}

/// The `${item}`, `${item.F}` and `${index}` of `text`, with their byte
/// ranges; `$${` escapes and other templates are skipped.
fn placeholders(text: &str) -> Vec<(std::ops::Range<usize>, Placeholder<'_>)> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index..].starts_with(b"$${") {
            index += 3;
            continue;
        }
        if bytes[index..].starts_with(b"${") {
            let body_start = index + 2;
            let Some(length) = text[body_start..].find('}') else {
                break;
            };
            let body = &text[body_start..body_start + length];
            let end = body_start + length + 1;
            let placeholder = match body {
                "item" => Some(Placeholder::Item),
                "index" => Some(Placeholder::Index),
                _ => body.strip_prefix("item.").map(Placeholder::Field),
            };
            if let Some(placeholder) = placeholder {
                found.push((index..end, placeholder));
            }
            index = end;
            continue;
        }
        index += 1;
    }
    found
}

fn value_of(placeholder: &Placeholder<'_>, item: &Item, number: usize) -> Result<String, String> {
    match (placeholder, item) {
        (Placeholder::Index, _) => Ok(number.to_string()),
        (Placeholder::Item, Item::Scalar(text)) => Ok(text.clone()),
        (Placeholder::Item, Item::Fields(fields)) => {
            let names: Vec<&str> = fields.keys().map(String::as_str).collect();
            Err(format!(
                "`${{item}}` of a mapping item: name a field, `${{item.FIELD}}` (it has {})",
                names.join(", ")
            ))
        }
        (Placeholder::Field(name), Item::Fields(fields)) => {
            fields.get(*name).cloned().ok_or_else(|| {
                let names: Vec<&str> = fields.keys().map(String::as_str).collect();
                format!(
                    "`${{item.{name}}}`: the item has no field `{name}` (it has {})",
                    names.join(", ")
                )
            })
        }
        (Placeholder::Field(name), Item::Scalar(_)) => Err(format!(
            "`${{item.{name}}}`: the item is not a mapping, write `${{item}}`"
        )),
    }
}

/// `text` with its placeholders filled, each value's `${` escaped when
/// `escape` (a string the template pass reads afterwards).
fn fill(text: &str, item: &Item, number: usize, escape: bool) -> Result<String, String> {
    let found = placeholders(text);
    if found.is_empty() {
        return Ok(text.to_owned());
    }
    let mut filled = String::with_capacity(text.len() + 16);
    let mut done = 0;
    for (range, placeholder) in &found {
        filled.push_str(&text[done..range.start]);
        let value = value_of(placeholder, item, number)?;
        if escape {
            filled.push_str(&value.replace("${", "$${"));
        } else {
            filled.push_str(&value);
        }
        done = range.end;
    }
    filled.push_str(&text[done..]);
    Ok(filled)
}

/// The environment variable holding a placeholder's value in a `cmd`.
fn variable_name(placeholder: &Placeholder<'_>) -> String {
    match placeholder {
        Placeholder::Item => "VOLLEY_ITEM".to_owned(),
        Placeholder::Index => "VOLLEY_INDEX".to_owned(),
        Placeholder::Field(name) => format!("VOLLEY_ITEM_{name}"),
    }
}

fn fill_value(
    value: &Value,
    path: &str,
    item: &Item,
    number: usize,
) -> Result<Value, (String, String)> {
    Ok(match value {
        Value::String(text) => Value::String(
            fill(text, item, number, true).map_err(|message| (path.to_owned(), message))?,
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(index, inner)| fill_value(inner, &format!("{path}[{index}]"), item, number))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, inner)| {
                    Ok((
                        key.clone(),
                        fill_value(inner, &format!("{path}.{key}"), item, number)?,
                    ))
                })
                .collect::<Result<_, (String, String)>>()?,
        ),
        other => other.clone(),
    })
}

/// The args of one expansion. A program's `cmd` gets its values through
/// the environment (see the module doc).
fn fill_args(
    kind: &str,
    args: &Value,
    item: &Item,
    number: usize,
) -> Result<Value, (String, String)> {
    let Value::Object(map) = args else {
        return fill_value(args, "args", item, number);
    };
    let program = volley_kinds::HOST_PROGRAM_KINDS.contains(&kind);
    let mut filled = serde_json::Map::with_capacity(map.len() + 1);
    let mut variables: Vec<(String, String)> = Vec::new();
    for (key, inner) in map {
        let path = format!("args.{key}");
        match (key.as_str(), inner) {
            ("cmd", Value::String(cmd)) if program => {
                let found = placeholders(cmd);
                let mut spots = Vec::with_capacity(found.len());
                for (range, placeholder) in &found {
                    let name = variable_name(placeholder);
                    let value = value_of(placeholder, item, number)
                        .map_err(|message| (path.clone(), message))?;
                    if !variables.iter().any(|(known, _)| known == &name) {
                        variables.push((name.clone(), value));
                    }
                    spots.push((range.clone(), name));
                }
                let spots: Vec<volley_kinds::template::Spot<'_>> = spots
                    .iter()
                    .map(|(range, name)| volley_kinds::template::Spot {
                        range: range.clone(),
                        name: name.as_str(),
                        value: variables
                            .iter()
                            .find(|(known, _)| known == name)
                            .map_or("", |(_, value)| value.as_str()),
                    })
                    .collect();
                let quoted = volley_kinds::template::quote_variables(cmd, &spots)
                    .map_err(|message| (path.clone(), message))?;
                filled.insert(key.clone(), Value::String(quoted));
            }
            _ => {
                filled.insert(key.clone(), fill_value(inner, &path, item, number)?);
            }
        }
    }
    if !variables.is_empty() {
        let env = filled
            .entry("env")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        let Value::Object(env) = env else {
            return Err(("args.env".to_owned(), "`env` is not a mapping".to_owned()));
        };
        for (name, value) in variables {
            if env.contains_key(&name) {
                return Err((
                    format!("args.env.{name}"),
                    format!("`{name}` holds the item for `cmd`: rename this variable"),
                ));
            }
            // The env pass at dispatch reads templates: the value's `${`
            // stays text.
            env.insert(name, Value::String(value.replace("${", "$${")));
        }
    }
    Ok(Value::Object(filled))
}

fn expand_one(
    template: &v1::Op,
    item: &Item,
    number: usize,
    id: String,
) -> Result<v1::Op, (String, String)> {
    let mut op = template.clone();
    op.id = id;
    op.group = template.id.clone();
    if !template.args_json.is_empty() {
        let args: Value = serde_json::from_str(&template.args_json)
            .map_err(|error| ("args".to_owned(), error.to_string()))?;
        op.args_json = fill_args(&template.kind, &args, item, number)?.to_string();
    }
    let plain = |field: &str, text: &str| {
        fill(text, item, number, false).map_err(|message| (field.to_owned(), message))
    };
    op.store_as = plain("store_as", &template.store_as)?;
    for (field, list) in [
        ("after", &mut op.after),
        ("wait_for", &mut op.wait_for),
        ("wait_for_any", &mut op.wait_for_any),
        ("reads", &mut op.reads),
        ("writes", &mut op.writes),
    ] {
        for entry in list.iter_mut() {
            *entry = plain(field, entry)?;
        }
    }
    Ok(op)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::parse_batch;

    fn args(op: &v1::Op) -> Value {
        serde_json::from_str(&op.args_json).unwrap()
    }

    #[test]
    fn a_list_expands_into_ops_named_by_their_items() {
        let batch = parse_batch(
            "ops:\n  - id: test\n    kind: echo\n    foreach: [unit, api]\n    args: {text: \"suite ${item} #${index}\"}\n  - id: sum\n    kind: noop\n    after: [test]\n",
            "m.yaml",
        )
        .unwrap();
        let ids: Vec<&str> = batch.ops.iter().map(|op| op.id.as_str()).collect();
        assert_eq!(ids, ["test-unit", "test-api", "sum"]);
        assert_eq!(
            args(&batch.ops[1]),
            serde_json::json!({"text": "suite api #2"})
        );
        assert_eq!(batch.ops[2].after, ["test-unit", "test-api"]);
        let groups: Vec<&str> = batch.ops.iter().map(|op| op.group.as_str()).collect();
        assert_eq!(groups, ["test", "test", ""]);
    }

    #[test]
    fn a_reference_to_a_foreach_op_says_it_became_many() {
        let error = parse_batch(
            "ops:\n  - id: grep\n    kind: echo\n    foreach: {range: [1, 20]}\n    args: {text: \"${item}\"}\n  - id: sum\n    kind: echo\n    after: [grep]\n    args: {text: \"${ops.grep.output}\"}\n",
            "m.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("op `sum`: field `args`: `${ops.grep.…}` names the foreach op `grep`, which became 20 ops (`grep-1` … `grep-20`) with no one value: name one of them (`${ops.grep-1.output}`)"),
            "{error}"
        );
    }

    #[test]
    fn a_range_numbers_its_ops_and_memory_keys_take_the_item() {
        let batch = parse_batch(
            "ops:\n  - id: grep\n    kind: echo\n    foreach: {range: [1, 200]}\n    args: {text: \"${item}\"}\n    store_as: out/${item}\n",
            "m.yaml",
        )
        .unwrap();
        assert_eq!(batch.ops.len(), 200);
        assert_eq!(batch.ops[0].id, "grep-1");
        assert_eq!(batch.ops[199].id, "grep-200");
        assert_eq!(batch.ops[199].store_as, "out/200");
    }

    #[test]
    fn mapping_items_fill_fields_and_a_missing_field_names_the_item() {
        let batch = parse_batch(
            "ops:\n  - id: t\n    kind: echo\n    foreach: [{suite: a, n: 1}, {suite: b, n: 2}]\n    args: {text: \"${item.suite}=${item.n}\"}\n",
            "m.yaml",
        )
        .unwrap();
        assert_eq!(batch.ops[1].id, "t-2");
        assert_eq!(args(&batch.ops[1]), serde_json::json!({"text": "b=2"}));
        let error = parse_batch(
            "ops:\n  - id: test\n    kind: echo\n    foreach: [{suite: a}, {suite: b}, {name: api}]\n    args: {text: \"${item.suite}\"}\n",
            "m.yaml",
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("op `test` (line 4) item 3 (`{name: api}`): field `args.text`")
                && text.contains("no field `suite`"),
            "{text}"
        );
    }

    #[test]
    fn hostile_sources_are_refused_with_the_op_named() {
        for (foreach, expected) in [
            ("{range: [1, 100000000000]}", "at most 10000"),
            ("{range: [5, 1]}", "is empty"),
            ("[]", "empty list"),
            ("[[[1]]]", "item 1"),
            ("[{a: {b: 1}}]", "not a list or a mapping"),
            ("{glob: \"/etc/*\"}", "stays inside"),
            ("{glob: \"../*\"}", "stays inside"),
            ("{sql: x}", "unknown source"),
            ("7", "expected a list"),
        ] {
            let error = parse_batch(
                &format!("ops:\n  - id: bad\n    kind: noop\n    foreach: {foreach}\n"),
                "m.yaml",
            )
            .unwrap_err();
            let text = error.to_string();
            assert!(
                text.contains("op `bad`") && text.contains("foreach") && text.contains(expected),
                "{foreach}: {text}"
            );
        }
        let many: Vec<String> = (0..10_001).map(|n| n.to_string()).collect();
        let error = parse_batch(
            &format!(
                "ops:\n  - id: big\n    kind: noop\n    foreach: [{}]\n",
                many.join(",")
            ),
            "m.yaml",
        )
        .unwrap_err();
        assert!(error.to_string().contains("at most 10000"), "{error}");
    }

    #[test]
    fn an_expanded_id_clashing_with_another_op_is_an_error() {
        let error = parse_batch(
            "ops:\n  - id: t-a\n    kind: noop\n  - id: t\n    kind: noop\n    foreach: [a, b]\n",
            "m.yaml",
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("op `t`") && error.to_string().contains("`t-a` has the id"),
            "{error}"
        );
    }

    #[test]
    fn items_in_a_shell_cmd_go_through_the_environment() {
        let batch = parse_batch(
            "ops:\n  - id: s\n    kind: shell\n    foreach: [\"$(touch pwned)\", \"${memory.k}\"]\n    args: {cmd: \"echo ${item} '${item}' \\\"${item}\\\" ${ops.x.output}\", cwd: \"d-${item}\"}\n",
            "m.yaml",
        )
        .unwrap();
        assert_eq!(batch.ops[0].id, "s-1");
        let first = args(&batch.ops[0]);
        assert_eq!(
            first["cmd"],
            "echo \"$${VOLLEY_ITEM}\" ''\"$${VOLLEY_ITEM}\"'' \"$${VOLLEY_ITEM}\" ${ops.x.output}"
        );
        assert_eq!(first["env"]["VOLLEY_ITEM"], "$(touch pwned)");
        let second = args(&batch.ops[1]);
        // An item spelling a template stays text for the template pass.
        assert_eq!(second["env"]["VOLLEY_ITEM"], "$${memory.k}");
        assert_eq!(second["cwd"], "d-$${memory.k}");
        let refs = volley_kinds::references(&second).unwrap();
        assert_eq!(
            refs,
            vec![volley_kinds::Reference::OpOutput("x".to_owned())]
        );
    }

    #[test]
    fn a_glob_lists_files_relative_to_the_batch_file_sorted() {
        let dir = std::env::temp_dir().join(format!("volley-matrix-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tests/deep")).unwrap();
        for name in ["b.py", "a.py", "c.txt", "deep/d.py"] {
            std::fs::write(dir.join("tests").join(name), "x").unwrap();
        }
        let path = dir.join("batch.yaml");
        std::fs::write(
            &path,
            "ops:\n  - id: py\n    kind: echo\n    foreach: {glob: \"tests/*.py\"}\n    args: {text: \"${item}\"}\n",
        )
        .unwrap();
        let batch = crate::read_batch_file(&path).unwrap();
        let ids: Vec<&str> = batch.ops.iter().map(|op| op.id.as_str()).collect();
        assert_eq!(ids, ["py-tests_a.py", "py-tests_b.py"]);
        assert_eq!(
            args(&batch.ops[0]),
            serde_json::json!({"text": "tests/a.py"})
        );
        std::fs::write(
            &path,
            "ops:\n  - id: py\n    kind: echo\n    foreach: {glob: \"nothing/*.rs\"}\n",
        )
        .unwrap();
        let error = crate::read_batch_file(&path).unwrap_err();
        assert!(error.to_string().contains("matches no file"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_json_batch_file_expands_and_names_the_line_of_its_foreach() {
        let text = "{\"ops\": [\n {\"id\": \"a\", \"kind\": \"noop\"},\n {\"id\": \"t\", \"kind\": \"echo\", \"foreach\": [1, 2], \"args\": {\"text\": \"${item}\"}},\n {\"id\": \"u\", \"kind\": \"noop\", \"foreach\": {\"range\": [3, 1]}}\n]}";
        let error = parse_batch(text, "m.json").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("m.json: op `u` (line 4): field `foreach`: "),
            "{error}"
        );
        let batch = parse_batch(&text.replace("[3, 1]", "[1, 1]"), "m.json").unwrap();
        let ids: Vec<&str> = batch.ops.iter().map(|op| op.id.as_str()).collect();
        assert_eq!(ids, ["a", "t-1", "t-2", "u-1"]);
    }

    #[test]
    fn ops_without_foreach_are_untouched() {
        let batch = parse_batch(
            "ops:\n  - id: a\n    kind: echo\n    args: {text: \"${item}\"}\n",
            "m.yaml",
        )
        .unwrap();
        assert_eq!(args(&batch.ops[0]), serde_json::json!({"text": "${item}"}));
    }
}
