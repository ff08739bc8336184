//! The index fed objects as its watches would deliver them.

use super::*;
use kube::runtime::watcher::Event;
use serde_json::json;

fn object<T: DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn organization(name: &str, owned: Option<&str>) -> Organization {
    let status = owned.map(|namespace| json!({"phase": "Active", "namespace": namespace}));
    object(json!({
        "apiVersion": "tenure.dev/v1alpha1", "kind": "Organization",
        "metadata": {"name": name}, "spec": {}, "status": status,
    }))
}

fn entitlement(namespace: &str, name: &str, organization: Option<&str>) -> Entitlement {
    object(json!({
        "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("{namespace}/{name}")},
        "spec": {"class": "plugin", "product": "grafana", "organization": organization},
    }))
}

fn with_code(mut entitlement: Entitlement, code: &str) -> Entitlement {
    entitlement.status = Some(object(json!({"code": code})));
    entitlement
}

fn hold(name: &str, target: serde_json::Value) -> RetentionHold {
    let mut spec = json!({"reason": "litigation"});
    spec.as_object_mut()
        .unwrap()
        .extend(target.as_object().unwrap().clone());
    object(json!({
        "apiVersion": "tenure.dev/v1alpha1", "kind": "RetentionHold",
        "metadata": {"name": name}, "spec": spec,
    }))
}

/// An index holding acme (namespace org-acme), globex (org-globex), and
/// entitlements: one in acme's namespace, one elsewhere naming acme, one of
/// globex, and a standalone one in acme's namespace.
fn world() -> (Index, Feeds) {
    let (index, mut feeds) = super::index();
    for org in [
        organization("acme", Some("org-acme")),
        organization("globex", Some("org-globex")),
    ] {
        feeds.organizations.apply(&Event::Apply(org), true);
    }
    for e in [
        with_code(
            entitlement("org-acme", "grafana", Some("acme")),
            "PLG-2026-01-0001",
        ),
        entitlement("shared", "naming-acme", Some("acme")),
        entitlement("org-globex", "loki", Some("globex")),
        entitlement("org-acme", "standalone", None),
    ] {
        feeds.entitlements.apply(&Event::Apply(e), true);
    }
    (index, feeds)
}

fn names(entitlements: &[Arc<Entitlement>]) -> Vec<String> {
    let mut names: Vec<String> = entitlements.iter().map(|e| e.name_any()).collect();
    names.sort();
    names
}

#[test]
fn a_hold_on_an_organization_covers_its_namespace_and_what_names_it() {
    let (index, mut feeds) = world();
    let on_acme = hold("acme-legal", json!({"organization": "acme"}));
    assert_eq!(
        names(&index.covered_entitlements(&on_acme)),
        ["grafana", "naming-acme", "standalone"]
    );
    feeds.holds.apply(&Event::Apply(on_acme.clone()), true);
    let loki = index.entitlement("org-globex", "loki").unwrap();
    assert!(index.holds_covering_entitlement(&loki).is_empty());
    let standalone = index.entitlement("org-acme", "standalone").unwrap();
    assert_eq!(index.holds_covering_entitlement(&standalone).len(), 1);
    assert_eq!(
        index.covered_organizations(&on_acme),
        [ObjectRef::new("acme")]
    );
    assert_eq!(
        index.holds_covering_organization("acme", "org-acme")[0].name,
        "acme-legal"
    );
}

#[test]
fn a_hold_on_an_entitlement_covers_it_and_blocks_its_organizations_purge() {
    let (index, mut feeds) = world();
    let on_grafana = hold(
        "grafana-dispute",
        json!({"entitlement": {"namespace": "org-acme", "name": "grafana"}}),
    );
    feeds.holds.apply(&Event::Apply(on_grafana.clone()), true);
    assert_eq!(names(&index.covered_entitlements(&on_grafana)), ["grafana"]);
    assert_eq!(
        index.covered_organizations(&on_grafana),
        [ObjectRef::new("acme")]
    );
    let grafana = index.entitlement("org-acme", "grafana").unwrap();
    assert_eq!(
        index.holds_listing(&grafana),
        [ObjectRef::new("grafana-dispute")]
    );
    assert!(
        index
            .holds_covering_organization("globex", "org-globex")
            .is_empty()
    );
}

