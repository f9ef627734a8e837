//! Commands that talk to a running cluster: submit, watch, status, cancel,
//! list, logs, workers; and how a batch id given on the command line (or a
//! unique prefix of one) becomes a batch.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use volley_client::{Client, ClientError, v1};
use volley_proto::streams::{OpStreams, streams};
use volley_proto::words;

use super::OutputFormat;
use super::interrupt::Interrupts;
use crate::exit::{self, Exit};
use crate::{render, telemetry};

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// The coordinator's gRPC address (`https://` always means TLS).
    #[arg(
        long,
        global = true,
        env = "VOLLEY_COORDINATOR",
        default_value = volley_proto::DEFAULT_COORDINATOR_URL
    )]
    pub coordinator: String,
    #[command(flatten)]
    pub credentials: super::CredentialArgs,
}

impl ClusterArgs {
    /// The coordinator, the token and TLS files as one connection; a token
    /// file that cannot be read is an invalid command line.
    pub fn connection(&self) -> Result<volley_client::Connection, Exit> {
        self.credentials.connection(&self.coordinator)
    }
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The batch file (YAML or JSON).
    pub file: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Follow the batch until it finishes and print its report.
    #[arg(long, env = "VOLLEY_WATCH", default_value_t = false)]
    pub watch: bool,
    /// With --watch: a Ctrl-C (or SIGTERM) cancels the batch and prints its
    /// report, instead of leaving it running.
    #[arg(long, env = "VOLLEY_CANCEL_ON_INTERRUPT", default_value_t = false)]
    pub cancel_on_interrupt: bool,
    #[command(flatten)]
    pub overrides: super::BatchOverrides,
    #[arg(long, value_enum, env = "VOLLEY_OUTPUT", default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Also write each op's whole output to DIR/OP.out and its stderr to
    /// DIR/OP.err as the report is printed (DIR is created if missing).
    #[arg(long, value_name = "DIR", env = "VOLLEY_LOGS_DIR")]
    pub logs_dir: Option<PathBuf>,
    #[command(flatten)]
    pub idempotency: IdempotencyArgs,
}

#[derive(Args, Debug, Clone)]
pub struct IdempotencyArgs {
    /// Sent with the call so that trying it again can never do it twice:
    /// the same key with the same batch (or ops) gives back the first
    /// call's answer — the same batch id — on any coordinator of the
    /// cluster. At most 128 bytes of printable ASCII. Default: a new
    /// random key for each command, kept across its own retries.
    #[arg(long, env = "VOLLEY_IDEMPOTENCY_KEY", default_value = "")]
    pub idempotency_key: String,
}

