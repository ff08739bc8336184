//! One index of what the controller knows: a cache per kind, each filled by
//! the only watch of that kind, shared by every reconciler and every watch
//! mapper, and read through typed queries.
//!
//! A [`Feed`] writes each change into its cache first and then hands the
//! object to its subscribers (a controller's trigger, a watch mapper), so a
//! reconcile woken by a change never reads a cache that lags behind it. Unlike
//! kube-runtime's shared streams, a feed also hands on deleted objects (a hold
//! lifted wakes what it covered) and, after a relist, those that went while
//! the watch was down.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::api::policy::PolicyScope;
use crate::api::{
    DataExport, Entitlement, EntitlementClass, LifecyclePolicy, LifecycleWebhook, Organization,
    RetentionHold,
};
use crate::lifecycle::codes::{ClassPrefix, prefix_taken_by};
use crate::lifecycle::downstream::binds;
use crate::lifecycle::hold::Hold;
use crate::lifecycle::policy::{Subject, scope_matches};

/// What every watch of tenure's has delivered: read-only, cheap to query.
pub struct Index {
    organizations: Store<Organization>,
    entitlements: Store<Entitlement>,
    classes: Store<EntitlementClass>,
    policies: Store<LifecyclePolicy>,
    holds: Store<RetentionHold>,
    exports: Store<DataExport>,
    webhooks: Store<LifecycleWebhook>,
    namespaces: Store<Namespace>,
    /// Entitlements by the namespace they live in.
    entitlements_by_namespace: Arc<Lookup<Entitlement>>,
    /// Organizations by the tenant namespace they own or will own.
    organizations_by_tenant_namespace: Arc<Lookup<Organization>>,
    /// Organizations by the namespace their status records as owned.
    organizations_by_owned_namespace: Arc<Lookup<Organization>>,
}

/// Objects by a key computed from each (their namespace, say), kept up to
/// date by the feed as it writes the cache: a query by key reads the
/// objects that have it instead of every object of the kind.
pub struct Lookup<K: Resource> {
    key: fn(&K) -> Option<String>,
    keyed: std::sync::RwLock<LookupMaps<K>>,
}

struct LookupMaps<K: Resource> {
    by_key: HashMap<String, HashSet<ObjectRef<K>>>,
    key_of: HashMap<ObjectRef<K>, String>,
}

impl<K: Resource<DynamicType = ()>> Lookup<K> {
    fn new(key: fn(&K) -> Option<String>) -> Arc<Self> {
        Arc::new(Self {
            key,
            keyed: std::sync::RwLock::new(LookupMaps {
                by_key: HashMap::new(),
                key_of: HashMap::new(),
            }),
        })
    }

    /// Files `object` under its key now (or under none once `gone`).
    fn file(&self, object: &K, gone: bool) {
        let reference = ObjectRef::from_obj(object);
        let key = (self.key)(object).filter(|_| !gone);
        let mut maps = self.keyed.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = maps.key_of.remove(&reference)
            && let Some(filed) = maps.by_key.get_mut(&old)
        {
            filed.remove(&reference);
            if filed.is_empty() {
                maps.by_key.remove(&old);
            }
        }
        if let Some(key) = key {
            maps.by_key
                .entry(key.clone())
                .or_default()
                .insert(reference.clone());
            maps.key_of.insert(reference, key);
        }
    }

    /// The objects filed under `key`, as the cache holds them now.
    fn get(&self, key: &str, cache: &Store<K>) -> Vec<Arc<K>>
    where
        K: Clone,
    {
        let maps = self.keyed.read().unwrap_or_else(|p| p.into_inner());
        maps.by_key
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|reference| cache.get(reference))
            .collect()
    }
}

/// The watches that fill the [`Index`], one per kind.
pub struct Feeds {
    pub organizations: Feed<Organization>,
    pub entitlements: Feed<Entitlement>,
    pub classes: Feed<EntitlementClass>,
    pub policies: Feed<LifecyclePolicy>,
    pub holds: Feed<RetentionHold>,
    pub exports: Feed<DataExport>,
    pub webhooks: Feed<LifecycleWebhook>,
    pub namespaces: Feed<Namespace>,
}