#[test]
fn a_code_is_held_by_one_entitlement_and_a_pin_by_the_first() {
    let (index, _) = world();
    let newcomer = entitlement("org-globex", "newcomer", Some("globex"));
    assert_eq!(
        index.code_holder("PLG-2026-01-0001", &newcomer).as_deref(),
        Some("org-acme/grafana")
    );
    let holder = index.entitlement("org-acme", "grafana").unwrap();
    assert_eq!(index.code_holder("PLG-2026-01-0001", &holder), None);
    assert_eq!(index.code_holder("PLG-2026-01-0002", &newcomer), None);
}

#[test]
fn an_organization_owns_a_namespace_only_once_its_status_records_it() {
    let (index, mut feeds) = world();
    feeds
        .organizations
        .apply(&Event::Apply(organization("initech", None)), true);
    assert!(index.organization_owning("org-initech").is_none());
    assert_eq!(
        index.organization_for_namespace("org-initech"),
        Some(ObjectRef::new("initech"))
    );
    assert_eq!(
        index.organization_owning("org-acme").map(|o| o.name_any()),
        Some("acme".into())
    );
    let acme = index.organization("acme").unwrap();
    let mut of_acme: Vec<String> = index
        .entitlements_of(&acme)
        .into_iter()
        .map(|r| r.name)
        .collect();
    of_acme.sort();
    assert_eq!(of_acme, ["grafana", "naming-acme", "standalone"]);
    assert_eq!(
        names(&index.entitlements_in("org-acme")),
        ["grafana", "standalone"]
    );
}

/// What a subscriber was handed so far.
fn drained(receiver: &mut mpsc::UnboundedReceiver<Arc<Entitlement>>) -> Vec<Arc<Entitlement>> {
    std::iter::from_fn(|| receiver.try_recv().ok()).collect()
}

#[test]
fn a_feed_hands_on_changes_deletes_and_what_went_while_the_watch_was_down() {
    let (index, mut feeds) = world();
    let mut everything = feeds.entitlements.subscribe();
    let loki = entitlement("org-globex", "loki", Some("globex"));
    feeds.entitlements.apply(&Event::Delete(loki), true);
    assert_eq!(names(&drained(&mut everything)), ["loki"]);
    assert!(index.entitlement("org-globex", "loki").is_none());
    assert!(index.entitlements_in("org-globex").is_empty());

    // A relist that no longer finds `standalone` hands it on as gone, with
    // everything listed.
    feeds.entitlements.apply(&Event::Init, true);
    for name in ["grafana", "naming-acme"] {
        let namespace = if name == "grafana" {
            "org-acme"
        } else {
            "shared"
        };
        let listed = entitlement(namespace, name, Some("acme"));
        feeds.entitlements.apply(&Event::InitApply(listed), true);
        assert!(
            drained(&mut everything).is_empty(),
            "nothing before the list is complete"
        );
    }
    feeds.entitlements.apply(&Event::InitDone, true);
    assert_eq!(
        names(&drained(&mut everything)),
        ["grafana", "naming-acme", "standalone"]
    );
    assert!(index.entitlement("org-acme", "standalone").is_none());
    assert_eq!(names(&index.entitlements_in("org-acme")), ["grafana"]);
}

