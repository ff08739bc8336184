//! The common operations, one command each: place a hold, lift it, confirm
//! a hard delete. Each writes what a person would otherwise type as YAML.

use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};

use super::render::{self};
use super::{Global, Target, cluster};
use crate::api::hold::{EntitlementRef, RetentionHoldSpec};
use crate::api::{Entitlement, Organization, RetentionHold};

#[derive(clap::Args, Debug)]
pub struct HoldArgs {
    /// What to hold: `org/<name>` or `ent/<name>` (with -n).
    target: String,
    /// Why deletion is frozen (e.g. `litigation`).
    #[arg(long)]
    reason: String,
    /// The ticket or case behind the hold.
    #[arg(long)]
    ticket: Option<String>,
    /// Who approved the hold.
    #[arg(long, value_name = "WHO")]
    approved_by: Option<String>,
    /// The hold lapses by itself then (RFC 3339, a date, or a duration
    /// from now such as 90d). Absent: until it is released.
    #[arg(long, value_name = "TIME|DURATION", value_parser = render::parse_until)]
    until: Option<render::Until>,
    /// The RetentionHold's name (default: generated from the target).
    #[arg(long)]
    name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ConfirmDeleteArgs {
    /// The organization: `org/<name>`.
    target: String,
    /// Who approved the hard delete.
    #[arg(long, value_name = "WHO")]
    approved_by: String,
    /// The ticket or approval record.
    #[arg(long, value_name = "TICKET")]
    reference: String,
    /// Skip the rest of the data retention (never a locked retention).
    #[arg(long)]
    skip_retention: bool,
}

pub async fn hold(global: &Global, args: HoldArgs) -> anyhow::Result<()> {
    let target: Target = args.target.parse()?;
    let (client, namespace) = cluster::connect(global).await?;
    let until = args.until.map(|u| u.from(global.now()));
    let (organization, entitlement, described, exists) = match &target {
        Target::Organization(name) => {
            let exists = Api::<Organization>::all(client.clone())
                .get_opt(name)
                .await
                .map_err(cluster::explain)?;
            (
                Some(name.clone()),
                None,
                format!("organization {name}"),
                exists.is_some(),
            )
        }
        Target::Entitlement(name) => {
            let api = Api::<Entitlement>::namespaced(client.clone(), &namespace);
            let exists = api.get_opt(name).await.map_err(cluster::explain)?;
            let target = EntitlementRef {
                namespace: namespace.clone(),
                name: name.clone(),
            };
            (
                None,
                Some(target),
                format!("entitlement {namespace}/{name}"),
                exists.is_some(),
            )
        }
    };
    if !exists {
        eprintln!(
            "warning: {described} does not exist (yet): the hold protects it the moment it appears"
        );
    }
    let generated = match &target {
        Target::Organization(name) => format!("{name}-"),
        Target::Entitlement(name) => format!("{namespace}-{name}-"),
    };
    let hold = RetentionHold {
        metadata: ObjectMeta {
            name: args.name.clone(),
            generate_name: args.name.is_none().then_some(generated),
            ..ObjectMeta::default()
        },
        spec: RetentionHoldSpec {
            organization,
            entitlement,
            reason: args.reason,
            approved_by: args.approved_by,
            ticket: args.ticket,
            until,
        },
        status: None,
    };
    let created = Api::<RetentionHold>::all(client)
        .create(&PostParams::default(), &hold)
        .await
        .map_err(cluster::explain)?;
    if !render::structured(global.output, &created)? {
        let lapses = until
            .map(|u| format!(" until {}", render::date(u)))
            .unwrap_or_default();
        println!(
            "retentionhold.tenure.dev/{} created: nothing of {described} is purged{lapses}",
            created.name_any()
        );
        println!(
            "release it with: kubectl tenure release {}",
            created.name_any()
        );
    }
    Ok(())
}

pub async fn release(global: &Global, name: &str) -> anyhow::Result<()> {
    let (client, _) = cluster::connect(global).await?;
    let api = Api::<RetentionHold>::all(client);
    let hold = api.get(name).await.map_err(cluster::explain)?;
    // Exactly the hold read: one re-created meanwhile under the same name
    // is not released by this command.
    let exactly = DeleteParams {
        preconditions: Some(Preconditions {
            uid: hold.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    api.delete(name, &exactly).await.map_err(cluster::explain)?;
    let covered = hold
        .status
        .map(|s| s.covers)
        .filter(|c| !c.is_empty())
        .map(|c| c.join(", "))
        .unwrap_or_else(|| "nothing yet".into());
    if !render::structured(
        global.output,
        &serde_json::json!({"released": name, "covered": covered}),
    )? {
        println!("retentionhold.tenure.dev/{name} released (it covered {covered})");
        println!(
            "{}",
            render::wrap(
                "Nothing it covered is purged at once: the final grace (purge.finalGraceDays) runs again in full first.",
                0,
                0
            )
        );
    }
    Ok(())
}

pub async fn confirm_delete(global: &Global, args: ConfirmDeleteArgs) -> anyhow::Result<()> {
    let Target::Organization(name) = args.target.parse()? else {
        anyhow::bail!(
            "{}: confirm-delete takes an organization (org/<name>)",
            args.target
        );
    };
    let (client, _) = cluster::connect(global).await?;
    let api = Api::<Organization>::all(client);
    let organization = api.get(&name).await.map_err(cluster::explain)?;
    let mut deletion = serde_json::json!({
        "confirmName": name,
        "approval": {"by": args.approved_by, "reference": args.reference},
    });
    if args.skip_retention {
        deletion["skipRetention"] = true.into();
    }
    let patch = serde_json::json!({"spec": {"deletion": deletion}});
    let patched = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(cluster::explain)?;
    if !render::structured(global.output, &patched)? {
        println!(
            "organization.tenure.dev/{name}: hard delete confirmed by {} ({})",
            args.approved_by, args.reference
        );
        let lifecycle = organization.spec.lifecycle;
        let note = match lifecycle {
            crate::api::OrganizationLifecycle::Active => format!(
                "It is Active: nothing is deleted until it is offboarded (spec.lifecycle Disabled or Archived). Watch: kubectl tenure status org/{name}"
            ),
            _ => format!(
                "tenure announces the purge date in status.finalPurgeAt, a full final grace ahead. Watch: kubectl tenure status org/{name}"
            ),
        };
        println!("{}", render::wrap(&note, 0, 0));
    }
    Ok(())
}
