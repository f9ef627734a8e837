//! Built-in op kinds as data, shared by the coordinator (which validates args
//! and infers hazards) and the worker (which runs them), so both read an op's
//! args through the same typed structs.
//!
//! # Layout
//! - [`args`] — one struct per built-in kind, `parse_args`, `BUILTIN_KINDS`.
//! - [`touches`](mod@touches) — the files and memory keys an op reads and writes.
//! - [`template`] — `${ops.ID.output}`, `${ops.ID.status}`, `${memory.KEY}`.
//! - [`size`] — byte sizes (`16MiB`) as batch files and flags write them.

pub mod args;
pub mod size;
pub mod template;
pub mod touches;

pub use args::{
    AgentArgs, ArgsError, BUILTIN_KINDS, BuiltinArgs, EchoArgs, FILE_KINDS, GlobArgs, GrepArgs,
    HOST_PROGRAM_KINDS, MemoryGetArgs, MemoryPutArgs, NoopArgs, ReadArgs, ShellArgs, SleepArgs,
    WriteArgs, builtin_arg_names, parse_args,
};
pub use size::{format_byte_size, parse_byte_size};
pub use template::{
    Reference, TemplateError, has_templates, located_references, references, render,
};
pub use touches::{Target, Touches, normalize_path, touches};
