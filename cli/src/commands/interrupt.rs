//! Ctrl-C (SIGINT) and SIGTERM for commands that follow a batch: listened for from the start, so neither kills the CLI before it said what happens to the batch.
//!
//! Without a handler the default action ends the process at once: `volley
//! run`'s host programs, in process groups of their own (so the terminal's
//! Ctrl-C never reaches them), would carry on as orphans, and `submit
//! --watch` would leave its batch running without a word.

/// SIGINT and SIGTERM, received from the moment this is made.
pub struct Interrupts {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Interrupts {
    /// Starts listening; from now on neither signal ends the process by itself.
    #[cfg(unix)]
    pub fn listen() -> std::io::Result<Interrupts> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Interrupts {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    #[cfg(not(unix))]
    pub fn listen() -> std::io::Result<Interrupts> {
        Ok(Interrupts {})
    }

    /// The next signal's name. Cancel-safe.
    #[cfg(unix)]
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            Some(()) = self.interrupt.recv() => "SIGINT",
            Some(()) = self.terminate.recv() => "SIGTERM",
            else => std::future::pending().await,
        }
    }

    #[cfg(not(unix))]
    pub async fn next(&mut self) -> &'static str {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        }
    }
}
