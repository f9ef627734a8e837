//! Stand-ins for the built-in `noop`, `echo` and `sleep` in this crate's unit
//! tests (the real ones live in `volley-builtins`, which depends on this
//! crate), behaving as they do: `sleep` ends early on cancel.

use std::time::Duration;

use crate::handler::{HandlerError, OpOutput, handler_fn};
use crate::registry::Registry;

/// A registry holding `noop`, `echo` and `sleep`.
pub(crate) fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(
        "noop",
        handler_fn(|_ctx, _args| async { Ok(OpOutput::empty()) }),
    );
    registry.register(
        "echo",
        handler_fn(|_ctx, args| async move {
            Ok(OpOutput::text(args["text"].as_str().unwrap_or_default()))
        }),
    );
    registry.register(
        "sleep",
        handler_fn(|ctx, args| async move {
            let millis = args["ms"].as_u64().unwrap_or(0);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(millis)) => Ok(OpOutput::empty()),
                () = ctx.cancellation().cancelled() => Err(HandlerError::retry("cancelled")),
            }
        }),
    );
    registry
}
