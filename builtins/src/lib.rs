//! Volley's built-in op kinds (`noop`, `echo`, `sleep`, `read`, `write`,
//! `glob`, `grep`, `shell`, `agent`, `memory.put`, `memory.get`) as
//! handlers for the worker SDK (`volley-worker`).
//!
//! They live apart from the SDK so that a custom worker that only runs its
//! own kinds does not build what these need (regex, walkdir, globset,
//! sha2): `volley worker` and `volley run` register them, a custom worker
//! may.
//!
//! ```no_run
//! use volley_builtins::{BuiltinConfig, BuiltinRegistry};
//! use volley_worker::Registry;
//!
//! let registry = Registry::with_builtins(&BuiltinConfig::default());
//! assert!(registry.get("echo").is_some());
//! ```
//!
//! # Layout
//! - crate root — `BuiltinConfig`, `BuiltinRegistry::with_builtins`, the
//!   dispatch from a kind's typed args to its module.
//! - `basic`: `noop`, `echo`, `sleep`.
//! - `files`: `read`, `write`, `glob`, `grep` (confined to the worker's root).
//! - `shell`: `shell` (only with `allow_shell`).
//! - `agent`: `agent` (only with `allow_shell`), a long-running `shell` that
//!   knows its batch, op and coordinator.
//! - `process`: the `sh -c` runner `shell` and `agent` share.
//! - `memory`: `memory.put`, `memory.get`.
//! - [`op_processes`] — the process groups of the host programs this process
//!   runs, to signal them all when it stops (Ctrl-C on `volley run`).
//! - [`secrets`] — `${secret.NAME}` values from `--secret-dir` and
//!   `VOLLEY_SECRET_<NAME>`, masked in what ops report.

mod agent;
mod basic;
mod files;
mod memory;
mod process;
mod shell;

pub mod op_processes;
pub mod secrets;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use volley_kinds::BuiltinArgs;
use volley_worker::{ConfineError, Handler, HandlerError, OpContext, OpOutput, Registry, Root};

/// What the built-in kinds may touch on this host.
#[derive(Clone, Debug, Default)]
pub struct BuiltinConfig {
    /// File kinds work only under this directory; without it they are refused.
    pub root: Option<PathBuf>,
    /// `shell` and `agent` run host programs only when this is set.
    pub allow_shell: bool,
    /// Where `${secret.NAME}` values come from (`--secret-dir`, then
    /// `VOLLEY_SECRET_<NAME>`).
    pub secrets: secrets::Secrets,
}

/// A [`Registry`] with the built-in kinds: `Registry::with_builtins(&config)`
/// once this trait is in scope.
pub trait BuiltinRegistry {
    /// A registry with every built-in kind. File kinds without a root and
    /// `shell`/`agent` without `allow_shell` are held but not advertised
    /// (see [`Registry::advertised_kinds`]); an op of theirs that arrives
    /// anyway is refused with an error that says how to enable them.
    fn with_builtins(config: &BuiltinConfig) -> Self;
}

impl BuiltinRegistry for Registry {
    fn with_builtins(config: &BuiltinConfig) -> Registry {
        let mut registry = Registry::new();
        register_all(&mut registry, config);
        if config.root.is_none() {
            for kind in volley_kinds::FILE_KINDS {
                registry.withhold(*kind);
            }
        }
        if !config.allow_shell {
            for kind in volley_kinds::HOST_PROGRAM_KINDS {
                registry.withhold(*kind);
            }
        }
        registry
    }
}

/// Registers every built-in kind on `registry` (all advertised; see
/// [`BuiltinRegistry::with_builtins`] for a registry that holds back what
/// this host cannot run).
pub fn register_all(registry: &mut Registry, config: &BuiltinConfig) {
    let state = Arc::new(BuiltinState::new(config));
    for kind in volley_kinds::BUILTIN_KINDS {
        registry.register(
            *kind,
            Builtin {
                kind,
                state: Arc::clone(&state),
            },
        );
    }
}

/// What every built-in shares: the root (resolved once) and the shell switch.
pub(crate) struct BuiltinState {
    /// `Err` holds why the configured root is unusable, reported on each file op.
    root: Option<Result<Root, String>>,
    allow_shell: bool,
    pub(crate) secrets: secrets::Secrets,
}

impl BuiltinState {
    pub(crate) fn new(config: &BuiltinConfig) -> Self {
        let root = config
            .root
            .as_deref()
            .map(|path| Root::new(path).map_err(|error| error.to_string()));
        Self {
            root,
            allow_shell: config.allow_shell,
            secrets: config.secrets.clone(),
        }
    }

    /// The root, or the permanent error of a file kind on a worker without a usable one.
    pub(crate) fn root(&self) -> Result<&Root, HandlerError> {
        match &self.root {
            None => Err(HandlerError::permanent(ConfineError::NoRoot.to_string())),
            Some(Err(message)) => Err(HandlerError::permanent(message.clone())),
            Some(Ok(root)) => Ok(root),
        }
    }

