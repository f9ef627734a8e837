//! How the Redis store reaches Redis: URL, TLS files and password, checked and turned into one client, and URLs redacted for logs.
//!
//! Every connection the store opens (the multiplexed `ConnectionManager`,
//! the doorbell's pub/sub connection and its resubscriptions) comes from the
//! one [`redis::Client`] built here, so they all share the TLS settings and
//! the credentials.
//!
//! Secrets: the password lives only in that client's connection info. It is
//! never part of an error of this module (URLs in them go through
//! [`redact_url`], and the text of a Redis error is scrubbed of it before
//! it is kept), and [`RedisConnect`]'s `Debug` redacts the URL.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use redis::{ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, TlsCertificates};

/// Where the Redis store connects and how it proves who it is.
///
/// The flag names in the field docs are the `volley` CLI's, which builds
/// this; the errors name them too, since that is what a user can fix.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisConnect {
    /// `redis://[user][:password@]host:port[/db]`, or `rediss://…` for TLS
    /// (`--redis`).
    pub url: String,
    /// PEM certificate(s) of the CA(s) to trust for `rediss://` instead of
    /// the system's roots (`--redis-tls-ca`).
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate (chain) presented to a Redis that asks for
    /// one (`--redis-tls-cert`); needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (`--redis-tls-key`).
    pub tls_key: Option<PathBuf>,
    /// A file holding the password (`--redis-password-file`); trailing line
    /// breaks are trimmed. Overrides the URL's password.
    pub password_file: Option<PathBuf>,
}

impl RedisConnect {
    /// Plain `url`, no TLS files, no password file.
    pub fn from_url(url: impl Into<String>) -> RedisConnect {
        RedisConnect {
            url: url.into(),
            ..RedisConnect::default()
        }
    }

    /// The URL with its password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl std::fmt::Debug for RedisConnect {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let RedisConnect {
            url,
            tls_ca,
            tls_cert,
            tls_key,
            password_file,
        } = self;
        formatter
            .debug_struct("RedisConnect")
            .field("url", &redact_url(url))
            .field("tls_ca", tls_ca)
            .field("tls_cert", tls_cert)
            .field("tls_key", tls_key)
            .field("password_file", password_file)
            .finish()
    }
}

