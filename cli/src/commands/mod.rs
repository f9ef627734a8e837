//! One module per command family.

pub mod client;
pub mod coordinator;
pub mod health;
pub mod memory;
pub mod run;
pub mod spawn;
pub mod worker;

use clap::ValueEnum;

/// How a batch file is adjusted from the command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BatchOverrides {
    /// Put the batch's memory in this shared namespace (overrides the file's).
    #[arg(long, env = "VOLLEY_NAMESPACE")]
    pub namespace: Option<String>,
    /// Treat warnings (e.g. waiting for a key nothing writes) as errors.
    #[arg(long, env = "VOLLEY_STRICT", default_value_t = false)]
    pub strict: bool,
}

impl BatchOverrides {
    pub fn apply(&self, batch: &mut volley_client::v1::Batch) {
        if let Some(namespace) = &self.namespace {
            batch.namespace = namespace.clone();
        }
        if self.strict {
            batch.strict = true;
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
