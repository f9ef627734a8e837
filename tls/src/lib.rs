//! TLS for every gRPC listener and client of Volley, in one place.
//!
//! A server loads a [`ServerTls`] from its [`ServerTlsFiles`] (validated up
//! front, reloaded when cert-manager rotates them) and serves tonic over
//! [`server_incoming`], which does the TLS handshakes itself so that the
//! certificate can change without a restart and one slow client cannot hold
//! up the others. A client turns a URL and its [`ClientTlsFiles`] into a
//! tonic `Endpoint` with [`client_endpoint`] or [`configure_endpoint`]:
//! `https://` always means TLS. rustls with the ring provider throughout.
//!
//! # Layout
//! - `error`: [`TlsError`], whose variants name the file and the problem.
//! - `pem`: reading PEM files into rustls types (crate-private).
//! - `server`: [`ServerTlsFiles`], [`ServerTls`] and its reload on rotation.
//! - `incoming`: [`server_incoming`], [`ServerConnection`] and [`PeerInfo`].
//! - `client`: [`ClientTlsFiles`], [`client_endpoint`], [`configure_endpoint`].
//! - `testing` (feature `test-certs`): a CA, server and client certificates
//!   generated in-process with rcgen, written to a directory.

mod client;
mod error;
mod incoming;
mod pem;
mod server;
#[cfg(test)]
mod test_support;
#[cfg(any(test, feature = "test-certs"))]
pub mod testing;

pub use client::{ClientTlsFiles, client_endpoint, configure_endpoint};
pub use error::{FileRole, TlsError};
pub use incoming::{MAX_PENDING_HANDSHAKES, PeerInfo, ServerConnection, server_incoming};
pub use server::{DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_RELOAD_INTERVAL, ServerTls, ServerTlsFiles};