impl IdempotencyArgs {
    /// The key to send: the one given, or a new one.
    pub fn key(&self) -> String {
        if self.idempotency_key.is_empty() {
            volley_client::client::new_idempotency_key()
        } else {
            self.idempotency_key.clone()
        }
    }
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    pub batch_id: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Resume after this event sequence number.
    #[arg(long, env = "VOLLEY_AFTER_SEQ", default_value_t = 0)]
    pub after: u64,
    #[arg(long, value_enum, env = "VOLLEY_OUTPUT", default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Also write each op's whole output to DIR/OP.out and its stderr to
    /// DIR/OP.err as the report is printed (DIR is created if missing).
    #[arg(long, value_name = "DIR", env = "VOLLEY_LOGS_DIR")]
    pub logs_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    pub batch_id: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(long, value_enum, env = "VOLLEY_OUTPUT", default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Also write each op's whole output to DIR/OP.out and its stderr to
    /// DIR/OP.err as the report is printed (DIR is created if missing).
    #[arg(long, value_name = "DIR", env = "VOLLEY_LOGS_DIR")]
    pub logs_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CancelArgs {
    pub batch_id: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(long, env = "VOLLEY_LIMIT", default_value_t = 20)]
    pub limit: u32,
    #[arg(long, value_enum, env = "VOLLEY_OUTPUT", default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(long, value_enum, env = "VOLLEY_OUTPUT", default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

pub(crate) async fn connect(cluster: &ClusterArgs) -> Result<Client, Exit> {
    Client::connect_with(&cluster.connection()?)
        .await
        .map_err(|error| exit::client_error(&error))
}

/// `--logs-dir`: made ready before anything is sent, so a directory that
/// cannot be written stops the command at once.
pub(crate) fn use_logs_dir(dir: Option<&std::path::Path>) -> Result<(), Exit> {
    let Some(dir) = dir else { return Ok(()) };
    render::write_logs_to(dir).map_err(|message| {
        eprintln!("error: {message}");
        Exit::Invalid
    })
}

pub async fn submit(args: SubmitArgs) -> Exit {
    telemetry::init("warn");
    if let Err(exit) = use_logs_dir(args.logs_dir.as_deref()) {
        return exit;
    }
    if args.cancel_on_interrupt && !args.watch {
        eprintln!(
            "error: --cancel-on-interrupt needs --watch (without it, submit returns as soon as the batch is in)"
        );
        return Exit::Invalid;
    }
    exit::use_json_errors(matches!(args.output, OutputFormat::Json));
    let mut batch = match volley_client::read_batch_file_with_warnings(&args.file) {
        Ok((batch, warnings)) => {
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            batch
        }
        Err(error) => return exit::batch_file_error(&error),
    };
    args.overrides.apply(&mut batch);
    // Listening before anything is sent: a Ctrl-C at any point is answered.
    let mut interrupts = if args.watch {
        match Interrupts::listen() {
            Ok(interrupts) => Some(interrupts),
            Err(error) => {
                eprintln!("error: cannot listen for signals: {error}");
                return Exit::Invalid;
            }
        }
    } else {
        None
    };
    let total = batch.ops.len() as u32;
    let key = args.idempotency.key();
    let submitted = call_with_retries(&args.cluster, "submission", &key, |client| {
        let batch = batch.clone();
        let key = key.clone();
        async move {
            let submitted = client.submit_idempotent(batch, &key).await?;
            Ok((client, submitted))
        }
    })
    .await;
    let (client, submitted) = match submitted {
        Ok(done) => done,
        Err(exit) => return exit,
    };
    let follow = match interrupts.as_mut() {
        None => Follow::No,
        Some(interrupts) => Follow::Yes {
            interrupts,
            on_interrupt: if args.cancel_on_interrupt {
                OnInterrupt::Cancel
            } else {
                OnInterrupt::KeepRunning
            },
        },
    };
    report_submitted(&client, submitted, total, follow, args.output).await
}

/// What [`submit_and_report`] does once the batch is in.
pub(crate) enum Follow<'a> {
    /// Print the batch's id and return.
    No,
    /// Follow the batch to its report; the first Ctrl-C (or SIGTERM) does
    /// `on_interrupt`.
    Yes {
        interrupts: &'a mut Interrupts,
        on_interrupt: OnInterrupt,
    },
}

/// What the first Ctrl-C (or SIGTERM) does to a batch the CLI follows. A
/// second one always ends the CLI at once. Either way it exits 130.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnInterrupt {
    /// The batch goes on: say so, and how to cancel it.
    KeepRunning,
    /// Cancel the batch, wait (bounded) for the cancellation to be
    /// reported, print the report.
    Cancel,
    /// `volley run`: cancel the batch, print the report, and wait for the
    /// ops' host programs (SIGTERM, then SIGKILL) to be gone.
    StopRun,
}

/// How long a cancelled batch may take to report that it ended before the
/// CLI stops waiting (it exits 130 either way).
const CANCEL_REPORT_WAIT: Duration = Duration::from_secs(30);

/// How often a submit or spawn whose connection broke is tried in all, and
/// the pause before the first retry (doubling: 0.25, 0.5, 1, 2, 4 s, so
/// about 10 s with the connection attempts). Each retry connects anew, so
/// behind a balancer it reaches another coordinator; the idempotency key
/// makes it safe whether or not the broken call took effect.
const CALL_TRIES: u32 = 6;
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// True for the failures another try (on a new connection) may cure: the
/// coordinator could not be reached, the connection broke under the call,
/// or it could not serve it now.
fn worth_retrying(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Unreachable { .. } | ClientError::Transport(_) | ClientError::Unavailable(_)
    )
}

