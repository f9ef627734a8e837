//! `volley token create | ls | revoke | whoami`: API tokens, managed by an
//! admin. `create` prints the token alone on stdout, once: only its hash
//! is stored.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use volley_client::v1;

use super::OutputFormat;
use super::client::{ClusterArgs, connect};
use crate::exit::{self, Exit};
use crate::telemetry;

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Mint a token and print it (alone, on stdout, once).
    Create {
        /// client (batches and memory of its tenant), worker (WorkerService
        /// only) or admin (everything, across tenants).
        #[arg(long)]
        role: String,
        /// The tenant whose batches and memory it reaches (default: `default`).
        #[arg(long, default_value = "")]
        tenant: String,
        /// It expires this long after now (e.g. 90d); default: never.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// A note: who or what it is for.
        #[arg(long, default_value = "")]
        name: String,
        /// A worker token may register only these labels (key=value, repeatable).
        #[arg(long = "label", value_delimiter = ',', value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// A worker token may register only these kinds (repeatable).
        #[arg(long = "kind", value_delimiter = ',')]
        kinds: Vec<String>,
    },
    /// List tokens (ids, roles, tenants, expiry, last use; never a token).
    Ls {
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Revoke a token by its id: every coordinator refuses it within a second.
    Revoke { id: String },
    /// Who the current token speaks for.
    Whoami,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("label `{text}` is not key=value")),
    }
}

pub async fn run(args: TokenArgs) -> Exit {
    telemetry::init("warn");
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    match args.command {
        TokenCommand::Create {
            role,
            tenant,
            ttl,
            name,
            labels,
            kinds,
        } => {
            let request = v1::CreateTokenRequest {
                role,
                tenant,
                ttl_ms: ttl.map_or(0, |ttl| ttl.as_millis() as u64),
                name,
                labels: labels.into_iter().collect(),
                kinds,
            };
            match client.create_token(request).await {
                Ok(created) => {
                    println!("{}", created.token);
                    if let Some(info) = created.info {
                        eprintln!(
                            "token {} ({}, tenant {}) created; it is shown only now",
                            info.id, info.role, info.tenant
                        );
                    }
                    Exit::Success
                }
                Err(error) => exit::client_error(&error),
            }
        }
        TokenCommand::Ls { output } => match client.list_tokens().await {
            Ok(tokens) => {
                print_tokens(&tokens, output);
                Exit::Success
            }
            Err(error) => exit::client_error(&error),
        },
        TokenCommand::Revoke { id } => match client.revoke_token(&id).await {
            Ok(true) => {
                eprintln!("token {id} revoked");
                Exit::Success
            }
            Ok(false) => {
                eprintln!("error: no token has id {id}");
                Exit::Invalid
            }
            Err(error) => exit::client_error(&error),
        },
        TokenCommand::Whoami => match client.who_am_i().await {
            Ok(whoami) => {
                println!(
                    "token {} · role {} · tenant {}",
                    whoami.token_id, whoami.role, whoami.tenant
                );
                Exit::Success
            }
            Err(error) => exit::client_error(&error),
        },
    }
}

fn print_tokens(tokens: &[v1::TokenInfo], output: OutputFormat) {
    match output {
        OutputFormat::Json => {
            let rows: Vec<serde_json::Value> = tokens
                .iter()
                .map(|token| {
                    serde_json::json!({
                        "id": token.id,
                        "role": token.role,
                        "tenant": token.tenant,
                        "name": token.name,
                        "created_at_ms": token.created_at_ms,
                        "expires_at_ms": token.expires_at_ms,
                        "revoked_at_ms": token.revoked_at_ms,
                        "last_used_at_ms": token.last_used_at_ms,
                        "labels": token.labels.iter().collect::<BTreeMap<_, _>>(),
                        "kinds": token.kinds,
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(rows));
        }
        OutputFormat::Table => {
            let mut table = comfy_table::Table::new();
            table.load_style(comfy_table::presets::UTF8_BORDERS_ONLY);
            table.set_header([
                "ID",
                "ROLE",
                "TENANT",
                "NAME",
                "CREATED",
                "EXPIRES",
                "LAST USED",
                "STATE",
            ]);
            for token in tokens {
                let state = if token.revoked_at_ms > 0 {
                    "revoked"
                } else if token.expires_at_ms > 0 && token.expires_at_ms <= now_ms() {
                    "expired"
                } else {
                    "active"
                };
                table.add_row([
                    token.id.clone(),
                    token.role.clone(),
                    token.tenant.clone(),
                    token.name.clone(),
                    when(token.created_at_ms),
                    when(token.expires_at_ms),
                    when(token.last_used_at_ms),
                    state.to_owned(),
                ]);
            }
            println!("{table}");
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// A unix-ms time as RFC 3339 seconds, `-` for none.
fn when(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".to_owned();
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(unix_ms))
        .to_string()
}
