//! Hands out entitlement codes from the per-class, per-month sequences kept in
//! EntitlementClass status. Every write of a sequence is conditional on the
//! class's resourceVersion, so that two writers (another replica, a restart
//! mid-way, the class's own status update) can never hand out one number
//! twice; a number whose entitlement write failed is skipped, never reused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use kube::{Api, ResourceExt};

use super::context::Context;
use super::error::Result;
use super::status::{Applied, apply_status_if_unchanged};
use crate::api::EntitlementClass;
use crate::lifecycle::codes;

/// One lock per class: allocations of one class take turns, so that their
/// conditional writes do not keep conflicting when hundreds arrive at once,
/// while other classes go on.
#[derive(Default)]
pub struct Allocation(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Allocation {
    fn lock_for(&self, class: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(class.to_string()).or_default().clone()
    }
}

/// The next code of `class` for an entitlement created at `created`.
/// None when the month's four-digit sequence is used up.
pub async fn next(
    context: &Context,
    class: &str,
    created: DateTime<Utc>,
) -> Result<Option<String>> {
    let lock = context.code_allocation.lock_for(class);
    let _one_at_a_time = lock.lock().await;
    let month = codes::month_of(created);
    loop {
        let (api, fresh) = fresh_class(context, class).await?;
        let current = fresh.status.clone().unwrap_or_default();
        let mut status = current.clone();
        let sequence = status.sequences.get(&month).copied().unwrap_or(0) + 1;
        if sequence > codes::LAST_SEQUENCE {
            return Ok(None);
        }
        status.sequences.insert(month.clone(), sequence);
        match write(&api, &fresh, &current, &status).await? {
            Applied::Stale => continue,
            Applied::Done => {
                return Ok(Some(codes::format(
                    &fresh.spec.code_prefix,
                    &month,
                    sequence,
                )));
            }
        }
    }
}

/// Makes sure the class never generates `code`, pinned by `spec.code` for an
/// import: its month's sequence moves up to the imported number.
pub async fn reserve(context: &Context, class: &str, code: &str) -> Result<()> {
    let lock = context.code_allocation.lock_for(class);
    let _one_at_a_time = lock.lock().await;
    loop {
        let (api, fresh) = fresh_class(context, class).await?;
        let Some((prefix, month, number)) = codes::parse(code) else {
            return Ok(());
        };
        let current = fresh.status.clone().unwrap_or_default();
        if prefix != fresh.spec.code_prefix
            || current.sequences.get(month).is_some_and(|n| *n >= number)
        {
            return Ok(());
        }
        let mut status = current.clone();
        status.sequences.insert(month.to_string(), number);
        match write(&api, &fresh, &current, &status).await? {
            Applied::Stale => continue,
            Applied::Done => return Ok(()),
        }
    }
}

async fn fresh_class(
    context: &Context,
    class: &str,
) -> Result<(Api<EntitlementClass>, EntitlementClass)> {
    let api = Api::<EntitlementClass>::all(context.client.clone());
    let fresh = api.get(class).await?;
    Ok((api, fresh))
}

async fn write(
    api: &Api<EntitlementClass>,
    fresh: &EntitlementClass,
    current: &crate::api::class::EntitlementClassStatus,
    status: &crate::api::class::EntitlementClassStatus,
) -> Result<Applied> {
    let version = fresh.resource_version();
    apply_status_if_unchanged(
        api,
        &fresh.name_any(),
        version.as_deref(),
        Some(current),
        status,
    )
    .await
}
