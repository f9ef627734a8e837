//! Exit codes of the CLI contract, and how errors map onto them.

use std::sync::atomic::{AtomicBool, Ordering};

use volley_client::{BatchFileError, ClientError};
use volley_proto::v1::BatchState;

/// Whether an invalid batch is reported as one JSON document on stdout
/// (`--output json`) rather than text on stderr: set once by the command
/// that reads a batch, before anything is printed.
static JSON_ERRORS: AtomicBool = AtomicBool::new(false);

/// Reports invalid batches as JSON from now on (`--output json`).
pub fn use_json_errors(json: bool) {
    JSON_ERRORS.store(json, Ordering::Relaxed);
}

fn json_errors() -> bool {
    JSON_ERRORS.load(Ordering::Relaxed)
}

/// `{"error":"invalid","message":…,"total":N,"problems":[{"op":…,"field":…,"line":…,"message":…}]}`
/// on stdout: what a script reads instead of the text.
fn print_invalid_json(message: &str, total: usize, problems: Vec<serde_json::Value>) {
    let document = serde_json::json!({
        "error": "invalid",
        "message": message,
        "total": total,
        "problems": problems,
    });
    println!("{document}");
}

/// A problem as JSON; `op` and `line` are null when there is none.
fn problem_json(
    op_id: Option<&str>,
    field: &str,
    line: Option<usize>,
    message: &str,
) -> serde_json::Value {
    serde_json::json!({
        "op": op_id,
        "field": field,
        "line": line,
        "message": message,
    })
}

/// Says the coordinator could not be reached, once, and how to get one.
pub fn print_unreachable(error: &ClientError) {
    match error {
        ClientError::Unreachable { url, message } => {
            eprintln!(
                "error: cannot reach the coordinator at {url}: {}",
                dedup_causes(message)
            );
            eprintln!(
                "hint: no coordinator at {url}: start one with `volley up` (or `volley run FILE` to run without a cluster), or point VOLLEY_COORDINATOR / --coordinator at yours"
            );
        }
        other => eprintln!("error: {other}"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Every op succeeded (or the command did what it was asked).
    Success = 0,
    /// The batch ran and some op failed or was cancelled.
    OpsFailed = 1,
    /// The batch or the command line is invalid; nothing ran.
    Invalid = 2,
    /// The cluster could not be reached.
    Unreachable = 3,
    /// `volley health`: the server answered, but not SERVING (NOT_SERVING,
    /// UNKNOWN, or no such service).
    NotServing = 4,
    /// No token, or one the coordinator does not accept (unknown, expired,
    /// revoked).
    Unauthenticated = 5,
    /// The token is valid but its role or tenant may not do this.
    PermissionDenied = 6,
    /// Ctrl-C (SIGINT) or SIGTERM stopped the command (128 + SIGINT, as a
    /// shell reports a process Ctrl-C ended).
    Interrupted = 130,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

impl Exit {
    pub fn for_state(state: BatchState) -> Exit {
        match state {
            BatchState::Succeeded | BatchState::Running | BatchState::Unspecified => Exit::Success,
            BatchState::Failed | BatchState::Cancelled | BatchState::Lost => Exit::OpsFailed,
        }
    }
}

/// Prints a client error the way a user wants to read it and says which
/// exit code it means.
pub fn client_error(error: &ClientError) -> Exit {
    match error {
        ClientError::Invalid {
            message,
            problems,
            total,
        } => {
            if json_errors() {
                let listed = problems
                    .iter()
                    .map(|problem| {
                        let op_id = (!problem.op_id.is_empty()).then_some(problem.op_id.as_str());
                        problem_json(op_id, &problem.field, None, &problem.message)
                    })
                    .collect();
                print_invalid_json(message, *total, listed);
                return Exit::Invalid;
            }
            if problems.is_empty() {
                eprintln!("error: {message}");
            } else {
                eprintln!("error: the batch is invalid ({total} problem(s)); nothing ran:");
                for problem in problems {
                    if problem.op_id.is_empty() {
                        eprintln!("  batch: field `{}`: {}", problem.field, problem.message);
                    } else {
                        eprintln!(
                            "  op `{}`: field `{}`: {}",
                            problem.op_id, problem.field, problem.message
                        );
                    }
                }
                if *total > problems.len() {
                    eprintln!(
                        "  … and {} more problem(s) not shown",
                        total - problems.len()
                    );
                }
            }
            Exit::Invalid
        }
        ClientError::Unreachable { .. } => {
            print_unreachable(error);
            Exit::Unreachable
        }
        ClientError::Unavailable(_) | ClientError::Transport(_) => {
            eprintln!("error: {error}");
            Exit::Unreachable
        }
        ClientError::NotFound(_) => {
            eprintln!("error: {error}");
            Exit::Invalid
        }
        ClientError::Unauthenticated(message) => {
            eprintln!(
                "error: not authenticated: {message} (give a token with --token, --token-file or VOLLEY_TOKEN; `volley up` prints one)"
            );
            Exit::Unauthenticated
        }
        ClientError::PermissionDenied(message) => {
            eprintln!("error: {message}");
            Exit::PermissionDenied
        }
        // Refused (an idempotency key reused for another request): nothing
        // was done, as for an invalid batch.
        ClientError::AlreadyExists(_) => {
            eprintln!("error: {error}");
            Exit::Invalid
        }
        ClientError::Conflict(_) | ClientError::TimedOut(_) | ClientError::Other { .. } => {
            eprintln!("error: {error}");
            Exit::OpsFailed
        }
    }
}

pub fn batch_file_error(error: &BatchFileError) -> Exit {
    if json_errors() {
        let problems = error.problems();
        let listed = problems
            .iter()
            .map(|problem| {
                problem_json(
                    problem.op_id.as_deref(),
                    &problem.field,
                    problem.line,
                    &problem.message,
                )
            })
            .collect();
        let total = match error {
            BatchFileError::UnknownFields { total, .. } => *total,
            _ => problems.len(),
        };
        print_invalid_json(&error.to_string(), total, listed);
        return Exit::Invalid;
    }
    eprintln!("error: {error}");
    Exit::Invalid
}

/// A cause chain (`a: b: c`) without the parts that repeat the one before
/// them: transports wrap an error in one that prints the same text
/// (`tcp connect error: tcp connect error: Connection refused`).
fn dedup_causes(chain: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in chain.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::dedup_causes;

    #[test]
    fn repeated_causes_are_printed_once() {
        assert_eq!(
            dedup_causes("tcp connect error: tcp connect error: Connection refused (os error 111)"),
            "tcp connect error: Connection refused (os error 111)"
        );
        assert_eq!(dedup_causes("a: b: a"), "a: b: a");
    }
}
