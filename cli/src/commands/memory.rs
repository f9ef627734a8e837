//! `volley memory get|put|del|ls|watch|wait|incr`: the memory batches and
//! agents coordinate through, from the shell. Inside an `agent` op the
//! batch, namespace and token come from the environment the worker sets
//! (`VOLLEY_BATCH`, `VOLLEY_NAMESPACE`, `VOLLEY_TOKEN`), so `volley memory
//! put findings "…"` just works there.

use std::io::{Read, Write};
use std::time::Duration;

use clap::{Args, Subcommand};
use futures::StreamExt;
use volley_client::{ClientError, Memory, PutOptions, Scope, WatchOptions, v1};

use super::OutputFormat;
use super::client::ClusterArgs;
use crate::exit::{self, Exit};
use crate::telemetry;

#[derive(Args, Debug)]
pub struct MemoryArgs {
    #[command(subcommand)]
    pub command: MemoryCommand,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// A shared namespace (otherwise the batch's own memory).
    #[arg(long, global = true, env = "VOLLEY_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// The batch whose memory to use (when no namespace is given).
    #[arg(long, global = true, env = "VOLLEY_BATCH", default_value = "")]
    pub batch: String,
    /// The op writing, when an op's program writes (the worker sets
    /// VOLLEY_OP and VOLLEY_ATTEMPT), so writes from a stale attempt are
    /// refused. An op's token (VOLLEY_TOKEN) says the same to the
    /// coordinator, which trusts the token over these.
    #[arg(
        long,
        global = true,
        env = "VOLLEY_OP",
        default_value = "",
        hide = true
    )]
    pub writer_op: String,
    #[arg(
        long,
        global = true,
        env = "VOLLEY_ATTEMPT",
        default_value_t = 0,
        hide = true
    )]
    pub writer_attempt: u32,
    /// How long `watch` and `wait` keep reconnecting (through the same
    /// address, so to any coordinator behind it) when their coordinator
    /// goes away, before they give up with exit 3. 0s: never reconnect.
    #[arg(
        long,
        global = true,
        env = "VOLLEY_RECONNECT_FOR",
        default_value = super::duration_text(WatchOptions::DEFAULT_RECONNECT_BUDGET),
        value_parser = parse_reconnect_for
    )]
    pub reconnect_for: Duration,
}

/// The longest `--reconnect-for`: a day. Longer is a typo, not a plan.
const MAX_RECONNECT_FOR: Duration = Duration::from_secs(24 * 60 * 60);

fn parse_reconnect_for(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if duration > MAX_RECONNECT_FOR {
        return Err(format!(
            "{text} is longer than the most, {}",
            humantime::format_duration(MAX_RECONNECT_FOR)
        ));
    }
    Ok(duration)
}

