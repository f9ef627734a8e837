//! `volley dashboard [--file batch.json]`: the dashboard's pages and JSON
//! API over exported batches (`volley export`), read-only, with no
//! coordinator, Redis or login — the files are on this machine, so the
//! server binds loopback unless told otherwise. More exports are opened by
//! dropping them on the page (or choosing them there); without `--file`
//! the page starts empty, waiting for one.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use volley_dashboard::export::{DEFAULT_MAX_EXPORT_BYTES, Export};

use crate::exit::Exit;
use crate::telemetry;

#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// A batch written by `volley export ID > batch.json`. Without it the
    /// page waits for an export dropped on it.
    #[arg(long, env = "VOLLEY_DASHBOARD_FILE")]
    pub file: Option<PathBuf>,
    /// Where to serve it (port 0: a free one). Loopback only, unless
    /// --allow-remote.
    #[arg(long, env = "VOLLEY_DASHBOARD_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Serve on an address other machines reach: whoever reaches it reads
    /// the whole batch, with no login. Without it, a request must name a
    /// loopback host (no page of another site reads the batch through a
    /// DNS name rebound to 127.0.0.1).
    #[arg(long, env = "VOLLEY_DASHBOARD_ALLOW_REMOTE", default_value_t = false)]
    pub allow_remote: bool,
    /// A file larger than this is refused before it is read (a dropped
    /// one too).
    #[arg(long, env = "VOLLEY_DASHBOARD_MAX_FILE_BYTES", default_value_t = DEFAULT_MAX_EXPORT_BYTES)]
    pub max_file_bytes: u64,
}

pub async fn run(args: DashboardArgs) -> Exit {
    telemetry::init("warn");
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        eprintln!(
            "error: --listen {}: not a loopback address; the file is served with no login, so add --allow-remote to serve it to other machines",
            args.listen
        );
        return Exit::Invalid;
    }
    let export = match &args.file {
        Some(path) => {
            let reading = path.clone();
            let max = args.max_file_bytes;
            match tokio::task::spawn_blocking(move || Export::load(&reading, max)).await {
                Ok(Ok(export)) => Some(export),
                Ok(Err(error)) => {
                    eprintln!("error: {error}");
                    return Exit::Invalid;
                }
                Err(error) => {
                    eprintln!("error: reading {} failed: {error}", path.display());
                    return Exit::Invalid;
                }
            }
        }
        None => None,
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: --listen {}: {error}", args.listen);
            return Exit::Invalid;
        }
    };
    let address = match listener.local_addr() {
        Ok(address) => address,
        Err(error) => {
            eprintln!("error: --listen {}: {error}", args.listen);
            return Exit::Invalid;
        }
    };
    match (&export, &args.file) {
        (Some(export), Some(path)) => {
            eprintln!(
                "serving batch {} ({} ops) from {}, read-only (drop more exports on the page); Ctrl-C stops",
                export.batch_id(),
                export.op_count(),
                path.display()
            );
            println!("http://{address}/batches/{}", export.batch_id());
        }
        _ => {
            eprintln!("drop an export (volley export ID > batch.json) on the page; Ctrl-C stops");
            println!("http://{address}/");
        }
    }
    let config = volley_dashboard::FileConfig {
        loopback_only: !args.allow_remote,
        max_file_bytes: args.max_file_bytes,
    };
    if let Err(error) =
        volley_dashboard::serve_file(listener, export, config, super::shutdown_signal()).await
    {
        eprintln!("error: the dashboard stopped: {error}");
        return Exit::Invalid;
    }
    Exit::Success
}
