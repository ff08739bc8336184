//! The pure core: everything that decides, with no kube client, no clock call
//! and no I/O. The controller feeds it objects and `now`, and carries out what
//! it returns.
//!
//! - [`organization`], [`entitlement`]: the two lifecycles, each one
//!   `decide(&Input) -> Decision`.
//! - [`references`]: whether an entitlement's class, organization and
//!   namespace can be used.
//! - [`export`]: a DataExport's next step, and where artifacts may be deleted.
//! - [`system`]: what in a tenant namespace Kubernetes or tenure made, not
//!   the customer (left out of exports, counted apart by a purge); [`csv`]:
//!   the CSVs of an export.
//! - [`notices`]: reminders and the final confirmation; [`webhook`]: what
//!   a LifecycleWebhook delivers of the history, and how it is signed.
//! - [`acceptance`]: the verdicts of classes, policies and holds.
//! - [`downstream`]: what each bound object becomes in each phase.
//! - [`policy`], [`hold`], [`purge`], [`codes`], [`conditions`]: the rules the
//!   others share (policy resolution, hold coverage, the final grace, code
//!   allocation, kstatus conditions).

pub mod acceptance;
pub mod codes;
pub mod conditions;
pub mod csv;
pub mod downstream;
pub mod entitlement;
pub mod export;
pub mod hold;
pub mod notices;
pub mod organization;
pub mod policy;
pub mod purge;
pub mod references;
#[cfg(test)]
mod scenario;
pub mod simulation;
pub mod system;
pub mod webhook;