#[derive(Subcommand, Debug)]
pub enum MemoryCommand {
    /// Print a key's raw value (or, with --output json, value and version).
    Get {
        key: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Write a key (VALUE `-` reads standard input).
    Put {
        key: String,
        value: String,
        /// Expire the key after this long (e.g. 30s).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Write only if the key is at this version (0: only if absent).
        #[arg(long)]
        if_version: Option<u64>,
        #[arg(long, default_value = "")]
        content_type: String,
    },
    /// Delete a key.
    Del {
        key: String,
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// List keys under a prefix: one line each, `KEY<TAB>vVERSION<TAB>N
    /// bytes` (`--keys`: the key alone, for a shell loop; `--output json`:
    /// an array of objects).
    Ls {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// Print only the keys, one a line.
        #[arg(long, default_value_t = false)]
        keys: bool,
    },
    /// Print changes under a prefix as they happen (resumable with --after).
    ///
    /// Rides out a coordinator that stops or dies: reconnects through the
    /// same address and goes on after the last revision printed, for up to
    /// --reconnect-for (then exit 3). When the store restarted empty or the
    /// changes to resume from were trimmed, prints a `reset` line
    /// (REVISION, `reset`, empty key, REASON) and exits 1: read the keys
    /// again, then watch --after that revision.
    Watch {
        #[arg(default_value = "")]
        prefix: String,
        /// Resume after this revision.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// First print every existing key.
        #[arg(long)]
        existing: bool,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Wait until a key exists, then print its value (riding out a
    /// coordinator that stops or dies, for up to --reconnect-for).
    Wait {
        key: String,
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
    /// Add to an integer key (default 1); print the new value.
    Incr {
        key: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
    },
}

fn scope(args: &MemoryArgs) -> Result<Scope, Exit> {
    if !args.namespace.is_empty() {
        Ok(Scope::Namespace(args.namespace.clone()))
    } else if !args.batch.is_empty() {
        Ok(Scope::Batch(args.batch.clone()))
    } else {
        eprintln!(
            "error: name the memory: --namespace NAME or --batch ID (or VOLLEY_NAMESPACE / VOLLEY_BATCH)"
        );
        Err(Exit::Invalid)
    }
}

/// The memory handle, writing as the op the worker named (if any).
fn with_writer(memory: Memory, op: &str, attempt: u32) -> Memory {
    if op.is_empty() || attempt == 0 {
        memory
    } else {
        memory.with_writer(op, attempt)
    }
}

fn write_raw(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(bytes);
    let _ = stdout.flush();
}

pub async fn run(args: MemoryArgs) -> Exit {
    telemetry::init("warn");
    let scope = match scope(&args) {
        Ok(scope) => scope,
        Err(exit) => return exit,
    };
    let client = match super::client::connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    // `--batch` takes a unique prefix of the id, as `status` does.
    let scope = match scope {
        Scope::Batch(given) => match super::client::resolve_batch_id(&client, &given).await {
            Ok(batch) => Scope::Batch(batch),
            Err(exit) => return exit,
        },
        other => other,
    };
    let memory = with_writer(client.memory(scope), &args.writer_op, args.writer_attempt);
    let reconnect = WatchOptions {
        reconnect_budget: args.reconnect_for,
        ..WatchOptions::default()
    };
    let result = match args.command {
        MemoryCommand::Get { key, output } => match memory.get(&key).await {
            Ok(Some(entry)) => {
                match output {
                    OutputFormat::Table => write_raw(&entry.value),
                    OutputFormat::Json => println!(
                        "{}",
                        serde_json::json!({
                            "key": key,
                            "value": String::from_utf8_lossy(&entry.value),
                            "version": entry.version,
                            "content_type": entry.content_type,
                        })
                    ),
                }
                Ok(Exit::Success)
            }
            Ok(None) => {
                eprintln!("error: memory key `{key}` not found");
                Ok(Exit::OpsFailed)
            }
            Err(error) => Err(error),
        },
        MemoryCommand::Put {
            key,
            value,
            ttl,
            if_version,
            content_type,
        } => {
            let value = if value == "-" {
                let mut bytes = Vec::new();
                if let Err(error) = std::io::stdin().read_to_end(&mut bytes) {
                    eprintln!("error: reading standard input: {error}");
                    return Exit::Invalid;
                }
                bytes
            } else {
                value.into_bytes()
            };
            let options = PutOptions {
                content_type,
                ttl,
                if_version,
            };
            memory
                .put_with(&key, value, &options)
                .await
                .map(|response| {
                    eprintln!(
                        "{key}: version {}, {} op(s) unblocked",
                        response.version, response.unblocked
                    );
                    Exit::Success
                })
        }
        MemoryCommand::Del { key, if_version } => {
            memory.delete(&key, if_version).await.map(|deleted| {
                if deleted {
                    Exit::Success
                } else {
                    eprintln!("memory key `{key}` did not exist");
                    Exit::OpsFailed
                }
            })
        }
        MemoryCommand::Ls {
            prefix,
            output,
            keys,
        } => list(&memory, &prefix, output, keys).await,
        MemoryCommand::Watch {
            prefix,
            after,
            existing,
            output,
        } => watch(&memory, &prefix, after, existing, output, reconnect).await,
        MemoryCommand::Wait { key, timeout } => memory
            .wait_with(&key, timeout, reconnect)
            .await
            .map(|entry| {
                write_raw(&entry.value);
                Exit::Success
            }),
        MemoryCommand::Incr { key, delta } => memory.incr(&key, delta).await.map(|value| {
            println!("{value}");
            Exit::Success
        }),
    };
    match result {
        Ok(exit) => exit,
        Err(ClientError::Conflict(message)) => {
            eprintln!("error: {message}");
            Exit::OpsFailed
        }
        Err(ClientError::TimedOut(message)) => {
            eprintln!("error: {message}");
            Exit::OpsFailed
        }
        // The coordinator went away and none answered again in time (or
        // never answered): exit 3, whatever the transport said.
        Err(
            error @ (ClientError::Unreachable { .. }
            | ClientError::Unavailable(_)
            | ClientError::Transport(_)),
        ) => {
            eprintln!("error: cluster unreachable: {error}");
            Exit::Unreachable
        }
        Err(error) => exit::client_error(&error),
    }
}

async fn list(
    memory: &Memory,
    prefix: &str,
    output: OutputFormat,
    keys_only: bool,
) -> Result<Exit, volley_client::ClientError> {
    let mut token = String::new();
    let mut rows = Vec::new();
    loop {
        let page = memory.list(prefix, &token, 1000).await?;
        rows.extend(page.keys);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    match output {
        OutputFormat::Json => {
            let rows: Vec<_> = rows
                .iter()
                .map(|info| serde_json::json!({"key": info.key, "version": info.version, "size": info.size, "content_type": info.content_type, "expires_at_ms": info.expires_at_ms}))
                .collect();
            println!("{}", serde_json::Value::Array(rows));
        }
        OutputFormat::Table if keys_only => {
            for info in &rows {
                println!("{}", info.key);
            }
        }
        OutputFormat::Table => {
            for info in &rows {
                println!("{}\tv{}\t{} bytes", info.key, info.version, info.size);
            }
        }
    }
    Ok(Exit::Success)
}

/// Prints changes until the watch ends. A watch has no natural end: it
/// ends on a reset (the store lost the changes to resume from: exit 1,
/// after printing the reset), on an error, or on Ctrl-C.
async fn watch(
    memory: &Memory,
    prefix: &str,
    after: u64,
    existing: bool,
    output: OutputFormat,
    reconnect: WatchOptions,
) -> Result<Exit, ClientError> {
    let changes = memory
        .watch_with(prefix, after, existing, reconnect)
        .await?;
    futures::pin_mut!(changes);
    while let Some(change) = changes.next().await {
        let change = change?;
        let kind = match change.kind() {
            v1::MemoryChangeKind::Put => "put",
            v1::MemoryChangeKind::Delete => "del",
            v1::MemoryChangeKind::Reset => {
                print_reset(memory.scope(), &change, output);
                return Ok(Exit::OpsFailed);
            }
            v1::MemoryChangeKind::Unspecified => "?",
        };
        let value = String::from_utf8_lossy(&change.value);
        match output {
            OutputFormat::Json => println!(
                "{}",
                serde_json::json!({"revision": change.revision, "kind": kind, "key": change.key, "version": change.version, "value": value, "value_omitted": change.value_omitted})
            ),
            OutputFormat::Table => {
                println!("{}\t{kind}\t{}\t{}", change.revision, change.key, value)
            }
        }
    }
    // The watch ended with nothing to say: only a coordinator older than
    // this client closes a stream so; say so rather than look finished.
    eprintln!("error: the memory watch ended without a reset or an error; watch again");
    Ok(Exit::Unreachable)
}

/// A reset on stdout (a line like any change, so a script reading the
/// changes sees it in order) and what to do about it on stderr.
fn print_reset(scope: &Scope, change: &v1::MemoryChange, output: OutputFormat) {
    let (reason, why) = match change.reset_reason() {
        v1::MemoryResetReason::ChangesTrimmed => (
            "changes_trimmed",
            "the changes after the watch's revision are no longer kept",
        ),
        v1::MemoryResetReason::StoreRestarted | v1::MemoryResetReason::Unspecified => (
            "store_restarted",
            "the store restarted empty and the changes the watch knew are gone",
        ),
    };
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"revision": change.revision, "kind": "reset", "reason": reason})
        ),
        OutputFormat::Table => println!("{}\treset\t\t{reason}", change.revision),
    }
    let scope = match scope {
        Scope::Batch(batch) => format!("batch {batch}"),
        Scope::Namespace(namespace) => format!("namespace {namespace}"),
    };
    eprintln!(
        "error: memory of {scope} was reset: {why}; read the keys again (volley memory ls), then watch --after {}",
        change.revision
    );
}
