//! `read`, `write`, `glob`, `grep`: file kinds, every path resolved under the worker's root.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use volley_kinds::{GlobArgs, GrepArgs, ReadArgs, WriteArgs};

use volley_worker::Root;
use volley_worker::{HandlerError, OpOutput};

/// Retrying cannot fix a missing file, a refused permission or a directory
/// where a file belongs; anything else may be transient.
fn io_error(action: &str, path: &str, error: &io::Error) -> HandlerError {
    let message = format!("{action} {path}: {error}");
    if volley_worker::confine::io_is_permanent(error.kind()) {
        HandlerError::permanent(message)
    } else {
        HandlerError::retry(message)
    }
}

/// Runs blocking file-system work (directory walks) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, HandlerError> + Send + 'static,
) -> Result<T, HandlerError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| HandlerError::retry(format!("file task failed: {error}")))?
}

pub(super) async fn read(root: &Root, args: ReadArgs) -> Result<OpOutput, HandlerError> {
    let root = root.clone();
    let path = args.path.clone();
    let bytes = blocking(move || {
        let mut file = root.open_read(&path)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes)
            .map_err(|error| io_error("read", &path, &error))?;
        Ok(bytes)
    })
    .await?;
    let byte_count = bytes.len();
    match String::from_utf8(bytes) {
        Ok(text) => Ok(OpOutput::text(text)),
        Err(not_utf8) => {
            let text = String::from_utf8_lossy(not_utf8.as_bytes()).into_owned();
            Ok(OpOutput::text(text)
                .with_details(serde_json::json!({"bytes": byte_count, "lossy_utf8": true})))
        }
    }
}

pub(super) async fn write(root: &Root, args: WriteArgs) -> Result<OpOutput, HandlerError> {
    let opened = {
        let root = root.clone();
        let path = args.path.clone();
        let append = args.append;
        blocking(move || Ok(root.open_write(&path, append)?)).await?
    };
    let mut file = tokio::fs::File::from_std(opened);
    file.write_all(args.content.as_bytes())
        .await
        .map_err(|error| io_error("write", &args.path, &error))?;
    file.flush()
        .await
        .map_err(|error| io_error("write", &args.path, &error))?;
    let summary = serde_json::json!({
        "bytes": args.content.len(),
        "sha256": hex::encode(Sha256::digest(args.content.as_bytes())),
    });
    Ok(OpOutput::text(summary.to_string()).with_details(summary))
}

pub(super) async fn glob(root: &Root, args: GlobArgs) -> Result<OpOutput, HandlerError> {
    let root = root.clone();
    let matches = blocking(move || glob_paths(&root, &args.pattern)).await?;
    let count = matches.len();
    Ok(OpOutput::text(matches.join("\n")).with_details(serde_json::json!({"count": count})))
}

/// The files under the root matching `pattern`, as sorted root-relative paths.
/// `*` stays within one directory, `**` crosses directories. Symlinks are
/// not followed, so a walk never leaves the root.
fn glob_paths(root: &Root, pattern: &str) -> Result<Vec<String>, HandlerError> {
    if Path::new(pattern).is_absolute() {
        return Err(HandlerError::permanent(format!(
            "glob pattern {pattern} must be relative to the worker's root"
        )));
    }
    if pattern
        .split(['/', '{', '}', ','])
        .any(|segment| segment == "..")
    {
        return Err(HandlerError::permanent(format!(
            "glob pattern {pattern} escapes the worker's root"
        )));
    }
    let trimmed = pattern.trim_start_matches("./");
    let matcher = globset::GlobBuilder::new(trimmed)
        .literal_separator(true)
        .build()
        .map_err(|error| {
            HandlerError::permanent(format!("invalid glob pattern {pattern}: {error}"))
        })?
        .compile_matcher();

    // Walk only below the pattern's literal directory prefix (`src/**/*.rs` walks `src`).
    let segments: Vec<&str> = trimmed.split('/').collect();
    let literal_count = segments
        .iter()
        .take(segments.len().saturating_sub(1))
        .take_while(|segment| !segment.contains(['*', '?', '[', '{', '\\']))
        .count();
    let prefix = segments[..literal_count].join("/");
    let start = if prefix.is_empty() {
        root.path().to_path_buf()
    } else {
        root.resolve(&prefix)?
    };
    if !start.is_dir() {
        return Ok(Vec::new());
    }

    let mut matches = Vec::new();
    for entry in walkdir::WalkDir::new(&start).follow_links(false) {
        let entry =
            entry.map_err(|error| HandlerError::retry(format!("glob {pattern}: {error}")))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let below_start = relative_slash_path(&start, entry.path());
        let named = if prefix.is_empty() {
            below_start
        } else {
            format!("{prefix}/{below_start}")
        };
        if matcher.is_match(&named) {
            matches.push(named);
        }
    }
    matches.sort();
    Ok(matches)
}

