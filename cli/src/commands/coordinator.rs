//! `volley coordinator`: serve the coordinator against Redis.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use volley_coordinator::auth::{AuthConfig, MIN_ADMIN_TOKEN_CHARS};
use volley_coordinator::{Coordinator, CoordinatorConfig};
use volley_plan::Limits;
use volley_store::RedisStore;

use crate::exit::Exit;
use crate::telemetry;

#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    /// Address to serve gRPC on.
    #[arg(long, env = "VOLLEY_LISTEN", default_value = volley_proto::DEFAULT_COORDINATOR_ADDR)]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub redis: super::redis_args::RedisArgs,
    /// Most ops one batch may hold.
    #[arg(long, env = "VOLLEY_MAX_OPS", default_value_t = Limits::default().max_ops)]
    pub max_ops: usize,
    /// Most bytes one op's args may hold.
    #[arg(long, env = "VOLLEY_MAX_ARG_BYTES", default_value_t = Limits::default().max_arg_bytes)]
    pub max_arg_bytes: usize,
    /// Most encoded bytes one batch's ops may hold (default 512 MiB):
    /// reading a submission stops there.
    #[arg(long, env = "VOLLEY_MAX_BATCH_BYTES", default_value = super::size_text(Limits::default().max_batch_bytes), value_parser = volley_kinds::parse_byte_size)]
    pub max_batch_bytes: u64,
    /// How long an op's lease lasts without a heartbeat from its worker;
    /// past it the op runs again elsewhere.
    #[arg(long, env = "VOLLEY_LEASE", default_value = super::duration_text(CoordinatorConfig::DEFAULT_LEASE), value_parser = humantime::parse_duration)]
    pub lease: std::time::Duration,
    /// Largest memory value accepted, in bytes (default 64 MiB).
    #[arg(long, env = "VOLLEY_MAX_VALUE_BYTES", default_value_t = CoordinatorConfig::DEFAULT_MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,
    /// How often ready queues are re-read without a doorbell (safety net);
    /// also the housekeeping period (leases, batch holds, deadlines).
    #[arg(long, env = "VOLLEY_RESYNC_INTERVAL", default_value = super::duration_text(CoordinatorConfig::DEFAULT_RESYNC_INTERVAL), value_parser = humantime::parse_duration)]
    pub resync_interval: std::time::Duration,
    /// This coordinator's name among those sharing the Redis (default:
    /// hostname-pid-random).
    #[arg(long, env = "VOLLEY_COORDINATOR_ID")]
    pub id: Option<String>,
    /// How long a batch stays owned by a coordinator that stopped renewing
    /// its hold (it died) before another takes it over.
    #[arg(long, env = "VOLLEY_OWNERSHIP_TTL", default_value = super::duration_text(CoordinatorConfig::DEFAULT_OWNERSHIP_TTL), value_parser = humantime::parse_duration)]
    pub ownership_ttl: std::time::Duration,
    /// How long the ops of a worker whose stream broke wait for it to
    /// reconnect (anywhere) before they run again elsewhere.
    #[arg(long, env = "VOLLEY_RECONNECT_GRACE", default_value = super::duration_text(CoordinatorConfig::DEFAULT_RECONNECT_GRACE), value_parser = humantime::parse_duration)]
    pub reconnect_grace: std::time::Duration,
    /// How long an op may wait for a live worker that runs its kind (and
    /// labels) before the batch's events say it is blocked.
    #[arg(long, env = "VOLLEY_REPORT_BLOCKED_AFTER", default_value = super::duration_text(CoordinatorConfig::DEFAULT_REPORT_BLOCKED_AFTER), value_parser = humantime::parse_duration)]
    pub report_blocked_after: std::time::Duration,
    /// How long a finished batch's status, results, events and own memory
    /// stay in Redis before they expire ("0s": until deleted).
    #[arg(long, env = "VOLLEY_RETAIN_FINISHED", default_value = super::duration_text(CoordinatorConfig::DEFAULT_RETAIN_FINISHED), value_parser = humantime::parse_duration)]
    pub retain_finished: std::time::Duration,
    /// How callers are authenticated: `token` (every call but health needs
    /// a token; the default) or `none` (nobody is checked: allowed only on
    /// a loopback address).
    #[arg(long, value_enum, env = "VOLLEY_AUTH", default_value_t = AuthMode::Token)]
    pub auth: AuthMode,
    /// A file holding the admin token (at least 32 characters), e.g. a
    /// mounted Kubernetes Secret. Required with `--auth token`.
    #[arg(long, env = "VOLLEY_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Serve the web dashboard (batches, their DAG and timeline, ops,
    /// memory, workers) on this address, plain HTTP. It asks for a token
    /// like the gRPC API (log in at /login or with
    /// /login?token=…&next=/); with --auth none it must be a loopback
    /// address too.
    #[arg(long, env = "VOLLEY_DASHBOARD_LISTEN", value_name = "ADDR")]
    pub dashboard_listen: Option<SocketAddr>,
    /// Mark the dashboard's session cookie `Secure`: it is reached through
    /// an HTTPS proxy or ingress.
    #[arg(long, env = "VOLLEY_DASHBOARD_SECURE_COOKIES", default_value_t = false)]
    pub dashboard_secure_cookies: bool,
    #[command(flatten)]
    pub role: super::RoleArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    Token,
    None,
}

