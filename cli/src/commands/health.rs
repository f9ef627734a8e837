//! `volley health`: grpc.health.v1 `Check` (or `Watch`) of a coordinator or
//! of a worker's `--health-listen` address, as an exit code.

use std::time::Duration;

use clap::Args;
use tokio_stream::StreamExt;
use volley_client::{ClientError, HealthProbe, HealthStatus};

use super::OutputFormat;
use super::client::ClusterArgs;
use crate::exit::{self, Exit};
use crate::telemetry;

/// Printed under `volley health --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  SERVING
  2  invalid command line
  3  unreachable: nothing answers at the address within --timeout (or a
     watched server went away)
  4  the server answered but is not SERVING: NOT_SERVING (a coordinator
     without Redis, a draining worker), UNKNOWN, or SERVICE_UNKNOWN (no such
     --service)

Examples:
  volley health                                  # the coordinator (VOLLEY_COORDINATOR)
  volley health --worker 127.0.0.1:7071          # a worker's --health-listen
  volley health --service volley.v1.BatchService --output json
  volley health --watch                          # print every change until Ctrl-C";

#[derive(Args, Debug)]
pub struct HealthArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Check a worker's `--health-listen` address (host:port or URL)
    /// instead of the coordinator.
    #[arg(long, env = "VOLLEY_HEALTH_WORKER", value_name = "ADDR")]
    pub worker: Option<String>,
    /// The service to ask about; "" (the default) is the whole server. A
    /// coordinator also reports `volley.v1.BatchService`.
    #[arg(
        long,
        env = "VOLLEY_HEALTH_SERVICE",
        value_name = "NAME",
        default_value = ""
    )]
    pub service: String,
    /// How long connecting and answering may take before the server counts
    /// as unreachable.
    #[arg(long, env = "VOLLEY_HEALTH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Keep watching: print the status, then every change, until Ctrl-C
    /// (exit code of the last status) or the server goes away (3).
    #[arg(long, env = "VOLLEY_HEALTH_WATCH", default_value_t = false)]
    pub watch: bool,
    /// `table`: one line per status; `json`: one JSON object per status
    /// (`target`, `url`, `service`, `status`).
    #[arg(long, value_enum, env = "VOLLEY_OUTPUT", default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// What was probed, for messages.
struct Target {
    role: &'static str,
    url: String,
    service: String,
    output: OutputFormat,
}

impl Target {
    fn print(&self, status: HealthStatus) {
        match self.output {
            OutputFormat::Json => println!(
                "{}",
                serde_json::json!({
                    "target": self.role,
                    "url": self.url,
                    "service": self.service,
                    "status": status.as_str(),
                })
            ),
            OutputFormat::Table if self.service.is_empty() => {
                println!("{} {}: {status}", self.role, self.url);
            }
            OutputFormat::Table => {
                println!("{} {} ({}): {status}", self.role, self.url, self.service);
            }
        }
    }

    fn exit_for(&self, status: HealthStatus) -> Exit {
        if status.is_serving() {
            return Exit::Success;
        }
        let what = if self.service.is_empty() {
            String::new()
        } else {
            format!(" for service `{}`", self.service)
        };
        eprintln!("error: the {} at {} is {status}{what}", self.role, self.url);
        Exit::NotServing
    }
}

/// Prints a failed probe, naming what was probed (the client's own message
/// says "coordinator" even for a worker).
fn failed(role: &str, error: &ClientError) -> Exit {
    match error {
        ClientError::Unreachable { url, message } => {
            eprintln!("error: cannot reach the {role} at {url}: {message}");
            Exit::Unreachable
        }
        error => exit::client_error(error),
    }
}

pub async fn run(args: HealthArgs) -> Exit {
    telemetry::init("warn");
    let (role, address) = match &args.worker {
        Some(worker) => ("worker", worker.clone()),
        None => ("coordinator", args.cluster.coordinator.clone()),
    };
    // Health needs no token; TLS as for any call.
    let connection =
        volley_client::Connection::new(address).with_tls(args.cluster.credentials.tls());
    let probe = match HealthProbe::connect_with(&connection, args.timeout).await {
        Ok(probe) => probe,
        Err(error) => return failed(role, &error),
    };
    let target = Target {
        role,
        url: probe.url().to_owned(),
        service: args.service.clone(),
        output: args.output,
    };
    if !args.watch {
        return match probe.check(&args.service).await {
            Ok(status) => {
                target.print(status);
                target.exit_for(status)
            }
            Err(error) => failed(role, &error),
        };
    }
    let changes = match probe.watch(&args.service).await {
        Ok(changes) => changes,
        Err(error) => return failed(role, &error),
    };
    let mut changes = std::pin::pin!(changes);
    let mut last = None;
    let interrupted = super::shutdown_signal();
    let mut interrupted = std::pin::pin!(interrupted);
    loop {
        tokio::select! {
            () = &mut interrupted => {
                return match last {
                    Some(status) => target.exit_for(status),
                    None => Exit::Unreachable,
                };
            }
            change = changes.next() => match change {
                Some(Ok(status)) => {
                    target.print(status);
                    last = Some(status);
                    if status == HealthStatus::ServiceUnknown {
                        // The server never sends more for a service it does not have.
                        return target.exit_for(status);
                    }
                }
                Some(Err(error)) => {
                    eprintln!("error: lost the health stream of the {} at {}: {error}", target.role, target.url);
                    return Exit::Unreachable;
                }
                None => {
                    eprintln!("error: the {} at {} closed the health stream", target.role, target.url);
                    return Exit::Unreachable;
                }
            },
        }
    }
}
