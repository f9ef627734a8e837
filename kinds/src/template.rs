//! `${ops.ID.output}`, `${ops.ID.status}` and `${memory.KEY}` in args: the
//! planner reads them to add implicit dependencies, the worker fills them in
//! at dispatch, and both go through this one parser so they never disagree.
//!
//! Templates live only in JSON string values (never in object keys). `$${`
//! is a literal `${`.
//!
//! In the `cmd` of a program (`shell`, `agent`) a filled value is never
//! pasted into the command text, where the shell would parse it:
//! [`render_command`] puts each value in an environment variable
//! (`VOLLEY_IN_1`, `VOLLEY_IN_2`, …) and writes a quoted reference to it
//! where the template was, quoted for the spot it stands in (bare, inside
//! `'…'` or inside `"…"`). The shell expands a variable's value without
//! parsing it again, so quotes, `$(…)`, backticks, `;` and newlines in an
//! op's output stay data whatever the command around them does; each
//! value is one word.

use std::fmt;

use serde_json::Value;

/// What a template refers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    /// `${ops.ID.output}`: the output of op `ID`.
    OpOutput(String),
    /// `${ops.ID.status}`: how op `ID` ended (`succeeded`, `failed`, …).
    OpStatus(String),
    /// `${memory.KEY}`: the value of memory key `KEY`.
    Memory(String),
    /// `${secret.NAME}`: a secret the worker that runs the op holds. Never
    /// filled in by the coordinator: see [`render_command`].
    Secret(String),
}

impl Reference {
    /// The op this reference makes a dependency, if any.
    pub fn op_id(&self) -> Option<&str> {
        match self {
            Reference::OpOutput(id) | Reference::OpStatus(id) => Some(id),
            Reference::Memory(_) | Reference::Secret(_) => None,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::OpOutput(id) => write!(formatter, "${{ops.{id}.output}}"),
            Reference::OpStatus(id) => write!(formatter, "${{ops.{id}.status}}"),
            Reference::Memory(key) => write!(formatter, "${{memory.{key}}}"),
            Reference::Secret(name) => write!(formatter, "${{secret.{name}}}"),
        }
    }
}

/// A malformed template, or one `render` had no value for. `path` is where
/// in the args it sits, like `args.cmd` or `args.list[2]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TemplateError {
    pub path: String,
    pub message: String,
}

/// Every reference in the string values of `value` (an op's args), in the
/// order they appear, duplicates included.
pub fn references(value: &Value) -> Result<Vec<Reference>, TemplateError> {
    let mut found = Vec::new();
    walk(value, &JsonPath::Root, &mut |_, reference| {
        found.push(reference)
    })?;
    Ok(found)
}

/// Like [`references`], with where each one sits (`args.cmd`, `args.l[0]`),
/// so a reference to a missing op can be reported at its field.
pub fn located_references(value: &Value) -> Result<Vec<(String, Reference)>, TemplateError> {
    let mut found = Vec::new();
    walk(value, &JsonPath::Root, &mut |path, reference| {
        found.push((path.to_string(), reference))
    })?;
    Ok(found)
}

/// `value` with every template replaced by what `lookup` returns for it and
/// every `$${` by `${`. A reference `lookup` has no value for is an error.
pub fn render(
    value: &Value,
    lookup: &dyn Fn(&Reference) -> Option<String>,
) -> Result<Value, TemplateError> {
    render_at(value, &JsonPath::Root, lookup)
}

/// The environment variable holding the `number`-th distinct value filled
/// into a program's `cmd` (1-based).
pub fn command_variable(number: usize) -> String {
    format!("VOLLEY_IN_{number}")
}