/// TLS of a gRPC listener (the coordinator's; a worker's health address).
#[derive(Args, Debug, Clone, Default)]
pub struct ServerTlsArgs {
    /// The listener's certificate chain (PEM): serve TLS. Reloaded when
    /// the file changes (cert-manager rotation).
    #[arg(long, env = "VOLLEY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "VOLLEY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM) on every
    /// connection (mTLS).
    #[arg(long, env = "VOLLEY_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// The listener's TLS, loaded and checked now (a bad file is an
    /// invalid command line), or `None` for plaintext.
    pub fn load(&self) -> Result<Option<Arc<volley_tls::ServerTls>>, Exit> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let files = volley_tls::ServerTlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.tls_client_ca.clone(),
        };
        match volley_tls::ServerTls::load(files) {
            Ok(tls) => Ok(Some(Arc::new(tls))),
            Err(error) => {
                eprintln!("error: {error}");
                Err(Exit::Invalid)
            }
        }
    }
}

/// The coordinator's authentication from its flags: a token file is
/// required unless `--auth none`, which only a loopback listener may use.
fn auth_config(args: &CoordinatorArgs) -> Result<AuthConfig, Exit> {
    match (args.auth, &args.admin_token_file) {
        (AuthMode::None, _) => {
            if !args.listen.ip().is_loopback() {
                eprintln!(
                    "error: --auth none is refused on {}: anyone who reaches it could run commands on every worker; listen on 127.0.0.1, or give --admin-token-file",
                    args.listen
                );
                return Err(Exit::Invalid);
            }
            if let Some(dashboard) = args
                .dashboard_listen
                .filter(|address| !address.ip().is_loopback())
            {
                eprintln!(
                    "error: --auth none is refused with --dashboard-listen {dashboard}: anyone who reaches it could cancel every batch and read every output; listen on 127.0.0.1, or give --admin-token-file"
                );
                return Err(Exit::Invalid);
            }
            warn!(listen = %args.listen, "--auth none: no caller is checked; anyone who can reach this port controls the cluster");
            Ok(AuthConfig::None)
        }
        (AuthMode::Token, None) => {
            eprintln!(
                "error: the coordinator needs an admin token: --admin-token-file FILE (VOLLEY_ADMIN_TOKEN_FILE), or --auth none on a loopback address"
            );
            Err(Exit::Invalid)
        }
        (AuthMode::Token, Some(file)) => {
            let text = std::fs::read_to_string(file).map_err(|error| {
                eprintln!("error: --admin-token-file {}: {error}", file.display());
                Exit::Invalid
            })?;
            let admin_token = text.trim().to_owned();
            if admin_token.chars().count() < MIN_ADMIN_TOKEN_CHARS {
                eprintln!(
                    "error: --admin-token-file {}: the admin token must be at least {MIN_ADMIN_TOKEN_CHARS} characters (e.g. `head -c 32 /dev/urandom | base64`)",
                    file.display()
                );
                return Err(Exit::Invalid);
            }
            Ok(AuthConfig::Tokens { admin_token })
        }
    }
}

