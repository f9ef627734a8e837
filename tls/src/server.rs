//! The server's TLS configuration, rebuilt from its files when they change.
//!
//! One `Arc<ServerConfig>` is swapped, not a `ResolvesServerCert`: a whole
//! config carries the certificate *and* the client-CA verifier, so a rotated
//! client CA is picked up the same way as a rotated certificate. Files are
//! compared by content, read through their paths: the kubelet publishes a
//! rotated Secret by renaming a new `..data` symlink over the old one, so
//! the path stays the same while the file behind it changes, and the
//! symlink's own mtime and inode say nothing about it.
//!
//! The accept loop asks [`ServerTls::claim_reload`] on each connection; at
//! most once per reload interval it runs [`ServerTls::reload`] on a blocking
//! thread. Handshakes never wait for it: they use the config current when
//! they start, and the next connection sees the new one. A file that fails
//! to load keeps the previous config and logs a warning.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;

use crate::error::{FileRole, TlsError};
use crate::pem;

/// How often, at most, the files are read again to look for a rotation.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// How long one client may take over its TLS handshake before it is dropped.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The gRPC ALPN protocol: tonic's client refuses a TLS session without it.
const ALPN_H2: &[u8] = b"h2";

/// Where a server's TLS material lives (e.g. a mounted Kubernetes Secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// PEM certificate chain, leaf first (`tls.crt`).
    pub cert: PathBuf,
    /// PEM private key of the leaf (`tls.key`).
    pub key: PathBuf,
    /// PEM CA certificates; when given, every client must present a
    /// certificate that chains to one of them (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// A server's TLS configuration, loaded and validated from [`ServerTlsFiles`]
/// and reloaded when they change. Share it as `Arc<ServerTls>` between the
/// listeners that use the same files.
pub struct ServerTls {
    files: ServerTlsFiles,
    reload_interval: Duration,
    handshake_timeout: Duration,
    state: Mutex<State>,
    reloads: AtomicU64,
    rejected_reloads: AtomicU64,
}

struct State {
    config: Arc<ServerConfig>,
    /// What `config` was built from.
    loaded: Contents,
    /// Contents that failed to load last time: not retried (nor warned
    /// about again) until they change.
    rejected: Option<Contents>,
    next_check: Instant,
    checking: bool,
}

