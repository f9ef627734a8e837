//! The secrets a worker holds for ops that ask for `${secret.NAME}`: files
//! of `--secret-dir` (a mounted Kubernetes Secret, one file a secret, read
//! at each use so a rotated value is picked up), then the worker's own
//! `VOLLEY_SECRET_<NAME>` variables. Their values go into a program's
//! environment only, never through the coordinator or Redis, and are
//! masked (`***`) in everything the op reports.

use std::path::PathBuf;

/// Where a worker's secrets come from.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    /// One file a secret, named as the secret (trailing newlines dropped).
    pub dir: Option<PathBuf>,
}

/// The environment variable prefix of a worker's own secrets.
pub const SECRET_ENV_PREFIX: &str = "VOLLEY_SECRET_";

/// What replaces a secret's value in an op's output, error and details.
pub const MASK: &str = "***";

impl Secrets {
    pub fn from_dir(dir: Option<PathBuf>) -> Secrets {
        Secrets { dir }
    }

    /// The names of the secrets this worker holds now: the files of its
    /// directory and its `VOLLEY_SECRET_<NAME>` variables. Advertised as
    /// `secret.NAME=1` labels, so ops that need a secret go to a worker
    /// that holds it (never the values).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        if let Some(dir) = &self.dir
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            for entry in entries.flatten() {
                let is_file = std::fs::metadata(entry.path()).is_ok_and(|meta| meta.is_file());
                if let Some(name) = entry.file_name().to_str()
                    && is_file
                    && !name.is_empty()
                    && name
                        .bytes()
                        .all(volley_kinds::template::is_secret_name_byte)
                {
                    names.push(name.to_owned());
                }
            }
        }
        for (variable, _) in std::env::vars_os() {
            if let Some(name) = variable
                .to_str()
                .and_then(|variable| variable.strip_prefix(SECRET_ENV_PREFIX))
                && !name.is_empty()
                && name
                    .bytes()
                    .all(volley_kinds::template::is_secret_name_byte)
            {
                names.push(name.to_owned());
            }
        }
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The value of secret `name`, if this worker holds it.
    pub fn get(&self, name: &str) -> Option<String> {
        if name.is_empty()
            || !name
                .bytes()
                .all(volley_kinds::template::is_secret_name_byte)
        {
            return None;
        }
        if let Some(dir) = &self.dir
            && let Ok(text) = std::fs::read_to_string(dir.join(name))
        {
            return Some(text.trim_end_matches(['\n', '\r']).to_owned());
        }
        std::env::var(format!("{SECRET_ENV_PREFIX}{name}")).ok()
    }
}

/// Replaces every value of `secrets` in `text` by [`MASK`]. Values shorter
/// than 4 bytes are masked too: a short secret is still a secret.
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut masked = text.to_owned();
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        if masked.contains(secret.as_str()) {
            masked = masked.replace(secret.as_str(), MASK);
        }
    }
    masked
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn files_first_then_nothing_outside_the_name_rules() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("API"), "s3cr3t\n").unwrap();
        let secrets = Secrets::from_dir(Some(dir.path().to_path_buf()));
        assert_eq!(secrets.get("API").as_deref(), Some("s3cr3t"));
        assert_eq!(secrets.get("MISSING_SECRET_NEVER_SET"), None);
        assert_eq!(secrets.get("../etc/passwd"), None);
        assert_eq!(
            mask("token s3cr3t here", &["s3cr3t".into()]),
            "token *** here"
        );
    }
}
