//! The coordinator's typed configuration (the CLI fills it from flags/env).

use std::time::Duration;

use volley_plan::Limits;

#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Bounds on what a submission may hold.
    pub limits: Limits,
    /// How often every active batch's ready queue is re-read even without a
    /// doorbell: the safety net for a missed pub/sub message.
    pub resync_interval: Duration,
    /// Finished batches whose plans stay cached for reports and watchers.
    pub finished_plans_cached: usize,
    /// Largest memory value accepted (default 64 MiB).
    pub max_value_bytes: usize,
    /// How long a claimed op's lease lasts without a heartbeat from its
    /// worker; past it the op runs again elsewhere.
    pub lease: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            limits: Limits::default(),
            resync_interval: Duration::from_secs(1),
            finished_plans_cached: 64,
            max_value_bytes: 64 * 1024 * 1024,
            lease: Duration::from_secs(15),
        }
    }
}
