//! The coordinator's typed configuration (the CLI fills it from flags/env).

use std::time::Duration;

use volley_plan::Limits;

#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// This coordinator's name among those sharing one store: in the worker
    /// registry, in batch ownership and in `volley status`. Defaults to
    /// `<hostname>-<pid>-<4 hex>` ([`default_coordinator_id`]).
    pub id: String,
    /// Bounds on what a submission may hold.
    pub limits: Limits,
    /// How often every active batch's ready queue is re-read even without a
    /// doorbell: the safety net for a missed pub/sub message. Also the
    /// housekeeping period (leases, ownership, deadlines, registry).
    pub resync_interval: Duration,
    /// Finished batches whose plans stay cached for reports and watchers.
    pub finished_plans_cached: usize,
    /// Largest memory value accepted (default 64 MiB).
    pub max_value_bytes: usize,
    /// How long a claimed op's lease lasts without its worker being heard
    /// from; past it the op runs again elsewhere.
    pub lease: Duration,
    /// How long a batch stays owned by a coordinator that stopped renewing
    /// its hold (it died): another takes the batch over after this.
    pub ownership_ttl: Duration,
    /// How long the ops of a worker whose stream broke stay leased to it,
    /// so it can reconnect (to this or another coordinator) and carry on;
    /// past it they run again elsewhere.
    pub reconnect_grace: Duration,
    /// How long an op may wait for a live worker that runs its kind (and
    /// labels) before the batch's events say it is blocked.
    pub report_blocked_after: Duration,
    /// How long a finished batch's records (status, results, events, its
    /// own memory) stay in the store; then they expire. Zero: kept until
    /// deleted by hand.
    pub retain_finished: Duration,
    /// How callers are authenticated (the CLI turns tokens on by default).
    pub auth: crate::auth::AuthConfig,
}

/// The defaults, named once: [`CoordinatorConfig::default`] uses them and
/// the CLI's flags show and fill them (`volley coordinator --help`).
impl CoordinatorConfig {
    pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_FINISHED_PLANS_CACHED: usize = 64;
    pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 * 1024 * 1024;
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
    pub const DEFAULT_OWNERSHIP_TTL: Duration = Duration::from_secs(5);
    pub const DEFAULT_RECONNECT_GRACE: Duration = Duration::from_secs(3);
    pub const DEFAULT_REPORT_BLOCKED_AFTER: Duration = Duration::from_secs(10);
    pub const DEFAULT_RETAIN_FINISHED: Duration = Duration::from_secs(24 * 60 * 60);
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            id: default_coordinator_id(),
            limits: Limits::default(),
            resync_interval: Self::DEFAULT_RESYNC_INTERVAL,
            finished_plans_cached: Self::DEFAULT_FINISHED_PLANS_CACHED,
            max_value_bytes: Self::DEFAULT_MAX_VALUE_BYTES,
            lease: Self::DEFAULT_LEASE,
            ownership_ttl: Self::DEFAULT_OWNERSHIP_TTL,
            reconnect_grace: Self::DEFAULT_RECONNECT_GRACE,
            report_blocked_after: Self::DEFAULT_REPORT_BLOCKED_AFTER,
            retain_finished: Self::DEFAULT_RETAIN_FINISHED,
            auth: crate::auth::AuthConfig::None,
        }
    }
}

/// `<hostname>-<pid>-<4 random hex>`; the hostname from `/etc/hostname`,
/// else `$HOSTNAME`, else `coordinator`.
pub fn default_coordinator_id() -> String {
    let hostname = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|text| !text.is_empty())
        })
        .unwrap_or_else(|| "coordinator".to_owned());
    let random = uuid::Uuid::now_v7().simple().to_string();
    let suffix = &random[random.len() - 4..];
    format!("{hostname}-{}-{suffix}", std::process::id())
}