/// An empty index and the feeds that fill it once run.
pub fn index() -> (Index, Feeds) {
    let entitlements_by_namespace = Lookup::new(|e: &Entitlement| e.namespace());
    let organizations_by_tenant_namespace =
        Lookup::new(|o: &Organization| Some(o.tenant_namespace()));
    let organizations_by_owned_namespace =
        Lookup::new(|o: &Organization| o.owned_namespace().map(String::from));
    let mut feeds = Feeds {
        organizations: Feed::default(),
        entitlements: Feed::default(),
        classes: Feed::default(),
        policies: Feed::default(),
        holds: Feed::default(),
        exports: Feed::default(),
        webhooks: Feed::default(),
        namespaces: Feed::default(),
    };
    let index = Index {
        organizations: feeds.organizations.reader(),
        entitlements: feeds.entitlements.reader(),
        classes: feeds.classes.reader(),
        policies: feeds.policies.reader(),
        holds: feeds.holds.reader(),
        exports: feeds.exports.reader(),
        webhooks: feeds.webhooks.reader(),
        namespaces: feeds.namespaces.reader(),
        entitlements_by_namespace: entitlements_by_namespace.clone(),
        organizations_by_tenant_namespace: organizations_by_tenant_namespace.clone(),
        organizations_by_owned_namespace: organizations_by_owned_namespace.clone(),
    };
    feeds.entitlements.lookups.push(entitlements_by_namespace);
    feeds.organizations.lookups = vec![
        organizations_by_tenant_namespace,
        organizations_by_owned_namespace,
    ];
    (index, feeds)
}

impl Feeds {
    /// Runs every watch for as long as the process does, filling the caches
    /// at once. Subscribers are handed changes only once `delivering` turns
    /// true (this process leads), starting with every object cached then:
    /// a standby keeps its caches warm and queues nothing. Subscribe first.
    pub async fn run(self, client: Client, delivering: tokio::sync::watch::Receiver<bool>) {
        futures::future::join(
            futures::future::join4(
                self.organizations.run(client.clone(), delivering.clone()),
                self.entitlements.run(client.clone(), delivering.clone()),
                self.classes.run(client.clone(), delivering.clone()),
                self.policies.run(client.clone(), delivering.clone()),
            ),
            futures::future::join4(
                self.holds.run(client.clone(), delivering.clone()),
                self.exports.run(client.clone(), delivering.clone()),
                self.webhooks.run(client.clone(), delivering.clone()),
                self.namespaces.run(client, delivering),
            ),
        )
        .await;
    }
}

