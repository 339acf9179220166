//! Client side: accepting connections, TLS, login, and the per-client
//! session that forwards traffic to pooled server connections.

pub mod cancel;
pub mod clients;
pub mod last_parse;
pub mod login;
pub mod responses;
pub mod session;
pub mod settings;
pub mod statements;
pub mod stream;
pub mod tls;
pub mod unit;
