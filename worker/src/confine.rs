//! Resolving op paths under the worker's root, refusing every path that leaves it.
//!
//! A path is normalized lexically (so `a/../b` is `root/b`), then the deepest
//! part of it that exists is canonicalized (following symlinks) and must stay
//! under the canonical root; the part that does not exist yet contains no `..`
//! and no symlink, so it cannot leave. A symlink that exists but points at
//! nothing is refused: writing through it would create its target wherever it
//! points.
//!
//! That check gives clear errors, but a concurrent process could swap a
//! directory for a symlink between the check and the use. So file kinds
//! open through [`Root::open_read`] and [`Root::open_write`]: on Linux
//! with `openat2` from a descriptor of the root and `RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS`, so the kernel itself refuses any path that
//! leaves the root while it is resolved, whatever was swapped in; missing
//! directories are made one at a time under a descriptor of their parent.
//! Elsewhere (and on a Linux older than 5.6) they open the checked path:
//! the race remains there.

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

/// The worker's root directory, canonicalized once, and held open.
#[derive(Clone, Debug)]
pub struct Root {
    canonical: PathBuf,
    /// The root itself (`O_PATH`), what `openat2` resolves beneath.
    #[cfg(target_os = "linux")]
    directory: std::sync::Arc<rustix::fd::OwnedFd>,
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
        #[cfg(target_os = "linux")]
        let directory = rustix::fs::open(
            &canonical,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|error| ConfineError::BadRoot {
            root: root.to_path_buf(),
            source: error.into(),
        })?;
        Ok(Self {
            canonical,
            #[cfg(target_os = "linux")]
            directory: std::sync::Arc::new(directory),
        })
    }

    /// Opens the file `requested` names for reading, never outside the root
    /// (see the module doc).
    pub fn open_read(&self, requested: &str) -> Result<std::fs::File, ConfineError> {
        let resolved = self.resolve(requested)?;
        #[cfg(target_os = "linux")]
        {
            let relative = self.relative(&resolved);
            match beneath(
                &self.directory,
                &relative,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            ) {
                Err(error) if error == rustix::io::Errno::NOSYS => {}
                opened => {
                    return opened
                        .map(std::fs::File::from)
                        .map_err(|error| self.denied(requested, error));
                }
            }
        }
        std::fs::File::open(&resolved).map_err(|source| ConfineError::Io {
            path: requested.to_owned(),
            source,
        })
    }

    /// Opens (creating it, and its missing directories) the file `requested`
    /// names for writing — appending, or from empty — never outside the root
    /// (see the module doc).
    pub fn open_write(&self, requested: &str, append: bool) -> Result<std::fs::File, ConfineError> {
        let resolved = self.resolve(requested)?;
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::OFlags;
            let relative = self.relative(&resolved);
            let mut flags = OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC;
            flags |= if append {
                OFlags::APPEND
            } else {
                OFlags::TRUNC
            };
            let made = match relative.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => self.make_directories(parent),
                _ => Ok(()),
            };
            match made.and_then(|()| beneath(&self.directory, &relative, flags)) {
                Err(error) if error == rustix::io::Errno::NOSYS => {}
                opened => {
                    return opened
                        .map(std::fs::File::from)
                        .map_err(|error| self.denied(requested, error));
                }
            }
        }
        if let Some(parent) = resolved.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ConfineError::Io {
                path: requested.to_owned(),
                source,
            })?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.create(true);
        if append {
            options.append(true);
        } else {
            options.write(true).truncate(true);
        }
        options.open(&resolved).map_err(|source| ConfineError::Io {
            path: requested.to_owned(),
            source,
        })
    }

    /// `resolved` (under the root) relative to the root.
    #[cfg(target_os = "linux")]
    fn relative(&self, resolved: &Path) -> PathBuf {
        let relative = resolved.strip_prefix(&self.canonical).unwrap_or(resolved);
        if relative.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            relative.to_path_buf()
        }
    }

    /// Makes each missing directory of `relative` (a path under the root),
    /// one component at a time: each is made under a descriptor of its
    /// parent, opened beneath the root, so no swapped-in symlink can take a
    /// `mkdir` elsewhere.
    #[cfg(target_os = "linux")]
    fn make_directories(&self, relative: &Path) -> rustix::io::Result<()> {
        use rustix::fs::{Mode, OFlags};
        let directory_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut parent = PathBuf::new();
        for component in relative.components() {
            let Component::Normal(name) = component else {
                continue;
            };
            let path = parent.join(name);
            match beneath(&self.directory, &path, directory_flags) {
                Ok(_) => {}
                Err(rustix::io::Errno::NOENT) => {
                    let parent_directory = if parent.as_os_str().is_empty() {
                        None
                    } else {
                        Some(beneath(&self.directory, &parent, directory_flags)?)
                    };
                    let made = match &parent_directory {
                        Some(directory) => {
                            rustix::fs::mkdirat(directory, name, Mode::from_raw_mode(0o777))
                        }
                        None => {
                            rustix::fs::mkdirat(&*self.directory, name, Mode::from_raw_mode(0o777))
                        }
                    };
                    match made {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(error) => return Err(error),
                    }
                }
                Err(error) => return Err(error),
            }
            parent = path;
        }
        Ok(())
    }

    /// An `openat2` refusal as the error the op reports: leaving the root is
    /// `Escapes`, anything else an I/O error naming the path.
    #[cfg(target_os = "linux")]
    fn denied(&self, requested: &str, error: rustix::io::Errno) -> ConfineError {
        if error == rustix::io::Errno::XDEV || error == rustix::io::Errno::LOOP {
            ConfineError::Escapes {
                path: requested.to_owned(),
            }
        } else {
            ConfineError::Io {
                path: requested.to_owned(),
                source: error.into(),
            }
        }
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

/// `openat2(root, path, flags, mode, BENEATH | NO_MAGICLINKS)`, the mode
/// 0o666 (less the umask) for a file it creates.
#[cfg(target_os = "linux")]
fn beneath(
    root: &rustix::fd::OwnedFd,
    path: &Path,
    flags: rustix::fs::OFlags,
) -> rustix::io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::ResolveFlags;
    // A mode only with O_CREAT: openat2 refuses one otherwise (EINVAL).
    let mode = if flags.contains(rustix::fs::OFlags::CREATE) {
        rustix::fs::Mode::from_raw_mode(0o666)
    } else {
        rustix::fs::Mode::empty()
    };
    rustix::fs::openat2(
        root,
        path,
        flags,
        mode,
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
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

/// Whether an I/O error of this kind cannot heal by trying again: a missing
/// file, a refused permission, a directory where a file belongs, a name
/// too long or invalid. Anything else may be transient.
pub fn io_is_permanent(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind;
    matches!(
        kind,
        ErrorKind::NotFound
            | ErrorKind::PermissionDenied
            | ErrorKind::IsADirectory
            | ErrorKind::NotADirectory
            | ErrorKind::InvalidInput
            | ErrorKind::InvalidFilename
    )
}

/// A file op's confinement failure as a handler's failure: permanent unless
/// the I/O error may be transient (a file being replaced).
impl From<ConfineError> for crate::handler::HandlerError {
    fn from(error: ConfineError) -> Self {
        use crate::handler::HandlerError;
        match error {
            ConfineError::Io { ref source, .. } if io_is_permanent(source.kind()) => {
                HandlerError::permanent(error.to_string())
            }
            // Another I/O error may be transient (a file being replaced).
            ConfineError::Io { .. } => HandlerError::retry(error.to_string()),
            ConfineError::NoRoot
            | ConfineError::Escapes { .. }
            | ConfineError::DanglingSymlink { .. }
            | ConfineError::BadRoot { .. } => HandlerError::permanent(error.to_string()),
        }
    }
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

    /// A symlink swapped in while files are opened never lets a read or a
    /// write reach outside the root: the directory `inside` and a symlink
    /// `evil` to a directory outside the root trade places (an atomic
    /// `RENAME_EXCHANGE`) thousands of times while another thread reads and
    /// writes `inside/…`, between the path check and the open.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_symlink_swapped_in_mid_open_cannot_escape() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let base = tempfile::tempdir().unwrap();
        let root_dir = base.path().join("root");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(root_dir.join("inside")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root_dir.join("inside/file.txt"), "inside").unwrap();
        std::fs::write(outside.join("file.txt"), "SECRET").unwrap();
        std::os::unix::fs::symlink(&outside, root_dir.join("evil")).unwrap();
        let root = Root::new(&root_dir).unwrap();
        let swapping = std::sync::Arc::new(AtomicBool::new(true));
        let swapper = {
            let swapping = swapping.clone();
            let root_dir = root_dir.clone();
            std::thread::spawn(move || {
                let directory = std::fs::File::open(&root_dir).unwrap();
                let mut swaps = 0_u64;
                while swapping.load(Ordering::Relaxed) {
                    rustix::fs::renameat_with(
                        &directory,
                        "inside",
                        &directory,
                        "evil",
                        rustix::fs::RenameFlags::EXCHANGE,
                    )
                    .unwrap();
                    swaps += 1;
                }
                swaps
            })
        };
        for _ in 0..5_000 {
            if let Ok(mut file) = root.open_read("inside/file.txt") {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut file, &mut text).unwrap();
                assert_eq!(text, "inside", "a read escaped the root");
            }
            if let Ok(mut file) = root.open_write("inside/written.txt", false) {
                std::io::Write::write_all(&mut file, b"x").unwrap();
            }
        }
        swapping.store(false, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(swaps > 10, "the swapper ran");
        assert!(
            !outside.join("written.txt").exists(),
            "a write escaped the root"
        );
    }
}