pub async fn run(args: CoordinatorArgs) -> Exit {
    telemetry::init("info");
    // Checked before anything starts: a coordinator without its token or
    // with a bad certificate never listens.
    let auth = match auth_config(&args) {
        Ok(auth) => auth,
        Err(exit) => return exit,
    };
    let tls = match args.tls.load() {
        Ok(tls) => tls,
        Err(exit) => return exit,
    };
    let shutdown = CancellationToken::new();
    if args.role.stop_on_stdin_eof {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            super::stdin_closed().await;
            info!("stdin closed (the parent is gone): stopping");
            stop.cancel();
        });
    }
    let redis = args.redis.connect_options();
    let store = match RedisStore::connect_with_options(&redis, shutdown.child_token()).await {
        Ok(store) => store,
        Err(error) => {
            // Redacted: neither the URL nor the error holds the password.
            error!(redis = %redis.redacted_url(), %error, "cannot connect to redis");
            eprintln!("error: {error}");
            return super::redis_args::exit_for(&error);
        }
    };
    let store = with_test_faults(store);
    let mut config = CoordinatorConfig::default();
    config.limits.max_ops = args.max_ops;
    config.limits.max_arg_bytes = args.max_arg_bytes;
    config.limits.max_batch_bytes = usize::try_from(args.max_batch_bytes).unwrap_or(usize::MAX);
    config.resync_interval = args.resync_interval;
    config.max_value_bytes = args.max_value_bytes;
    config.lease = args.lease;
    config.ownership_ttl = args.ownership_ttl;
    config.reconnect_grace = args.reconnect_grace;
    config.report_blocked_after = args.report_blocked_after;
    config.retain_finished = args.retain_finished;
    config.auth = auth;
    if let Some(id) = args.id {
        if id.trim().is_empty() {
            eprintln!("error: --id: must not be empty");
            return Exit::Invalid;
        }
        config.id = id;
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {}: {error}", args.listen);
            return Exit::Invalid;
        }
    };
    let dashboard = match args.dashboard_listen {
        Some(address) => match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => Some(Dashboard {
                listener,
                config: volley_dashboard::DashboardConfig {
                    secure_cookies: args.dashboard_secure_cookies,
                },
            }),
            Err(error) => {
                eprintln!("error: cannot listen on {address} (--dashboard-listen): {error}");
                return Exit::Invalid;
            }
        },
        None => None,
    };
    if let Err(exit) = args.role.install_metrics(telemetry::Component::Coordinator) {
        return exit;
    }
    serve(Arc::new(store), config, listener, tls, dashboard, shutdown).await
}

/// The web dashboard's listener and settings (`--dashboard-listen`).
pub struct Dashboard {
    pub listener: tokio::net::TcpListener,
    pub config: volley_dashboard::DashboardConfig,
}

/// Starts a coordinator on `listener` and serves until SIGINT/SIGTERM or
/// `shutdown`. Shared with `volley run`.
pub async fn serve(
    store: Arc<dyn volley_store::Store>,
    config: CoordinatorConfig,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<volley_tls::ServerTls>>,
    dashboard: Option<Dashboard>,
    shutdown: CancellationToken,
) -> Exit {
    let coordinator = match Coordinator::start(store, config, shutdown.child_token()).await {
        Ok(coordinator) => coordinator,
        Err(error) => {
            eprintln!("error: cannot start the coordinator: {error}");
            return Exit::Unreachable;
        }
    };
    let address = listener
        .local_addr()
        .map(|address| address.to_string())
        .unwrap_or_default();
    info!(%address, tls = tls.is_some(), "coordinator listening");
    let signal = shutdown.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        signal.cancel();
    });
    if let Some(Dashboard { listener, config }) = dashboard {
        let (coordinator, stop) = (coordinator.clone(), shutdown.clone());
        tokio::spawn(async move {
            let stopped = stop.clone().cancelled_owned();
            if let Err(error) =
                volley_dashboard::serve(listener, coordinator, config, stopped).await
            {
                error!(%error, "the dashboard stopped");
            }
        });
    }
    let served =
        volley_coordinator::serve(listener, tls, coordinator.clone(), shutdown.clone()).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(
        volley_coordinator::service::SHUTDOWN_GRACE,
        coordinator.wait(),
    )
    .await;
    match served {
        Ok(()) => Exit::Success,
        Err(error) => {
            eprintln!("error: gRPC server failed: {error}");
            Exit::Unreachable
        }
    }
}

/// Test-only fault points, in debug builds only (end-to-end tests run debug
/// binaries; a release `volley` never reads this): `VOLLEY_TEST_FAULT=
/// after-complete` makes the coordinator exit (code 86, no cleanup) right
/// after a completion script recorded a shared `store_as` and before its
/// namespace write — the crash window the store's outbox covers (see
/// docs/failures.md). Any other value is ignored.
#[cfg(debug_assertions)]
fn with_test_faults(store: RedisStore) -> RedisStore {
    match std::env::var("VOLLEY_TEST_FAULT").as_deref() {
        Ok("after-complete") => {
            warn!("VOLLEY_TEST_FAULT=after-complete: exiting at the first shared store_as");
            store.with_test_fault_after_complete(|| {
                eprintln!("VOLLEY_TEST_FAULT=after-complete: exiting after the completion script");
                std::process::exit(86)
            })
        }
        _ => store,
    }
}

#[cfg(not(debug_assertions))]
fn with_test_faults(store: RedisStore) -> RedisStore {
    store
}