/// The only watch of `K`: its cache, and who is told of each change.
pub struct Feed<K: Resource<DynamicType = ()> + Clone + 'static> {
    writer: Writer<K>,
    subscribers: Vec<Subscriber<K>>,
    /// Lookups by key, kept with the cache.
    lookups: Vec<Arc<Lookup<K>>>,
    /// Only objects whose labels match (`--shard-selector`): the API server
    /// filters, so that a shard caches only its own.
    labels: Option<String>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Default for Feed<K> {
    fn default() -> Self {
        Self {
            writer: Writer::default(),
            subscribers: Vec::new(),
            lookups: Vec::new(),
            labels: None,
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Feed<K> {
    /// Watches only the objects `selector` matches; one relabelled out of
    /// it goes from the cache as if deleted.
    pub fn only(&mut self, selector: Option<&str>) {
        self.labels = selector.map(String::from);
    }
}

/// What of an object a subscriber reacts to, as a fingerprint (see
/// [`fingerprint`]): a change that leaves it as it was is not handed on.
pub type Matters<K> = Box<dyn Fn(&K) -> u64 + Send + Sync>;

/// The fingerprint of what matters of an object.
pub fn fingerprint(what: impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(what)
}

/// One subscriber of a feed, and what it last saw of each object.
struct Subscriber<K: Resource> {
    sender: mpsc::UnboundedSender<Arc<K>>,
    matters: Option<Matters<K>>,
    seen: HashMap<ObjectRef<K>, u64>,
}

/// An object a watch event concerns; `gone`: deleted.
struct Change<K> {
    object: Arc<K>,
    gone: bool,
}

impl<K: Resource<DynamicType = ()>> Subscriber<K> {
    /// Hands `change` on if what matters to the subscriber changed (a new or
    /// deleted object always does); false once the subscriber is gone.
    fn offer(&mut self, change: &Change<K>) -> bool {
        let key = ObjectRef::from_obj(change.object.as_ref());
        let changed = match (&self.matters, change.gone) {
            (_, true) => {
                self.seen.remove(&key);
                true
            }
            (None, false) => true,
            (Some(matters), false) => {
                let now = matters(change.object.as_ref());
                self.seen.insert(key, now) != Some(now)
            }
        };
        !changed || self.sender.unbounded_send(change.object.clone()).is_ok()
    }
}

/// What tenure never reads of an object and need not keep in memory.
fn strip<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

impl<K> Feed<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn reader(&self) -> Store<K> {
        self.writer.as_reader()
    }

    /// Every object changed, created or deleted from now on. Unbounded, so a
    /// slow subscriber never holds up the cache or the others.
    pub fn subscribe(&mut self) -> mpsc::UnboundedReceiver<Arc<K>> {
        self.subscribe_with(None)
    }

    /// Objects created or deleted, and those whose fingerprint of what
    /// `matters` changed: a status write of tenure's own wakes only those
    /// who read what it changed.
    pub fn subscribe_to(
        &mut self,
        matters: impl Fn(&K) -> u64 + Send + Sync + 'static,
    ) -> mpsc::UnboundedReceiver<Arc<K>> {
        self.subscribe_with(Some(Box::new(matters)))
    }

    fn subscribe_with(&mut self, matters: Option<Matters<K>>) -> mpsc::UnboundedReceiver<Arc<K>> {
        let (sender, receiver) = mpsc::unbounded();
        self.subscribers.push(Subscriber {
            sender,
            matters,
            seen: HashMap::new(),
        });
        receiver
    }

    /// Writes one watch event into the cache and, when `delivering`, hands
    /// what it changed to the subscribers.
    fn apply(&mut self, event: &watcher::Event<K>, delivering: bool) {
        for change in self.changes(event) {
            for lookup in &self.lookups {
                lookup.file(&change.object, change.gone);
            }
            if delivering {
                self.subscribers.retain_mut(|s| s.offer(&change));
            }
        }
    }

    /// Hands every cached object to the subscribers, as if each had just
    /// been listed.
    fn deliver_all(&mut self) {
        for object in self.reader().state() {
            let change = Change {
                object,
                gone: false,
            };
            self.subscribers.retain_mut(|s| s.offer(&change));
        }
    }

    /// Writes one watch event into the cache; returns the objects it
    /// concerns, as the subscribers should see them.
    fn changes(&mut self, event: &watcher::Event<K>) -> Vec<Change<K>> {
        let reader = self.reader();
        let changed = |object| Change {
            object,
            gone: false,
        };
        match event {
            watcher::Event::Apply(object) => {
                self.writer.apply_watcher_event(event);
                let stored = reader.get(&ObjectRef::from_obj(object));
                stored.into_iter().map(changed).collect()
            }
            watcher::Event::Delete(object) => {
                self.writer.apply_watcher_event(event);
                vec![Change {
                    object: Arc::new(object.clone()),
                    gone: true,
                }]
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {
                self.writer.apply_watcher_event(event);
                Vec::new()
            }
            // A (re)list is complete: everything listed, and what went
            // while the watch was down.
            watcher::Event::InitDone => {
                let before = reader.state();
                self.writer.apply_watcher_event(event);
                let now = reader.state();
                let listed: HashSet<ObjectRef<K>> = now
                    .iter()
                    .map(|o| ObjectRef::from_obj(o.as_ref()))
                    .collect();
                let gone = before
                    .into_iter()
                    .filter(|o| !listed.contains(&ObjectRef::from_obj(o.as_ref())))
                    .map(|object| Change { object, gone: true });
                now.into_iter().map(changed).chain(gone).collect()
            }
        }
    }

    async fn run(mut self, client: Client, mut delivering: tokio::sync::watch::Receiver<bool>) {
        let config = match &self.labels {
            Some(selector) => watcher::Config::default().labels(selector),
            None => watcher::Config::default(),
        };
        let mut events = watcher(Api::<K>::all(client), config)
            .default_backoff()
            .modify(strip)
            .boxed();
        let mut delivered = *delivering.borrow_and_update();
        // Delivery only ever starts: a process that stops leading exits.
        let mut waiting = !delivered;
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => self.apply(&event, delivered),
                    Some(Err(error)) => {
                        warn!(kind = %K::kind(&()), %error, "watch failed; it is retried with backoff")
                    }
                    None => return,
                },
                started = delivering.wait_for(|on| *on), if waiting => {
                    waiting = false;
                    if started.is_ok() {
                        delivered = true;
                        self.deliver_all();
                    }
                }
            }
        }
    }
}