#[test]
fn an_organization_is_found_by_the_namespace_it_owns_now() {
    let (index, mut feeds) = world();
    feeds
        .organizations
        .apply(&Event::Apply(organization("acme", Some("acme-data"))), true);
    assert!(index.organization_owning("org-acme").is_none());
    assert_eq!(
        index.organization_owning("acme-data").map(|o| o.name_any()),
        Some("acme".into())
    );
    assert_eq!(
        index.organization_for_namespace("acme-data"),
        Some(ObjectRef::new("acme"))
    );
    feeds.organizations.apply(
        &Event::Delete(organization("acme", Some("acme-data"))),
        true,
    );
    assert!(index.organization_owning("acme-data").is_none());
}

#[test]
fn a_subscriber_is_woken_only_by_what_it_reads() {
    let (_, mut feeds) = world();
    let mut by_spec = feeds
        .entitlements
        .subscribe_to(|e| fingerprint(&e.spec.product));
    let grafana = entitlement("org-acme", "grafana", Some("acme"));
    feeds
        .entitlements
        .apply(&Event::Apply(grafana.clone()), true);
    assert_eq!(names(&drained(&mut by_spec)), ["grafana"], "first seen");
    // A status write leaves what it reads as it was.
    let coded = with_code(grafana.clone(), "PLG-2026-01-0009");
    feeds.entitlements.apply(&Event::Apply(coded.clone()), true);
    assert!(drained(&mut by_spec).is_empty());
    let mut moved = coded.clone();
    moved.spec.product = "loki".into();
    feeds.entitlements.apply(&Event::Apply(moved.clone()), true);
    assert_eq!(names(&drained(&mut by_spec)), ["grafana"]);
    feeds.entitlements.apply(&Event::Delete(moved), true);
    assert_eq!(
        names(&drained(&mut by_spec)),
        ["grafana"],
        "a delete always wakes"
    );
}

#[test]
fn what_tenure_never_reads_is_not_kept() {
    let mut object = entitlement("org-acme", "grafana", Some("acme"));
    object.metadata.managed_fields = Some(vec![Default::default()]);
    object.metadata.annotations = Some(
        [
            (
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{}".to_string(),
            ),
            ("tenure.dev/facts".to_string(), "{}".to_string()),
        ]
        .into(),
    );
    strip(&mut object);
    assert_eq!(object.metadata.managed_fields, None);
    assert_eq!(
        object.annotations().keys().collect::<Vec<_>>(),
        ["tenure.dev/facts"]
    );
}

#[test]
fn a_standby_caches_every_change_and_hands_them_on_only_once_it_leads() {
    let (index, mut feeds) = super::index();
    let mut everything = feeds.entitlements.subscribe();
    let grafana = entitlement("org-acme", "grafana", Some("acme"));
    feeds.entitlements.apply(&Event::Apply(grafana), false);
    let loki = entitlement("org-globex", "loki", Some("globex"));
    feeds.entitlements.apply(&Event::Apply(loki), false);
    assert_eq!(names(&index.entitlements_in("org-acme")), ["grafana"]);
    assert!(
        drained(&mut everything).is_empty(),
        "a standby queues nothing"
    );

    feeds.entitlements.deliver_all();
    assert_eq!(names(&drained(&mut everything)), ["grafana", "loki"]);
}

#[test]
fn a_batch_hands_on_each_waiting_object_once_those_waiting_longest_first() {
    let org = |name: &str| ObjectRef::<Organization>::new(name);
    let mut waiting = Waiting {
        order: Default::default(),
        members: HashSet::new(),
    };
    for name in ["a", "b", "a", "c"] {
        waiting.add(org(name));
    }
    assert_eq!(waiting.take(2), [org("a"), org("b")]);
    waiting.add(org("a"));
    assert_eq!(waiting.take(50), [org("c"), org("a")]);
    assert!(waiting.take(50).is_empty());
}

#[tokio::test]
async fn batches_hand_on_every_trigger_once() {
    let triggers = futures::stream::iter(["a", "b", "a", "c"].map(ObjectRef::<Organization>::new));
    let handed: Vec<_> = batched(triggers, std::time::Duration::from_secs(5), 2)
        .collect()
        .await;
    let names: Vec<_> = handed.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
}
