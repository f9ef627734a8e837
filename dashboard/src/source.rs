//! Where the dashboard's data comes from: a live cluster's coordinator, or
//! batches exported with `volley export` (read-only, no cluster: the one
//! given with `--file` and those dropped on the page), so the same pages
//! and the same graph, ops and timeline code show both.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use volley_coordinator::Coordinator;
use volley_coordinator::views::{BatchView, OpRow};
use volley_plan::Plan;

use crate::export::Export;

/// The data behind every handler.
pub enum Source {
    /// The coordinator's store: every batch the caller may read.
    Live(Coordinator),
    /// Exported batches, read from files.
    File(Files),
}

/// How many dropped exports are kept (the oldest goes first): each may be
/// hundreds of megabytes.
pub const MAX_OPEN_EXPORTS: usize = 4;

/// The exported batches a file dashboard shows: the one it started with,
/// and those opened since by a drop on the page (`POST /api/files`).
pub struct Files {
    exports: std::sync::RwLock<Vec<Arc<Export>>>,
    /// The most bytes a dropped file may have.
    pub max_bytes: u64,
    /// What an open must send in `X-Volley-Csrf`: the pages read it from
    /// `/api/session`, which a page of another site cannot read, so it
    /// cannot make the dashboard show a file of its choosing.
    pub open_token: String,
}

impl Files {
    pub fn new(first: Option<Export>, max_bytes: u64, open_token: String) -> Files {
        Files {
            exports: std::sync::RwLock::new(first.into_iter().map(Arc::new).collect()),
            max_bytes,
            open_token,
        }
    }

    /// Every open export, the newest first.
    pub fn all(&self) -> Vec<Arc<Export>> {
        let exports = self
            .exports
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        exports.iter().rev().cloned().collect()
    }

    /// The export of batch `id`, if one is open.
    pub fn find(&self, id: &str) -> Option<Arc<Export>> {
        self.all().into_iter().find(|export| export.is(id))
    }

    /// Opens `export`, in place of an open one of the same batch; the
    /// oldest goes when more than [`MAX_OPEN_EXPORTS`] are open.
    pub fn open(&self, export: Export) {
        let mut exports = self
            .exports
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        exports.retain(|open| !open.is(export.batch_id()));
        exports.push(Arc::new(export));
        while exports.len() > MAX_OPEN_EXPORTS {
            exports.remove(0);
        }
    }
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

/// Every op's row of one batch as read once, and what is computed from
/// them once per read, whichever handler asks first: the header, the graph
/// and the timeline all want the critical path, and a 100,000-op batch's
/// costs enough that one page load must not compute it three times.
pub struct BatchRows {
    rows: Vec<OpRow>,
    summary: OnceLock<RowsSummary>,
    /// The graph folded without any group expanded: what a page load asks.
    folded: OnceLock<Vec<u8>>,
}

/// What the rows add up to.
pub struct RowsSummary {
    /// The op indices of the longest chain, in order.
    pub critical_path: Vec<u32>,
    pub critical_path_ms: u64,
    /// The same indices, for lookups.
    pub critical: HashSet<u32>,
    /// Every op's duration, summed: the batch's sequential time.
    pub sequential_ms: u64,
}

impl BatchRows {
    pub fn new(rows: Vec<OpRow>) -> BatchRows {
        BatchRows {
            rows,
            summary: OnceLock::new(),
            folded: OnceLock::new(),
        }
    }

    /// The summary over `plan` (the plan these rows were read for),
    /// computed by the first caller.
    pub fn summary(&self, plan: &Plan) -> &RowsSummary {
        self.summary.get_or_init(|| {
            let durations: Vec<u64> = self.rows.iter().map(|row| row.duration_ms).collect();
            let (critical_path, critical_path_ms) = plan.critical_path(&durations);
            RowsSummary {
                critical: critical_path.iter().copied().collect(),
                critical_path,
                critical_path_ms,
                sequential_ms: durations.iter().sum(),
            }
        })
    }

    /// The unexpanded folded graph as JSON, made by `fold` the first time.
    pub fn folded(&self, fold: impl FnOnce() -> Vec<u8>) -> &[u8] {
        self.folded.get_or_init(fold)
    }
}

impl std::ops::Deref for BatchRows {
    type Target = [OpRow];

    fn deref(&self) -> &[OpRow] {
        &self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(id: &str, name: &str) -> Export {
        let document = serde_json::json!({
            "format": crate::export::EXPORT_FORMAT,
            "batch": {"id": id, "name": name},
            "ops": [{"index": 0, "id": "a", "kind": "noop", "state": "succeeded"}],
            "graph": {"deps": [[]]},
        });
        Export::from_slice(document.to_string().as_bytes(), "test.json").expect("an export")
    }

    #[test]
    fn an_open_replaces_the_same_batch_and_the_oldest_goes_past_the_bound() {
        let files = Files::new(Some(export("b0", "first")), 10, "token".to_owned());
        files.open(export("b0", "again"));
        assert_eq!(files.all().len(), 1);
        let again = files.find("b0").expect("open");
        assert_eq!(again.header["name"], "again");
        for at in 1..=MAX_OPEN_EXPORTS {
            files.open(export(&format!("b{at}"), "more"));
        }
        let open: Vec<String> = files
            .all()
            .iter()
            .map(|export| export.batch_id().to_owned())
            .collect();
        assert_eq!(open, vec!["b4", "b3", "b2", "b1"], "newest first, b0 gone");
        assert!(files.find("b0").is_none());
    }

    #[test]
    fn the_summary_is_the_critical_path_and_the_durations_summed() {
        let export = export("b1", "one");
        let rows = BatchRows::new(export.rows.to_vec());
        let summary = rows.summary(&export.plan);
        assert_eq!(summary.critical_path, vec![0]);
        assert_eq!(summary.sequential_ms, 0);
        assert!(summary.critical.contains(&0));
        assert_eq!(rows.folded(|| b"{}".to_vec()), b"{}");
        assert_eq!(rows.folded(|| b"other".to_vec()), b"{}", "folded once");
    }
}
