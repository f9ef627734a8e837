//! One module per command family.

pub mod client;
pub mod coordinator;
pub mod dashboard;
pub mod export;
pub mod health;
pub mod interrupt;
pub mod memory;
pub mod redis_args;
pub mod run;
pub mod spawn;
pub mod token;
pub mod up;
pub mod worker;

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

/// A default duration as its flag shows it and `humantime` reads it back:
/// whole hours, else whole seconds, else milliseconds (`24h`, `60s`,
/// `250ms`). The value itself is a const of the typed config, so it is
/// spelled once.
pub(crate) fn duration_text(duration: Duration) -> String {
    let millis = duration.as_millis();
    const UNITS: [(u128, &str); 2] = [(3_600_000, "h"), (1000, "s")];
    for (unit_millis, unit) in UNITS {
        if millis != 0 && millis.is_multiple_of(unit_millis) {
            return format!("{}{unit}", millis / unit_millis);
        }
    }
    format!("{millis}ms")
}

/// A default byte size as its flag shows it (`16MiB`).
pub(crate) fn size_text(bytes: usize) -> String {
    volley_kinds::format_byte_size(u64::try_from(bytes).unwrap_or(u64::MAX))
}

/// How a batch file is adjusted from the command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BatchOverrides {
    /// Put the batch's memory in this shared namespace (overrides the file's).
    #[arg(long, env = "VOLLEY_NAMESPACE")]
    pub namespace: Option<String>,
    /// Treat warnings (e.g. waiting for a key nothing writes) as errors.
    #[arg(long, env = "VOLLEY_STRICT", default_value_t = false)]
    pub strict: bool,
    /// Accept a wait for a memory key that no op of the batch writes (a
    /// warning, not an error): a client will write it (`volley memory put`).
    #[arg(long, env = "VOLLEY_ALLOW_UNWRITTEN", default_value_t = false)]
    pub allow_unwritten: bool,
}

impl BatchOverrides {
    pub fn apply(&self, batch: &mut volley_client::v1::Batch) {
        if let Some(namespace) = &self.namespace {
            batch.namespace = namespace.clone();
        }
        if self.strict {
            batch.strict = true;
        }
        if self.allow_unwritten {
            batch.allow_unwritten = true;
        }
    }
}

/// How a command proves who it is to a coordinator: a token, and TLS.
#[derive(clap::Args, Clone, Default)]
pub struct CredentialArgs {
    /// The API token sent with every call (`authorization: Bearer`).
    #[arg(long, global = true, env = "VOLLEY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the token (a mounted Secret, `volley up`'s admin.token).
    #[arg(long, global = true, env = "VOLLEY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The CA certificate (PEM) to trust for an `https://` coordinator
    /// (default: the public web roots).
    #[arg(long, global = true, env = "VOLLEY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for mTLS, with --tls-key.
    #[arg(long, global = true, env = "VOLLEY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "VOLLEY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

/// Never prints the token.
impl std::fmt::Debug for CredentialArgs {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CredentialArgs")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

impl CredentialArgs {
    /// The token, from --token / VOLLEY_TOKEN or else the token file.
    pub fn token(&self) -> Result<Option<String>, crate::exit::Exit> {
        volley_client::token_from(self.token.as_deref(), self.token_file.as_ref()).map_err(
            |message| {
                eprintln!("error: {message}");
                crate::exit::Exit::Invalid
            },
        )
    }

    pub fn tls(&self) -> volley_client::ClientTlsFiles {
        volley_client::ClientTlsFiles {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        }
    }

    /// A connection to `url` with these credentials.
    pub fn connection(&self, url: &str) -> Result<volley_client::Connection, crate::exit::Exit> {
        let mut connection = volley_client::Connection::new(url).with_tls(self.tls());
        if let Some(token) = self.token()? {
            connection = connection.with_token(token);
        }
        Ok(connection)
    }
}

/// 256 random bits as 64 hex characters: an admin token for `volley up`
/// and `volley run` (the coordinator's own generator).
pub fn random_token() -> String {
    volley_coordinator::auth::random_secret()
}

/// A fresh directory only this user may enter (0700):
/// `$TMPDIR/<prefix>-<pid>[-n]`, the first free name.
pub fn private_temp_dir(prefix: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let pid = std::process::id();
    let mut last_error = None;
    for attempt in 0..100 {
        let path = if attempt == 0 {
            base.join(format!("{prefix}-{pid}"))
        } else {
            base.join(format!("{prefix}-{pid}-{attempt}"))
        };
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                last_error = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no free name")))
}

/// Flags of the long-running roles (`coordinator`, `worker`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RoleArgs {
    /// Stop (as on SIGTERM; a worker drains) when stdin reaches its end:
    /// how `volley up`'s children learn that `volley up` died.
    #[arg(
        long,
        env = "VOLLEY_STOP_ON_STDIN_EOF",
        default_value_t = false,
        hide = true
    )]
    pub stop_on_stdin_eof: bool,
    /// Serve Prometheus metrics on this address (`GET /metrics`); off
    /// without it.
    #[arg(long, env = "VOLLEY_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl RoleArgs {
    /// Serves the metrics endpoint when `--metrics-listen` asks for it; a
    /// taken address is an invalid command line.
    pub fn install_metrics(
        &self,
        component: crate::telemetry::Component,
    ) -> Result<(), crate::exit::Exit> {
        if let Some(address) = self.metrics_listen
            && let Err(error) = crate::telemetry::install_metrics(address, component)
        {
            eprintln!("error: --metrics-listen {address}: {error}");
            return Err(crate::exit::Exit::Invalid);
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

/// Resolves when this process's stdin reaches its end (or fails).
///
/// `volley up` starts its coordinator and workers with a pipe as stdin and
/// keeps the write end: when `volley up` dies — even by SIGKILL, which it
/// cannot catch — the kernel closes that end and the child stops cleanly.
/// A safe stand-in for `PR_SET_PDEATHSIG` (which needs `unsafe` in a
/// `pre_exec`, and fires when the forking *thread* ends, not the process).
pub async fn stdin_closed() {
    let (closed, closed_receiver) = tokio::sync::oneshot::channel::<()>();
    // A plain thread, not a tracked task: a blocking read of stdin cannot be
    // cancelled, and a detached thread never holds up the process's exit
    // (a `spawn_blocking` task would hold up the runtime's shutdown).
    let spawned = std::thread::Builder::new()
        .name("stdin-watch".to_owned())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buffer = [0_u8; 256];
            loop {
                match std::io::Read::read(&mut stdin, &mut buffer) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = closed.send(());
        });
    match spawned {
        Ok(_) => {
            let _ = closed_receiver.await;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch stdin; carrying on without it");
            std::future::pending::<()>().await;
        }
    }
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

#[cfg(test)]
mod default_text_tests {
    use super::*;

    #[test]
    fn default_durations_read_back() {
        for (duration, text) in [
            (Duration::from_secs(24 * 3600), "24h"),
            (Duration::from_secs(60), "60s"),
            (Duration::from_secs(15), "15s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::ZERO, "0ms"),
        ] {
            assert_eq!(duration_text(duration), text);
            assert_eq!(humantime::parse_duration(text).ok(), Some(duration));
        }
    }
}
