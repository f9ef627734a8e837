//! `volley dashboard --file batch.json`: the dashboard's pages and JSON
//! API over one exported batch (`volley export`), read-only, with no
//! coordinator, Redis or login — the file is on this machine, so the
//! server binds loopback unless told otherwise.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use volley_dashboard::export::{DEFAULT_MAX_EXPORT_BYTES, Export};

use crate::exit::Exit;
use crate::telemetry;

#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// A batch written by `volley export ID > batch.json`.
    #[arg(long, env = "VOLLEY_DASHBOARD_FILE")]
    pub file: PathBuf,
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
    /// A file larger than this is refused before it is read.
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
    let path = args.file.clone();
    let max = args.max_file_bytes;
    let loaded = tokio::task::spawn_blocking(move || Export::load(&path, max)).await;
    let export = match loaded {
        Ok(Ok(export)) => export,
        Ok(Err(error)) => {
            eprintln!("error: {error}");
            return Exit::Invalid;
        }
        Err(error) => {
            eprintln!("error: reading {} failed: {error}", args.file.display());
            return Exit::Invalid;
        }
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
    eprintln!(
        "serving batch {} ({} ops) from {}, read-only; Ctrl-C stops",
        export.batch_id(),
        export.op_count(),
        args.file.display()
    );
    println!("http://{address}/batches/{}", export.batch_id());
    if let Err(error) = volley_dashboard::serve_file(
        listener,
        export,
        !args.allow_remote,
        super::shutdown_signal(),
    )
    .await
    {
        eprintln!("error: the dashboard stopped: {error}");
        return Exit::Invalid;
    }
    Exit::Success
}