fn relative_slash_path(base: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(base).unwrap_or(path);
    let parts: Vec<String> = relative
        .components()
        .map(|component| component.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.join("/")
}

pub(super) async fn grep(root: &Root, args: GrepArgs) -> Result<OpOutput, HandlerError> {
    let regex = regex::Regex::new(&args.pattern).map_err(|error| {
        HandlerError::permanent(format!("invalid grep pattern {}: {error}", args.pattern))
    })?;
    let root = root.clone();
    blocking(move || {
        // (display path, absolute path), sorted by display path.
        let files: Vec<(String, PathBuf)> = match (&args.glob, &args.path) {
            (Some(pattern), _) => glob_paths(&root, pattern)?
                .into_iter()
                .map(|named| {
                    let absolute = root.path().join(&named);
                    (named, absolute)
                })
                .collect(),
            (None, Some(path)) => files_under(&root, path)?,
            (None, None) => files_under(&root, ".")?,
        };
        let mut lines = Vec::new();
        for (named, _) in &files {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut root.open_read(named)?, &mut bytes)
                .map_err(|error| io_error("read", named, &error))?;
            let text = String::from_utf8_lossy(&bytes);
            for (line_index, line) in text.lines().enumerate() {
                if regex.is_match(line) {
                    lines.push(format!("{named}:{}:{line}", line_index + 1));
                }
            }
        }
        let details = serde_json::json!({"matches": lines.len(), "files": files.len()});
        Ok(OpOutput::text(lines.join("\n")).with_details(details))
    })
    .await
}