/// [`render`] for the args of a program kind (`shell`, `agent`): `cmd`'s
/// templates become quoted references to environment variables holding
/// the values (see the module doc), added to `env`; every other string is
/// filled as [`render`] does. A value with a NUL byte (which no command or
/// environment can hold) is an error, as is a template right after a
/// backslash (the shell would escape the quote written for it).
pub fn render_command(
    args: &Value,
    lookup: &dyn Fn(&Reference) -> Option<String>,
) -> Result<Value, TemplateError> {
    let Value::Object(map) = args else {
        return render(args, lookup);
    };
    let mut filled = serde_json::Map::with_capacity(map.len() + 1);
    let mut variables: Vec<(String, String)> = Vec::new();
    for (key, item) in map {
        let path = JsonPath::Key(&JsonPath::Root, key);
        let value = match (key.as_str(), item) {
            ("cmd", Value::String(cmd)) if string_has_templates(cmd) => Value::String(
                render_shell(cmd, lookup, &mut variables).map_err(|message| TemplateError {
                    path: path.to_string(),
                    message,
                })?,
            ),
            ("env", Value::Object(env)) => {
                let mut filled_env = serde_json::Map::with_capacity(env.len());
                for (name, value) in env {
                    let entry_path = JsonPath::Key(&path, name);
                    let filled_value = match value.as_str().and_then(whole_secret) {
                        // A whole-value secret: the worker puts it there.
                        Some(secret) => Value::String(format!("{SECRET_MARKER}{secret}")),
                        None => render_at(value, &entry_path, lookup)?,
                    };
                    filled_env.insert(name.clone(), filled_value);
                }
                Value::Object(filled_env)
            }
            _ => render_at(item, &path, lookup)?,
        };
        filled.insert(key.clone(), value);
    }
    let env = filled
        .entry("env")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Value::Object(env) = env {
        for (name, value) in variables {
            env.insert(name, Value::String(value));
        }
        if let Some((name, _)) = env.iter().find(|(_, value)| {
            value
                .as_str()
                .is_some_and(|text| text.contains('\0') && !text.starts_with(SECRET_MARKER))
        }) {
            return Err(TemplateError {
                path: format!("args.env.{name}"),
                message: "a filled value holds a NUL byte, which no environment can carry"
                    .to_owned(),
            });
        }
    }
    Ok(Value::Object(filled))
}

/// Where a spot of a shell command stands: bare, or inside quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quoting {
    Bare,
    Single,
    Double,
}

/// The shell's quoting at a spot of a command, followed character by
/// character: the quotes, and each `$(…)` opened (inside which quoting
/// starts afresh) with what it returns to. It only picks how a reference
/// is quoted: were it wrong about a spot, a value could be split into
/// words or show as `${VOLLEY_IN_1}` literally, never run.
#[derive(Clone, Debug)]
struct ShellScan {
    state: Quoting,
    /// Per open `$(`: the quoting it returns to, `(`s open inside it, and
    /// whether it is an arithmetic expansion (`$((`).
    substitutions: Vec<(Quoting, u32, bool)>,
    /// The last character opened a `$(` (a `(` right after it makes it
    /// `$((`).
    opened: bool,
    /// The last character was an unconsumed backslash.
    escaped: bool,
    /// The last character was a bare or double-quoted `$`.
    dollar: bool,
}

impl ShellScan {
    fn new() -> ShellScan {
        ShellScan {
            state: Quoting::Bare,
            substitutions: Vec::new(),
            escaped: false,
            dollar: false,
            opened: false,
        }
    }

    /// Whether the spot is inside `$((…))` (innermost), where a shell
    /// takes only a number: a quoted word there is a syntax error.
    fn in_arithmetic(&self) -> bool {
        self.substitutions
            .last()
            .is_some_and(|(_, _, arithmetic)| *arithmetic)
    }

    fn follow(&mut self, text: &str) {
        for character in text.chars() {
            if self.escaped {
                self.escaped = false;
                self.dollar = false;
                continue;
            }
            let dollar = std::mem::take(&mut self.dollar);
            let opened = std::mem::take(&mut self.opened);
            match (self.state, character) {
                (Quoting::Bare | Quoting::Double, '\\') => self.escaped = true,
                (Quoting::Bare | Quoting::Double, '$') => self.dollar = true,
                (Quoting::Bare | Quoting::Double, '(') if dollar => {
                    self.substitutions.push((self.state, 0, false));
                    self.state = Quoting::Bare;
                    self.opened = true;
                }
                (Quoting::Bare, '(') => {
                    if let Some((_, depth, arithmetic)) = self.substitutions.last_mut() {
                        *depth += 1;
                        if opened {
                            *arithmetic = true;
                        }
                    }
                }
                (Quoting::Bare, ')') => match self.substitutions.last_mut() {
                    Some((_, depth, _)) if *depth > 0 => *depth -= 1,
                    Some(_) => {
                        if let Some((outer, _, _)) = self.substitutions.pop() {
                            self.state = outer;
                        }
                    }
                    None => {}
                },
                (Quoting::Bare, '\'') => self.state = Quoting::Single,
                (Quoting::Bare, '"') => self.state = Quoting::Double,
                (Quoting::Single, '\'') | (Quoting::Double, '"') => self.state = Quoting::Bare,
                _ => {}
            }
        }
    }
}