/// Connects and makes `call`, again on a new connection (same key) while
/// it fails in a way a retry may cure; then gives up with exit 3 and says
/// whether the call may have taken effect and which key retries it safely.
pub(crate) async fn call_with_retries<T, Call, Answer>(
    cluster: &ClusterArgs,
    what: &str,
    key: &str,
    mut call: Call,
) -> Result<T, Exit>
where
    Call: FnMut(Client) -> Answer,
    Answer: Future<Output = Result<T, ClientError>>,
{
    let connection = cluster.connection()?;
    let mut pause = FIRST_RETRY_PAUSE;
    // Whether a call went out on a connection: then it may have taken effect.
    let mut sent = false;
    let mut tries = 0;
    loop {
        tries += 1;
        let error = match Client::connect_with(&connection).await {
            Ok(client) => {
                sent = true;
                match call(client).await {
                    Ok(answer) => return Ok(answer),
                    Err(error) => error,
                }
            }
            Err(error) => error,
        };
        if !worth_retrying(&error) {
            return Err(exit::client_error(&error));
        }
        if tries >= CALL_TRIES {
            exit::print_unreachable(&error);
            if sent {
                eprintln!(
                    "error: the {what} may or may not have taken effect; to retry it safely, run the same command with --idempotency-key {key}"
                );
            } else {
                eprintln!("error: the {what} was not sent (tried {tries} times)");
            }
            return Err(Exit::Unreachable);
        }
        tracing::warn!(%error, try_number = tries, "retrying with the same idempotency key");
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
}

/// Submits, then either prints the id or follows the batch to its report
/// (`volley run`: its own coordinator, in this process).
pub(crate) async fn submit_and_report(
    client: &Client,
    batch: v1::Batch,
    follow: Follow<'_>,
    output: OutputFormat,
) -> Exit {
    let total = batch.ops.len() as u32;
    let submitted = match client.submit(batch).await {
        Ok(submitted) => submitted,
        Err(error) => return exit::client_error(&error),
    };
    report_submitted(client, submitted, total, follow, output).await
}

/// Prints a submission's id, or follows the batch to its report.
async fn report_submitted(
    client: &Client,
    submitted: v1::SubmitBatchResponse,
    total: u32,
    follow: Follow<'_>,
    output: OutputFormat,
) -> Exit {
    for warning in &submitted.warnings {
        eprintln!("warning: {warning}");
    }
    let Follow::Yes {
        interrupts,
        on_interrupt,
    } = follow
    else {
        match output {
            OutputFormat::Json => println!(
                "{}",
                serde_json::json!({"batch_id": submitted.batch_id, "op_count": submitted.op_count, "warnings": submitted.warnings})
            ),
            OutputFormat::Table => println!("{}", submitted.batch_id),
        }
        return Exit::Success;
    };
    if output == OutputFormat::Table {
        eprintln!(
            "batch {} submitted: {} ops",
            submitted.batch_id, submitted.op_count
        );
    }
    follow_interruptibly(
        client,
        &submitted.batch_id,
        0,
        total,
        output,
        interrupts,
        on_interrupt,
    )
    .await
}

/// Follows a batch to its report, as [`follow_to_report`], until a Ctrl-C
/// (or SIGTERM): then does `on_interrupt` and exits 130.
async fn follow_interruptibly(
    client: &Client,
    batch_id: &str,
    after: u64,
    total: u32,
    output: OutputFormat,
    interrupts: &mut Interrupts,
    on_interrupt: OnInterrupt,
) -> Exit {
    let follow = follow_to_report(client, batch_id, after, total, output);
    tokio::pin!(follow);
    let signal = tokio::select! {
        exit = &mut follow => return exit,
        signal = interrupts.next() => signal,
    };
    match on_interrupt {
        OnInterrupt::KeepRunning => {
            eprintln!(
                "{signal}: batch {batch_id} keeps running; cancel it with `volley cancel {batch_id}`"
            );
            Exit::Interrupted
        }
        OnInterrupt::Cancel => {
            eprintln!(
                "{signal}: cancelling batch {batch_id} (Ctrl-C again to stop waiting for it)"
            );
            let cancel_and_report = cancel_and_follow(client, batch_id, follow.as_mut());
            tokio::select! {
                _ = cancel_and_report => {}
                signal = interrupts.next() => {
                    eprintln!(
                        "{signal} again: not waiting; batch {batch_id} was asked to cancel (see `volley status {batch_id}`)"
                    );
                }
            }
            Exit::Interrupted
        }
        OnInterrupt::StopRun => {
            super::run::stop_run(client, batch_id, follow.as_mut(), interrupts, signal).await
        }
    }
}

/// Cancels the batch, then lets `follow` (already following it) run to the
/// report, up to [`CANCEL_REPORT_WAIT`]. Errors are printed, not returned:
/// the caller exits 130 either way. False if the cancel was refused.
pub(crate) async fn cancel_and_follow(
    client: &Client,
    batch_id: &str,
    follow: std::pin::Pin<&mut impl std::future::Future<Output = Exit>>,
) -> bool {
    if let Err(error) = client.cancel(batch_id).await {
        exit::client_error(&error);
        return false;
    }
    if tokio::time::timeout(CANCEL_REPORT_WAIT, follow)
        .await
        .is_err()
    {
        eprintln!(
            "error: batch {batch_id} did not report its end within {}s of the cancel; see `volley status {batch_id}`",
            CANCEL_REPORT_WAIT.as_secs()
        );
    }
    true
}

async fn follow_to_report(
    client: &Client,
    batch_id: &str,
    after: u64,
    total: u32,
    output: OutputFormat,
) -> Exit {
    let events = match client.watch(batch_id, after).await {
        Ok(events) => events,
        Err(error) => return exit::client_error(&error),
    };
    if let Err(error) = render::follow(events, total, output).await {
        return exit::client_error(&error);
    }
    match render::print_report(client, batch_id, output).await {
        Ok(status) => Exit::for_state(status.state()),
        Err(error) => exit::client_error(&error),
    }
}

pub async fn watch(args: WatchArgs) -> Exit {
    telemetry::init("warn");
    if let Err(exit) = use_logs_dir(args.logs_dir.as_deref()) {
        return exit;
    }
    // A watch only looks: a Ctrl-C leaves the batch running, and says so.
    let mut interrupts = match Interrupts::listen() {
        Ok(interrupts) => interrupts,
        Err(error) => {
            eprintln!("error: cannot listen for signals: {error}");
            return Exit::Invalid;
        }
    };
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let batch_id = match resolve_batch_id(&client, &args.batch_id).await {
        Ok(batch_id) => batch_id,
        Err(exit) => return exit,
    };
    let total = match client.summary(&batch_id).await {
        Ok(summary) => summary.total,
        Err(error) => return exit::client_error(&error),
    };
    follow_interruptibly(
        &client,
        &batch_id,
        args.after,
        total,
        args.output,
        &mut interrupts,
        OnInterrupt::KeepRunning,
    )
    .await
}

pub async fn status(args: StatusArgs) -> Exit {
    telemetry::init("warn");
    if let Err(exit) = use_logs_dir(args.logs_dir.as_deref()) {
        return exit;
    }
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let batch_id = match resolve_batch_id(&client, &args.batch_id).await {
        Ok(batch_id) => batch_id,
        Err(exit) => return exit,
    };
    match render::print_report(&client, &batch_id, args.output).await {
        Ok(status) => Exit::for_state(status.state()),
        Err(error) => exit::client_error(&error),
    }
}

#[derive(Args, Debug)]
pub struct WhyArgs {
    pub batch_id: String,
    pub op_id: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub async fn why(args: WhyArgs) -> Exit {
    telemetry::init("warn");
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let batch_id = match resolve_batch_id(&client, &args.batch_id).await {
        Ok(batch_id) => batch_id,
        Err(exit) => return exit,
    };
    match client.why(&batch_id, &args.op_id).await {
        Ok(response) => {
            println!("{}: {}", response.op_id, words::op_state(response.state()));
            for reason in &response.reasons {
                println!("  - {reason}");
            }
            Exit::Success
        }
        Err(error) => exit::client_error(&error),
    }
}

pub async fn cancel(args: CancelArgs) -> Exit {
    telemetry::init("warn");
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let batch_id = match resolve_batch_id(&client, &args.batch_id).await {
        Ok(batch_id) => batch_id,
        Err(exit) => return exit,
    };
    match client.cancel(&batch_id).await {
        Ok(response) => {
            println!(
                "{}: {} ops cancelled",
                words::batch_state(response.state()),
                response.cancelled
            );
            Exit::Success
        }
        Err(error) => exit::client_error(&error),
    }
}

pub async fn list(args: ListArgs) -> Exit {
    telemetry::init("warn");
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    match client.list(args.limit).await {
        Ok(batches) => {
            match args.output {
                OutputFormat::Json => {
                    let rows: Vec<_> = batches
                        .iter()
                        .map(|batch| serde_json::json!({"batch_id": batch.batch_id, "name": batch.name, "state": words::batch_state(batch.state()), "created_at_ms": batch.created_at_ms, "finished_at_ms": batch.finished_at_ms, "total": batch.total, "done": batch.done, "tenant": batch.tenant}))
                        .collect();
                    println!("{}", serde_json::Value::Array(rows));
                }
                OutputFormat::Table => print!("{}", list_text(&batches)),
            }
            Exit::Success
        }
        Err(error) => exit::client_error(&error),
    }
}

pub async fn workers(args: WorkersArgs) -> Exit {
    telemetry::init("warn");
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    match client.workers().await {
        Ok(workers) => {
            match args.output {
                OutputFormat::Json => {
                    let rows: Vec<_> = workers
                        .iter()
                        .map(|worker| serde_json::json!({"worker_id": worker.worker_id, "slots": worker.slots, "busy": worker.busy, "kinds": worker.kinds, "labels": worker.labels, "draining": worker.draining}))
                        .collect();
                    println!("{}", serde_json::Value::Array(rows));
                }
                OutputFormat::Table => {
                    for worker in &workers {
                        let mut kinds = worker.kinds.clone();
                        kinds.sort();
                        // A draining worker says so last: it takes nothing new.
                        println!(
                            "{}  busy {}/{}  kinds {}{}",
                            worker.worker_id,
                            worker.busy,
                            worker.slots,
                            kinds.join(","),
                            if worker.draining { "  draining" } else { "" }
                        );
                    }
                }
            }
            Exit::Success
        }
        Err(error) => exit::client_error(&error),
    }
}

/// `volley list`'s table: a header, then one line a batch, its id first.
fn list_text(batches: &[v1::BatchSummary]) -> String {
    let mut text = format!(
        "{:<36}  {:<9}  {:>11}  {:<19}  {:>8}  NAME\n",
        "BATCH", "STATE", "DONE/TOTAL", "STARTED (UTC)", "WALL"
    );
    for batch in batches {
        let wall = if batch.finished_at_ms == 0 {
            "—".to_owned()
        } else {
            render::duration(batch.finished_at_ms.saturating_sub(batch.created_at_ms))
        };
        text.push_str(&format!(
            "{:<36}  {:<9}  {:>11}  {:<19}  {:>8}  {}\n",
            batch.batch_id,
            words::batch_state(batch.state()),
            format!("{}/{}", batch.done, batch.total),
            utc_time(batch.created_at_ms),
            wall,
            batch.name
        ));
    }
    text
}

/// `2026-12-02 04:07:25`: unix ms as a UTC date and time to the second.
fn utc_time(unix_ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .trim_end_matches('Z')
        .replacen('T', " ", 1)
}

/// The shortest batch id prefix accepted: shorter ones would match most
/// batches and say nothing.
pub(crate) const MIN_BATCH_ID_PREFIX: usize = 4;
/// How many of the caller's most recent batches a prefix is matched
/// against (one ListBatches call, the coordinator's largest page): a
/// prefix costs the same bounded work however many batches exist.
const PREFIX_SEARCH_BATCHES: u32 = 1000;
/// At most this many candidates are listed for an ambiguous prefix.
const MAX_CANDIDATES_SHOWN: usize = 10;

/// Whether `id` is a whole batch id as coordinators make them (a UUID,
/// `8-4-4-4-12` hex digits): it is used as it is, with no lookup.
pub(crate) fn is_whole_batch_id(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(index, character)| match index {
            8 | 13 | 18 | 23 => character == '-',
            _ => character.is_ascii_hexdigit(),
        })
}

/// The batch a command line names: a whole id as it is, or the one batch
/// whose id starts with `given` (as git and docker take a commit's or a
/// container's). The prefix is matched against the caller's own most
/// recent batches (ListBatches shows a token only its tenant's), so it
/// never reveals another tenant's batch. Too short, ambiguous or matching
/// nothing: the error is printed and the exit code returned. A token that
/// may not list batches (an op's) names its batch in full, as it is given.
pub(crate) async fn resolve_batch_id(client: &Client, given: &str) -> Result<String, Exit> {
    let given = given.trim();
    if is_whole_batch_id(given) {
        return Ok(given.to_owned());
    }
    if given.chars().count() < MIN_BATCH_ID_PREFIX {
        eprintln!(
            "error: batch id `{given}` is too short: give the whole id or at least {MIN_BATCH_ID_PREFIX} of its first characters (see `volley list`)"
        );
        return Err(Exit::Invalid);
    }
    let batches = match client.list(PREFIX_SEARCH_BATCHES).await {
        Ok(batches) => batches,
        Err(volley_client::ClientError::PermissionDenied(_)) => return Ok(given.to_owned()),
        Err(error) => return Err(exit::client_error(&error)),
    };
    if let Some(exact) = batches.iter().find(|batch| batch.batch_id == given) {
        return Ok(exact.batch_id.clone());
    }
    let wanted = given.to_ascii_lowercase();
    let matching: Vec<&v1::BatchSummary> = batches
        .iter()
        .filter(|batch| batch.batch_id.to_ascii_lowercase().starts_with(&wanted))
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.batch_id.clone()),
        [] => {
            eprintln!(
                "error: not found: no batch id starts with `{given}` (among your {PREFIX_SEARCH_BATCHES} most recent batches; see `volley list`)"
            );
            Err(Exit::Invalid)
        }
        several => {
            eprintln!(
                "error: batch id prefix `{given}` is ambiguous: {} batches start with it; give more characters:",
                several.len()
            );
            for batch in several.iter().take(MAX_CANDIDATES_SHOWN) {
                eprintln!(
                    "  {}  {:<9}  {}",
                    batch.batch_id,
                    words::batch_state(batch.state()),
                    batch.name
                );
            }
            if several.len() > MAX_CANDIDATES_SHOWN {
                eprintln!("  … and {} more", several.len() - MAX_CANDIDATES_SHOWN);
            }
            Err(Exit::Invalid)
        }
    }
}

