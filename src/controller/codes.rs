//! Hands out entitlement codes from the per-class, per-month sequences kept in
//! EntitlementClass status. Numbers are reserved a block at a time: the
//! sequence in status moves to the block's end, with the write conditional
//! on the class's resourceVersion, so that two writers (another replica, a
//! restart mid-way, the class's own status update) can never hand out one
//! number twice. The block is then handed out from memory. Gaps are allowed
//! and harmless: what is left of a block when the controller stops, and a
//! number whose entitlement write failed, are skipped, never reused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use kube::{Api, ResourceExt};

use super::context::Context;
use super::error::Result;
use super::status::{Applied, apply_status_if_unchanged};
use crate::api::EntitlementClass;
use crate::lifecycle::codes;

/// How many numbers one write of a class's sequence reserves: few enough
/// that a restart skips little of a month's 9,999, enough that a mass
/// creation writes the class once per this many entitlements.
const BLOCK: i32 = 25;

/// The numbers of one class reserved and not handed out yet, and one lock
/// per class: allocations of one class take turns, while other classes go on.
#[derive(Default)]
pub struct Allocation(Mutex<HashMap<String, Arc<tokio::sync::Mutex<Block>>>>);

/// Reserved numbers `next..=last` of `month`.
#[derive(Default)]
struct Block {
    month: String,
    next: i32,
    last: i32,
}

impl Block {
    fn take(&mut self, month: &str) -> Option<i32> {
        (self.month == month && self.next <= self.last).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
}

impl Allocation {
    fn block_of(&self, class: &str) -> Arc<tokio::sync::Mutex<Block>> {
        let mut blocks = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        blocks.entry(class.to_string()).or_default().clone()
    }
}

/// The next code of `class` for an entitlement created at `created`.
/// None when the month's four-digit sequence is used up.
pub async fn next(
    context: &Context,
    class: &str,
    created: DateTime<Utc>,
) -> Result<Option<String>> {
    let block = context.code_allocation.block_of(class);
    let mut block = block.lock().await;
    let month = codes::month_of(created);
    let number = match block.take(&month) {
        Some(number) => number,
        None => match reserve_block(context, class, &month).await? {
            Some(reserved) => {
                *block = reserved;
                block.take(&month).expect("a reserved block is not empty")
            }
            None => return Ok(None),
        },
    };
    let prefix = match context.index.class(class) {
        Some(class) => class.spec.code_prefix.clone(),
        None => fresh_class(context, class).await?.1.spec.code_prefix,
    };
    Ok(Some(codes::format(&prefix, &month, number)))
}

/// Moves the class's sequence of `month` to the end of a new block; None
/// when the month's sequence is used up.
async fn reserve_block(context: &Context, class: &str, month: &str) -> Result<Option<Block>> {
    loop {
        let (api, fresh) = fresh_class(context, class).await?;
        let current = fresh.status.clone().unwrap_or_default();
        let first = current.sequences.get(month).copied().unwrap_or(0) + 1;
        if first > codes::LAST_SEQUENCE {
            return Ok(None);
        }
        let last = (first + BLOCK - 1).min(codes::LAST_SEQUENCE);
        let mut status = current.clone();
        status.sequences.insert(month.to_string(), last);
        match write(&api, &fresh, &current, &status).await? {
            Applied::Stale => continue,
            Applied::Done(_) => {
                return Ok(Some(Block {
                    month: month.to_string(),
                    next: first,
                    last,
                }));
            }
        }
    }
}

/// Makes sure the class never generates `code`, pinned by `spec.code` for an
/// import: its month's sequence moves up to the imported number.
pub async fn reserve(context: &Context, class: &str, code: &str) -> Result<()> {
    let block = context.code_allocation.block_of(class);
    let mut block = block.lock().await;
    let Some((prefix, month, number)) = codes::parse(code) else {
        return Ok(());
    };
    // Inside the block in memory: the sequence in status is past it
    // already; the block skips it.
    if block.month == month && (block.next..=block.last).contains(&number) {
        block.next = number + 1;
        return Ok(());
    }
    loop {
        let (api, fresh) = fresh_class(context, class).await?;
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
            Applied::Done(_) => return Ok(()),
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