/// Why the Redis store could not connect. No variant holds a password: URLs
/// are redacted and Redis's own error text is scrubbed of the password.
#[derive(Debug, thiserror::Error)]
pub enum RedisConnectError {
    /// The URL is not one redis-rs takes.
    #[error("--redis {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A TLS file was given for a `redis://` URL: it would be ignored and
    /// the connection would be in plaintext.
    #[error("{flag} needs a rediss:// URL (TLS), but --redis is {url}")]
    TlsFileWithoutTls { flag: &'static str, url: String },
    /// Only one half of a client certificate was given.
    #[error("a client certificate needs both --redis-tls-cert and --redis-tls-key")]
    HalfClientCertificate,
    /// A file named by a flag cannot be read.
    #[error("{flag} {}: {source}", path.display())]
    ReadFile {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A certificate file holds no PEM certificate (or a broken one).
    #[error("{flag} {}: no PEM certificate in it ({reason})", path.display())]
    BadCertificate {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The key file holds no PEM private key (or a broken one).
    #[error("--redis-tls-key {}: no PEM private key in it ({reason})", path.display())]
    BadPrivateKey { path: PathBuf, reason: String },
    /// The password file is empty (after trimming its line break).
    #[error("--redis-password-file {}: the file is empty", path.display())]
    EmptyPasswordFile { path: PathBuf },
    /// The password file is not UTF-8 (Redis's AUTH takes it as text here).
    #[error("--redis-password-file {}: the password is not UTF-8 text", path.display())]
    PasswordNotUtf8 { path: PathBuf },
    /// Redis refused the user or password.
    #[error("redis at {url} refused the credentials (wrong user or password?): {detail}")]
    Authentication { url: String, detail: String },
    /// Nothing answered (refused, timed out, dropped): Redis may not be up
    /// yet.
    #[error("cannot reach redis at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// Something answered but setting up the connection failed: a TLS
    /// handshake (an untrusted certificate, a client certificate the server
    /// wanted), or a server that is not Redis. `tls` adds a hint at the TLS
    /// flags.
    #[error("connecting to redis at {url} failed: {detail}{}", tls_hint(*.tls))]
    Setup {
        url: String,
        detail: String,
        /// The URL is `rediss://`.
        tls: bool,
    },
}

fn tls_hint(tls: bool) -> &'static str {
    if tls {
        " (TLS: the server's certificate must chain to --redis-tls-ca, or without it to the \
         system's roots; a server that wants a client certificate needs --redis-tls-cert and \
         --redis-tls-key)"
    } else {
        ""
    }
}

impl RedisConnectError {
    /// True when trying again later may succeed (Redis not up yet); a
    /// wrong setting or credential fails the same way every time.
    pub fn is_retryable(&self) -> bool {
        match self {
            RedisConnectError::Unreachable { .. } => true,
            RedisConnectError::Setup { .. }
            | RedisConnectError::InvalidUrl { .. }
            | RedisConnectError::TlsFileWithoutTls { .. }
            | RedisConnectError::HalfClientCertificate
            | RedisConnectError::ReadFile { .. }
            | RedisConnectError::BadCertificate { .. }
            | RedisConnectError::BadPrivateKey { .. }
            | RedisConnectError::EmptyPasswordFile { .. }
            | RedisConnectError::PasswordNotUtf8 { .. }
            | RedisConnectError::Authentication { .. } => false,
        }
    }
}

/// A client ready to open connections, and what its errors must not show.
pub(crate) struct PreparedClient {
    pub(crate) client: redis::Client,
    redacted_url: String,
    /// Scrubbed from any Redis error text we keep.
    password: Option<String>,
    tls: bool,
}

impl PreparedClient {
    /// Checks `options` (files exist and parse, TLS files only with
    /// `rediss://`) and builds the client; connects nothing yet.
    pub(crate) async fn prepare(
        options: &RedisConnect,
    ) -> Result<PreparedClient, RedisConnectError> {
        let redacted_url = redact_url(&options.url);
        let info = options
            .url
            .as_str()
            .into_connection_info()
            .map_err(|error| RedisConnectError::InvalidUrl {
                url: redacted_url.clone(),
                // redis-rs's parse errors name what is wrong, never the
                // URL's parts; scrubbed all the same.
                reason: scrub(&error.to_string(), password_in_url(&options.url).as_deref()),
            })?;
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        if !tls {
            for (flag, path) in [
                ("--redis-tls-ca", &options.tls_ca),
                ("--redis-tls-cert", &options.tls_cert),
                ("--redis-tls-key", &options.tls_key),
            ] {
                if path.is_some() {
                    return Err(RedisConnectError::TlsFileWithoutTls {
                        flag,
                        url: redacted_url,
                    });
                }
            }
        }
        // TCP_NODELAY: one multiplexed connection carries claims,
        // completions and event reads from many tasks at once; with Nagle a
        // request behind an unacknowledged one waits out a delayed ack
        // (~40 ms).
        let mut info =
            info.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        if let Some(path) = &options.password_file {
            let password = read_password(path).await?;
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let password = info.redis_settings().password().map(str::to_owned);

        let client_tls = match (&options.tls_cert, &options.tls_key) {
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read_certificates("--redis-tls-cert", cert).await?,
                client_key: read_private_key(key).await?,
            }),
            (None, None) => None,
            _ => return Err(RedisConnectError::HalfClientCertificate),
        };
        let root_cert = match &options.tls_ca {
            Some(path) => Some(read_certificates("--redis-tls-ca", path).await?),
            None => None,
        };
        let client = if tls {
            install_crypto_provider();
            redis::Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls,
                    root_cert,
                },
            )
        } else {
            redis::Client::open(info)
        }
        .map_err(|error| RedisConnectError::InvalidUrl {
            url: redacted_url.clone(),
            reason: scrub(&error.to_string(), password.as_deref()),
        })?;
        Ok(PreparedClient {
            client,
            redacted_url,
            password,
            tls,
        })
    }

    /// The typed, password-free form of a failure to connect.
    pub(crate) fn connect_error(&self, error: &redis::RedisError) -> RedisConnectError {
        let detail = scrub(&error.to_string(), self.password.as_deref());
        let url = self.redacted_url.clone();
        if is_authentication_error(error) {
            RedisConnectError::Authentication { url, detail }
        } else if error.is_connection_refusal()
            || error.is_timeout()
            || error.is_connection_dropped()
        {
            RedisConnectError::Unreachable { url, detail }
        } else {
            RedisConnectError::Setup {
                url,
                detail,
                tls: self.tls,
            }
        }
    }
}

