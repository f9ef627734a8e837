//! An op's two streams as a person wants them, read from its status:
//! what it printed (a failed program has no output, so its stdout is in
//! its details) and its stderr (what the worker kept), with whether that
//! stderr was cut. One reading for every place that shows them (`volley
//! logs`, `--logs-dir`, the dashboard's op panel).

use crate::v1;

/// [`streams`]' answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpStreams {
    pub stdout: String,
    pub stderr: String,
    /// The worker kept only the end of a longer stderr.
    pub stderr_truncated: bool,
}

/// `op`'s stdout and stderr (see the module doc).
pub fn streams(op: &v1::OpStatus) -> OpStreams {
    streams_of(&op.output, &op.details_json)
}

/// The stdout and stderr of an op whose status has `output` and
/// `details_json` (for a status that is not the wire's `OpStatus`).
pub fn streams_of(output: &str, details_json: &str) -> OpStreams {
    let details: serde_json::Value = if details_json.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(details_json).unwrap_or(serde_json::Value::Null)
    };
    let text = |field: &str| {
        details
            .get(field)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    OpStreams {
        stdout: if output.is_empty() {
            text("stdout")
        } else {
            output.to_owned()
        },
        stderr: text("stderr"),
        stderr_truncated: details
            .get("stderr_truncated")
            .and_then(serde_json::Value::as_bool)
            == Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_programs_stdout_comes_from_its_details() {
        let failed = v1::OpStatus {
            details_json: r#"{"stdout":"partial\n","stderr":"oops\n","stderr_truncated":true}"#
                .to_owned(),
            ..Default::default()
        };
        assert_eq!(
            streams(&failed),
            OpStreams {
                stdout: "partial\n".to_owned(),
                stderr: "oops\n".to_owned(),
                stderr_truncated: true,
            }
        );
        let succeeded = v1::OpStatus {
            output: "all\n".to_owned(),
            details_json: "not json".to_owned(),
            ..Default::default()
        };
        assert_eq!(streams(&succeeded).stdout, "all\n");
        assert_eq!(streams(&succeeded).stderr, "");
    }
}
