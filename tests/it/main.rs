//! The one integration-test binary: the gateway on loopback ports against mock upstreams.
#![allow(
    clippy::disallowed_methods,
    reason = "tests spawn servers and mock upstreams"
)]
#![allow(missing_docs)]
#![allow(
    clippy::unwrap_used,
    reason = "a panic in a test helper is a failed test"
)]

mod admin;
mod binary;
mod cache;
mod chat;
mod connections;
mod contract;
mod discover;
mod errors;
mod hostile;
mod observe;
mod process;
mod routing;
mod scripted;
mod server;
mod shared_state;
mod siege;
mod stream;
mod support;
mod traces;
mod translate;
mod ui;
mod upstream;
mod wire;
