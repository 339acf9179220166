//! pgsplit: a PostgreSQL wire-protocol proxy that pools server connections
//! and splits reads from writes. The binary in `main.rs` is a thin CLI over
//! this library, so integration tests and benchmarks drive the same code.

#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod frontend;
pub mod lsn;
pub mod metrics;
pub mod monitor;
pub mod net;
pub mod protocol;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod sql;
pub mod sync;
pub mod workers;
