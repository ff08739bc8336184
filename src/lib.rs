//! tenure: a Kubernetes controller that makes the customer lifecycle declarative.
//! See README.md, and the API contract in the field docs of [`api`].

pub mod cli;
pub mod clock;
pub mod controller;
pub mod endpoints;
pub mod leadership;
pub mod metrics;
pub mod telemetry;

/// The API types and the pure core live in their own crate, `tenure-core`,
/// whose dependencies cannot reach the API server: the compiler keeps every
/// decision pure.
pub use tenure_core::{api, lifecycle};