/// True when Redis refused the credentials: redis-rs's own check of the
/// `AUTH` reply, or the server's `WRONGPASS` / `NOAUTH` error codes (no
/// password sent to a server that wants one).
pub(crate) fn is_authentication_error(error: &redis::RedisError) -> bool {
    matches!(error.kind(), redis::ErrorKind::AuthenticationFailed)
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"))
}

/// rustls needs a process-wide crypto provider; the workspace builds rustls
/// with `ring` only. Installing fails harmlessly when one is installed.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

async fn read_file(flag: &'static str, path: &Path) -> Result<Vec<u8>, RedisConnectError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| RedisConnectError::ReadFile {
            flag,
            path: path.to_owned(),
            source,
        })
}

/// The password in `path`, without its trailing line break(s).
async fn read_password(path: &Path) -> Result<String, RedisConnectError> {
    let bytes = read_file("--redis-password-file", path).await?;
    let text = String::from_utf8(bytes).map_err(|_| RedisConnectError::PasswordNotUtf8 {
        path: path.to_owned(),
    })?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(RedisConnectError::EmptyPasswordFile {
            path: path.to_owned(),
        });
    }
    Ok(password.to_owned())
}

/// The file's bytes, once checked to hold at least one PEM certificate
/// (redis-rs parses it again, with errors that would not name the file).
async fn read_certificates(flag: &'static str, path: &Path) -> Result<Vec<u8>, RedisConnectError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = read_file(flag, path).await?;
    let bad = |reason: String| RedisConnectError::BadCertificate {
        flag,
        path: path.to_owned(),
        reason,
    };
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        certificate.map_err(|error| bad(error.to_string()))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad("no -----BEGIN CERTIFICATE----- block".to_owned()));
    }
    Ok(pem)
}

async fn read_private_key(path: &Path) -> Result<Vec<u8>, RedisConnectError> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let pem = read_file("--redis-tls-key", path).await?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| RedisConnectError::BadPrivateKey {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    Ok(pem)
}

/// `text` with every occurrence of `password` (as given and
/// percent-encoded) replaced by `***`.
fn scrub(text: &str, password: Option<&str>) -> String {
    let Some(password) = password.filter(|password| !password.is_empty()) else {
        return text.to_owned();
    };
    let mut scrubbed = text.replace(password, "***");
    let encoded = percent_encode(password);
    if encoded != password {
        scrubbed = scrubbed.replace(&encoded, "***");
    }
    scrubbed
}

fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The URL's password as written (still percent-encoded), for scrubbing.
fn password_in_url(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let at = rest.rfind('@')?;
    let (_, password) = rest[..at].split_once(':')?;
    Some(password.to_owned())
}