fn render_shell(
    cmd: &str,
    lookup: &dyn Fn(&Reference) -> Option<String>,
    variables: &mut Vec<(String, String)>,
) -> Result<String, String> {
    let mut rendered = String::with_capacity(cmd.len() + 32);
    let mut scan = ShellScan::new();
    let mut named: Vec<(Reference, String)> = Vec::new();
    let mut failure: Option<String> = None;
    scan_pieces(cmd, &mut |piece| {
        match piece {
            Piece::Literal(range) => {
                rendered.push_str(&cmd[range.clone()]);
                scan.follow(&cmd[range]);
            }
            Piece::Escape => {
                rendered.push_str("${");
                scan.follow("${");
            }
            Piece::Reference(reference) => {
                if failure.is_some() {
                    return Ok(());
                }
                if scan.escaped {
                    failure = Some(format!(
                        "`{reference}` right after a backslash: remove the backslash (a filled value is always one quoted word)"
                    ));
                    return Ok(());
                }
                if scan.in_arithmetic() {
                    // `$((…))` takes a number, never a quoted word: a
                    // whole number is pasted as its digits (nothing else
                    // can ride along), anything else is refused.
                    scan.dollar = false;
                    let value = match &reference {
                        Reference::Secret(_) => None,
                        _ => lookup(&reference),
                    };
                    match value.as_deref().map(whole_number) {
                        Some(Ok(number)) => rendered.push_str(&number),
                        Some(Err(())) | None => {
                            failure =
                                Some(arithmetic_refusal(&reference.to_string(), value.as_deref()));
                        }
                    }
                    return Ok(());
                }
                let name = match named.iter().find(|(known, _)| known == &reference) {
                    Some((_, name)) => name.clone(),
                    None if matches!(reference, Reference::Secret(_)) => {
                        let Reference::Secret(secret) = &reference else {
                            return Ok(());
                        };
                        let name = format!("VOLLEY_SECRET_{secret}");
                        variables.push((name.clone(), format!("{SECRET_MARKER}{secret}")));
                        named.push((reference, name.clone()));
                        name
                    }
                    None => {
                        let Some(value) = lookup(&reference) else {
                            failure = Some(format!("no value for `{reference}`"));
                            return Ok(());
                        };
                        if value.contains('\0') {
                            failure = Some(format!(
                                "the value of `{reference}` holds a NUL byte, which no command can carry"
                            ));
                            return Ok(());
                        }
                        let name = command_variable(variables.len() + 1);
                        variables.push((name.clone(), value));
                        named.push((reference, name.clone()));
                        name
                    }
                };
                // Written out whole: the scan goes on after the reference
                // as it was before it (a quoted expansion changes no quoting).
                scan.dollar = false;
                match scan.state {
                    Quoting::Bare => {
                        rendered.push_str("\"${");
                        rendered.push_str(&name);
                        rendered.push_str("}\"");
                    }
                    Quoting::Double => {
                        rendered.push_str("${");
                        rendered.push_str(&name);
                        rendered.push('}');
                    }
                    Quoting::Single => {
                        rendered.push_str("'\"${");
                        rendered.push_str(&name);
                        rendered.push_str("}\"'");
                    }
                }
            }
        }
        Ok(())
    })?;
    match failure {
        Some(message) => Err(message),
        None => Ok(rendered),
    }
}

/// `cmd` with each of `spots` (byte ranges of `cmd`, in order, none
/// overlapping) replaced by a reference to the environment variable named
/// with it, quoted for where it stands as [`render_command`] quotes a
/// filled template: the variable's value reaches the program as one word
/// and is never parsed as shell syntax. Each reference is written with the
/// `$${` escape (`"$${NAME}"`), so the template pass at dispatch turns it
/// into `"${NAME}"` and leaves it to the shell. A spot right after a
/// backslash is an error, as in [`render_command`].
///
/// For placeholders a client fills in before submitting (a batch file's
/// `foreach` items), which are not templates the coordinator knows.
pub fn quote_variables(cmd: &str, spots: &[Spot<'_>]) -> Result<String, String> {
    let mut rendered = String::with_capacity(cmd.len() + spots.len() * 24);
    let mut scan = ShellScan::new();
    let mut done = 0;
    for Spot { range, name, value } in spots {
        let Some(literal) = cmd.get(done..range.start) else {
            return Err(format!(
                "spot {}..{} is out of order",
                range.start, range.end
            ));
        };
        rendered.push_str(literal);
        scan.follow(literal);
        if scan.escaped {
            return Err(format!(
                "`{}` right after a backslash: remove the backslash (a filled value is always one quoted word)",
                cmd.get(range.clone()).unwrap_or_default()
            ));
        }
        scan.dollar = false;
        if scan.in_arithmetic() {
            let number = whole_number(value).map_err(|()| {
                arithmetic_refusal(cmd.get(range.clone()).unwrap_or_default(), Some(value))
            })?;
            rendered.push_str(&number);
            done = range.end;
            continue;
        }
        match scan.state {
            Quoting::Bare => rendered.push_str(&format!("\"$${{{name}}}\"")),
            Quoting::Double => rendered.push_str(&format!("$${{{name}}}")),
            Quoting::Single => rendered.push_str(&format!("'\"$${{{name}}}\"'")),
        }
        done = range.end;
    }
    let rest = cmd.get(done..).unwrap_or_default();
    rendered.push_str(rest);
    Ok(rendered)
}

/// A placeholder of a command that [`quote_variables`] replaces.
#[derive(Clone, Debug)]
pub struct Spot<'a> {
    /// Its bytes in the command.
    pub range: std::ops::Range<usize>,
    /// The environment variable that holds its value.
    pub name: &'a str,
    /// Its value: pasted as digits where only a number can stand.
    pub value: &'a str,
}

