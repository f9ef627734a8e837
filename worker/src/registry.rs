//! The kinds a worker runs: kind name → handler.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::builtins;
use crate::handler::Handler;

/// What the built-in kinds may touch on this host.
#[derive(Clone, Debug, Default)]
pub struct BuiltinConfig {
    /// File kinds work only under this directory; without it they are refused.
    pub root: Option<PathBuf>,
    /// `shell` runs host programs only when this is set.
    pub allow_shell: bool,
}

/// Kind name → handler. A worker registers every kind it holds.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
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
    /// `shell` without `allow_shell` are still registered, and refuse each op
    /// with an error that says how to enable them.
    pub fn with_builtins(config: &BuiltinConfig) -> Self {
        let mut registry = Self::new();
        builtins::register_all(&mut registry, config);
        registry
    }

    /// Adds (or replaces) the handler of `kind`.
    pub fn register(&mut self, kind: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.handlers.insert(kind.into(), Arc::new(handler));
        self
    }

    /// Adds (or replaces) the handler of `kind`, already shared.
    pub fn register_arc(
        &mut self,
        kind: impl Into<String>,
        handler: Arc<dyn Handler>,
    ) -> &mut Self {
        self.handlers.insert(kind.into(), handler);
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(kind)
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }
}
