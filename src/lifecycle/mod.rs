//! The pure core: everything that decides, with no kube client, no clock call
//! and no I/O. The controller feeds it objects and `now`, and carries out what
//! it returns.

pub mod codes;
pub mod conditions;
pub mod downstream;
pub mod entitlement;
pub mod export;
pub mod hold;
pub mod organization;
pub mod policy;
pub mod purge;
#[cfg(test)]
mod scenario;