impl Index {
    /// Waits until every cache holds its first full list.
    pub async fn wait_until_ready(&self) -> anyhow::Result<()> {
        self.organizations.wait_until_ready().await?;
        self.entitlements.wait_until_ready().await?;
        self.classes.wait_until_ready().await?;
        self.policies.wait_until_ready().await?;
        self.holds.wait_until_ready().await?;
        self.exports.wait_until_ready().await?;
        self.webhooks.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        Ok(())
    }

    /// The caches the controllers of each kind schedule from.
    pub fn organizations(&self) -> Store<Organization> {
        self.organizations.clone()
    }
    pub fn entitlements(&self) -> Store<Entitlement> {
        self.entitlements.clone()
    }
    pub fn classes(&self) -> Store<EntitlementClass> {
        self.classes.clone()
    }
    pub fn policies(&self) -> Store<LifecyclePolicy> {
        self.policies.clone()
    }
    pub fn holds(&self) -> Store<RetentionHold> {
        self.holds.clone()
    }
    pub fn exports(&self) -> Store<DataExport> {
        self.exports.clone()
    }
    pub fn webhooks(&self) -> Store<LifecycleWebhook> {
        self.webhooks.clone()
    }

    pub fn organization(&self, name: &str) -> Option<Arc<Organization>> {
        self.organizations.get(&ObjectRef::new(name))
    }

    /// The organization that owns `namespace` (its status records it).
    pub fn organization_owning(&self, namespace: &str) -> Option<Arc<Organization>> {
        let owners = self
            .organizations_by_owned_namespace
            .get(namespace, &self.organizations);
        owners.into_iter().min_by_key(|org| org.name_any())
    }

    /// The organization whose tenant namespace is, or will be, `namespace`.
    pub fn organization_for_namespace(&self, namespace: &str) -> Option<ObjectRef<Organization>> {
        let tenants = self
            .organizations_by_tenant_namespace
            .get(namespace, &self.organizations);
        tenants
            .into_iter()
            .min_by_key(|org| org.name_any())
            .map(|org| ObjectRef::from_obj(org.as_ref()))
    }