/// The bytes of every file, compared to decide whether to rebuild.
#[derive(Clone, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Contents {
    fn read(files: &ServerTlsFiles) -> Result<Contents, TlsError> {
        Ok(Contents {
            cert: pem::read(FileRole::ServerCertificate, &files.cert)?,
            key: pem::read(FileRole::ServerKey, &files.key)?,
            client_ca: files
                .client_ca
                .as_deref()
                .map(|path| pem::read(FileRole::ClientCa, path))
                .transpose()?,
        })
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServerTls")
            .field("files", &self.files)
            .field("reload_interval", &self.reload_interval)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads and validates the files now: a missing file, a file without a
    /// certificate or key, or a key that does not match the certificate is
    /// an error naming the file.
    pub fn load(files: ServerTlsFiles) -> Result<ServerTls, TlsError> {
        let loaded = Contents::read(&files)?;
        let (config, leaf) = build_config(&files, &loaded)?;
        log_loaded(&files, &leaf, "loaded");
        Ok(ServerTls {
            files,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            state: Mutex::new(State {
                config: Arc::new(config),
                loaded,
                rejected: None,
                next_check: Instant::now() + DEFAULT_RELOAD_INTERVAL,
                checking: false,
            }),
            reloads: AtomicU64::new(0),
            rejected_reloads: AtomicU64::new(0),
        })
    }

    /// Reads the files again at most this often (default
    /// [`DEFAULT_RELOAD_INTERVAL`]), when connections arrive.
    #[must_use]
    pub fn with_reload_interval(mut self, reload_interval: Duration) -> ServerTls {
        self.reload_interval = reload_interval;
        self.lock().next_check = Instant::now() + reload_interval;
        self
    }

    /// Drops a client whose handshake takes longer (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    #[must_use]
    pub fn with_handshake_timeout(mut self, handshake_timeout: Duration) -> ServerTls {
        self.handshake_timeout = handshake_timeout;
        self
    }

    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The configuration for a handshake starting now.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.lock().config)
    }

    /// True when the files are due a check and no other check runs; the
    /// caller must then run [`ServerTls::reload`] (off the async runtime).
    pub(crate) fn claim_reload(&self, now: Instant) -> bool {
        let mut state = self.lock();
        if state.checking || now < state.next_check {
            return false;
        }
        state.checking = true;
        true
    }

    /// Reads the files and, if they changed and load, swaps the config in.
    /// Blocking: reads files. Only after [`ServerTls::claim_reload`].
    pub(crate) fn reload(&self) {
        let outcome = self.reload_changed();
        let mut state = self.lock();
        state.checking = false;
        state.next_check = Instant::now() + self.reload_interval;
        match outcome {
            Reload::Unchanged => {}
            Reload::Loaded(contents, config, leaf) => {
                log_loaded(&self.files, &leaf, "reloaded");
                state.config = Arc::new(config);
                state.loaded = contents;
                state.rejected = None;
                self.reloads.fetch_add(1, Ordering::Relaxed);
            }
            Reload::Rejected(contents, error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    cert = %self.files.cert.display(),
                    "the TLS files changed but do not load; still serving the previous certificate"
                );
                state.rejected = contents;
                self.rejected_reloads.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn reload_changed(&self) -> Reload {
        let contents = match Contents::read(&self.files) {
            Ok(contents) => contents,
            // A file missing in the middle of a swap: try again next interval.
            Err(error) => return Reload::Rejected(None, error),
        };
        {
            let state = self.lock();
            if contents == state.loaded || state.rejected.as_ref() == Some(&contents) {
                return Reload::Unchanged;
            }
        }
        match build_config(&self.files, &contents) {
            Ok((config, leaf)) => Reload::Loaded(contents, config, leaf),
            Err(error) => Reload::Rejected(Some(contents), error),
        }
    }

    /// Successful reloads and rejected attempts since `load`.
    #[cfg(test)]
    pub(crate) fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.rejected_reloads.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is held for field updates only, never across a panic
        // point that could leave the state half-written.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

enum Reload {
    Unchanged,
    Loaded(Contents, ServerConfig, Leaf),
    Rejected(Option<Contents>, TlsError),
}

fn build_config(
    files: &ServerTlsFiles,
    contents: &Contents,
) -> Result<(ServerConfig, Leaf), TlsError> {
    let certified_key = pem::certified_key(
        FileRole::ServerCertificate,
        &files.cert,
        &contents.cert,
        FileRole::ServerKey,
        &files.key,
        &contents.key,
    )?;
    let leaf = Leaf {
        identity: certified_key.cert.first().and_then(pem::identity),
        not_after: certified_key.cert.first().and_then(pem::not_after),
    };
    let provider = pem::provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config { source })?;
    let builder = match (&files.client_ca, &contents.client_ca) {
        (Some(path), Some(pem)) => {
            let roots = pem::root_store(FileRole::ClientCa, path, pem)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|source| TlsError::ClientVerifier {
                    path: path.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified_key)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok((config, leaf))
}

/// Who the loaded certificate names and until when, for the log line that
/// lets an operator see a rotation happen.
struct Leaf {
    identity: Option<String>,
    not_after: Option<String>,
}

fn log_loaded(files: &ServerTlsFiles, leaf: &Leaf, what: &str) {
    tracing::info!(
        cert = %files.cert.display(),
        subject = leaf.identity.as_deref().unwrap_or("?"),
        not_after = leaf.not_after.as_deref().unwrap_or("?"),
        mtls = files.client_ca.is_some(),
        "{what} the TLS certificate"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::SecretDir;
    use crate::testing::TestCerts;

    fn generated() -> anyhow::Result<(tempfile::TempDir, TestCerts)> {
        let dir = tempfile::tempdir()?;
        let certs = TestCerts::generate(dir.path())?;
        Ok((dir, certs))
    }

    #[test]
    fn a_missing_certificate_file_is_named_with_its_role() -> anyhow::Result<()> {
        let (dir, certs) = generated()?;
        let missing = dir.path().join("absent.crt");
        let files = ServerTlsFiles {
            cert: missing.clone(),
            ..certs.server_files()
        };
        let error = ServerTls::load(files).expect_err("the certificate file is missing");
        assert!(
            matches!(&error, TlsError::Read { role: FileRole::ServerCertificate, path, .. } if *path == missing),
            "{error:?}"
        );
        assert!(error.to_string().contains("absent.crt"), "{error}");
        Ok(())
    }

    #[test]
    fn a_missing_client_ca_file_is_named_with_its_role() -> anyhow::Result<()> {
        let (dir, certs) = generated()?;
        let files = ServerTlsFiles {
            client_ca: Some(dir.path().join("absent-ca.crt")),
            ..certs.server_files()
        };
        let error = ServerTls::load(files).expect_err("the client CA file is missing");
        assert!(
            matches!(
                error,
                TlsError::Read {
                    role: FileRole::ClientCa,
                    ..
                }
            ),
            "{error:?}"
        );
        Ok(())
    }

    #[test]
    fn a_certificate_file_without_a_certificate_is_refused() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let files = ServerTlsFiles {
            // The key file is PEM, but holds no certificate.
            cert: certs.server_key.clone(),
            ..certs.server_files()
        };
        let error = ServerTls::load(files).expect_err("no certificate in the file");
        assert!(
            matches!(&error, TlsError::NoCertificate { role: FileRole::ServerCertificate, path } if *path == certs.server_key),
            "{error:?}"
        );
        Ok(())
    }

    #[test]
    fn a_key_file_without_a_key_is_refused() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let files = ServerTlsFiles {
            key: certs.server_cert.clone(),
            ..certs.server_files()
        };
        let error = ServerTls::load(files).expect_err("no key in the file");
        assert!(
            matches!(
                error,
                TlsError::NoPrivateKey {
                    role: FileRole::ServerKey,
                    ..
                }
            ),
            "{error:?}"
        );
        Ok(())
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let files = ServerTlsFiles {
            key: certs.client_key.clone(),
            ..certs.server_files()
        };
        let error = ServerTls::load(files).expect_err("the client key is not the server's");
        assert!(
            matches!(&error, TlsError::KeyMismatch { cert, key } if *cert == certs.server_cert && *key == certs.client_key),
            "{error:?}"
        );
        Ok(())
    }

    #[test]
    fn a_check_is_claimed_once_per_interval_and_one_at_a_time() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let tls =
            ServerTls::load(certs.server_files())?.with_reload_interval(Duration::from_secs(3600));
        let now = Instant::now();
        assert!(!tls.claim_reload(now), "not due before the interval");
        let later = now + Duration::from_secs(7200);
        assert!(tls.claim_reload(later));
        assert!(!tls.claim_reload(later), "one check at a time");
        tls.reload();
        let soon = Instant::now() + Duration::from_secs(1800);
        assert!(
            !tls.claim_reload(soon),
            "the next check is an interval away"
        );
        let after_the_interval = Instant::now() + Duration::from_secs(7200);
        assert!(tls.claim_reload(after_the_interval));
        Ok(())
    }

    #[test]
    fn a_rotated_secret_is_swapped_in_and_a_broken_one_keeps_the_previous() -> anyhow::Result<()> {
        let (dir, certs) = generated()?;
        let secret_root = dir.path().join("secret");
        std::fs::create_dir(&secret_root)?;
        let mut secret = SecretDir::new(
            &secret_root,
            &std::fs::read(&certs.server_cert)?,
            &std::fs::read(&certs.server_key)?,
        )?;
        let tls = ServerTls::load(ServerTlsFiles {
            cert: secret.cert(),
            key: secret.key(),
            client_ca: None,
        })?
        .with_reload_interval(Duration::ZERO);
        let first = tls.config();

        // Unchanged files: nothing is rebuilt.
        assert!(tls.claim_reload(Instant::now()));
        tls.reload();
        assert!(Arc::ptr_eq(&first, &tls.config()));
        assert_eq!(tls.reload_counts(), (0, 0));

        let rotated_cert = dir.path().join("rotated.crt");
        let rotated_key = dir.path().join("rotated.key");
        certs.issue_server_cert("rotated", &rotated_cert, &rotated_key)?;
        secret.swap(
            &std::fs::read(&rotated_cert)?,
            &std::fs::read(&rotated_key)?,
        )?;
        assert!(tls.claim_reload(Instant::now()));
        tls.reload();
        let second = tls.config();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(tls.reload_counts(), (1, 0));

        // Half a rotation: a new certificate with the old key.
        let third_cert = dir.path().join("third.crt");
        let third_key = dir.path().join("third.key");
        certs.issue_server_cert("third", &third_cert, &third_key)?;
        secret.swap(&std::fs::read(&third_cert)?, &std::fs::read(&rotated_key)?)?;
        assert!(tls.claim_reload(Instant::now()));
        tls.reload();
        assert!(Arc::ptr_eq(&second, &tls.config()));
        assert_eq!(tls.reload_counts(), (1, 1));

        // The same broken files are not rebuilt (nor warned about) again.
        assert!(tls.claim_reload(Instant::now()));
        tls.reload();
        assert_eq!(tls.reload_counts(), (1, 1));
        Ok(())
    }
}
