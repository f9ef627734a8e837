//! The built-in kinds: args read through `volley-kinds`' typed structs, one module per family.
//!
//! - `basic`: `noop`, `echo`, `sleep`.
//! - `files`: `read`, `write`, `glob`, `grep` (confined to the worker's root).
//! - `shell`: `shell` (only with `allow_shell`).
//! - `agent`: `agent` (only with `allow_shell`), a long-running `shell` that
//!   knows its batch, op and coordinator.
//! - `process`: the `sh -c` runner `shell` and `agent` share.
//! - `memory`: `memory.put`, `memory.get`.

mod agent;
mod basic;
mod files;
mod memory;
mod process;
mod shell;

use std::sync::Arc;

use async_trait::async_trait;
use volley_kinds::BuiltinArgs;

use crate::confine::{ConfineError, Root};
use crate::handler::{Handler, HandlerError, OpContext, OpOutput};
use crate::registry::{BuiltinConfig, Registry};

/// Registers every built-in kind on `registry`.
pub(crate) fn register_all(registry: &mut Registry, config: &BuiltinConfig) {
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
    pub(crate) secrets: crate::secrets::Secrets,
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

/// Whether an I/O error of this kind cannot heal by trying again: a missing
/// file, a refused permission, a directory where a file belongs, a name
/// too long or invalid. Anything else may be transient.
pub(crate) fn io_is_permanent(kind: std::io::ErrorKind) -> bool {
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

impl From<ConfineError> for HandlerError {
    fn from(error: ConfineError) -> Self {
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
pub(crate) mod test_support {
    use serde_json::Value;

    use crate::handler::{HandlerError, OpContext, OpOutput};
    use crate::registry::{BuiltinConfig, Registry};

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

    use super::test_support::run_kind;
    use crate::registry::{BuiltinConfig, Registry};

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
