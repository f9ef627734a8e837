//! The scripts registry: every verb's Lua script, `lua/common.lua` prepended, loaded once.

use super::*;

/// Each script is `lua/common.lua` followed by the verb's file.
/// `create.lua` with its prelude: `create_batch` loads it by name inside a
/// pipeline.
pub(super) const CREATE_LUA: &str = concat!(
    include_str!("../../lua/common.lua"),
    include_str!("../../lua/create.lua")
);

macro_rules! lua_script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../../lua/common.lua"),
            include_str!(concat!("../../lua/", $file))
        ))
    };
}

/// Scripts that write a memory scope: `lua/common.lua`, `lua/memory.lua`,
/// then the verb's file.
macro_rules! memory_script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../../lua/common.lua"),
            include_str!("../../lua/memory.lua"),
            include_str!(concat!("../../lua/", $file))
        ))
    };
}

pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) reserve: Script,
    pub(super) drop_batch: Script,
    pub(super) register_waits: Script,
    pub(super) register_shared: Script,
    pub(super) arrive: Script,
    pub(super) claim: Script,
    pub(super) complete: Script,
    pub(super) cancel: Script,
    pub(super) add_ops: Script,
    pub(super) expire_waits: Script,
    pub(super) renew_leases: Script,
    pub(super) expire_leases: Script,
    pub(super) return_ops: Script,
    pub(super) expire_deadline: Script,
    pub(super) mark_lost: Script,
    pub(super) op_waits: Script,
    pub(super) op_summaries: Script,
    pub(super) note_blocked: Script,
    pub(super) memory_put: Script,
    pub(super) memory_incr: Script,
    pub(super) memory_delete: Script,
    pub(super) memory_list: Script,
    pub(super) hold: Script,
    pub(super) release: Script,
    pub(super) workers: Script,
    pub(super) revoke_token: Script,
    pub(super) outbox_clear: Script,
}

impl Scripts {
    pub(super) fn load() -> Scripts {
        Scripts {
            create: Script::new(CREATE_LUA),
            reserve: lua_script!("reserve.lua"),
            register_waits: lua_script!("register_waits.lua"),
            register_shared: lua_script!("register_shared.lua"),
            arrive: lua_script!("arrive.lua"),
            claim: lua_script!("claim.lua"),
            complete: memory_script!("complete.lua"),
            cancel: lua_script!("cancel.lua"),
            add_ops: lua_script!("add_ops.lua"),
            expire_waits: lua_script!("expire_waits.lua"),
            renew_leases: lua_script!("renew_leases.lua"),
            expire_leases: lua_script!("expire_leases.lua"),
            return_ops: lua_script!("return_ops.lua"),
            expire_deadline: lua_script!("expire_deadline.lua"),
            mark_lost: lua_script!("mark_lost.lua"),
            drop_batch: lua_script!("drop_batch.lua"),
            op_waits: lua_script!("op_waits.lua"),
            op_summaries: lua_script!("op_summaries.lua"),
            note_blocked: lua_script!("note_blocked.lua"),
            memory_put: memory_script!("memory_put.lua"),
            memory_incr: memory_script!("memory_incr.lua"),
            memory_delete: memory_script!("memory_delete.lua"),
            memory_list: lua_script!("memory_list.lua"),
            hold: lua_script!("hold.lua"),
            release: lua_script!("release.lua"),
            // Touches no batch: not prefixed with common.lua.
            workers: Script::new(include_str!("../../lua/workers.lua")),
            // Touches the token keys only, through KEYS.
            revoke_token: Script::new(include_str!("../../lua/revoke_token.lua")),
            outbox_clear: lua_script!("outbox_clear.lua"),
        }
    }
}
