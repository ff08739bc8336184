//! What every delete does right before it is sent: the holds read live (a
//! watch cache can lag behind a hold just placed), and the delete bound to
//! the exact object that was re-read and checked (its uid).

use chrono::{DateTime, Utc};
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::context::Context;
use super::error::{Error, Result};
use crate::api::RetentionHold;
use crate::lifecycle::hold::Hold;

/// The RetentionHolds that `covers` says apply, read live from the API server.
pub async fn live_holds(context: &Context, covers: impl Fn(&Hold) -> bool) -> Result<Vec<Hold>> {
    let holds = Api::<RetentionHold>::all(context.client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(holds
        .items
        .iter()
        .filter(|h| h.metadata.deletion_timestamp.is_none())
        .map(|h| context.index.as_hold(h))
        .filter(|h| covers(h))
        .collect())
}

/// Whether a hold in force at `now` covers what `covers` describes, read live.
pub async fn held_live(
    context: &Context,
    now: DateTime<Utc>,
    covers: impl Fn(&Hold) -> bool,
) -> Result<Option<Hold>> {
    Ok(live_holds(context, covers)
        .await?
        .into_iter()
        .find(|h| h.in_force(now)))
}

/// Fails with [`Error::HoldAppeared`] if a hold in force at `now` covers what
/// is about to be deleted, read live right before the delete.
pub async fn no_live_hold(
    context: &Context,
    now: DateTime<Utc>,
    covers: impl Fn(&Hold) -> bool,
) -> Result<()> {
    match held_live(context, now, covers).await? {
        Some(hold) => Err(Error::HoldAppeared(hold.describe())),
        None => Ok(()),
    }
}

/// Deletes exactly `object` as it was read (its uid as a precondition, so a
/// namesake created meanwhile is never touched). True when the API server
/// accepted the delete; false when it was already gone.
pub async fn delete_exactly<K>(api: &Api<K>, object: &K) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let meta = object.meta();
    let name = meta.name.as_deref().ok_or(Error::Unnamed("object"))?;
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error.into()),
    }
}
