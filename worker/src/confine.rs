//! Resolving op paths under the worker's root, refusing every path that leaves it.
//!
//! A path is normalized lexically (so `a/../b` is `root/b`), then the deepest
//! part of it that exists is canonicalized (following symlinks) and must stay
//! under the canonical root; the part that does not exist yet contains no `..`
//! and no symlink, so it cannot leave. A symlink that exists but points at
//! nothing is refused: writing through it would create its target wherever it
//! points. (Races with a concurrent process that swaps a directory for a
//! symlink between the check and the use are not defended against.)

use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("file kinds need --root: this worker has no root directory")]
    NoRoot,
    #[error("path {path} escapes the worker's root")]
    Escapes { path: String },
    #[error("path {path} is a dangling symlink")]
    DanglingSymlink { path: String },
    #[error("root {root} is not usable: {source}")]
    BadRoot { root: PathBuf, source: io::Error },
    #[error("path {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// The worker's root directory, canonicalized once.
#[derive(Clone, Debug)]
pub struct Root {
    canonical: PathBuf,
}

impl Root {
    /// Canonicalizes `root`; it must exist and be a directory.
    pub fn new(root: &Path) -> Result<Self, ConfineError> {
        let canonical = root
            .canonicalize()
            .map_err(|source| ConfineError::BadRoot {
                root: root.to_path_buf(),
                source,
            })?;
        if !canonical.is_dir() {
            let source = io::Error::new(io::ErrorKind::NotADirectory, "not a directory");
            return Err(ConfineError::BadRoot {
                root: root.to_path_buf(),
                source,
            });
        }
        Ok(Self { canonical })
    }

    pub fn path(&self) -> &Path {
        &self.canonical
    }

    /// The absolute path `requested` names under the root (relative paths are
    /// relative to the root; absolute ones must lie inside it).
    pub fn resolve(&self, requested: &str) -> Result<PathBuf, ConfineError> {
        let escapes = || ConfineError::Escapes {
            path: requested.to_owned(),
        };
        let requested_path = Path::new(requested);
        let joined = if requested_path.is_absolute() {
            requested_path.to_path_buf()
        } else {
            self.canonical.join(requested_path)
        };
        let normalized = normalize_lexically(&joined).ok_or_else(escapes)?;

        // Find the deepest ancestor (or the path itself) that exists.
        let mut existing = normalized.as_path();
        let mut missing_tail: Vec<&std::ffi::OsStr> = Vec::new();
        loop {
            match std::fs::symlink_metadata(existing) {
                Ok(_) => break,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    let Some(name) = existing.file_name() else {
                        return Err(escapes());
                    };
                    missing_tail.push(name);
                    let Some(parent) = existing.parent() else {
                        return Err(escapes());
                    };
                    existing = parent;
                }
                Err(source) => {
                    return Err(ConfineError::Io {
                        path: requested.to_owned(),
                        source,
                    });
                }
            }
        }
        let canonical_existing = existing.canonicalize().map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                ConfineError::DanglingSymlink {
                    path: requested.to_owned(),
                }
            } else {
                ConfineError::Io {
                    path: requested.to_owned(),
                    source,
                }
            }
        })?;
        if !canonical_existing.starts_with(&self.canonical) {
            return Err(escapes());
        }
        let mut resolved = canonical_existing;
        resolved.extend(missing_tail.iter().rev());
        Ok(resolved)
    }

    /// `absolute` relative to the root, with `/` separators, for outputs.
    pub fn display_relative(&self, absolute: &Path) -> String {
        let relative = absolute.strip_prefix(&self.canonical).unwrap_or(absolute);
        let parts: Vec<String> = relative
            .components()
            .map(|component| component.as_os_str().to_string_lossy().into_owned())
            .collect();
        parts.join("/")
    }
}

/// Removes `.` and resolves `..` without touching the file system; `None` if
/// `..` climbs above the file system's root.
fn normalize_lexically(path: &Path) -> Option<PathBuf> {
    let mut normalized = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => normalized.push(component.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                if !normalized.pop() {
                    return None;
                }
            }
            Component::Normal(name) => normalized.push(name),
        }
    }
    Some(normalized)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root/sub")).unwrap();
        std::fs::write(dir.path().join("root/sub/file.txt"), "x").unwrap();
        std::fs::write(dir.path().join("outside.txt"), "secret").unwrap();
        let root = Root::new(&dir.path().join("root")).unwrap();
        (dir, root)
    }

    #[test]
    fn relative_paths_resolve_under_root() {
        let (_dir, root) = setup();
        let resolved = root.resolve("sub/file.txt").unwrap();
        assert_eq!(resolved, root.path().join("sub/file.txt"));
        let not_yet = root.resolve("new/dir/file.txt").unwrap();
        assert_eq!(not_yet, root.path().join("new/dir/file.txt"));
        assert_eq!(root.resolve("sub/../sub/./file.txt").unwrap(), resolved);
        assert_eq!(root.display_relative(&resolved), "sub/file.txt");
    }

    #[test]
    fn dot_dot_escape_is_refused() {
        let (_dir, root) = setup();
        assert!(matches!(
            root.resolve("../outside.txt"),
            Err(ConfineError::Escapes { .. })
        ));
        assert!(matches!(
            root.resolve("sub/../../outside.txt"),
            Err(ConfineError::Escapes { .. })
        ));
        assert!(matches!(
            root.resolve("../../../../../../../../etc/passwd"),
            Err(ConfineError::Escapes { .. })
        ));
    }

    #[test]
    fn absolute_paths_outside_are_refused_inside_allowed() {
        let (_dir, root) = setup();
        assert!(matches!(
            root.resolve("/etc/passwd"),
            Err(ConfineError::Escapes { .. })
        ));
        let inside = root.path().join("sub/file.txt");
        assert_eq!(root.resolve(inside.to_str().unwrap()).unwrap(), inside);
    }

    #[test]
    fn symlinks_pointing_out_are_refused() {
        let (dir, root) = setup();
        std::os::unix::fs::symlink(dir.path().join("outside.txt"), root.path().join("link.txt"))
            .unwrap();
        std::os::unix::fs::symlink(dir.path(), root.path().join("linkdir")).unwrap();
        assert!(matches!(
            root.resolve("link.txt"),
            Err(ConfineError::Escapes { .. })
        ));
        assert!(matches!(
            root.resolve("linkdir/outside.txt"),
            Err(ConfineError::Escapes { .. })
        ));
        assert!(matches!(
            root.resolve("linkdir/new/file"),
            Err(ConfineError::Escapes { .. })
        ));
    }

    #[test]
    fn dangling_symlink_is_refused() {
        let (dir, root) = setup();
        std::os::unix::fs::symlink(
            dir.path().join("does-not-exist"),
            root.path().join("dangling"),
        )
        .unwrap();
        assert!(matches!(
            root.resolve("dangling"),
            Err(ConfineError::DanglingSymlink { .. })
        ));
    }

    #[test]
    fn symlinks_inside_are_allowed() {
        let (_dir, root) = setup();
        std::os::unix::fs::symlink(root.path().join("sub"), root.path().join("alias")).unwrap();
        assert_eq!(
            root.resolve("alias/file.txt").unwrap(),
            root.path().join("sub/file.txt")
        );
    }
}
