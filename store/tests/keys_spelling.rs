//! `src/keys.rs` and `lua/common.lua` spell every Redis key alike.
//!
//! Key names have two spellings: `keys.rs` for the Rust side (the source:
//! its constants and builders are what the docs list and what Rust code
//! uses) and `lua/common.lua` for the scripts, which receive only the
//! batch's (or a memory scope's) prefix as `KEYS[1]` and append the same
//! suffixes. Nothing at compile time ties the two, so these tests do:
//!
//! - statically, by parsing both files: every suffix `keys.rs` defines is
//!   spelled in `common.lua`, every `P .. '<suffix>'` any script spells is
//!   one `keys.rs` defines, no script spells a global key (`volley:…`), and
//!   every doorbell prefix a script publishes is one of `keys.rs`'s;
//! - by running `common.lua` on a real `redis-server`, exactly as every
//!   script's prelude runs, and comparing each name it builds (`K_META`,
//!   `k_ready(2)`, `k_chunk(gen, n)`, …) with what `keys.rs` builds for the
//!   same batch or namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use volley_proto::BatchId;
use volley_store::MemoryScope;
use volley_store::keys;
use volley_testkit::RedisServer;

const KEYS_RS: &str = include_str!("../src/keys.rs");
const COMMON_LUA: &str = include_str!("../lua/common.lua");

/// Every script under `lua/`, by file name.
fn lua_scripts() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lua");
    let mut scripts: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("read store/lua")
        .map(|entry| entry.expect("a store/lua entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "lua"))
        .map(|path| {
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("read a lua script");
            (name, text)
        })
        .collect();
    scripts.sort();
    assert!(
        scripts.iter().any(|(name, _)| name == "common.lua"),
        "store/lua holds common.lua"
    );
    scripts
}

/// `pub const NAME: &str = "value";` of `keys.rs`, by name.
fn rust_constants() -> BTreeMap<String, String> {
    let mut constants = BTreeMap::new();
    for line in KEYS_RS.lines() {
        let Some(rest) = line.trim().strip_prefix("pub const ") else {
            continue;
        };
        let Some((name, rest)) = rest.split_once(": &str = \"") else {
            continue;
        };
        let value = rest
            .strip_suffix("\";")
            .unwrap_or_else(|| panic!("keys.rs: constant {name} is not one string literal"));
        constants.insert(name.to_owned(), value.to_owned());
    }
    assert!(
        constants.contains_key("META") && constants.contains_key("DOORBELL_CHANNEL"),
        "keys.rs parsed: {constants:?}"
    );
    constants
}

/// The suffixes `keys.rs` appends to a batch or scope prefix: every
/// constant that is neither a global key (`volley:…`) nor a doorbell
/// payload prefix (`BELL_*`).
fn rust_suffixes(constants: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    constants
        .iter()
        .filter(|(name, value)| !name.starts_with("BELL_") && !value.starts_with("volley:"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// A line of Lua without its `--` comment (a `--` inside a quoted string
/// is kept).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (position, character) in line.char_indices() {
        match quote {
            Some(open) if character == open && previous != '\\' => quote = None,
            Some(_) => {}
            None if character == '\'' || character == '"' => quote = Some(character),
            None if character == '-' && previous == '-' => return &line[..position - 1],
            None => {}
        }
        previous = character;
    }
    line
}

/// The code of a script, comments removed.
fn code_lines(script: &str) -> impl Iterator<Item = &str> {
    script.lines().map(strip_comment)
}

/// Every single-quoted literal that directly follows `marker` (e.g. the
/// `'meta'` of `P .. 'meta'`).
fn literals_after<'a>(code: &'a str, marker: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(marker) {
        // `SEP .. 'x'` is not `P .. 'x'`: the marker starts a name.
        let starts_a_name = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|before| !(before.is_alphanumeric() || before == '_'));
        rest = &rest[at + marker.len()..];
        if !starts_a_name {
            continue;
        }
        if let Some(after_quote) = rest.strip_prefix('\'')
            && let Some(end) = after_quote.find('\'')
        {
            found.push(&after_quote[..end]);
        }
    }
    found
}

