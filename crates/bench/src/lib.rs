//! The load generator of `make bench`, and the limits its figures are set against.
//!
//! [`load::run`] drives any async call (a generated client's RPC, usually) from
//! `connections × in_flight` workers, closed loop (each worker starts its next call when
//! the last returns) or open loop (calls start on a fixed schedule, and each latency is
//! measured from when its call was due, so a stall shows in the percentiles instead of
//! being hidden by coordinated omission). Latencies go into an HDR histogram; failed calls
//! are counted by gRPC code and never counted as throughput. [`hello`] is the tonic
//! hello-world server whose throughput under the same load is the gRPC stack's limit on
//! this machine.
//!
//! This crate measures; it must not know any service. Scenarios live with the binary that
//! runs them.

pub mod hello;
pub mod load;
