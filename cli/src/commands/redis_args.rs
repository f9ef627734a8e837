//! The flags that say how a command reaches Redis: URL, TLS files, password file.

use std::path::PathBuf;

use volley_store::{RedisConnect, RedisConnectError, redact_url};

use crate::exit::Exit;

/// How to reach Redis. Credentials go in the URL
/// (`redis://user:password@host:6379`, `rediss://:password@host`) or, kept
/// out of the command line and the environment, in `--redis-password-file`.
#[derive(clap::Args, Clone, PartialEq, Eq)]
pub struct RedisArgs {
    /// Redis URL (the shared coordination state): `redis://` or, for TLS,
    /// `rediss://`; `[user][:password@]` before the host.
    #[arg(
        long = "redis",
        env = "VOLLEY_REDIS",
        value_name = "URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub url: String,
    /// PEM CA certificate(s) to trust for rediss:// (default: the system's
    /// root certificates).
    #[arg(long, env = "VOLLEY_REDIS_TLS_CA", value_name = "FILE")]
    pub redis_tls_ca: Option<PathBuf>,
    /// PEM client certificate for a Redis that asks for one (rediss://;
    /// needs --redis-tls-key).
    #[arg(
        long,
        env = "VOLLEY_REDIS_TLS_CERT",
        value_name = "FILE",
        requires = "redis_tls_key"
    )]
    pub redis_tls_cert: Option<PathBuf>,
    /// PEM private key of --redis-tls-cert.
    #[arg(
        long,
        env = "VOLLEY_REDIS_TLS_KEY",
        value_name = "FILE",
        requires = "redis_tls_cert"
    )]
    pub redis_tls_key: Option<PathBuf>,
    /// File holding the Redis password (a trailing newline is ignored);
    /// overrides a password in the URL.
    #[arg(long, env = "VOLLEY_REDIS_PASSWORD_FILE", value_name = "FILE")]
    pub redis_password_file: Option<PathBuf>,
}

impl RedisArgs {
    /// The store's connect settings.
    pub fn connect_options(&self) -> RedisConnect {
        RedisConnect {
            url: self.url.clone(),
            tls_ca: self.redis_tls_ca.clone(),
            tls_cert: self.redis_tls_cert.clone(),
            tls_key: self.redis_tls_key.clone(),
            password_file: self.redis_password_file.clone(),
        }
    }
}

/// The exit code of a failure to connect: a flag or file that is wrong is
/// an invalid command line; Redis not answering, refusing the credentials or
/// failing the TLS handshake is Redis out of reach.
pub fn exit_for(error: &RedisConnectError) -> Exit {
    match error {
        RedisConnectError::InvalidUrl { .. }
        | RedisConnectError::TlsFileWithoutTls { .. }
        | RedisConnectError::HalfClientCertificate
        | RedisConnectError::ReadFile { .. }
        | RedisConnectError::BadCertificate { .. }
        | RedisConnectError::BadPrivateKey { .. }
        | RedisConnectError::EmptyPasswordFile { .. }
        | RedisConnectError::PasswordNotUtf8 { .. } => Exit::Invalid,
        RedisConnectError::Authentication { .. }
        | RedisConnectError::Unreachable { .. }
        | RedisConnectError::Setup { .. } => Exit::Unreachable,
    }
}

/// Redacts the URL: `CoordinatorArgs` derives `Debug`, and a printed
/// command line must not carry the password.
impl std::fmt::Debug for RedisArgs {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let RedisArgs {
            url,
            redis_tls_ca,
            redis_tls_cert,
            redis_tls_key,
            redis_password_file,
        } = self;
        formatter
            .debug_struct("RedisArgs")
            .field("url", &redact_url(url))
            .field("redis_tls_ca", redis_tls_ca)
            .field("redis_tls_cert", redis_tls_cert)
            .field("redis_tls_key", redis_tls_key)
            .field("redis_password_file", redis_password_file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Command {
        #[command(flatten)]
        redis: RedisArgs,
    }

    fn parse(args: &[&str]) -> Result<RedisArgs, clap::Error> {
        Command::try_parse_from(std::iter::once("volley").chain(args.iter().copied()))
            .map(|command| command.redis)
    }

    #[test]
    fn the_flags_become_the_stores_connect_settings() {
        let args = parse(&[
            "--redis",
            "rediss://alice:pw@redis.example:6380",
            "--redis-tls-ca",
            "/etc/volley/ca.pem",
            "--redis-tls-cert",
            "/etc/volley/client.pem",
            "--redis-tls-key",
            "/etc/volley/client-key.pem",
            "--redis-password-file",
            "/run/secrets/redis",
        ])
        .expect("parse");
        assert_eq!(
            args.connect_options(),
            RedisConnect {
                url: "rediss://alice:pw@redis.example:6380".to_owned(),
                tls_ca: Some(PathBuf::from("/etc/volley/ca.pem")),
                tls_cert: Some(PathBuf::from("/etc/volley/client.pem")),
                tls_key: Some(PathBuf::from("/etc/volley/client-key.pem")),
                password_file: Some(PathBuf::from("/run/secrets/redis")),
            }
        );
        assert_eq!(
            args.connect_options().redacted_url(),
            "rediss://alice:***@redis.example:6380"
        );
    }

    #[test]
    fn the_default_is_a_local_plain_redis() {
        // The environment may set VOLLEY_REDIS; only check without it.
        if std::env::var_os("VOLLEY_REDIS").is_none() {
            let args = parse(&[]).expect("parse");
            assert_eq!(args.url, "redis://127.0.0.1:6379");
            assert_eq!(args.redis_tls_ca, None);
        }
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_the_other_way_round() {
        assert!(parse(&["--redis-tls-cert", "/c.pem"]).is_err());
        assert!(parse(&["--redis-tls-key", "/k.pem"]).is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let args = parse(&["--redis", "redis://:hunter2@host:6379"]).expect("parse");
        let printed = format!("{args:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("redis://:***@host:6379"), "{printed}");
    }
}
