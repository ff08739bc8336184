//! tenure: a Kubernetes controller that makes the customer lifecycle declarative.
//! See README.md, and the API contract in the field docs of [`api`].

// Clippy reads the repeated keys of kube's `printcolumn(...)` attributes as duplicates.
#[allow(clippy::duplicated_attributes)]
pub mod api;
pub mod clock;
pub mod controller;
pub mod export;
pub mod lifecycle;
pub mod telemetry;
