//! `strata.analytics.v1.AnalyticsService`: the LLM token-usage ledger.
//!
//! This crate owns the `analytics` schema and is the only code that reads or writes it:
//! the month-partitioned `token_usage` table ([`partitions`]), the idempotency keys, the
//! materialized views and their refresh ([`views`], [`scheduler`]). Handlers
//! ([`service`]) validate ([`model`]), authorize with the caller's `Principal`, and call
//! plain SQL functions ([`store`]). It must not read other services' schemas: project
//! ownership, once needed, is asked of the content service over gRPC.

pub mod config;
pub mod error;
pub mod model;
pub mod partitions;
pub mod scheduler;
pub mod seed;
pub mod service;
pub mod store;
pub mod views;

pub use config::AnalyticsConfig;
pub use service::AnalyticsHandlers;