    pub fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.namespaces.get(&ObjectRef::new(name))
    }

    pub fn class(&self, name: &str) -> Option<Arc<EntitlementClass>> {
        self.classes.get(&ObjectRef::new(name))
    }

    /// The class that owns `class`'s code prefix, when it is another.
    pub fn prefix_owner(&self, class: &EntitlementClass) -> Option<String> {
        let classes = self.classes.state();
        let prefixes: Vec<ClassPrefix> = classes.iter().map(|c| ClassPrefix::of(c)).collect();
        prefix_taken_by(&ClassPrefix::of(class), &prefixes).map(String::from)
    }

    pub fn all_policies(&self) -> Vec<Arc<LifecyclePolicy>> {
        self.policies.state()
    }

    pub fn entitlement(&self, namespace: &str, name: &str) -> Option<Arc<Entitlement>> {
        self.entitlements
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// The entitlements that live in `namespace`: an organization's are those
    /// in its tenant namespace.
    pub fn entitlements_in(&self, namespace: &str) -> Vec<Arc<Entitlement>> {
        self.entitlements_by_namespace
            .get(namespace, &self.entitlements)
    }

    fn entitlements_where(&self, matches: impl Fn(&Entitlement) -> bool) -> Vec<Arc<Entitlement>> {
        self.entitlements
            .state()
            .into_iter()
            .filter(|e| matches(e))
            .collect()
    }

    /// Entitlements of class `class`.
    pub fn entitlements_of_class(&self, class: &str) -> Vec<ObjectRef<Entitlement>> {
        refs(self.entitlements_where(|e| e.spec.class == class))
    }

    /// Entitlements that name `organization` or live in its namespace: those
    /// whose standing follows it.
    pub fn entitlements_of(&self, organization: &Organization) -> Vec<ObjectRef<Entitlement>> {
        let name = organization.name_any();
        let namespace = organization.tenant_namespace();
        refs(self.entitlements_where(|e| {
            e.spec.organization.as_deref() == Some(name.as_str())
                || e.namespace().as_deref() == Some(namespace.as_str())
        }))
    }

    /// Entitlements in `namespace` that bind an object with these labels.
    pub fn binders(
        &self,
        namespace: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Vec<Arc<Entitlement>> {
        let mut binders = self.entitlements_in(namespace);
        binders.retain(|e| binds(&e.name_any(), e.selector(), labels));
        binders
    }

    /// The entitlement other than `entitlement` that holds `code`, or pinned
    /// it first, as `namespace/name`.
    pub fn code_holder(&self, code: &str, entitlement: &Entitlement) -> Option<String> {
        let created = |e: &Entitlement| (e.creation_timestamp(), e.name_any());
        self.entitlements
            .find(|other| {
                other.uid() != entitlement.uid()
                    && (other.status.as_ref().and_then(|s| s.code.as_deref()) == Some(code)
                        || (other.spec.code.as_deref() == Some(code)
                            && created(other) < created(entitlement)))
            })
            .map(|other| {
                format!(
                    "{}/{}",
                    other.namespace().unwrap_or_default(),
                    other.name_any()
                )
            })
    }

    /// The DataExports that name `organization`.
    pub fn exports_of(&self, organization: &str) -> Vec<ObjectRef<DataExport>> {
        refs(
            self.exports
                .state()
                .into_iter()
                .filter(|e| e.spec.organization == organization)
                .collect(),
        )
    }

    /// The DataExports in `namespace`.
    pub fn exports_in(&self, namespace: &str) -> Vec<Arc<DataExport>> {
        self.exports
            .state()
            .into_iter()
            .filter(|e| e.namespace().as_deref() == Some(namespace))
            .collect()
    }

    /// A RetentionHold as the lifecycle reads it: the organization it names
    /// is looked up for its tenant namespace.
    pub fn as_hold(&self, hold: &RetentionHold) -> Hold {
        Hold::of(hold, |organization| {
            self.organization(organization)
                .map(|o| o.tenant_namespace())
        })
    }

    /// The holds (not being deleted) that `covers` says apply.
    fn holds_where(&self, covers: impl Fn(&Hold) -> bool) -> Vec<Hold> {
        self.holds
            .state()
            .iter()
            .filter(|h| h.metadata.deletion_timestamp.is_none())
            .map(|h| self.as_hold(h))
            .filter(|h| covers(h))
            .collect()
    }

    /// The holds covering `entitlement`.
    pub fn holds_covering_entitlement(&self, entitlement: &Entitlement) -> Vec<Hold> {
        self.holds_where(|h| covers_entitlement(h, entitlement))
    }

    /// The holds covering organization `name` with tenant namespace `namespace`.
    pub fn holds_covering_organization(&self, name: &str, namespace: &str) -> Vec<Hold> {
        self.holds_where(|h| h.covers_organization(name, namespace))
    }

    /// The entitlements `hold` covers.
    pub fn covered_entitlements(&self, hold: &RetentionHold) -> Vec<Arc<Entitlement>> {
        let hold = self.as_hold(hold);
        self.entitlements_where(|e| covers_entitlement(&hold, e))
    }

    /// The organizations `hold` covers.
    pub fn covered_organizations(&self, hold: &RetentionHold) -> Vec<ObjectRef<Organization>> {
        let hold = self.as_hold(hold);
        refs(
            self.organizations
                .state()
                .into_iter()
                .filter(|org| hold.covers_organization(&org.name_any(), &org.tenant_namespace()))
                .collect(),
        )
    }

    /// The holds naming organization `name`.
    pub fn holds_naming_organization(&self, name: &str) -> Vec<ObjectRef<RetentionHold>> {
        self.hold_refs(|h| h.spec.organization.as_deref() == Some(name))
    }

    /// The holds whose coverage lists `entitlement`: on it, and on the
    /// organization it names or lives in.
    pub fn holds_listing(&self, entitlement: &Entitlement) -> Vec<ObjectRef<RetentionHold>> {
        let namespace = entitlement.namespace().unwrap_or_default();
        let name = entitlement.name_any();
        let named = entitlement.spec.organization.as_deref();
        self.hold_refs(|h| match &h.spec.organization {
            Some(organization) => {
                named == Some(organization.as_str())
                    || self
                        .organization(organization)
                        .is_some_and(|o| o.tenant_namespace() == namespace)
            }
            None => h
                .spec
                .entitlement
                .as_ref()
                .is_some_and(|t| t.namespace == namespace && t.name == name),
        })
    }

    fn hold_refs(&self, matches: impl Fn(&RetentionHold) -> bool) -> Vec<ObjectRef<RetentionHold>> {
        refs(
            self.holds
                .state()
                .into_iter()
                .filter(|h| matches(h))
                .collect(),
        )
    }
}

/// Whether `hold` covers `entitlement`: the one rule, used for the cache
/// and for the live re-read before a delete.
pub fn covers_entitlement(hold: &Hold, entitlement: &Entitlement) -> bool {
    hold.covers_entitlement(
        &entitlement.namespace().unwrap_or_default(),
        &entitlement.name_any(),
        entitlement.spec.organization.as_deref(),
    )
}

fn refs<K: Resource<DynamicType = ()>>(objects: Vec<Arc<K>>) -> Vec<ObjectRef<K>> {
    objects
        .iter()
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Hands each object on at most once per `window`, at its end, and at most
/// `most` objects per window, those waiting longest first: many changes
/// that concern one object (an organization's entitlements converging) wake
/// it once, and a mass change (10,000 entitlements) wakes organizations at
/// a steady pace rather than all of them every window. The objects' own
/// deadlines are not delayed: they come by another way.
pub fn batched<K>(
    triggers: impl futures::Stream<Item = ObjectRef<K>> + Send + Unpin + 'static,
    window: std::time::Duration,
    most: usize,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    let waiting = Waiting {
        order: std::collections::VecDeque::new(),
        members: HashSet::new(),
    };
    let batches = futures::stream::unfold(
        (triggers, waiting),
        move |(mut triggers, mut waiting)| async move {
            if waiting.order.is_empty() {
                waiting.add(triggers.next().await?);
            }
            let window_ends = tokio::time::sleep(window);
            tokio::pin!(window_ends);
            loop {
                tokio::select! {
                    next = triggers.next() => match next {
                        Some(trigger) => waiting.add(trigger),
                        None => break,
                    },
                    () = &mut window_ends => break,
                }
            }
            let batch = waiting.take(most);
            Some((futures::stream::iter(batch), (triggers, waiting)))
        },
    );
    batches.flatten()
}

/// Objects waiting to be handed on, each once, in the order they came.
struct Waiting<K: Resource<DynamicType = ()>> {
    order: std::collections::VecDeque<ObjectRef<K>>,
    members: HashSet<ObjectRef<K>>,
}

impl<K: Resource<DynamicType = ()>> Waiting<K> {
    fn add(&mut self, object: ObjectRef<K>) {
        if self.members.insert(object.clone()) {
            self.order.push_back(object);
        }
    }

    fn take(&mut self, most: usize) -> Vec<ObjectRef<K>> {
        let batch: Vec<_> = self.order.drain(..most.min(self.order.len())).collect();
        for object in &batch {
            self.members.remove(object);
        }
        batch
    }
}

/// The scope each LifecyclePolicy had when last seen, for one watch mapper:
/// a policy whose scope changed re-decides what its old scope matched as well
/// as its new one.
#[derive(Default)]
pub struct PolicyScopes(Mutex<HashMap<String, Option<PolicyScope>>>);

impl PolicyScopes {
    /// Records the policy's scope now, and returns whether a change of it
    /// concerns `subject`: matched by the scope now or by the one before.
    pub fn changed(&self, policy: &LifecyclePolicy) -> impl Fn(&Subject) -> bool + use<> {
        let scope = policy.spec.scope.clone();
        let before = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(policy.name_any(), scope.clone());
        move |subject| {
            scope_matches(scope.as_ref(), subject)
                || before
                    .as_ref()
                    .is_some_and(|old| scope_matches(old.as_ref(), subject))
        }
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