    /// The root if one is configured and usable; `Ok(None)` without one.
    pub(crate) fn optional_root(&self) -> Result<Option<&Root>, HandlerError> {
        match &self.root {
            None => Ok(None),
            Some(Err(message)) => Err(HandlerError::permanent(message.clone())),
            Some(Ok(root)) => Ok(Some(root)),
        }
    }
}

/// One built-in kind.
struct Builtin {
    kind: &'static str,
    state: Arc<BuiltinState>,
}

#[async_trait]
impl Handler for Builtin {
    async fn run(
        &self,
        ctx: &OpContext,
        args: serde_json::Value,
    ) -> Result<OpOutput, HandlerError> {
        let parsed = match volley_kinds::parse_args(self.kind, &args) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => {
                return Err(HandlerError::permanent(format!(
                    "kind {} is not a built-in kind",
                    self.kind
                )));
            }
            Err(error) => {
                return Err(HandlerError::permanent(format!(
                    "invalid args for kind {}: {error}",
                    self.kind
                )));
            }
        };
        let state = &self.state;
        match parsed {
            BuiltinArgs::Noop(_) => Ok(OpOutput::empty()),
            BuiltinArgs::Echo(echo) => Ok(OpOutput::text(echo.text)),
            BuiltinArgs::Sleep(sleep) => basic::sleep(ctx, sleep).await,
            BuiltinArgs::Read(read) => files::read(state.root()?, read).await,
            BuiltinArgs::Write(write) => files::write(state.root()?, write).await,
            BuiltinArgs::Glob(glob) => files::glob(state.root()?, glob).await,
            BuiltinArgs::Grep(grep) => files::grep(state.root()?, grep).await,
            BuiltinArgs::Shell(shell_args) => shell::shell(state, ctx, shell_args).await,
            BuiltinArgs::MemoryPut(put) => memory::put(ctx, put).await,
            BuiltinArgs::MemoryGet(get) => memory::get(ctx, get).await,
            BuiltinArgs::Agent(agent_args) => agent::agent(state, ctx, agent_args).await,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
pub(crate) mod test_support {
    use serde_json::Value;

    use volley_worker::{HandlerError, OpContext, OpOutput, Registry};

    use crate::{BuiltinConfig, BuiltinRegistry};

    /// Runs a built-in through a registry, as the executor would.
    pub(crate) async fn run_kind(
        config: &BuiltinConfig,
        kind: &str,
        args: Value,
    ) -> Result<OpOutput, HandlerError> {
        let registry = Registry::with_builtins(config);
        let ctx = OpContext::builder(kind)
            .root(config.root.clone())
            .allow_shell(config.allow_shell)
            .build();
        registry
            .get(kind)
            .expect("built-in registered")
            .run(&ctx, args)
            .await
    }

    pub(crate) fn rooted(dir: &std::path::Path) -> BuiltinConfig {
        BuiltinConfig {
            root: Some(dir.to_path_buf()),
            allow_shell: false,
            ..BuiltinConfig::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use serde_json::json;

    use volley_worker::Registry;

    use super::test_support::run_kind;
    use crate::{BuiltinConfig, BuiltinRegistry};

    #[test]
    fn registers_every_builtin() {
        let registry = Registry::with_builtins(&BuiltinConfig::default());
        let mut expected: Vec<String> = volley_kinds::BUILTIN_KINDS
            .iter()
            .map(|kind| kind.to_string())
            .collect();
        expected.sort();
        assert_eq!(registry.kinds(), expected);
    }

    #[tokio::test]
    async fn bad_args_are_permanent() {
        let error = run_kind(&BuiltinConfig::default(), "echo", json!({"txt": "x"}))
            .await
            .unwrap_err();
        assert!(!error.is_retryable());
        assert!(
            error.message().contains("invalid args for kind echo"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn file_kinds_without_root_are_refused() {
        for (kind, args) in [
            ("read", json!({"path": "a"})),
            ("write", json!({"path": "a", "content": "x"})),
            ("glob", json!({"pattern": "*"})),
            ("grep", json!({"pattern": "x", "path": "a"})),
        ] {
            let error = run_kind(&BuiltinConfig::default(), kind, args)
                .await
                .unwrap_err();
            assert!(!error.is_retryable());
            assert!(
                error.message().contains("file kinds need --root"),
                "{kind}: {error}"
            );
        }
    }
}

#[cfg(test)]
mod advertised_tests {
    use volley_worker::Registry;

    use crate::{BuiltinConfig, BuiltinRegistry};

    #[test]
    fn switched_off_kinds_are_not_advertised() {
        let bare = Registry::with_builtins(&BuiltinConfig::default());
        let advertised = bare.advertised_kinds();
        for kind in ["read", "write", "glob", "grep", "shell", "agent"] {
            assert!(
                !advertised.contains(&kind.to_owned()),
                "{kind} advertised: {advertised:?}"
            );
            assert!(
                bare.get(kind).is_some(),
                "{kind} still refuses with a clear error"
            );
        }
        assert!(advertised.contains(&"echo".to_owned()));
        let full = Registry::with_builtins(&BuiltinConfig {
            root: Some(std::env::temp_dir()),
            allow_shell: true,
            ..BuiltinConfig::default()
        });
        assert_eq!(full.advertised_kinds(), full.kinds());
    }
}