/// `url` with its password replaced by `***`, the user kept:
/// `redis://user:***@host:6379`, `rediss://:***@host`. Safe for logs,
/// errors, metrics and spans.
///
/// Works on text that is not a valid URL too, erring towards hiding: the
/// user-info is everything before the *last* `@` (a password may hold an
/// unencoded `@` or `/`), and whatever follows its first `:` is hidden. A
/// `pass=` / `password=` query parameter (unix-socket URLs) is hidden as
/// well.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let redacted_rest: Cow<'_, str> = match rest.rfind('@') {
        Some(at) => {
            let (user_info, host_and_more) = rest.split_at(at);
            match user_info.split_once(':') {
                Some((user, password)) if !password.is_empty() => {
                    Cow::Owned(format!("{user}:***{host_and_more}"))
                }
                _ => Cow::Borrowed(rest),
            }
        }
        None => Cow::Borrowed(rest),
    };
    let redacted_rest = redact_query_passwords(&redacted_rest);
    match scheme {
        Some(scheme) => format!("{scheme}://{redacted_rest}"),
        None => redacted_rest,
    }
}

/// Hides the values of `pass=` and `password=` parameters after a `?`.
fn redact_query_passwords(text: &str) -> String {
    let Some((before, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (query, None),
    };
    let parameters: Vec<String> = query
        .split('&')
        .map(|parameter| match parameter.split_once('=') {
            Some((name, value))
                if !value.is_empty()
                    && (name.eq_ignore_ascii_case("pass")
                        || name.eq_ignore_ascii_case("password")) =>
            {
                format!("{name}=***")
            }
            _ => parameter.to_owned(),
        })
        .collect();
    let mut redacted = format!("{before}?{}", parameters.join("&"));
    if let Some(fragment) = fragment {
        redacted.push('#');
        redacted.push_str(fragment);
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_the_password_and_keeps_the_user() {
        assert_eq!(
            redact_url("redis://alice:s3cret@host:6379/2"),
            "redis://alice:***@host:6379/2"
        );
        assert_eq!(
            redact_url("rediss://:s3cret@127.0.0.1:6380"),
            "rediss://:***@127.0.0.1:6380"
        );
    }

    #[test]
    fn redact_url_leaves_a_url_without_password_alone() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://alice@host:6379",
            "rediss://host",
            "redis://host:6379/0?protocol=resp3",
            "",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn redact_url_hides_a_percent_encoded_password() {
        let redacted = redact_url("redis://bob:p%40ss%3Aw%2Frd@host:6379");
        assert_eq!(redacted, "redis://bob:***@host:6379");
        assert!(!redacted.contains("p%40ss"));
    }

    #[test]
    fn redact_url_hides_passwords_in_garbage() {
        // Unencoded '@', '/' and ':' in the password: not a valid URL.
        for (garbage, secret) in [
            ("redis://:p@ss@host:6379", "p@ss"),
            ("redis://u:pa/ss@host", "pa/ss"),
            ("redis://u:a:b:c@host", "a:b:c"),
            ("u:hunter2@host:6379", "hunter2"),
            ("redis//:hunter2@host", "hunter2"),
            ("unix:///run/redis.sock?db=1&pass=hunter2", "hunter2"),
            ("redis+unix:///run/redis.sock?password=hunter2#x", "hunter2"),
        ] {
            let redacted = redact_url(garbage);
            assert!(!redacted.contains(secret), "{garbage} -> {redacted}");
            assert!(redacted.contains("***"), "{garbage} -> {redacted}");
        }
    }

    #[test]
    fn scrub_hides_the_password_and_its_encoded_form() {
        assert_eq!(scrub("a p@ss b p%40ss c", Some("p@ss")), "a *** b *** c");
        assert_eq!(scrub("nothing", None), "nothing");
        assert_eq!(scrub("nothing", Some("")), "nothing");
    }

    #[test]
    fn debug_redacts_the_url() {
        let options = RedisConnect::from_url("redis://u:topsecret@host");
        let printed = format!("{options:?}");
        assert!(!printed.contains("topsecret"), "{printed}");
        assert!(printed.contains("redis://u:***@host"), "{printed}");
    }

    /// A file in the temp dir, removed on drop.
    struct TempFile(PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn write_temp(name: &str, content: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "volley-store-connect-{}-{}-{name}",
            std::process::id(),
            uuid::Uuid::now_v7()
        ));
        std::fs::write(&path, content).expect("write temp file");
        TempFile(path)
    }

    async fn prepare_error(options: RedisConnect) -> RedisConnectError {
        match PreparedClient::prepare(&options).await {
            Ok(_) => panic!("{options:?} was accepted"),
            Err(error) => error,
        }
    }

    #[tokio::test]
    async fn tls_files_need_a_rediss_url() {
        let error = prepare_error(RedisConnect {
            tls_ca: Some(PathBuf::from("/ca.pem")),
            ..RedisConnect::from_url("redis://:pw1234@127.0.0.1:6379")
        })
        .await;
        assert!(matches!(
            error,
            RedisConnectError::TlsFileWithoutTls {
                flag: "--redis-tls-ca",
                ..
            }
        ));
        let message = error.to_string();
        assert!(message.contains("rediss://"), "{message}");
        assert!(!message.contains("pw1234"), "{message}");
    }

    #[tokio::test]
    async fn a_missing_ca_file_is_named() {
        let error = prepare_error(RedisConnect {
            tls_ca: Some(PathBuf::from("/no/such/ca.pem")),
            ..RedisConnect::from_url("rediss://127.0.0.1:6379")
        })
        .await;
        assert!(matches!(error, RedisConnectError::ReadFile { .. }));
        assert!(
            error
                .to_string()
                .starts_with("--redis-tls-ca /no/such/ca.pem: "),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_ca_file_without_certificates_is_refused() {
        let file = write_temp("not-a-ca.pem", b"hello\n");
        let error = prepare_error(RedisConnect {
            tls_ca: Some(file.0.clone()),
            ..RedisConnect::from_url("rediss://127.0.0.1:6379")
        })
        .await;
        assert!(
            matches!(
                error,
                RedisConnectError::BadCertificate {
                    flag: "--redis-tls-ca",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn half_a_client_certificate_is_refused() {
        let error = prepare_error(RedisConnect {
            tls_cert: Some(PathBuf::from("/cert.pem")),
            ..RedisConnect::from_url("rediss://127.0.0.1:6379")
        })
        .await;
        assert!(matches!(error, RedisConnectError::HalfClientCertificate));
        assert_eq!(
            error.to_string(),
            "a client certificate needs both --redis-tls-cert and --redis-tls-key"
        );
    }

    #[tokio::test]
    async fn the_password_file_overrides_the_url_and_loses_its_line_break() {
        let file = write_temp("password", b"from-file\r\n");
        let prepared = PreparedClient::prepare(&RedisConnect {
            password_file: Some(file.0.clone()),
            ..RedisConnect::from_url("redis://alice:from-url@127.0.0.1:6379")
        })
        .await
        .expect("prepare");
        let settings = prepared.client.get_connection_info().redis_settings();
        assert_eq!(settings.password(), Some("from-file"));
        assert_eq!(settings.username(), Some("alice"));
    }

    #[tokio::test]
    async fn an_empty_password_file_is_refused() {
        let file = write_temp("empty-password", b"\n");
        let error = prepare_error(RedisConnect {
            password_file: Some(file.0.clone()),
            ..RedisConnect::from_url("redis://127.0.0.1:6379")
        })
        .await;
        assert!(
            matches!(error, RedisConnectError::EmptyPasswordFile { .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_unparsable_url_is_named_redacted() {
        let error = prepare_error(RedisConnect::from_url("http://:hunter2@host")).await;
        assert!(
            matches!(error, RedisConnectError::InvalidUrl { .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert!(
            message.starts_with("--redis http://:***@host: "),
            "{message}"
        );
    }
}
