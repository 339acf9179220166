//! Who may log in: users' credentials (passwords or SCRAM verifiers, from
//! the config or looked up with `auth_query`), and the per-address limit on
//! failed logins.

mod credentials;
mod failures;
mod lookup;

pub use credentials::Credentials;
pub use failures::LoginFailures;
pub use lookup::{AuthQuery, LookedUp};
