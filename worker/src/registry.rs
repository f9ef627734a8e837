//! The kinds a worker runs: kind name → handler.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use crate::builtins;
use crate::handler::Handler;

/// What the built-in kinds may touch on this host.
#[derive(Clone, Debug, Default)]
pub struct BuiltinConfig {
    /// File kinds work only under this directory; without it they are refused.
    pub root: Option<PathBuf>,
    /// `shell` and `agent` run host programs only when this is set.
    pub allow_shell: bool,
    /// Where `${secret.NAME}` values come from (`--secret-dir`, then
    /// `VOLLEY_SECRET_<NAME>`).
    pub secrets: crate::secrets::Secrets,
}

/// Kind name → handler. A worker registers every kind it holds.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
    /// Kinds held but switched off on this host (file kinds without a root,
    /// `shell` and `agent` without `allow_shell`): not advertised to the coordinator, so
    /// it routes those ops to workers that run them.
    disabled: BTreeSet<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Registry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with every built-in kind. File kinds without a root and
    /// `shell`/`agent` without `allow_shell` are held but not advertised (see
    /// [`Registry::advertised_kinds`]); an op of theirs that arrives anyway
    /// is refused with an error that says how to enable them.
    pub fn with_builtins(config: &BuiltinConfig) -> Self {
        let mut registry = Self::new();
        builtins::register_all(&mut registry, config);
        if config.root.is_none() {
            for kind in volley_kinds::FILE_KINDS {
                registry.disabled.insert((*kind).to_owned());
            }
        }
        if !config.allow_shell {
            for kind in volley_kinds::HOST_PROGRAM_KINDS {
                registry.disabled.insert((*kind).to_owned());
            }
        }
        registry
    }

    /// Adds (or replaces) the handler of `kind`.
    pub fn register(&mut self, kind: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.register_arc(kind, Arc::new(handler))
    }

    /// Adds (or replaces) the handler of `kind`, already shared.
    pub fn register_arc(
        &mut self,
        kind: impl Into<String>,
        handler: Arc<dyn Handler>,
    ) -> &mut Self {
        let kind = kind.into();
        self.disabled.remove(&kind);
        self.handlers.insert(kind, handler);
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(kind)
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    /// The kinds this worker offers the coordinator: registered and not
    /// switched off on this host. Sorted.
    pub fn advertised_kinds(&self) -> Vec<String> {
        self.handlers
            .keys()
            .filter(|kind| !self.disabled.contains(*kind))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod advertised_tests {
    use super::*;

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
