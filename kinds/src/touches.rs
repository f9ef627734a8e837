//! The files and memory keys a built-in op reads and writes, inferred from its
//! args, so the planner can find two unordered ops racing on one of them.

use crate::args::{BuiltinArgs, GrepArgs};
use crate::template::string_has_templates;

/// A file (a relative path or glob pattern, lexically normalised) or a
/// memory key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    File(String),
    Memory(String),
}

/// What one op reads and writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touches {
    pub reads: Vec<Target>,
    pub writes: Vec<Target>,
}

/// The targets `args` read and write. A path or key holding a `${…}`
/// template is left out: what it names is only known at dispatch.
pub fn touches(args: &BuiltinArgs) -> Touches {
    let mut touched = Touches::default();
    match args {
        BuiltinArgs::Read(read) => push_file(&mut touched.reads, &read.path),
        BuiltinArgs::Write(write) => push_file(&mut touched.writes, &write.path),
        BuiltinArgs::Glob(glob) => push_file(&mut touched.reads, &glob.pattern),
        BuiltinArgs::Grep(GrepArgs { path, glob, .. }) => {
            if let Some(path) = path {
                push_file(&mut touched.reads, path);
            }
            if let Some(glob) = glob {
                push_file(&mut touched.reads, glob);
            }
        }
        BuiltinArgs::MemoryPut(put) => push_key(&mut touched.writes, &put.key),
        BuiltinArgs::MemoryGet(get) => push_key(&mut touched.reads, &get.key),
        BuiltinArgs::Noop(_)
        | BuiltinArgs::Echo(_)
        | BuiltinArgs::Sleep(_)
        | BuiltinArgs::Shell(_)
        | BuiltinArgs::Agent(_) => {}
    }
    touched
}

fn push_file(targets: &mut Vec<Target>, path: &str) {
    if !string_has_templates(path) {
        targets.push(Target::File(normalize_path(path)));
    }
}

fn push_key(targets: &mut Vec<Target>, key: &str) {
    if !string_has_templates(key) {
        targets.push(Target::Memory(key.to_owned()));
    }
}

/// Lexically normalises a path or glob so `./x`, `x` and `a/../x` compare
/// equal: drops `.` and empty segments, folds `name/..`, keeps a leading `/`
/// and any `..` that climbs above the start.
pub fn normalize_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => match segments.last() {
                Some(&last) if last != ".." => {
                    segments.pop();
                }
                _ if absolute => {}
                _ => segments.push(".."),
            },
            other => segments.push(other),
        }
    }
    let joined = segments.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Whether a file target is a glob pattern rather than one path.
pub fn is_glob(path: &str) -> bool {
    path.bytes()
        .any(|byte| matches!(byte, b'*' | b'?' | b'[' | b'{'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use serde_json::json;

    use super::*;
    use crate::args::parse_args;

    fn touched(kind: &str, args: serde_json::Value) -> Touches {
        touches(&parse_args(kind, &args).unwrap().unwrap())
    }

    fn file(path: &str) -> Target {
        Target::File(path.to_owned())
    }

    #[test]
    fn each_kind_touches_what_its_args_name() {
        assert_eq!(
            touched("read", json!({"path": "./a/b.txt"})).reads,
            vec![file("a/b.txt")]
        );
        let write = touched("write", json!({"path": "out/../x.txt", "content": ""}));
        assert_eq!(write.writes, vec![file("x.txt")]);
        assert!(write.reads.is_empty());
        assert_eq!(
            touched("glob", json!({"pattern": "src/**/*.rs"})).reads,
            vec![file("src/**/*.rs")]
        );
        assert_eq!(
            touched("grep", json!({"pattern": "x", "path": "a"})).reads,
            vec![file("a")]
        );
        assert_eq!(
            touched("grep", json!({"pattern": "x", "glob": "*.md"})).reads,
            vec![file("*.md")]
        );
        let put = touched("memory.put", json!({"key": "k", "value": "v"}));
        assert_eq!(put.writes, vec![Target::Memory("k".into())]);
        assert_eq!(
            touched("memory.get", json!({"key": "k"})).reads,
            vec![Target::Memory("k".into())]
        );
        assert_eq!(
            touched("shell", json!({"cmd": "rm -rf x"})),
            Touches::default()
        );
        assert_eq!(touched("echo", json!({"text": "x"})), Touches::default());
    }

    #[test]
    fn templated_paths_are_left_out() {
        assert!(
            touched("read", json!({"path": "${memory.p}"}))
                .reads
                .is_empty()
        );
    }

    #[test]
    fn paths_normalise_lexically() {
        assert_eq!(normalize_path("./x"), "x");
        assert_eq!(normalize_path("x"), "x");
        assert_eq!(normalize_path("a/../b"), "b");
        assert_eq!(normalize_path("a//b/./c/"), "a/b/c");
        assert_eq!(normalize_path("../a"), "../a");
        assert_eq!(normalize_path("a/../../b"), "../b");
        assert_eq!(normalize_path("/a/../../b"), "/b");
        assert_eq!(normalize_path("./"), ".");
    }

    #[test]
    fn glob_detection() {
        assert!(is_glob("*.rs"));
        assert!(is_glob("a/{b,c}"));
        assert!(!is_glob("a/b.rs"));
    }
}
