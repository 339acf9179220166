//! Server side: raw protocol connections to PostgreSQL nodes and the pools
//! that hold them between transactions.

pub mod connection;
pub mod pool;
pub mod prepared;
pub mod query_client;
pub mod tls;

pub use connection::{ConnectError, ServerConnection, ServerSecret};
pub use pool::{
    CheckoutError, CheckoutLimits, Pool, PoolKey, PoolSettings, PoolStats, PooledConnection, Pools,
};
