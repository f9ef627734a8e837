//! Where the dashboard's data comes from: a live cluster's coordinator, or
//! one batch exported with `volley export` (read-only, no cluster), so the
//! same pages and the same graph, ops and timeline code show both.

use std::sync::Arc;

use volley_coordinator::Coordinator;
use volley_coordinator::views::BatchView;
use volley_plan::Plan;

use crate::export::Export;

/// The data behind every handler.
pub enum Source {
    /// The coordinator's store: every batch the caller may read.
    Live(Coordinator),
    /// One exported batch, read from a file.
    File(Arc<Export>),
}

impl Source {
    /// Whether this is an exported file (nothing may change).
    pub fn is_file(&self) -> bool {
        matches!(self, Source::File(_))
    }
}

/// One batch's plan, whichever source it came from: what the graph,
/// ops and timeline handlers read beside the op rows.
pub enum View {
    Live(BatchView),
    File(Arc<Export>),
}

impl View {
    pub fn plan(&self) -> &Plan {
        match self {
            View::Live(view) => view.plan(),
            View::File(export) => &export.plan,
        }
    }

    /// Unix ms.
    pub fn created_ms(&self) -> u64 {
        match self {
            View::Live(view) => view.created_ms(),
            View::File(export) => export.created_ms,
        }
    }

    /// "Now" for a running op's span: the clock, or the export's time
    /// (an exported running batch stays as it was).
    pub fn now_ms(&self) -> u64 {
        match self {
            View::Live(_) => crate::api::now_ms(),
            View::File(export) => export.exported_at_ms,
        }
    }
}
