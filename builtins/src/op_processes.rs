//! The process groups of the host programs (`shell`, `agent`) this process runs, so whoever stops the process can signal them all and none outlives it.
//!
//! Every host program runs in a process group of its own, so a cancel kills
//! the children `sh` started too. That same isolation keeps the terminal's
//! Ctrl-C from reaching them: when the process that runs them ends without
//! killing their groups, they carry on, re-parented to PID 1
//! (`PR_SET_PDEATHSIG` only reaches `sh` itself, not what it started).
//!
//! The set is one per OS process, not one per worker, on purpose: `volley
//! run` runs several embedded workers in one process, and its signal handler
//! must reach the programs of every one of them without knowing them. The
//! process runner adds a group when it spawns the program and removes it once
//! the program was reaped or its group killed.

use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::time::Duration;

use tokio::sync::watch;

/// How long a cancelled host program's group has to end after its SIGTERM
/// before it gets SIGKILL.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// The live groups; a watch channel so waiters wake when the set empties.
static GROUPS: LazyLock<watch::Sender<BTreeSet<i32>>> =
    LazyLock::new(|| watch::Sender::new(BTreeSet::new()));

/// The signals a group gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupSignal {
    /// SIGTERM: the programs may clean up and end.
    Terminate,
    /// SIGKILL: they end now.
    Kill,
}

impl GroupSignal {
    fn number(self) -> i32 {
        match self {
            GroupSignal::Terminate => libc::SIGTERM,
            GroupSignal::Kill => libc::SIGKILL,
        }
    }
}

/// How many host programs' groups this process has running.
pub fn count() -> usize {
    GROUPS.borrow().len()
}

/// Sends `signal` to every live group; returns how many it signalled.
pub fn signal_all(signal: GroupSignal) -> usize {
    let groups: Vec<i32> = GROUPS.borrow().iter().copied().collect();
    for &group in &groups {
        signal_group(group, signal);
    }
    groups.len()
}

/// Waits until no group is live, up to `timeout`; false if some still were.
pub async fn wait_until_none(timeout: Duration) -> bool {
    let mut receiver = GROUPS.subscribe();
    tokio::time::timeout(timeout, receiver.wait_for(BTreeSet::is_empty))
        .await
        .is_ok_and(|waited| waited.is_ok())
}

pub(crate) fn register(group: i32) {
    GROUPS.send_modify(|groups| {
        groups.insert(group);
    });
}

pub(crate) fn unregister(group: i32) {
    GROUPS.send_if_modified(|groups| groups.remove(&group));
}

/// Sends `signal` to the process group `group` (never to "every process"
/// or init's group).
#[allow(unsafe_code)]
pub(crate) fn signal_group(group: i32, signal: GroupSignal) {
    if group <= 1 {
        return;
    }
    // SAFETY: killpg takes plain integers and touches no memory of ours; the
    // group is one `process_group(0)` created for a host program.
    let result = unsafe { libc::killpg(group, signal.number()) };
    if result != 0 {
        tracing::debug!(process_group_id = group, ?signal, error = %std::io::Error::last_os_error(), "killpg failed (group already gone?)");
    }
}
