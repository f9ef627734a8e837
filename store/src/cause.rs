//! Causes: why the store ended an op without running it, with the ops its
//! message names kept as data, so readers name them without parsing text.

use crate::model::OpState;

/// How a declared writer ended, as a hopeless key's message says it.
fn writer_ended(state: OpState, short: bool) -> &'static str {
    match (state, short) {
        (OpState::Failed, _) => "failed",
        (OpState::Skipped, false) => "was skipped",
        (OpState::Skipped, true) => "skipped",
        (OpState::Cancelled, false) => "was cancelled",
        (OpState::Cancelled, true) => "cancelled",
        (OpState::Succeeded, _) => "succeeded without writing it",
        _ => "ended",
    }
}

/// How a dependency ended, as a skipped dependent's message says it
/// (`ENDED_WORD` in `lua/common.lua`).
fn dependency_ended(state: OpState) -> &'static str {
    match state {
        OpState::Failed => "failed",
        OpState::Cancelled => "cancelled",
        _ => "skipped",
    }
}

/// Writers a hopeless key's message names; the rest are counted.
pub const HOPELESS_NAMED: usize = 5;

/// Why the store ended an op without running it, with the ops it names as
/// data: the store keeps it beside the message it writes (on the op's
/// record and on its `OpSkipped` / `OpCancelled` event), so a reader names
/// those ops by id from the indices here and never parses the text.
/// [`Cause::message`] is that message (ops named by index in backticks);
/// [`Cause::render`] words it with any names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A dependency (`index`) ended without success (`state`: failed,
    /// cancelled or skipped): "dependency `7` failed".
    Dependency { index: u32, state: OpState },
    /// The batch is fail_fast and op `index` failed for good: "cancelled:
    /// fail_fast after op `7` failed".
    FailFast { index: u32 },
    /// Memory key `key` the op waited for will never be written: every
    /// declared writer ended and the key does not exist. `writers`: the
    /// first [`HOPELESS_NAMED`] writers (index, how it ended) in declaration
    /// order; `more`: how many others there are.
    NeverWritten {
        key: String,
        writers: Vec<(u32, OpState)>,
        more: u32,
    },
}

impl Cause {
    /// The cause of skipping a waiter of hopeless key `key`, `writers`
    /// being all its declared writers (index, how each ended) in
    /// declaration order.
    pub fn never_written(key: &str, writers: &[(u32, OpState)]) -> Cause {
        Cause::NeverWritten {
            key: key.to_owned(),
            writers: writers.iter().take(HOPELESS_NAMED).copied().collect(),
            more: writers.len().saturating_sub(HOPELESS_NAMED) as u32,
        }
    }

    /// Every op index the cause names, in the order its message names them.
    pub fn indices(&self) -> Vec<u32> {
        match self {
            Cause::Dependency { index, .. } | Cause::FailFast { index } => vec![*index],
            Cause::NeverWritten { writers, .. } => {
                writers.iter().map(|(index, _)| *index).collect()
            }
        }
    }

    /// The message the store writes: ops named by index in backticks.
    /// `lua/common.lua` words each cause identically.
    pub fn message(&self) -> String {
        self.render(&|index| index.to_string())
    }

    /// The message with each op named by `name(index)` (in backticks).
    pub fn render(&self, name: &dyn Fn(u32) -> String) -> String {
        match self {
            Cause::Dependency { index, state } => {
                format!("dependency `{}` {}", name(*index), dependency_ended(*state))
            }
            Cause::FailFast { index } => {
                format!("cancelled: fail_fast after op `{}` failed", name(*index))
            }
            Cause::NeverWritten { key, writers, more } => {
                let head = format!("key `{key}` will never be written: ");
                if let ([(index, state)], 0) = (writers.as_slice(), more) {
                    return format!(
                        "{head}its writer `{}` {}",
                        name(*index),
                        writer_ended(*state, false)
                    );
                }
                let named: Vec<String> = writers
                    .iter()
                    .map(|(index, state)| {
                        format!("`{}` ({})", name(*index), writer_ended(*state, true))
                    })
                    .collect();
                let mut text = format!("{head}its writers {}", named.join(", "));
                if *more > 0 {
                    text.push_str(&format!(" and {more} more"));
                }
                text
            }
        }
    }
}

/// Why an op waiting for memory key `key` was skipped: every declared
/// writer of the key (`writers`: index and how it ended, in declaration
/// order) ended and the key does not exist. The message of
/// [`Cause::never_written`]; `hopeless_message` in `lua/common.lua` words
/// it identically.
pub fn hopeless_message(key: &str, writers: &[(u32, OpState)]) -> String {
    Cause::never_written(key, writers).message()
}
