//! `volley worker`: serve a worker with the built-in kinds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;
use volley_builtins::op_processes::GroupSignal;
use volley_builtins::{BuiltinConfig, BuiltinRegistry};
use volley_worker::{Registry, WorkerConfig, run_worker};

use crate::exit::Exit;
use crate::telemetry;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The coordinator's gRPC address.
    #[arg(
        long,
        env = "VOLLEY_COORDINATOR",
        default_value = volley_proto::DEFAULT_COORDINATOR_URL
    )]
    pub coordinator: String,
    /// Ops run at once (default: one per CPU).
    #[arg(long, env = "VOLLEY_SLOTS")]
    pub slots: Option<u32>,
    /// File kinds work only under this directory (without it they are refused).
    #[arg(long, env = "VOLLEY_ROOT")]
    pub root: Option<PathBuf>,
    /// Allow `shell` ops, which run host programs.
    #[arg(long, env = "VOLLEY_ALLOW_SHELL", default_value_t = false)]
    pub allow_shell: bool,
    /// Labels matched against ops' `requires`, as key=value (repeatable).
    #[arg(long = "label", env = "VOLLEY_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// This worker's id (default: hostname-pid-random).
    #[arg(long, env = "VOLLEY_WORKER_ID")]
    pub id: Option<String>,
    /// How often the worker tells the coordinator it is alive (keeps its
    /// ops' leases).
    #[arg(long, env = "VOLLEY_HEARTBEAT", default_value = super::duration_text(WorkerConfig::DEFAULT_HEARTBEAT), value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,
    /// On SIGTERM, how long running ops may take to finish.
    #[arg(long, env = "VOLLEY_DRAIN_TIMEOUT", default_value = super::duration_text(WorkerConfig::DEFAULT_DRAIN_TIMEOUT), value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Serve grpc.health.v1 here (for Kubernetes probes): SERVING while
    /// the worker takes work, NOT_SERVING once it drains.
    #[arg(long, env = "VOLLEY_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// Where `${secret.NAME}` values come from: one file a secret, named as
    /// it (a mounted Kubernetes Secret); then the worker's own
    /// VOLLEY_SECRET_<NAME> variables. Values reach ops' programs only,
    /// never the coordinator, and are masked (`***`) in what ops report.
    #[arg(long, env = "VOLLEY_SECRET_DIR")]
    pub secret_dir: Option<PathBuf>,
    /// The most any op's output may hold (`16MiB`, `1GiB`, bytes); an op's
    /// `max_output` may ask for less. Past it the op fails ("output
    /// exceeded"), and a program is killed.
    #[arg(long, env = "VOLLEY_MAX_OUTPUT", default_value = super::size_text(volley_worker::DEFAULT_MAX_OUTPUT), value_parser = volley_kinds::parse_byte_size)]
    pub max_output: u64,
    /// Serve the health address in plaintext even with --tls-cert (for
    /// Kubernetes `grpc:` probes, which speak plaintext).
    #[arg(long, env = "VOLLEY_HEALTH_PLAINTEXT", default_value_t = false)]
    pub health_plaintext: bool,
    /// The worker's token (a worker or admin token) and TLS toward the
    /// coordinator; --tls-cert/--tls-key are also its client certificate
    /// for mTLS and its health address's certificate.
    #[command(flatten)]
    pub credentials: super::CredentialArgs,
    #[command(flatten)]
    pub role: super::RoleArgs,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("label `{text}` is not key=value")),
    }
}