/// `value` as the digits of a whole number (surrounding whitespace, such
/// as an output's last newline, dropped), or `Err` when it is not one.
fn whole_number(value: &str) -> Result<String, ()> {
    let trimmed = value.trim();
    let digits = trimmed.strip_prefix('-').unwrap_or(trimmed);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(());
    }
    Ok(trimmed.to_owned())
}

/// Why a value cannot stand inside `$((…))`.
fn arithmetic_refusal(spot: &str, value: Option<&str>) -> String {
    match value {
        Some(value) => {
            let shown: String = value.trim().chars().take(40).collect();
            format!(
                "`{spot}` stands inside `$((…))`, where only a whole number can go, and its value `{}` is not one",
                shown.escape_debug()
            )
        }
        None => format!(
            "`{spot}` stands inside `$((…))`, where only a whole number can go (a secret never can)"
        ),
    }
}

/// The secret's name when `text` is exactly one `${secret.NAME}`.
fn whole_secret(text: &str) -> Option<&str> {
    let name = text.strip_prefix("${secret.")?.strip_suffix('}')?;
    (!name.is_empty() && name.bytes().all(is_secret_name_byte)).then_some(name)
}

/// Whether `value` holds anything `render` would change (a template or a
/// `$${` escape). Cheap: no parsing, no allocation.
pub fn has_templates(value: &Value) -> bool {
    match value {
        Value::String(text) => string_has_templates(text),
        Value::Array(items) => items.iter().any(has_templates),
        Value::Object(map) => map.values().any(has_templates),
        _ => false,
    }
}

/// Whether one string holds anything `render` would change.
pub fn string_has_templates(text: &str) -> bool {
    text.contains("${")
}

/// Renders one string on its own (`path` is only used in errors).
pub fn render_str(
    text: &str,
    path: &str,
    lookup: &dyn Fn(&Reference) -> Option<String>,
) -> Result<String, TemplateError> {
    render_string(text, lookup).map_err(|message| TemplateError {
        path: path.to_owned(),
        message,
    })
}

/// A JSON path built on the stack while walking, turned into text only when
/// an error needs it.
enum JsonPath<'a> {
    Root,
    Key(&'a JsonPath<'a>, &'a str),
    Index(&'a JsonPath<'a>, usize),
}

impl fmt::Display for JsonPath<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonPath::Root => formatter.write_str("args"),
            JsonPath::Key(parent, key) => write!(formatter, "{parent}.{key}"),
            JsonPath::Index(parent, index) => write!(formatter, "{parent}[{index}]"),
        }
    }
}