/// Which of an op's streams `volley logs` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogStream {
    Stdout,
    Stderr,
    #[default]
    Both,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The batch (its id, or a unique prefix of it).
    pub batch_id: String,
    /// The op's id.
    pub op_id: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Which of the op's streams to print: its output (stdout) on stdout,
    /// its stderr on stderr, or both.
    #[arg(long, value_enum, env = "VOLLEY_LOGS_STREAM", default_value_t = LogStream::Both)]
    pub stream: LogStream,
    /// `json`: one JSON document on stdout with the op's state, whole
    /// output and stderr, error and attempts (`--stream` does not apply).
    #[arg(long, value_enum, env = "VOLLEY_OUTPUT", default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `volley logs BATCH OP`: the op's whole output on stdout, then its
/// stderr (what the worker kept of it) on stderr, byte for byte; then, on
/// stderr and marked `volley logs:`, what else there is to know — the op
/// failed and why, it has not ended, its stderr was cut.
pub async fn logs(args: LogsArgs) -> Exit {
    telemetry::init("warn");
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    if args.op_id.is_empty() {
        eprintln!("error: name the op: volley logs BATCH OP (its id, as in the report)");
        return Exit::Invalid;
    }
    let batch_id = match resolve_batch_id(&client, &args.batch_id).await {
        Ok(batch_id) => batch_id,
        Err(exit) => return exit,
    };
    let op = match client.op_status(&batch_id, &args.op_id).await {
        Ok(Some(op)) => op,
        Ok(None) => {
            eprintln!(
                "error: not found: batch {batch_id} has no op `{}`",
                args.op_id
            );
            return Exit::Invalid;
        }
        Err(error) => return exit::client_error(&error),
    };
    let OpStreams {
        stdout: stdout_text,
        stderr: stderr_text,
        stderr_truncated,
    } = streams(&op);
    use std::io::Write;
    if args.output == OutputFormat::Json {
        let document = serde_json::json!({
            "batch_id": batch_id,
            "op_id": op.id,
            "kind": op.kind,
            "group": op.group,
            "state": words::op_state(op.state()),
            "attempts": op.attempts,
            "worker": op.worker,
            "started_ms": op.started_ms,
            "duration_ms": op.duration_ms,
            "stdout": stdout_text,
            "stderr": stderr_text,
            "stderr_truncated": stderr_truncated,
            "error": op.error,
        });
        let mut stdout = std::io::stdout().lock();
        let _ = serde_json::to_writer_pretty(&mut stdout, &document)
            .map_err(std::io::Error::from)
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush());
        return Exit::Success;
    }
    if args.stream != LogStream::Stderr {
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (`| head`) is not worth a panic.
        let _ = stdout
            .write_all(stdout_text.as_bytes())
            .and_then(|()| stdout.flush());
    }
    if args.stream != LogStream::Stdout {
        let mut stderr = std::io::stderr().lock();
        let _ = stderr
            .write_all(stderr_text.as_bytes())
            .and_then(|()| stderr.flush());
    }
    let mut notes = Vec::new();
    if stderr_truncated {
        notes.push(format!(
            "the op's stderr was longer than the worker keeps: this is its end ({} bytes)",
            stderr_text.len()
        ));
    }
    match op.state() {
        v1::OpState::Succeeded => {}
        v1::OpState::Waiting | v1::OpState::Ready | v1::OpState::Running => notes.push(format!(
            "op `{}` is {}: its output is kept when it ends (`volley watch {batch_id}` follows it)",
            op.id,
            words::op_state(op.state())
        )),
        state => {
            let attempts = if op.attempts == 0 {
                String::new()
            } else {
                format!(" after {} attempt(s)", op.attempts)
            };
            if op.error.is_empty() {
                notes.push(format!(
                    "op `{}` {}{attempts}",
                    op.id,
                    words::op_state(state)
                ));
            } else {
                notes.push(format!(
                    "op `{}` {}{attempts}: {}",
                    op.id,
                    words::op_state(state),
                    op.error
                ));
            }
        }
    }
    for note in notes {
        eprintln!("volley logs: {note}");
    }
    Exit::Success
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_uuid_is_a_whole_batch_id() {
        assert!(is_whole_batch_id("0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b"));
        assert!(!is_whole_batch_id("0193a2b4"));
        assert!(!is_whole_batch_id("0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6g"));
        assert!(!is_whole_batch_id("0193a2b4x5c6d-7e8f-9a0b-1c2d3e4f5a6b"));
        assert!(!is_whole_batch_id("ééééééééé-5c6d-7e8f-9a0b-1c2d3e4f5a"));
    }

    #[test]
    fn the_list_has_a_header_and_times() {
        let batches = [
            v1::BatchSummary {
                batch_id: "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b".to_owned(),
                name: "nightly".to_owned(),
                state: v1::BatchState::Succeeded as i32,
                created_at_ms: 1_764_648_445_000,
                finished_at_ms: 1_764_648_446_250,
                total: 3,
                done: 3,
                tenant: "default".to_owned(),
            },
            v1::BatchSummary {
                batch_id: "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6c".to_owned(),
                name: String::new(),
                state: v1::BatchState::Running as i32,
                created_at_ms: 1_764_648_445_000,
                finished_at_ms: 0,
                total: 200,
                done: 17,
                tenant: "default".to_owned(),
            },
        ];
        assert_eq!(
            list_text(&batches),
            "BATCH                                 STATE       DONE/TOTAL  STARTED (UTC)            WALL  NAME\n\
             0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b  succeeded          3/3  2025-12-02 04:07:25     1.25s  nightly\n\
             0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6c  running         17/200  2025-12-02 04:07:25         —  \n"
        );
    }
}
