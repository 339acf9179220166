//! PostgreSQL wire protocol: framing, the messages pgsplit reads or writes
//! itself, startup negotiation and authentication exchanges.
//!
//! Client traffic is framed once and forwarded as the original bytes; only
//! the few message types that routing and pooling must understand are parsed.

pub mod error;
pub mod frame;
pub mod md5;
pub mod messages;
pub mod scram;
pub mod startup;

pub use error::{PgError, SqlState};
pub use frame::{Frame, FrameError};
