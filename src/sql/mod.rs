//! Just enough SQL lexing for pooling: splitting a query string into
//! statements and recognising the ones that change session state.
//! (Read/write classification builds on the same tokenizer.)

pub mod lexer;
pub mod session;

pub use session::{session_effect, SessionEffect};
