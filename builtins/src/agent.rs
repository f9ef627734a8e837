//! `agent`: a long-running host program that coordinates through memory; run like `shell`, with its op's identity in its environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use volley_kinds::AgentArgs;

use super::BuiltinState;
use super::process::{HostProgram, run_host_program};
use volley_worker::{HandlerError, OpContext, OpOutput};

/// The executable name that marks the worker as the `volley` CLI, whose
/// `volley memory …` agents can then call even where volley is not installed.
const VOLLEY_EXECUTABLE: &str = "volley";

pub(super) async fn agent(
    state: &BuiltinState,
    ctx: &OpContext,
    args: AgentArgs,
) -> Result<OpOutput, HandlerError> {
    if !state.allow_shell {
        return Err(HandlerError::permanent(
            "agent runs host programs; start the worker with --allow-shell",
        ));
    }
    let volley_bin = std::env::current_exe()
        .ok()
        .and_then(|exe| volley_executable(&exe));
    // The worker's own PATH, unless the op sets one.
    let base_path = args
        .env
        .get("PATH")
        .map(OsString::from)
        .or_else(|| std::env::var_os("PATH"));
    let env = agent_env(ctx, args.env, volley_bin.as_deref(), base_path);
    let program = HostProgram {
        kind: "agent",
        cmd: &args.cmd,
        cwd: args.cwd.as_deref(),
        env,
    };
    run_host_program(state, ctx, program).await
}

/// `exe` if it is the `volley` binary.
fn volley_executable(exe: &Path) -> Option<PathBuf> {
    (exe.file_name()? == VOLLEY_EXECUTABLE).then(|| exe.to_path_buf())
}

/// The op's own env, then what tells the agent who it is and where its
/// coordinator is (set last, so an op cannot pose as another through its args).
fn agent_env(
    ctx: &OpContext,
    op_env: std::collections::BTreeMap<String, String>,
    volley_bin: Option<&Path>,
    base_path: Option<OsString>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = op_env
        .into_iter()
        .map(|(name, value)| (name.into(), value.into()))
        .collect();
    let mut set = |name: &str, value: OsString| env.push((name.into(), value));
    if let Some(url) = ctx.coordinator_url() {
        set("VOLLEY_COORDINATOR", url.into());
    }
    set("VOLLEY_BATCH", ctx.batch_id().as_str().into());
    set("VOLLEY_OP", ctx.op_id().as_str().into());
    set("VOLLEY_ATTEMPT", ctx.attempt().to_string().into());
    set("VOLLEY_NAMESPACE", ctx.namespace().into());
    // VOLLEY_TOKEN (the attempt's capability) is set for every host
    // program by the process runner.
    if let Some(volley_bin) = volley_bin {
        set("VOLLEY_BIN", volley_bin.as_os_str().to_owned());
        if let Some(path) = volley_bin
            .parent()
            .and_then(|dir| path_with_first(dir, base_path.as_deref()))
        {
            set("PATH", path);
        }
    }
    env
}