/// `path` if it is a file, else every file below it (symlinks not followed), sorted.
fn files_under(root: &Root, path: &str) -> Result<Vec<(String, PathBuf)>, HandlerError> {
    let resolved = root.resolve(path)?;
    let metadata = std::fs::metadata(&resolved).map_err(|error| io_error("grep", path, &error))?;
    if metadata.is_file() {
        return Ok(vec![(root.display_relative(&resolved), resolved)]);
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(&resolved).follow_links(false) {
        let entry = entry.map_err(|error| HandlerError::retry(format!("grep {path}: {error}")))?;
        if entry.file_type().is_file() {
            files.push((
                root.display_relative(entry.path()),
                entry.path().to_path_buf(),
            ));
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use serde_json::json;

    use super::super::test_support::{rooted, run_kind};

    fn fixture() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("src/nested")).unwrap();
        std::fs::write(root.join("src/a.rs"), "fn main() {}\n// TODO one\n").unwrap();
        std::fs::write(root.join("src/nested/b.rs"), "// TODO two\nlet x = 1;\n").unwrap();
        std::fs::write(root.join("notes.txt"), "nothing here\nTODO three\n").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "TODO secret\n").unwrap();
        (dir, root)
    }

    #[tokio::test]
    async fn read_returns_content() {
        let (_dir, root) = fixture();
        let output = run_kind(&rooted(&root), "read", json!({"path": "notes.txt"}))
            .await
            .unwrap();
        assert_eq!(output.output, "nothing here\nTODO three\n");
        assert_eq!(output.details, None);
    }

    #[tokio::test]
    async fn read_binary_is_lossy_and_says_so() {
        let (_dir, root) = fixture();
        std::fs::write(root.join("bin"), [0xff, 0xfe, b'a']).unwrap();
        let output = run_kind(&rooted(&root), "read", json!({"path": "bin"}))
            .await
            .unwrap();
        assert!(output.output.ends_with('a'));
        assert_eq!(output.details.unwrap()["lossy_utf8"], true);
    }

    #[tokio::test]
    async fn read_missing_file_is_permanent() {
        let (_dir, root) = fixture();
        let error = run_kind(&rooted(&root), "read", json!({"path": "nope.txt"}))
            .await
            .unwrap_err();
        assert!(!error.is_retryable());
        assert!(error.message().contains("nope.txt"), "{error}");
    }

    #[tokio::test]
    async fn write_creates_parents_and_reports_hash() {
        let (_dir, root) = fixture();
        let config = rooted(&root);
        let output = run_kind(
            &config,
            "write",
            json!({"path": "out/deep/r.md", "content": "abc"}),
        )
        .await
        .unwrap();
        let summary: serde_json::Value = serde_json::from_str(&output.output).unwrap();
        assert_eq!(summary["bytes"], 3);
        assert_eq!(
            summary["sha256"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("out/deep/r.md")).unwrap(),
            "abc"
        );

        run_kind(
            &config,
            "write",
            json!({"path": "out/deep/r.md", "content": "def", "append": true}),
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("out/deep/r.md")).unwrap(),
            "abcdef"
        );
        run_kind(
            &config,
            "write",
            json!({"path": "out/deep/r.md", "content": "x"}),
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("out/deep/r.md")).unwrap(),
            "x"
        );
    }

    #[tokio::test]
    async fn glob_lists_sorted_relative_paths() {
        let (_dir, root) = fixture();
        let config = rooted(&root);
        let output = run_kind(&config, "glob", json!({"pattern": "src/**/*.rs"}))
            .await
            .unwrap();
        assert_eq!(output.output, "src/a.rs\nsrc/nested/b.rs");
        let output = run_kind(&config, "glob", json!({"pattern": "src/*.rs"}))
            .await
            .unwrap();
        assert_eq!(output.output, "src/a.rs");
        let output = run_kind(&config, "glob", json!({"pattern": "**/*"}))
            .await
            .unwrap();
        assert_eq!(output.output, "notes.txt\nsrc/a.rs\nsrc/nested/b.rs");
        let output = run_kind(&config, "glob", json!({"pattern": "missing/*.rs"}))
            .await
            .unwrap();
        assert_eq!(output.output, "");
    }

    #[tokio::test]
    async fn grep_by_path_and_by_glob() {
        let (_dir, root) = fixture();
        let config = rooted(&root);
        let output = run_kind(
            &config,
            "grep",
            json!({"pattern": "TODO \\w+", "path": "."}),
        )
        .await
        .unwrap();
        assert_eq!(
            output.output,
            "notes.txt:2:TODO three\nsrc/a.rs:2:// TODO one\nsrc/nested/b.rs:1:// TODO two"
        );
        let output = run_kind(
            &config,
            "grep",
            json!({"pattern": "TODO", "glob": "src/**/*.rs"}),
        )
        .await
        .unwrap();
        assert_eq!(
            output.output,
            "src/a.rs:2:// TODO one\nsrc/nested/b.rs:1:// TODO two"
        );
        let output = run_kind(
            &config,
            "grep",
            json!({"pattern": "let", "path": "src/nested/b.rs"}),
        )
        .await
        .unwrap();
        assert_eq!(output.output, "src/nested/b.rs:2:let x = 1;");
        let error = run_kind(&config, "grep", json!({"pattern": "(", "path": "."}))
            .await
            .unwrap_err();
        assert!(!error.is_retryable());
    }

    // ---- confinement: every escape attempt, through every file kind

    #[tokio::test]
    async fn dot_dot_escapes_are_refused() {
        let (_dir, root) = fixture();
        let config = rooted(&root);
        for (kind, args) in [
            ("read", json!({"path": "../secret.txt"})),
            ("read", json!({"path": "src/../../secret.txt"})),
            ("write", json!({"path": "../evil.txt", "content": "x"})),
            ("grep", json!({"pattern": "TODO", "path": "../secret.txt"})),
        ] {
            let error = run_kind(&config, kind, args).await.unwrap_err();
            assert!(!error.is_retryable(), "{kind}");
            assert!(
                error.message().contains("escapes the worker's root"),
                "{kind}: {error}"
            );
        }
        assert!(!root.parent().unwrap().join("evil.txt").exists());
    }

    #[tokio::test]
    async fn absolute_paths_outside_are_refused() {
        let (_dir, root) = fixture();
        let config = rooted(&root);
        for (kind, args) in [
            ("read", json!({"path": "/etc/passwd"})),
            (
                "write",
                json!({"path": "/tmp/volley-evil.txt", "content": "x"}),
            ),
            ("grep", json!({"pattern": "root", "path": "/etc/passwd"})),
        ] {
            let error = run_kind(&config, kind, args).await.unwrap_err();
            assert!(
                error.message().contains("escapes the worker's root"),
                "{kind}: {error}"
            );
        }
        assert!(!std::path::Path::new("/tmp/volley-evil.txt").exists());
    }

    #[tokio::test]
    async fn symlinks_pointing_out_are_refused() {
        let (dir, root) = fixture();
        let config = rooted(&root);
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.txt")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("outdir")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere.txt"), root.join("dangling.txt"))
            .unwrap();
        for (kind, args) in [
            ("read", json!({"path": "link.txt"})),
            ("read", json!({"path": "outdir/secret.txt"})),
            ("write", json!({"path": "link.txt", "content": "x"})),
            ("write", json!({"path": "outdir/new.txt", "content": "x"})),
            ("write", json!({"path": "dangling.txt", "content": "x"})),
            ("grep", json!({"pattern": "TODO", "path": "outdir"})),
            ("glob", json!({"pattern": "outdir/*.txt"})),
        ] {
            let error = run_kind(&config, kind, args.clone()).await.unwrap_err();
            assert!(!error.is_retryable(), "{kind} {args}");
            assert!(
                error.message().contains("escapes the worker's root")
                    || error.message().contains("dangling"),
                "{kind} {args}: {error}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("secret.txt")).unwrap(),
            "TODO secret\n"
        );
        assert!(!dir.path().join("new.txt").exists());
        assert!(!dir.path().join("nowhere.txt").exists());
        // A walk does not follow the links either.
        let output = run_kind(&config, "grep", json!({"pattern": "secret", "path": "."}))
            .await
            .unwrap();
        assert_eq!(output.output, "");
        let output = run_kind(&config, "glob", json!({"pattern": "**/*.txt"}))
            .await
            .unwrap();
        assert_eq!(output.output, "notes.txt");
    }

    #[tokio::test]
    async fn glob_patterns_leaving_the_root_are_refused() {
        let (_dir, root) = fixture();
        let config = rooted(&root);
        for pattern in ["../*.txt", "src/../../*", "{src,..}/*.txt", "/etc/*"] {
            let error = run_kind(&config, "glob", json!({"pattern": pattern}))
                .await
                .unwrap_err();
            assert!(!error.is_retryable(), "{pattern}");
            assert!(
                error.message().contains("glob pattern"),
                "{pattern}: {error}"
            );
        }
        let error = run_kind(&config, "grep", json!({"pattern": "x", "glob": "../*.txt"}))
            .await
            .unwrap_err();
        assert!(
            error.message().contains("escapes the worker's root"),
            "{error}"
        );
    }
}