/// Calls `on_reference` with every reference under `value` and its path.
fn walk(
    value: &Value,
    path: &JsonPath<'_>,
    on_reference: &mut dyn FnMut(&JsonPath<'_>, Reference),
) -> Result<(), TemplateError> {
    match value {
        Value::String(text) if string_has_templates(text) => {
            scan(text, &mut |reference| {
                on_reference(path, reference);
                Ok(())
            })
            .map_err(|message| TemplateError {
                path: path.to_string(),
                message,
            })?;
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                walk(item, &JsonPath::Index(path, index), on_reference)?;
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                walk(item, &JsonPath::Key(path, key), on_reference)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn render_at(
    value: &Value,
    path: &JsonPath<'_>,
    lookup: &dyn Fn(&Reference) -> Option<String>,
) -> Result<Value, TemplateError> {
    Ok(match value {
        Value::String(text) if string_has_templates(text) => Value::String(
            render_string(text, lookup).map_err(|message| TemplateError {
                path: path.to_string(),
                message,
            })?,
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(index, item)| render_at(item, &JsonPath::Index(path, index), lookup))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| {
                    Ok((
                        key.clone(),
                        render_at(item, &JsonPath::Key(path, key), lookup)?,
                    ))
                })
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

fn render_string(
    text: &str,
    lookup: &dyn Fn(&Reference) -> Option<String>,
) -> Result<String, String> {
    let mut rendered = String::with_capacity(text.len());
    let mut missing: Option<Reference> = None;
    let mut secret: Option<String> = None;
    scan_pieces(text, &mut |piece| {
        match piece {
            Piece::Literal(range) => rendered.push_str(&text[range]),
            Piece::Escape => rendered.push_str("${"),
            Piece::Reference(Reference::Secret(name)) => {
                if secret.is_none() {
                    secret = Some(name);
                }
            }
            Piece::Reference(reference) => match lookup(&reference) {
                Some(replacement) => rendered.push_str(&replacement),
                None => {
                    if missing.is_none() {
                        missing = Some(reference);
                    }
                }
            },
        }
        Ok(())
    })?;
    if let Some(name) = secret {
        return Err(format!(
            "`${{secret.{name}}}` can stand only in a shell or agent `cmd`, or as a whole `env` value: a secret reaches a program's environment, never its args"
        ));
    }
    match missing {
        Some(reference) => Err(format!("no value for `{reference}`")),
        None => Ok(rendered),
    }
}

enum Piece {
    Literal(std::ops::Range<usize>),
    Escape,
    Reference(Reference),
}

fn scan(
    text: &str,
    on_reference: &mut dyn FnMut(Reference) -> Result<(), String>,
) -> Result<(), String> {
    scan_pieces(text, &mut |piece| match piece {
        Piece::Reference(reference) => on_reference(reference),
        _ => Ok(()),
    })
}

/// Splits `text` into literal runs, `$${` escapes and references.
fn scan_pieces(
    text: &str,
    on_piece: &mut dyn FnMut(Piece) -> Result<(), String>,
) -> Result<(), String> {
    let bytes = text.as_bytes();
    let mut literal_start = 0;
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] != b'$' {
            index += 1;
            continue;
        }
        if bytes[index..].starts_with(b"$${") {
            if literal_start < index {
                on_piece(Piece::Literal(literal_start..index))?;
            }
            on_piece(Piece::Escape)?;
            index += 3;
            literal_start = index;
        } else if bytes[index..].starts_with(b"${") {
            if literal_start < index {
                on_piece(Piece::Literal(literal_start..index))?;
            }
            let body_start = index + 2;
            let Some(length) = text[body_start..].find('}') else {
                return Err(format!(
                    "unterminated `${{` at byte {index}: expected `${{ops.ID.output}}`, `${{ops.ID.status}}` or `${{memory.KEY}}` (write `$${{` for a literal `${{`)"
                ));
            };
            let body = &text[body_start..body_start + length];
            on_piece(Piece::Reference(parse_body(body)?))?;
            index = body_start + length + 1;
            literal_start = index;
        } else {
            index += 1;
        }
    }
    if literal_start < bytes.len() {
        on_piece(Piece::Literal(literal_start..bytes.len()))?;
    }
    Ok(())
}

fn parse_body(body: &str) -> Result<Reference, String> {
    let expected = "expected `${ops.ID.output}`, `${ops.ID.status}` or `${memory.KEY}`";
    if let Some(rest) = body.strip_prefix("ops.") {
        let Some((id, what)) = rest.rsplit_once('.') else {
            return Err(format!("malformed reference `${{{body}}}`: {expected}"));
        };
        if id.is_empty() || !id.bytes().all(is_id_byte) {
            return Err(format!(
                "malformed reference `${{{body}}}`: bad op id `{id}`"
            ));
        }
        return match what {
            "output" => Ok(Reference::OpOutput(id.to_owned())),
            "status" => Ok(Reference::OpStatus(id.to_owned())),
            _ => Err(format!(
                "malformed reference `${{{body}}}`: `{what}` is neither `output` nor `status`"
            )),
        };
    }
    if let Some(name) = body.strip_prefix("secret.") {
        if name.is_empty() || name.len() > 128 || !name.bytes().all(is_secret_name_byte) {
            return Err(format!(
                "malformed reference `${{{body}}}`: a secret's name is 1 to 128 letters, digits and `_`"
            ));
        }
        return Ok(Reference::Secret(name.to_owned()));
    }
    if let Some(key) = body.strip_prefix("memory.") {
        if key.is_empty() || !key.bytes().all(is_memory_key_byte) {
            return Err(format!(
                "malformed reference `${{{body}}}`: a memory key is letters, digits and `/ . - _ :`"
            ));
        }
        return Ok(Reference::Memory(key.to_owned()));
    }
    if body == "item" || body == "index" || body.starts_with("item.") {
        // What a batch file's `foreach` fills in before submitting.
        return Err(format!(
            "unknown reference `${{{body}}}`: `${{item}}`, `${{item.FIELD}}` and `${{index}}` are filled only in an op with `foreach:` (for a shell variable write `$${{{body}}}`)"
        ));
    }
    Err(format!(
        "unknown reference `${{{body}}}`: {expected} (for a shell variable write `$${{{body}}}` or `${body}`)"
    ))
}

/// `[A-Za-z0-9_]`: the bytes of a secret's name (also a file name in
/// `--secret-dir` and the tail of `VOLLEY_SECRET_<NAME>`).
pub fn is_secret_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// What a program's environment holds, in place of a secret's value, for
/// the worker to put it in: NUL-led, which no filled value can be (they are
/// refused), so only the coordinator writes it.
pub const SECRET_MARKER: &str = "\0volley-secret:";

/// `[A-Za-z0-9_.-]`: the bytes of an op id.
pub fn is_id_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-')
}

/// Letters, digits and `/ . - _ :`: the bytes of a memory key.
pub fn is_memory_key_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'.' | b'-' | b'_' | b':')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_every_kind_of_reference() {
        let args = json!({
            "cmd": "echo ${ops.lint.output} ${ops.a.b.status}",
            "env": {"K": "${memory.swarm/x:y-z_1.2}"},
            "list": ["${ops.c.output}", 3, null]
        });
        let found = references(&args).unwrap();
        assert_eq!(
            found,
            vec![
                Reference::OpOutput("lint".into()),
                Reference::OpStatus("a.b".into()),
                Reference::Memory("swarm/x:y-z_1.2".into()),
                Reference::OpOutput("c".into()),
            ]
        );
    }

    #[test]
    fn located_references_name_their_path() {
        let found =
            located_references(&json!({"a": ["x", "${memory.k}"], "b": {"c": "${ops.o.status}"}}))
                .unwrap();
        assert_eq!(
            found,
            vec![
                ("args.a[1]".to_owned(), Reference::Memory("k".into())),
                ("args.b.c".to_owned(), Reference::OpStatus("o".into())),
            ]
        );
    }

    #[test]
    fn object_keys_are_not_templates() {
        assert!(
            references(&json!({"${ops.x}": "plain"}))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn malformed_templates_name_the_path() {
        let error = references(&json!({"cmd": "x ${ops.x}"})).unwrap_err();
        assert_eq!(error.path, "args.cmd");
        assert!(error.message.contains("${ops.x}"), "{}", error.message);
        let error = references(&json!({"list": ["ok", "${foo}"]})).unwrap_err();
        assert_eq!(error.path, "args.list[1]");
        assert!(
            error.message.contains("unknown reference"),
            "{}",
            error.message
        );
        let error = references(&json!({"cmd": "echo ${item.suite}"})).unwrap_err();
        assert!(
            error.message.contains("only in an op with `foreach:`"),
            "{}",
            error.message
        );
        let error = references(&json!({"a": {"b": "${memory.k"}})).unwrap_err();
        assert_eq!(error.path, "args.a.b");
        assert!(error.message.contains("unterminated"), "{}", error.message);
        let error = references(&json!({"a": "${ops.x.size}"})).unwrap_err();
        assert!(error.message.contains("size"), "{}", error.message);
    }

    #[test]
    fn escape_is_literal() {
        let args = json!({"cmd": "echo $${HOME} $HOME ${memory.k} $"});
        assert_eq!(
            references(&args).unwrap(),
            vec![Reference::Memory("k".into())]
        );
        let rendered = render(&args, &|_| Some("V".into())).unwrap();
        assert_eq!(rendered, json!({"cmd": "echo ${HOME} $HOME V $"}));
    }

    #[test]
    fn render_substitutes() {
        let args =
            json!({"text": "[${ops.a.output}|${ops.a.status}]", "n": 3, "l": ["${memory.k}"]});
        let rendered = render(&args, &|reference| match reference {
            Reference::OpOutput(id) => Some(format!("out-{id}")),
            Reference::OpStatus(_) => Some("succeeded".into()),
            Reference::Memory(key) => Some(format!("mem-{key}")),
            Reference::Secret(_) => None,
        })
        .unwrap();
        assert_eq!(
            rendered,
            json!({"text": "[out-a|succeeded]", "n": 3, "l": ["mem-k"]})
        );
    }

    #[test]
    fn render_without_value_names_the_reference() {
        let error = render(&json!({"t": "${ops.a.output}"}), &|_| None).unwrap_err();
        assert_eq!(error.path, "args.t");
        assert!(
            error.message.contains("${ops.a.output}"),
            "{}",
            error.message
        );
    }

    #[test]
    fn has_templates_is_a_fast_check() {
        assert!(has_templates(&json!({"a": ["${memory.k}"]})));
        assert!(has_templates(&json!({"a": "$${x}"})));
        assert!(!has_templates(&json!({"a": "$x {y}", "${k}": 1})));
    }

    /// Runs a rendered `cmd` the way the process runner does: `sh -c`, with
    /// the filled values in the environment.
    fn run_rendered(args: &Value, dir: &std::path::Path) -> String {
        let cmd = args["cmd"].as_str().unwrap();
        let mut command = std::process::Command::new("sh");
        command.arg("-c").arg(cmd).current_dir(dir);
        if let Some(env) = args["env"].as_object() {
            for (name, value) in env {
                command.env(name, value.as_str().unwrap());
            }
        }
        let output = command.output().unwrap();
        String::from_utf8(output.stdout).unwrap()
    }

    const HOSTILE: &[&str] = &[
        "x'; touch PWNED1; echo '",
        "$(touch PWNED2)",
        "`touch PWNED3`",
        "a\"; touch PWNED4; echo \"b",
        "line\n touch PWNED5",
        "; touch PWNED6 #",
        "\\",
        "${HOME}",
    ];

    #[test]
    fn hostile_values_stay_data_in_every_quoting_context() {
        let dir = std::env::temp_dir().join(format!("volley-template-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for hostile in HOSTILE {
            let lookup = |_: &Reference| Some((*hostile).to_owned());
            for (cmd, expected) in [
                ("printf '%s' ${ops.a.output}", (*hostile).to_owned()),
                ("printf '%s' '[${ops.a.output}]'", format!("[{hostile}]")),
                ("printf '%s' \"[${ops.a.output}]\"", format!("[{hostile}]")),
                (
                    "printf '%s|%s' \"${ops.a.output}\" '${ops.a.output}'",
                    format!("{hostile}|{hostile}"),
                ),
                (
                    "echo \"$(printf '%s' ${ops.a.output})\" | tr -d '\\n'",
                    hostile.replace('\n', ""),
                ),
            ] {
                let rendered = render_command(&json!({"cmd": cmd}), &lookup).unwrap();
                assert_eq!(
                    run_rendered(&rendered, &dir),
                    expected,
                    "{cmd} with {hostile:?}"
                );
            }
        }
        let leaked: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name())
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(leaked.is_empty(), "a value ran as a command: {leaked:?}");
    }

    #[test]
    fn command_values_go_to_the_environment_once_each() {
        let lookup = |reference: &Reference| match reference {
            Reference::OpOutput(id) => Some(format!("out-{id}")),
            _ => Some("v".to_owned()),
        };
        let rendered = render_command(
            &json!({
                "cmd": "echo ${ops.a.output} '${ops.b.output}' \"${ops.a.output}\" $${HOME}",
                "env": {"MINE": "${ops.b.output}"},
                "cwd": "dir-${ops.a.output}",
            }),
            &lookup,
        )
        .unwrap();
        assert_eq!(
            rendered,
            json!({
                "cmd": "echo \"${VOLLEY_IN_1}\" ''\"${VOLLEY_IN_2}\"'' \"${VOLLEY_IN_1}\" ${HOME}",
                "env": {"MINE": "out-b", "VOLLEY_IN_1": "out-a", "VOLLEY_IN_2": "out-b"},
                "cwd": "dir-out-a",
            })
        );
    }

    #[test]
    fn values_a_command_cannot_carry_are_refused() {
        let nul = |_: &Reference| Some("a\0b".to_owned());
        let error = render_command(&json!({"cmd": "echo ${ops.a.output}"}), &nul).unwrap_err();
        assert_eq!(error.path, "args.cmd");
        assert!(error.message.contains("NUL"), "{error}");
        let error = render_command(
            &json!({"cmd": "true", "env": {"X": "${ops.a.output}"}}),
            &nul,
        )
        .unwrap_err();
        assert_eq!(error.path, "args.env.X");
        let plain = |_: &Reference| Some("v".to_owned());
        let error = render_command(&json!({"cmd": "echo \\${ops.a.output}"}), &plain).unwrap_err();
        assert!(error.message.contains("backslash"), "{error}");
        // An escaped `$${` is the shell's own `${`, after a backslash too.
        let rendered = render_command(&json!({"cmd": "echo \\$${HOME}"}), &plain).unwrap();
        assert_eq!(rendered["cmd"], "echo \\${HOME}");
    }

    #[test]
    fn quote_variables_fits_each_spot_and_keeps_the_escape_for_dispatch() {
        let cmd = "echo x${a} '${a}' \"${b}\" $(cat ${a})";
        let spot = |needle: &str, from: usize| {
            let start = cmd[from..].find(needle).unwrap() + from;
            start..start + needle.len()
        };
        let first = spot("${a}", 0);
        let second = spot("${a}", first.end);
        let third = spot("${b}", 0);
        let fourth = spot("${a}", third.end);
        let at = |range: std::ops::Range<usize>, name| Spot {
            range,
            name,
            value: "v",
        };
        let quoted = quote_variables(
            cmd,
            &[
                at(first, "A"),
                at(second, "A"),
                at(third, "B"),
                at(fourth, "A"),
            ],
        )
        .unwrap();
        assert_eq!(
            quoted,
            "echo x\"$${A}\" ''\"$${A}\"'' \"$${B}\" $(cat \"$${A}\")"
        );
        // The template pass at dispatch leaves plain `${A}` to the shell.
        let rendered = render(&json!(quoted), &|_| None).unwrap();
        assert_eq!(
            rendered,
            json!("echo x\"${A}\" ''\"${A}\"'' \"${B}\" $(cat \"${A}\")")
        );
        let escaped = quote_variables("echo \\${a}", &[at(6..10, "A")]).unwrap_err();
        assert!(escaped.contains("backslash"), "{escaped}");
    }

    #[test]
    fn inside_arithmetic_a_whole_number_is_pasted_and_anything_else_refused() {
        let cmd = "test $((${a} % 37)) -ne 0 && echo \"$(( ${a} + $(wc -c < ${a}) ))\"";
        let spots: Vec<std::ops::Range<usize>> = cmd
            .match_indices("${a}")
            .map(|(start, found)| start..start + found.len())
            .collect();
        let with = |value| {
            let spots: Vec<Spot<'_>> = spots
                .iter()
                .map(|range| Spot {
                    range: range.clone(),
                    name: "A",
                    value,
                })
                .collect();
            quote_variables(cmd, &spots)
        };
        assert_eq!(
            with(" 74\n").unwrap(),
            "test $((74 % 37)) -ne 0 && echo \"$(( 74 + $(wc -c < \"$${A}\") ))\""
        );
        assert_eq!(
            with("-3").unwrap(),
            "test $((-3 % 37)) -ne 0 && echo \"$(( -3 + $(wc -c < \"$${A}\") ))\""
        );
        for hostile in [
            "a[$(touch pwned)]",
            "1+1",
            "",
            "1 2",
            "0x10",
            "99999999999999999999",
        ] {
            let refused = with(hostile).unwrap_err();
            assert!(
                refused.contains("stands inside `$((…))`, where only a whole number can go"),
                "{hostile:?}: {refused}"
            );
        }
        // At dispatch: an op's output the same way.
        let lookup = |reference: &Reference| match reference {
            Reference::OpOutput(id) if id == "n" => Some("42\n".to_owned()),
            _ => Some("$(touch pwned)".to_owned()),
        };
        let rendered = render_command(
            &json!({"cmd": "echo $(( ${ops.n.output} * 2 )) ${ops.n.output}"}),
            &lookup,
        )
        .unwrap();
        assert_eq!(
            rendered["cmd"],
            json!("echo $(( 42 * 2 )) \"${VOLLEY_IN_1}\"")
        );
        let refused =
            render_command(&json!({"cmd": "echo $(( ${ops.x.output} ))"}), &lookup).unwrap_err();
        assert!(refused.to_string().contains("is not one"), "{refused}");
        let secret =
            render_command(&json!({"cmd": "echo $(( ${secret.S} ))"}), &lookup).unwrap_err();
        assert!(
            secret.to_string().contains("a secret never can"),
            "{secret}"
        );
    }

    #[test]
    fn secrets_become_markers_for_the_worker_never_values() {
        let lookup = |_: &Reference| Some("v".to_owned());
        let rendered = render_command(
            &json!({
                "cmd": "curl -H \"Authorization: Bearer ${secret.API_TOKEN}\" '${secret.API_TOKEN}'",
                "env": {"TOKEN": "${secret.DEPLOY}", "PLAIN": "x"},
            }),
            &lookup,
        )
        .unwrap();
        assert_eq!(
            rendered["cmd"],
            "curl -H \"Authorization: Bearer ${VOLLEY_SECRET_API_TOKEN}\" ''\"${VOLLEY_SECRET_API_TOKEN}\"''"
        );
        assert_eq!(
            rendered["env"]["VOLLEY_SECRET_API_TOKEN"],
            format!("{SECRET_MARKER}API_TOKEN")
        );
        assert_eq!(rendered["env"]["TOKEN"], format!("{SECRET_MARKER}DEPLOY"));
        assert_eq!(rendered["env"]["PLAIN"], "x");
        // Anywhere else a secret is an error: it would land in args.
        let error = render(&json!({"text": "${secret.API}"}), &lookup).unwrap_err();
        assert!(error.message.contains("shell or agent"), "{error}");
        let error = render_command(
            &json!({"cmd": "true", "env": {"AUTH": "Bearer ${secret.API}"}}),
            &lookup,
        )
        .unwrap_err();
        assert_eq!(error.path, "args.env.AUTH");
        assert!(references(&json!({"cmd": "${secret.bad-name}"})).is_err());
        assert_eq!(
            references(&json!({"cmd": "${secret.OK_1}"})).unwrap(),
            vec![Reference::Secret("OK_1".into())]
        );
    }
}
