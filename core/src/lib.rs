//! tenure's core: the API types ([`api`]) and the pure lifecycle
//! ([`lifecycle`]) that decides everything from objects and `now`. This
//! crate has no kube client, no async runtime and no I/O in its
//! dependencies, so the compiler keeps every decision here testable without
//! a cluster.

// Clippy reads the repeated keys of kube's `printcolumn(...)` attributes as duplicates.
#[allow(clippy::duplicated_attributes)]
pub mod api;
pub mod lifecycle;
