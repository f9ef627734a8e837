//! The kinds a worker runs: kind name → handler.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::handler::Handler;

/// Kind name → handler. A worker registers every kind it holds.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
    /// Kinds held but switched off on this host ([`Registry::withhold`]):
    /// not advertised to the coordinator, so it routes those ops to workers
    /// that run them.
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

    /// Keeps `kind`'s handler but stops advertising it (a kind this host
    /// cannot run: file kinds without a root, host programs without
    /// `allow_shell`). The coordinator routes its ops elsewhere; one that
    /// arrives anyway gets the handler's refusal. Registering `kind` again
    /// advertises it again.
    pub fn withhold(&mut self, kind: impl Into<String>) -> &mut Self {
        self.disabled.insert(kind.into());
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
mod tests {
    use super::*;
    use crate::handler::{OpOutput, handler_fn};

    #[test]
    fn withheld_kinds_are_held_but_not_advertised() {
        let mut registry = Registry::new();
        registry.register(
            "a",
            handler_fn(|_ctx, _args| async { Ok(OpOutput::empty()) }),
        );
        registry.register(
            "b",
            handler_fn(|_ctx, _args| async { Ok(OpOutput::empty()) }),
        );
        registry.withhold("b");
        assert_eq!(registry.kinds(), ["a", "b"]);
        assert_eq!(registry.advertised_kinds(), ["a"]);
        assert!(registry.get("b").is_some());
        registry.register(
            "b",
            handler_fn(|_ctx, _args| async { Ok(OpOutput::empty()) }),
        );
        assert_eq!(registry.advertised_kinds(), ["a", "b"]);
    }
}
