//! PostgreSQL access for every Strata service.
//!
//! This crate owns the bb8 pool of diesel-async connections ([`Db`]), the embedded
//! migrations and their runner ([`migrate`]), retry of transient errors ([`retry`]),
//! per-request query instrumentation ([`instrument`]), the catalog/statistics queries
//! behind the admin RPCs ([`stats`]), the guarded `EXPLAIN` of `ExplainQuery`
//! ([`explain`]), the typed database configuration ([`config`]), the storage error and how
//! clients read it ([`error`]), and [`settings::Setting`], the one definition of each
//! environment variable every crate's configuration uses. It knows nothing about gRPC
//! beyond the shared error vocabulary, nor about Redis or any service's
//! tables: services bring their own schema modules and call plain async functions that
//! take `&mut AsyncPgConnection`.

pub mod config;
pub mod error;
pub mod explain;
pub mod instrument;
pub mod migrate;
pub mod pool;
pub mod retry;
pub mod settings;
pub mod stats;

pub use config::{DbConfig, Environment, Secret};
pub use diesel_async::AsyncPgConnection;
pub use error::Error;
pub use pool::{Db, PoolState, PooledConn};
