//! Who is calling: the `Principal` a token stands for, its `Role`, and
//! tenants (names, defaults, the namespaces they own).

use std::collections::BTreeMap;

use volley_proto::BatchId;

use super::{AuthError, DEFAULT_TENANT};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Batches and memory of its tenant.
    Client,
    /// WorkerService only.
    Worker,
    /// Everything, across tenants, and token management.
    Admin,
    /// A running op's capability: memory of its batch, spawns into it.
    Agent,
}

impl Role {
    /// The roles a token can be created with.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "client" => Some(Role::Client),
            "worker" => Some(Role::Worker),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Worker => "worker",
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }
}

/// The op attempt a capability token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentScope {
    pub batch: BatchId,
    pub op_index: u32,
    pub attempt: u32,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The token's public id (`admin` for the bootstrap token, `anonymous`
    /// without authentication, `op:<batch>/<index>@<attempt>` for an op).
    pub token_id: String,
    pub role: Role,
    pub tenant: String,
    pub agent: Option<AgentScope>,
    /// A worker token's limits (empty: none).
    pub labels: BTreeMap<String, String>,
    pub kinds: Vec<String>,
}

impl Principal {
    /// Every caller when the coordinator runs with `--auth none`.
    pub fn anonymous() -> Principal {
        Principal {
            token_id: "anonymous".to_owned(),
            role: Role::Admin,
            tenant: DEFAULT_TENANT.to_owned(),
            agent: None,
            labels: BTreeMap::new(),
            kinds: Vec::new(),
        }
    }

    pub(super) fn admin() -> Principal {
        Principal {
            token_id: "admin".to_owned(),
            ..Principal::anonymous()
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether this caller may see a batch of `tenant` (an empty tenant is
    /// a batch stored before tenants: the default tenant's).
    pub fn sees_tenant(&self, tenant: &str) -> bool {
        self.is_admin() || self.tenant == tenant_or_default(tenant)
    }

    /// Refuses a worker registration outside the token's limits.
    pub fn check_worker_limits(
        &self,
        labels: &BTreeMap<String, String>,
        kinds: &[String],
    ) -> Result<(), AuthError> {
        // `secret.NAME` labels say which secrets a worker holds (names, no
        // values): an advertisement, not a claim the token must allow.
        if !self.labels.is_empty()
            && let Some((key, value)) = labels.iter().find(|(key, value)| {
                !key.starts_with(volley_plan::SECRET_LABEL_PREFIX)
                    && self.labels.get(*key) != Some(*value)
            })
        {
            return Err(AuthError::PermissionDenied(format!(
                "token {} may not register label {key}={value}",
                self.token_id
            )));
        }
        if !self.kinds.is_empty()
            && let Some(kind) = kinds.iter().find(|kind| !self.kinds.contains(kind))
        {
            return Err(AuthError::PermissionDenied(format!(
                "token {} may not register kind `{kind}`",
                self.token_id
            )));
        }
        Ok(())
    }
}

/// `tenant`, or the default tenant for an empty one.
pub fn tenant_or_default(tenant: &str) -> &str {
    if tenant.is_empty() {
        DEFAULT_TENANT
    } else {
        tenant
    }
}

/// Checks a tenant name: 1 to 63 of `[A-Za-z0-9_-]`.
pub fn check_tenant(tenant: &str) -> Result<(), String> {
    if tenant.is_empty() || tenant.len() > 63 {
        return Err(format!("tenant `{tenant}` must be 1 to 63 characters long"));
    }
    if let Some(bad) = tenant.chars().find(|character| {
        !(character.is_ascii_alphanumeric() || *character == '-' || *character == '_')
    }) {
        return Err(format!(
            "tenant `{tenant}`: `{bad}` is not allowed (letters, digits, `-` and `_`)"
        ));
    }
    Ok(())
}

/// The store's name of a tenant's namespace: the default tenant's as it is
/// spelled, another's prefixed with `<tenant>@` (`@` is not allowed in a
/// namespace, so no two tenants' names can meet).
pub fn tenant_namespace(tenant: &str, namespace: &str) -> String {
    let tenant = tenant_or_default(tenant);
    if tenant == DEFAULT_TENANT {
        namespace.to_owned()
    } else {
        format!("{tenant}@{namespace}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_limits() {
        let mut principal = Principal::anonymous();
        principal.labels = BTreeMap::from([("zone".into(), "eu".into())]);
        principal.kinds = vec!["echo".into()];
        assert!(
            principal
                .check_worker_limits(
                    &BTreeMap::from([("zone".into(), "eu".into())]),
                    &["echo".into()]
                )
                .is_ok()
        );
        assert!(
            principal
                .check_worker_limits(&BTreeMap::from([("zone".into(), "us".into())]), &[])
                .is_err()
        );
        assert!(
            principal
                .check_worker_limits(&BTreeMap::new(), &["shell".into()])
                .is_err()
        );
    }

    #[test]
    fn tenants_and_their_namespaces() {
        assert!(check_tenant("team-a_1").is_ok());
        assert!(check_tenant("").is_err());
        assert!(check_tenant("a@b").is_err());
        assert!(check_tenant("a.b").is_err());
        assert_eq!(tenant_namespace("default", "shared"), "shared");
        assert_eq!(tenant_namespace("", "shared"), "shared");
        assert_eq!(tenant_namespace("a", "shared"), "a@shared");
        assert_ne!(
            tenant_namespace("a", "shared"),
            tenant_namespace("b", "shared")
        );
    }
}