pub async fn run(args: WorkerArgs) -> Exit {
    telemetry::init("info");
    let root = match &args.root {
        Some(root) => match std::fs::canonicalize(root) {
            Ok(root) => Some(root),
            Err(error) => {
                eprintln!("error: --root {}: {error}", root.display());
                return Exit::Invalid;
            }
        },
        None => None,
    };
    if let Err(exit) = args.role.install_metrics(telemetry::Component::Worker) {
        return exit;
    }
    let token = match args.credentials.token() {
        Ok(token) => token,
        Err(exit) => return exit,
    };
    let health_tls = match (&args.credentials.tls_cert, &args.credentials.tls_key) {
        (Some(cert), Some(key)) if !args.health_plaintext && args.health_listen.is_some() => {
            let files = volley_tls::ServerTlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: None,
            };
            match volley_tls::ServerTls::load(files) {
                Ok(tls) => Some(std::sync::Arc::new(tls)),
                Err(error) => {
                    eprintln!("error: {error}");
                    return Exit::Invalid;
                }
            }
        }
        _ => None,
    };
    let shutdown = CancellationToken::new();
    let health = match args.health_listen {
        Some(address) => match serve_health(address, health_tls).await {
            Ok(reporter) => Some(reporter),
            Err(error) => {
                eprintln!("error: --health-listen {address}: {error}");
                return Exit::Invalid;
            }
        },
        None => None,
    };
    let signal = shutdown.clone();
    let stop_on_stdin_eof = args.role.stop_on_stdin_eof;
    tokio::spawn(async move {
        tokio::select! {
            () = super::shutdown_signal() => {}
            () = super::stdin_closed(), if stop_on_stdin_eof => {
                tracing::info!("stdin closed (the parent is gone): draining");
            }
        }
        // Draining: probes see it before the first op is handed back.
        if let Some(reporter) = health {
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            tracing::info!("health: NOT_SERVING (draining)");
        }
        signal.cancel();
    });
    let mut config = WorkerConfig::new(args.coordinator);
    config.token = token;
    config.max_output = usize::try_from(args.max_output).unwrap_or(usize::MAX);
    config.tls = args.credentials.tls();
    if let Some(slots) = args.slots {
        config.slots = slots;
    }
    config.worker_id = args.id;
    config.root = root.clone();
    config.allow_shell = args.allow_shell;
    config.labels = args.labels.into_iter().collect::<BTreeMap<_, _>>();
    // Which secrets it holds (names only): ops that need one come here.
    let secrets = volley_builtins::secrets::Secrets::from_dir(args.secret_dir.clone());
    for name in secrets.names() {
        config.labels.insert(
            format!("{}{name}", volley_plan::SECRET_LABEL_PREFIX),
            "1".to_owned(),
        );
    }
    config.drain_timeout = args.drain_timeout;
    config.heartbeat = args.heartbeat;
    let registry = Registry::with_builtins(&BuiltinConfig {
        root,
        allow_shell: args.allow_shell,
        secrets: volley_builtins::secrets::Secrets::from_dir(args.secret_dir.clone()),
    });
    let ended = run_worker(config, registry, shutdown).await;
    // The drain cancelled its ops (their groups got SIGTERM, then SIGKILL);
    // a program whose op task could not be stopped in time must not
    // outlive the worker either, re-parented to PID 1.
    let killed = volley_builtins::op_processes::signal_all(GroupSignal::Kill);
    if killed > 0 {
        tracing::warn!(killed, "killed host programs still running at exit");
    }
    match ended {
        Ok(()) => Exit::Success,
        Err(error @ volley_worker::WorkerError::Refused { code, .. }) => {
            eprintln!("error: {error}");
            if code == tonic::Code::PermissionDenied {
                Exit::PermissionDenied
            } else {
                Exit::Unauthenticated
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            Exit::Invalid
        }
    }
}

/// Serves grpc.health.v1 on `address` (status "" SERVING) until the process
/// ends, with gRPC reflection of the health service beside it (so `grpcurl`
/// needs no `.proto`); the reporter turns it NOT_SERVING when the worker
/// drains.
async fn serve_health(
    address: SocketAddr,
    tls: Option<std::sync::Arc<volley_tls::ServerTls>>,
) -> std::io::Result<tonic_health::server::HealthReporter> {
    let (reflection_v1, reflection_v1alpha) =
        volley_coordinator::grpc::reflection::reflection_services(&[
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ])
        .map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind(address).await?;
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tracing::info!(address = %listener.local_addr()?, tls = tls.is_some(), "health service listening");
    tokio::spawn(async move {
        let incoming = volley_tls::server_incoming(listener, tls);
        if let Err(error) = tonic::transport::Server::builder()
            .add_service(service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::warn!(%error, "health service stopped");
        }
    });
    Ok(reporter)
}