/// `dir` followed by the entries of `path`; `None` if a directory cannot be
/// part of a PATH (it holds `:`).
fn path_with_first(dir: &Path, path: Option<&std::ffi::OsStr>) -> Option<OsString> {
    let rest = path.map(std::env::split_paths).into_iter().flatten();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(rest)).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;
    use volley_worker::CancellationToken;
    use volley_worker::v1::Assignment;

    use super::super::test_support::run_kind;
    use super::*;
    use crate::{BuiltinConfig, BuiltinRegistry};
    use volley_worker::Executor;
    use volley_worker::LocalMemory;
    use volley_worker::OpContext;
    use volley_worker::Registry;

    fn shell_config(root: Option<&Path>) -> BuiltinConfig {
        BuiltinConfig {
            root: root.map(Path::to_path_buf),
            allow_shell: true,
            ..BuiltinConfig::default()
        }
    }

    fn env_value<'a>(env: &'a [(OsString, OsString)], name: &str) -> Option<&'a OsString> {
        env.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    #[tokio::test]
    async fn agent_is_refused_unless_allowed() {
        let error = run_kind(
            &BuiltinConfig::default(),
            "agent",
            json!({"cmd": "echo hi"}),
        )
        .await
        .unwrap_err();
        assert!(!error.is_retryable());
        assert_eq!(
            error.message(),
            "agent runs host programs; start the worker with --allow-shell"
        );
        let registry = Registry::with_builtins(&BuiltinConfig::default());
        assert!(!registry.advertised_kinds().contains(&"agent".to_owned()));
    }

    #[tokio::test]
    async fn agent_sees_its_identity_in_its_environment() {
        let registry = Registry::with_builtins(&shell_config(None));
        let ctx = OpContext::builder("agent")
            .batch("b-42")
            .op("architect", 3, 2)
            .namespace("swarm")
            .coordinator_url(Some("http://127.0.0.1:7070".to_owned()))
            .allow_shell(true)
            .token("vlycap.the-attempts-capability")
            .build();
        let output = registry
            .get("agent")
            .unwrap()
            .run(
                &ctx,
                json!({
                    "cmd": "echo $VOLLEY_BATCH $VOLLEY_OP $VOLLEY_NAMESPACE $VOLLEY_TOKEN; echo $VOLLEY_COORDINATOR $VOLLEY_ATTEMPT $ROLE",
                    "env": {"ROLE": "lead", "VOLLEY_OP": "impostor", "VOLLEY_TOKEN": "forged"},
                }),
            )
            .await
            .unwrap();
        assert_eq!(
            output.output,
            "b-42 architect swarm vlycap.the-attempts-capability\nhttp://127.0.0.1:7070 2 lead\n"
        );
    }

    #[tokio::test]
    async fn agent_without_namespace_gets_an_empty_one() {
        let output = run_kind(
            &shell_config(None),
            "agent",
            json!({"cmd": "printf '[%s]' \"${VOLLEY_NAMESPACE-unset}\""}),
        )
        .await
        .unwrap();
        assert_eq!(output.output, "[]");
    }

    #[tokio::test]
    async fn agent_fails_like_shell_and_is_confined_to_root() {
        let error = run_kind(
            &shell_config(None),
            "agent",
            json!({"cmd": "echo working; echo gave up >&2; exit 4"}),
        )
        .await
        .unwrap_err();
        assert_eq!(error.message(), "agent exited with code 4: gave up");
        assert_eq!(error.details().unwrap()["exit_code"], 4);

        let dir = tempfile::tempdir().unwrap();
        let error = run_kind(
            &shell_config(Some(dir.path())),
            "agent",
            json!({"cmd": "pwd", "cwd": "../.."}),
        )
        .await
        .unwrap_err();
        assert!(
            error.message().contains("escapes the worker's root"),
            "{error}"
        );
    }

    #[test]
    fn volley_binary_goes_first_on_path() {
        assert_eq!(
            volley_executable(Path::new("/opt/volley/bin/volley")),
            Some(PathBuf::from("/opt/volley/bin/volley"))
        );
        assert_eq!(volley_executable(Path::new("/usr/bin/custom-worker")), None);

        let ctx = OpContext::builder("agent").build();
        let env = agent_env(
            &ctx,
            BTreeMap::new(),
            Some(Path::new("/opt/volley/bin/volley")),
            Some(OsString::from("/usr/bin:/bin")),
        );
        assert_eq!(
            env_value(&env, "VOLLEY_BIN"),
            Some(&OsString::from("/opt/volley/bin/volley"))
        );
        assert_eq!(
            env_value(&env, "PATH"),
            Some(&OsString::from("/opt/volley/bin:/usr/bin:/bin"))
        );
        // No coordinator: nothing to point at.
        assert_eq!(env_value(&env, "VOLLEY_COORDINATOR"), None);

        let env = agent_env(&ctx, BTreeMap::new(), None, Some(OsString::from("/bin")));
        assert_eq!(env_value(&env, "VOLLEY_BIN"), None);
        assert_eq!(env_value(&env, "PATH"), None);
    }

    /// Polls `condition` until it holds, failing at a deadline.
    async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await; // poll interval, not a synchronization sleep
        }
    }

    fn is_gone_or_zombie(pid: i32) -> bool {
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = status
            .rsplit(") ")
            .next()
            .and_then(|rest| rest.chars().next());
        status.is_empty() || state == Some('Z')
    }

    #[tokio::test]
    async fn timeout_kills_the_agent_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        let executor = Executor::new(
            Registry::with_builtins(&shell_config(None)),
            Arc::new(LocalMemory::default()),
            None,
            true,
        );
        let cmd = format!("sleep 300 & echo $! > {}; wait", pid_file.display());
        let assignment = Assignment {
            batch_id: "b1".into(),
            op_id: "long-agent".into(),
            kind: "agent".into(),
            args_json: json!({ "cmd": cmd }).to_string(),
            attempt: 1,
            // Generous, so the grandchild has started long before it fires.
            timeout_ms: 1_500,
            ..Assignment::default()
        };
        let run =
            tokio::spawn(async move { executor.run(assignment, CancellationToken::new()).await });
        let result = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .unwrap()
            .unwrap();
        assert!(!result.ok);
        assert_eq!(result.error, "timed out after 1500ms");
        let grandchild_pid: i32 = std::fs::read_to_string(&pid_file)
            .expect("the agent's grandchild started before the timeout")
            .trim()
            .parse()
            .unwrap();
        wait_until(
            &format!("grandchild {grandchild_pid} survived the timeout"),
            || is_gone_or_zombie(grandchild_pid),
        )
        .await;
    }
}