/// Every key suffix a script appends to its prefix: `P .. '<suffix>'` and
/// `KEYS[1] .. '<suffix>'`.
fn lua_suffixes(script: &str) -> Vec<String> {
    code_lines(script)
        .flat_map(|line| {
            let mut found = literals_after(line, "P .. ");
            found.extend(literals_after(line, "KEYS[1] .. "));
            found
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_suffix_of_keys_rs_is_spelled_alike_in_common_lua() {
    let constants = rust_constants();
    let rust: BTreeSet<String> = rust_suffixes(&constants).into_values().collect();
    let lua: BTreeSet<String> = lua_suffixes(COMMON_LUA).into_iter().collect();
    let missing_in_lua: Vec<&String> = rust.difference(&lua).collect();
    assert!(
        missing_in_lua.is_empty(),
        "keys.rs defines suffixes lua/common.lua never spells (add `P .. '<suffix>'` there): {missing_in_lua:?}"
    );
    let unknown_to_rust: Vec<&String> = lua.difference(&rust).collect();
    assert!(
        unknown_to_rust.is_empty(),
        "lua/common.lua spells suffixes keys.rs does not define (add a constant there first): {unknown_to_rust:?}"
    );
}

#[test]
fn no_script_spells_a_key_keys_rs_does_not_define() {
    let constants = rust_constants();
    let rust: BTreeSet<String> = rust_suffixes(&constants).into_values().collect();
    for (name, script) in lua_scripts() {
        for suffix in lua_suffixes(&script) {
            assert!(
                rust.contains(&suffix),
                "lua/{name} appends `{suffix}` to its prefix: not a suffix of keys.rs"
            );
        }
        // Scripts never name a global key: they get it in KEYS (e.g. the
        // ready gauge) or leave it to the Rust side.
        for line in code_lines(&script) {
            assert!(
                !line.contains("'volley:") && !line.contains("\"volley:"),
                "lua/{name} spells a global key literally (pass it through KEYS): {line}"
            );
        }
    }
}

#[test]
fn every_doorbell_a_script_rings_is_a_keys_rs_bell() {
    let constants = rust_constants();
    let bells: BTreeSet<&str> = constants
        .iter()
        .filter(|(name, _)| name.starts_with("BELL_"))
        .map(|(_, value)| value.as_str())
        .collect();
    let mut rung = BTreeSet::new();
    for (name, script) in lua_scripts() {
        for line in code_lines(&script) {
            for prefix in literals_after(line, "'PUBLISH', CHANNEL, ") {
                assert!(
                    bells.contains(prefix),
                    "lua/{name} publishes `{prefix}…`: not a BELL_* prefix of keys.rs"
                );
                rung.insert(prefix.to_owned());
            }
        }
    }
    // What the scripts ring themselves; the memory bells (`m:`, `mb:`) come
    // from keys::memory_bell through ARGV, and `n:`/`e:` only from Rust.
    assert_eq!(
        rung,
        BTreeSet::from([keys::BELL_BATCH.to_owned(), keys::BELL_EVENTS.to_owned()]),
        "the bells lua/common.lua rings"
    );
}

/// Runs `lua/common.lua` followed by `return { <expressions> }` with
/// `prefix` as KEYS[1] (as every script's prelude runs), and returns what
/// each expression evaluated to.
async fn names_built_by_common_lua(
    server: &RedisServer,
    prefix: &str,
    batch: &str,
    expressions: &[&str],
) -> Vec<String> {
    let client = redis::Client::open(server.url()).expect("redis url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis-server");
    let source = format!("{COMMON_LUA}\nreturn {{ {} }}\n", expressions.join(", "));
    redis::Script::new(&source)
        .key(prefix)
        .arg(keys::DOORBELL_CHANNEL)
        .arg(batch)
        .arg(0)
        .invoke_async(&mut connection)
        .await
        .expect("run common.lua")
}

/// Only a guard against hanging; never asserted on.
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn common_lua_builds_the_names_keys_rs_builds() {
    tokio::time::timeout(DEADLINE, async {
        let server = RedisServer::start().expect("start redis-server");
        let batch = BatchId::new("0193-abc");
        let prefix = keys::batch_prefix(&batch);
        let own_memory = MemoryScope::Batch(batch.clone());
        let in_prefix = |suffix: &str| format!("{prefix}{suffix}");
        // Every name common.lua declares, next to the keys.rs spelling of
        // the same key of the same batch.
        let expected: Vec<(&str, String)> = vec![
            ("P", keys::batch_prefix(&batch)),
            ("K_META", keys::meta(&batch)),
            ("K_STATE", keys::state(&batch)),
            ("K_ATTEMPTS", keys::attempts(&batch)),
            ("K_PENDING", keys::pending(&batch)),
            ("K_INFO", keys::info(&batch)),
            ("K_RESULT", keys::result(&batch)),
            ("K_EVENTS", keys::events(&batch)),
            ("K_ARRIVED", in_prefix(keys::ARRIVED)),
            ("K_ANY_DONE", in_prefix(keys::ANY_DONE)),
            ("K_DEADLINES", keys::deadlines(&batch)),
            ("K_WAIT_INFO", keys::wait_info(&batch)),
            ("K_SPEC_ADDED", keys::spec_added(&batch)),
            ("K_LEASES", keys::leases(&batch)),
            ("K_DELAYED", keys::delayed(&batch)),
            ("K_HANDED_BACK", keys::handed_back(&batch)),
            ("K_OWNER", keys::owner(&batch)),
            ("K_WRITES", keys::writes(&batch)),
            ("K_WRITERS_LEFT", keys::writers_left(&batch)),
            ("K_WRITER_OPS", keys::writer_ops(&batch)),
            ("K_OUTBOX", keys::outbox(&batch)),
            ("K_SPAWN_KEYS", keys::spawn_keys(&batch)),
            ("K_LOST_WORKERS", keys::lost_workers(&batch)),
            ("K_RUNNING_ON", keys::running_on(&batch)),
            ("K_MKEYS", in_prefix(keys::MEMORY_KEYS)),
            ("K_CHANGES", keys::changes(&own_memory)),
            ("K_REVISION", keys::revision(&own_memory)),
            ("P .. 'spec'", keys::spec(&batch)),
            ("k_ready(0)", keys::ready(&batch, 0)),
            ("k_ready(3)", keys::ready(&batch, 3)),
            ("k_waiters('a/b:c')", keys::waiters(&batch, "a/b:c")),
            ("k_mem('a/b:c')", keys::memory(&own_memory, "a/b:c")),
            ("k_chunk('g1', 3)", keys::chunk(&own_memory, "g1", 3)),
        ];
        // The table names every K_* and k_* common.lua declares, so a key
        // added there without its keys.rs twin fails here.
        let declared = declared_names(COMMON_LUA);
        let covered: BTreeSet<String> = expected
            .iter()
            .map(|(expression, _)| {
                expression
                    .split('(')
                    .next()
                    .expect("a name")
                    .trim()
                    .to_owned()
            })
            .collect();
        let uncovered: Vec<&String> = declared.difference(&covered).collect();
        assert!(
            uncovered.is_empty(),
            "common.lua declares key names this test does not compare with keys.rs: {uncovered:?}"
        );
        let expressions: Vec<&str> = expected.iter().map(|(expression, _)| *expression).collect();
        let built = names_built_by_common_lua(&server, &prefix, batch.as_str(), &expressions).await;
        assert_eq!(built.len(), expected.len(), "one name per expression");
        for ((expression, rust), lua) in expected.iter().zip(&built) {
            assert_eq!(lua, rust, "common.lua's {expression} against keys.rs");
        }

        // A shared namespace: the scripts get its prefix as KEYS[1] and
        // build its memory keys with the same helpers.
        let shared = MemoryScope::Shared("team".to_owned());
        let namespace = keys::scope_prefix(&shared);
        let expected: Vec<(&str, String)> = vec![
            ("k_mem('k')", keys::memory(&shared, "k")),
            ("k_chunk('g2', 0)", keys::chunk(&shared, "g2", 0)),
            ("K_CHANGES", keys::changes(&shared)),
            ("K_REVISION", keys::revision(&shared)),
            (
                "K_MKEYS",
                format!("{}{}", keys::namespace_prefix("team"), keys::MEMORY_KEYS),
            ),
        ];
        let expressions: Vec<&str> = expected.iter().map(|(expression, _)| *expression).collect();
        let built = names_built_by_common_lua(&server, &namespace, "", &expressions).await;
        for ((expression, rust), lua) in expected.iter().zip(&built) {
            assert_eq!(lua, rust, "common.lua's {expression} on a shared namespace");
        }
    })
    .await
    .expect("the test finished within its deadline");
}

/// The key names `common.lua` declares: `local K_… = P ..` and
/// `local function k_…(`, plus `P` itself.
fn declared_names(script: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::from(["P".to_owned(), "P .. 'spec'".to_owned()]);
    for line in code_lines(script) {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("local K_")
            && let Some((name, value)) = rest.split_once('=')
            && value.trim().starts_with("P ..")
        {
            names.insert(format!("K_{}", name.trim()));
        }
        if let Some(rest) = line.strip_prefix("local function k_")
            && let Some((name, _)) = rest.split_once('(')
        {
            names.insert(format!("k_{name}"));
        }
    }
    names
}

#[test]
fn the_parsers_read_what_they_should() {
    assert_eq!(strip_comment("local a = 'x' -- note"), "local a = 'x' ");
    assert_eq!(
        strip_comment("local a = '--not a comment'"),
        "local a = '--not a comment'"
    );
    assert_eq!(
        literals_after("{K_META, P .. 'spec', P .. 'x' .. y}", "P .. "),
        vec!["spec", "x"]
    );
    assert!(lua_suffixes("-- P .. 'commented'").is_empty());
    let declared = declared_names(
        "local K_META = P .. 'meta'\nlocal CHANNEL = ARGV[1]\nlocal function k_mem(key) return P .. 'mem:' .. key end",
    );
    assert!(declared.contains("K_META") && declared.contains("k_mem"));
    assert!(!declared.contains("K_CHANNEL"));
}
