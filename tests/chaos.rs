//! A mass offboarding under faults, and the invariants that must hold
//! through it (issue 17): organizations and their entitlements, workloads
//! and data run out their payment graces, retentions, holds placed and
//! lifted, confirmations and final graces on a fast simulated clock, while
//! the controllers (a leader and a standby) are SIGKILLed, the API server
//! and etcd are restarted, and the controllers' traffic goes through a fault
//! proxy (hack/faultproxy) that adds latency, resets connections, holds them
//! until they time out and cuts watches. The checker then reads the API
//! server's audit log of deletes, what the API server holds (watched all
//! along) and the export directory.
//!
//! `cargo test --test chaos` runs a reduced schedule; `hack/chaos`
//! (TENURE_CHAOS=full) the full one: 100 organizations, 1,000 entitlements,
//! at least 50 kills. TENURE_CHAOS_SEED replays a fault schedule.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, SubsecRound, TimeDelta, Utc};
use common::*;
use serde_json::{Value, json};

/// Where the controllers' simulated clock starts.
const ORIGIN: &str = "2034-01-01T00:00:00Z";
/// tenure's identity in the tests (the chart's ServiceAccount).
const TENURE_USER: &str = "system:serviceaccount:tenure-system:tenure";
/// The label every object of a run carries: the controllers' shard selector.
const RUN_LABEL: &str = "tenure-chaos";

// The timeline, in simulated days after day 0 (when the facts take effect).
const PAYMENT_GRACE_DAYS: i64 = 3;
const RETENTION_DAYS: i64 = 6;
const FINAL_GRACE_DAYS: i64 = 4;
const CONFIRM_DAY: f64 = 3.0;
/// After the purge of an archived organization is announced (day 6), before
/// it comes (day 10).
const HOLD_WHILE_SCHEDULED_DAY: f64 = 7.0;
const LIFT_FIRST_HOLDS_DAY: f64 = 14.0;
const LIFT_SECOND_HOLDS_DAY: f64 = 16.0;
/// Faults stop here: past every deadline the facts set (day 20 at the latest).
const FAULTS_END_DAY: f64 = 22.0;

/// How big the run is and how many faults of each kind it injects.
struct Schedule {
    organizations: usize,
    entitlements_per_organization: usize,
    /// Real time per simulated day.
    day: Duration,
    faults: Vec<(Fault, usize)>,
    /// How long the proxy holds connections, and adds latency.
    hold: Duration,
    lease_seconds: u32,
    converge_within: Duration,
}

impl Schedule {
    fn from_env() -> Self {
        if std::env::var("TENURE_CHAOS").as_deref() == Ok("full") {
            Self {
                organizations: 100,
                entitlements_per_organization: 10,
                day: Duration::from_secs(15),
                faults: vec![
                    (Fault::KillLeader, 40),
                    (Fault::KillStandby, 15),
                    (Fault::FreezeLeader, 6),
                    (Fault::RestartApiServer, 4),
                    (Fault::RestartEtcd, 4),
                    (Fault::Latency, 12),
                    (Fault::ResetConnections, 12),
                    (Fault::HoldConnections, 8),
                    (Fault::CutWatches, 12),
                ],
                hold: Duration::from_secs(12),
                // A new leader of 1,000 entitlements loads this machine so
                // much (debug build, 2 cores) that 3 s renewals miss their
                // deadline: every leader stepped down within seconds.
                lease_seconds: 8,
                converge_within: Duration::from_secs(300),
            }
        } else {
            Self {
                organizations: 12,
                entitlements_per_organization: 5,
                day: Duration::from_millis(2500),
                faults: vec![
                    (Fault::KillLeader, 8),
                    (Fault::KillStandby, 2),
                    (Fault::FreezeLeader, 1),
                    (Fault::RestartApiServer, 1),
                    (Fault::RestartEtcd, 1),
                    (Fault::Latency, 2),
                    (Fault::ResetConnections, 2),
                    (Fault::HoldConnections, 2),
                    (Fault::CutWatches, 3),
                ],
                hold: Duration::from_secs(6),
                lease_seconds: 3,
                converge_within: Duration::from_secs(120),
            }
        }
    }

    fn rate(&self) -> f64 {
        86_400.0 / self.day.as_secs_f64()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    KillLeader,
    KillStandby,
    /// The leader stopped (SIGSTOP) for two Lease durations, then let run
    /// again: it wakes up believing it leads while the standby has taken
    /// over (a frozen VM, a stalled volume).
    FreezeLeader,
    RestartApiServer,
    RestartEtcd,
    Latency,
    ResetConnections,
    HoldConnections,
    CutWatches,
}

/// What happens to an organization, in turn for each one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Story {
    /// Disabled for non-payment; its purge waits for a confirmation that
    /// comes on day 3.
    ConfirmedNonPayment,
    /// Archived; an export of it runs meanwhile.
    Archived,
    /// Archived under a hold placed before, lifted on day 14.
    HeldThenLifted,
    /// Archived under a hold never lifted: never purged.
    HeldForever,
    /// Archived; a hold placed once its purge is announced, lifted on day 16.
    HeldWhileScheduled,
    /// Stays Active; some entitlements' payments fail and they are purged on
    /// their own (their bound objects deleted one by one), one under a hold.
    ActiveWithUnpaidEntitlements,
}

const STORIES: [Story; 6] = [
    Story::ConfirmedNonPayment,
    Story::Archived,
    Story::HeldThenLifted,
    Story::HeldForever,
    Story::HeldWhileScheduled,
    Story::ActiveWithUnpaidEntitlements,
];

impl Story {
    /// Whether its organization is purged in the end.
    fn purges(self) -> bool {
        !matches!(
            self,
            Story::HeldForever | Story::ActiveWithUnpaidEntitlements
        )
    }

    fn exported(self) -> bool {
        matches!(
            self,
            Story::Archived | Story::HeldForever | Story::ActiveWithUnpaidEntitlements
        )
    }
}

/// The harness's simulated time: the controllers' clock, continued across
/// every restart (each is started at the instant this clock reads then, so a
/// controller's clock never runs ahead of it).
struct SimClock {
    origin: DateTime<Utc>,
    wall_start: DateTime<Utc>,
    rate: f64,
    day0: DateTime<Utc>,
}

impl SimClock {
    fn at(&self, wall: DateTime<Utc>) -> DateTime<Utc> {
        let elapsed = (wall - self.wall_start).as_seconds_f64() * self.rate;
        self.origin + TimeDelta::microseconds((elapsed * 1e6) as i64)
    }

    fn now(&self) -> DateTime<Utc> {
        self.at(Utc::now())
    }

    fn wall(&self, simulated: DateTime<Utc>) -> DateTime<Utc> {
        let real = (simulated - self.origin).as_seconds_f64() / self.rate;
        self.wall_start + TimeDelta::microseconds((real * 1e6) as i64)
    }

    fn day(&self, day: f64) -> DateTime<Utc> {
        self.day0 + TimeDelta::seconds((day * 86_400.0) as i64)
    }

    fn days_since_day0(&self, simulated: DateTime<Utc>) -> f64 {
        (simulated - self.day0).as_seconds_f64() / 86_400.0
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn precise(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A deterministic pseudo-random sequence (SplitMix64), so that a seed
/// replays a fault schedule.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The hold the harness placed, and when it was in force (wall time): from
/// the moment its create returned until the moment its delete was sent.
struct PlacedHold {
    name: String,
    organization: Option<String>,
    entitlement: Option<(String, String)>,
    placed: DateTime<Utc>,
    lift_sent: Option<DateTime<Utc>>,
}

impl PlacedHold {
    fn in_force(&self, at: DateTime<Utc>) -> bool {
        at >= self.placed && self.lift_sent.is_none_or(|lifted| at < lifted)
    }
}

/// An organization of the run.
struct Org {
    name: String,
    namespace: String,
    story: Story,
    confirm_sent: Option<DateTime<Utc>>,
}

/// An object the harness created in a tenant namespace, and the entitlement
/// its label binds it to (none: a decoy, bound to nothing).
struct DataObject {
    resource: &'static str,
    namespace: String,
    name: String,
    bound_to: Option<String>,
}

/// One version of an organization as a watch delivered it.
struct OrgVersion {
    seen: DateTime<Utc>,
    resource_version: u64,
    final_purge_at: Option<DateTime<Utc>>,
    tombstone: Value,
}

#[derive(Default)]
struct EntitlementSeen {
    key: (String, String),
    codes: BTreeSet<String>,
    final_purge_at: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

/// What the watches delivered.
#[derive(Default)]
struct Observed {
    organizations: BTreeMap<String, Vec<OrgVersion>>,
    entitlements: BTreeMap<String, EntitlementSeen>,
    exports: BTreeMap<(String, String), Value>,
}

impl Observed {
    fn record(&mut self, object: &Value) {
        let seen = Utc::now();
        let meta = &object["metadata"];
        let name = meta["name"].as_str().unwrap_or_default().to_string();
        let namespace = meta["namespace"].as_str().unwrap_or_default().to_string();
        let date = |value: &Value| value.as_str().and_then(|s| s.parse().ok());
        match object["kind"].as_str() {
            Some("Organization") => self
                .organizations
                .entry(name)
                .or_default()
                .push(OrgVersion {
                    seen,
                    resource_version: meta["resourceVersion"]
                        .as_str()
                        .and_then(|rv| rv.parse().ok())
                        .unwrap_or_default(),
                    final_purge_at: date(&object["status"]["finalPurgeAt"]),
                    tombstone: object["status"]["tombstone"].clone(),
                }),
            Some("Entitlement") => {
                let uid = meta["uid"].as_str().unwrap_or_default().to_string();
                let entry = self.entitlements.entry(uid).or_default();
                entry.key = (namespace, name);
                if let Some(code) = object["status"]["code"].as_str() {
                    entry.codes.insert(code.to_string());
                }
                if let Some(at) = date(&object["status"]["deadlines"]["finalPurgeAt"]) {
                    entry.final_purge_at.push((seen, at));
                }
            }
            Some("DataExport") => {
                self.exports.insert((namespace, name), object.clone());
            }
            _ => {}
        }
    }
}

/// `kubectl get -w` of one kind of the run, restarted whenever it ends (an
/// API server restart ends it): each restart lists again.
struct Watch {
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(
        resource: &str,
        selector: &str,
        observed: Arc<Mutex<Observed>>,
        relists: Arc<AtomicUsize>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let child: Arc<Mutex<Option<Child>>> = Arc::default();
        let (resource, selector) = (resource.to_string(), selector.to_string());
        let thread = std::thread::spawn({
            let (stop, child) = (stop.clone(), child.clone());
            move || {
                while !stop.load(Ordering::SeqCst) {
                    let mut spawned = Command::new(repo().join(".cluster/bin/kubectl"))
                        .arg("--kubeconfig")
                        .arg(kubeconfig())
                        .args(["get", &resource, "-A", "-l", &selector, "-w", "-o", "json"])
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("kubectl runs");
                    let stdout = spawned.stdout.take().unwrap();
                    *child.lock().unwrap() = Some(spawned);
                    relists.fetch_add(1, Ordering::SeqCst);
                    let stream = serde_json::Deserializer::from_reader(BufReader::new(stdout))
                        .into_iter::<Value>();
                    for value in stream {
                        let Ok(value) = value else { break };
                        let mut observed = observed.lock().unwrap();
                        match value["items"].as_array() {
                            Some(items) => items.iter().for_each(|item| observed.record(item)),
                            None => observed.record(&value),
                        }
                    }
                    if let Some(mut ended) = child.lock().unwrap().take() {
                        let _ = ended.kill();
                        let _ = ended.wait();
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        });
        Self {
            stop,
            child,
            thread: Some(thread),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(child) = self.child.lock().unwrap().as_mut() {
            let _ = child.kill();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The fault proxy between the controllers and the API server.
struct Proxy {
    _process: Process,
    listen: u16,
    control: u16,
}

impl Proxy {
    fn start(upstream: u16) -> Self {
        let built = Command::new(repo().join("hack/faultproxy/build"))
            .stderr(Stdio::inherit())
            .output()
            .expect("hack/faultproxy/build runs");
        assert!(built.status.success(), "the fault proxy builds");
        let binary = String::from_utf8(built.stdout).unwrap().trim().to_string();
        let (listen, control) = (free_port(), free_port());
        let process = Process(
            Command::new(binary)
                .args(["-listen", &format!("127.0.0.1:{listen}")])
                .args(["-upstream", &format!("127.0.0.1:{upstream}")])
                .args(["-control", &format!("127.0.0.1:{control}")])
                .stderr(std::fs::File::create(repo().join(".cluster/logs/faultproxy.log")).unwrap())
                .spawn()
                .expect("the fault proxy starts"),
        );
        wait_for("the fault proxy", TIMEOUT, || http_get(control, "/stats"));
        Self {
            _process: process,
            listen,
            control,
        }
    }

    fn post(&self, path: &str) {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.control)).unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
    }

    fn stats(&self) -> Value {
        let (_, body) = http_get(self.control, "/stats").unwrap();
        serde_json::from_str(&body).unwrap()
    }
}

/// The API server's port, from the admin kubeconfig.
fn api_server_port() -> u16 {
    let admin = std::fs::read_to_string(kubeconfig()).unwrap();
    admin
        .lines()
        .find_map(|line| line.trim().strip_prefix("server: https://127.0.0.1:"))
        .and_then(|port| port.trim().parse().ok())
        .expect("the API server's port in the admin kubeconfig")
}

/// The chart ServiceAccount's kubeconfig, through the proxy.
fn kubeconfig_through(proxy: &Proxy) -> PathBuf {
    let direct = std::fs::read_to_string(controller_kubeconfig()).unwrap();
    let api = format!("https://127.0.0.1:{}", api_server_port());
    let through = direct.replace(&api, &format!("https://127.0.0.1:{}", proxy.listen));
    assert_ne!(through, direct, "the controller kubeconfig names {api}");
    let path = repo().join(".cluster/kubeconfig-chaos-proxy");
    std::fs::write(&path, through).unwrap();
    path
}

/// `hack/cluster restart <name>`: SIGKILL, start again, wait until ready.
fn restart(name: &str) {
    let status = Command::new(repo().join("hack/cluster"))
        .args(["restart", name])
        .env("TENURE_NODE", "0")
        .stdout(Stdio::null())
        .status()
        .expect("hack/cluster runs");
    assert!(status.success(), "hack/cluster restart {name}");
}

/// kubectl, retried while the API server restarts: the harness's own
/// writes must land whatever the faults.
fn kubectl_retrying(args: &[&str], stdin: Option<&str>) -> String {
    wait_for(&format!("kubectl {args:?}"), TIMEOUT, || {
        let out = kubectl_with_stdin(args, stdin);
        match out.status.success() {
            true => Ok(String::from_utf8(out.stdout).unwrap()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    })
}

fn apply_all(items: &[Value]) {
    for chunk in items.chunks(200) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": chunk}).to_string();
        kubectl_retrying(&["apply", "--server-side", "-f", "-"], Some(&list));
    }
}

fn create_all(items: &[Value]) {
    for chunk in items.chunks(200) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": chunk}).to_string();
        kubectl_retrying(&["create", "-f", "-"], Some(&list));
    }
}

/// The two controller replicas: each is started with the clock where the
/// harness's reads now, through the proxy, campaigning for one Lease.
struct Replicas {
    slots: [Option<Controller>; 2],
    spawned: usize,
    args: Vec<String>,
    kubeconfig: PathBuf,
    lease: String,
    run: String,
}

impl Replicas {
    fn spawn(&mut self, slot: usize, clock: &SimClock) {
        self.spawned += 1;
        let mut args = self.args.clone();
        args.extend(["--clock-start".into(), precise(clock.now())]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = format!("chaos-{}-{}", self.run, self.spawned);
        let kubeconfig = self.kubeconfig.to_str().unwrap();
        self.slots[slot] = Some(Controller::spawn_with_env(
            &args,
            &[("KUBECONFIG", kubeconfig)],
            &log,
        ));
    }

    /// Starts again any replica that exited by itself (a leader whose
    /// renewals stopped landing steps down and exits); how many did.
    fn supervise(&mut self, clock: &SimClock) -> usize {
        let mut exited = 0;
        for slot in 0..2 {
            if self.slots[slot].as_mut().is_none_or(Controller::has_exited) {
                exited += usize::from(self.slots[slot].is_some());
                self.spawn(slot, clock);
            }
        }
        exited
    }

    /// The slot of the replica holding the Lease, if one of ours does.
    fn leader(&self) -> Option<usize> {
        let out = kubectl(&[
            "get",
            "lease",
            &self.lease,
            "-n",
            CHART_NAMESPACE,
            "-o",
            "json",
        ]);
        let lease: Value = serde_json::from_slice(&out.stdout).ok()?;
        let holder = lease["spec"]["holderIdentity"].as_str()?;
        let pid: u32 = holder.rsplit('-').next()?.parse().ok()?;
        (0..2).find(|&slot| self.slots[slot].as_ref().is_some_and(|c| c.id() == pid))
    }

    /// The leader's slot, waiting up to `within` for one to take the Lease
    /// (replicas that exit meanwhile are started again).
    fn leader_within(&mut self, clock: &SimClock, within: Duration) -> Option<usize> {
        let deadline = Instant::now() + within;
        loop {
            self.supervise(clock);
            match self.leader() {
                Some(slot) => return Some(slot),
                None if Instant::now() >= deadline => return None,
                None => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn kill(&mut self, slot: usize, clock: &SimClock) {
        if let Some(controller) = self.slots[slot].take() {
            controller.kill();
        }
        self.spawn(slot, clock);
    }
}

/// A replica stopped with SIGSTOP, until when; let run again (SIGCONT)
/// when dropped, so that a failing run never leaves it stopped.
struct Frozen {
    pid: u32,
    until: Instant,
}

impl Frozen {
    fn stop(pid: u32, until: Instant) -> Self {
        let _ = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
        Frozen { pid, until }
    }

    /// Lets it run again (dropped: SIGCONT).
    fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // Killed meanwhile (a SIGKILL of the standby): nothing to do.
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid.to_string()])
            .status();
    }
}

/// Faults of each kind, checks of each invariant, and what broke.
#[derive(Default)]
struct Report {
    faults: BTreeMap<String, usize>,
    checks: BTreeMap<&'static str, usize>,
    violations: Vec<String>,
    figures: BTreeMap<&'static str, String>,
}

const NOT_EARLY: &str =
    "no delete before its announced finalPurgeAt (nor the facts' earliest date)";
const NOT_HELD: &str = "nothing deleted that a hold covered at the time";
const OWNED: &str = "nothing deleted without tenure's ownership label or binding";
const TOMBSTONE: &str = "every purged organization has one tombstone, written once";
const CODES: &str = "no two entitlements share a code, none changes its code";
const CONVERGED: &str = "every object converges to the phase its facts imply (tenure simulate)";
const EXPORTS: &str = "no export ZIP half-written, none Succeeded while corrupt (sha256)";

impl Report {
    fn fault(&mut self, what: &str) {
        println!("{} fault: {what}", precise(Utc::now()));
        *self.faults.entry(what.to_string()).or_default() += 1;
    }

    fn check(&mut self, invariant: &'static str, holds: bool, violation: impl FnOnce() -> String) {
        *self.checks.entry(invariant).or_default() += 1;
        if !holds {
            self.violations
                .push(format!("{invariant}: {}", violation()));
        }
    }

    fn print(&self) {
        println!("\n== chaos report ==");
        for (what, figure) in &self.figures {
            println!("  {what}: {figure}");
        }
        println!("faults injected:");
        for (fault, count) in &self.faults {
            println!("  {count:>5}  {fault}");
        }
        println!("invariants (checks, violations):");
        for invariant in [
            NOT_EARLY, NOT_HELD, OWNED, TOMBSTONE, CODES, CONVERGED, EXPORTS,
        ] {
            let violations = self
                .violations
                .iter()
                .filter(|v| v.starts_with(invariant))
                .count();
            let checks = self.checks.get(invariant).copied().unwrap_or_default();
            println!("  {checks:>6} checks, {violations} violations: {invariant}");
        }
        for violation in &self.violations {
            println!("VIOLATION {violation}");
        }
    }
}

/// The run's objects and what the harness did to them.
struct World {
    run: String,
    orgs: Vec<Org>,
    data: Vec<DataObject>,
    holds: Vec<PlacedHold>,
    /// What the simulation is given: every fact as last applied, by key.
    facts: BTreeMap<String, Value>,
    owned_namespaces: BTreeSet<String>,
    export_dir: PathBuf,
}

impl World {
    fn labels(&self) -> Value {
        json!({RUN_LABEL: self.run})
    }

    fn org_of_namespace(&self, namespace: &str) -> Option<&Org> {
        self.orgs.iter().find(|o| o.namespace == namespace)
    }

    fn remember(&mut self, object: &Value) {
        let key = format!(
            "{}/{}/{}",
            object["kind"].as_str().unwrap(),
            object["metadata"]["namespace"].as_str().unwrap_or(""),
            object["metadata"]["name"].as_str().unwrap()
        );
        self.facts.insert(key, object.clone());
    }

    fn organization(&self, org: &Org, offboarding_at: Option<DateTime<Utc>>) -> Value {
        let mut spec = json!({"displayName": format!("Chaos {}", org.name), "taxId": format!("TAX-{}", org.name)});
        if let Some(at) = offboarding_at {
            let (lifecycle, reason) = match org.story {
                Story::ConfirmedNonPayment => ("Disabled", "NonPayment"),
                _ => ("Archived", "CustomerRequest"),
            };
            spec["lifecycle"] = json!(lifecycle);
            spec["offboarding"] = json!({"reason": reason, "ticket": format!("CHAOS-{}", org.name), "effectiveAt": rfc3339(at)});
        }
        if org.confirm_sent.is_some() {
            spec["deletion"] = json!({"confirmName": org.name, "approval": {"by": "chaos@tenure.dev", "reference": "CHAOS"}});
        }
        json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Organization",
            "metadata": {"name": org.name, "labels": self.labels()},
            "spec": spec,
        })
    }

    fn hold(&self, name: &str, target: Value) -> Value {
        let mut spec = json!({"reason": "chaos: litigation", "ticket": "LEGAL-CHAOS"});
        spec.as_object_mut()
            .unwrap()
            .extend(target.as_object().unwrap().clone());
        json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "RetentionHold",
            "metadata": {"name": name, "labels": self.labels()}, "spec": spec,
        })
    }

    /// Creates the holds (name, target) in one go; each is in force from
    /// the moment the create returned.
    fn place_holds(&mut self, holds: Vec<(String, Value)>) {
        let objects: Vec<Value> = holds
            .iter()
            .map(|(name, target)| self.hold(name, target.clone()))
            .collect();
        create_all(&objects);
        let placed = Utc::now();
        objects.iter().for_each(|hold| self.remember(hold));
        for (name, target) in holds {
            self.holds.push(PlacedHold {
                name,
                organization: target["organization"].as_str().map(String::from),
                entitlement: target["entitlement"].as_object().map(|e| {
                    (
                        e["namespace"].as_str().unwrap().to_string(),
                        e["name"].as_str().unwrap().to_string(),
                    )
                }),
                placed,
                lift_sent: None,
            });
        }
    }

    fn lift_holds_of(&mut self, story: Story) {
        let orgs: BTreeSet<String> = self
            .orgs
            .iter()
            .filter(|o| o.story == story)
            .map(|o| o.name.clone())
            .collect();
        let mut lifted = Vec::new();
        for hold in &mut self.holds {
            if hold.organization.as_ref().is_some_and(|o| orgs.contains(o)) {
                hold.lift_sent = Some(Utc::now());
                let gone = kubectl(&["delete", "retentionhold", &hold.name, "--wait=false"]);
                if !gone.status.success() {
                    kubectl_retrying(
                        &[
                            "delete",
                            "retentionhold",
                            &hold.name,
                            "--ignore-not-found",
                            "--wait=false",
                        ],
                        None,
                    );
                }
                lifted.push(format!("RetentionHold//{}", hold.name));
            }
        }
        for key in lifted {
            self.facts.remove(&key);
        }
    }
}

/// Creates the organizations (Active), waits for their namespaces, fills
/// them with entitlements, workloads and data, then sets the facts that
/// start the offboarding on day 0.
fn set_up(world: &mut World, schedule: &Schedule, clock: &mut SimClock) {
    let policies: Vec<Value> = world
        .orgs
        .iter()
        .map(|org| {
            json!({
                "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecyclePolicy",
                "metadata": {"name": format!("{}-policy", org.name), "labels": world.labels()},
                "spec": {
                    "scope": {"organization": org.name},
                    "payment": {"graceDays": PAYMENT_GRACE_DAYS},
                    "cancellation": {"dataRetentionDays": RETENTION_DAYS},
                    "organization": {"disabledRetentionDays": RETENTION_DAYS},
                    "purge": {
                        "finalGraceDays": FINAL_GRACE_DAYS,
                        "requireConfirmation": org.story == Story::ConfirmedNonPayment,
                    },
                },
            })
        })
        .collect();
    apply_all(&policies);
    policies.iter().for_each(|p| world.remember(p));
    let organizations: Vec<Value> = world
        .orgs
        .iter()
        .map(|org| world.organization(org, None))
        .collect();
    apply_all(&organizations);

    wait_for("every tenant namespace", Duration::from_secs(180), || {
        let namespaces = get_json(&["namespaces", "-l", ORGANIZATION_LABEL])?;
        let owned: BTreeSet<String> = namespaces["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ns| ns["metadata"]["name"].as_str().map(String::from))
            .collect();
        let missing = world
            .orgs
            .iter()
            .filter(|o| !owned.contains(&o.namespace))
            .count();
        world.owned_namespaces = owned;
        (missing == 0)
            .then_some(())
            .ok_or(format!("{missing} missing"))
    });

    let mut entitlements = Vec::new();
    let mut objects = Vec::new();
    for org in &world.orgs {
        for i in 0..schedule.entitlements_per_organization {
            let name = format!("ent-{i}");
            let class = ["environment", "plugin", "service"][i % 3];
            entitlements.push(json!({
                "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
                "metadata": {"name": name, "namespace": org.namespace, "labels": world.labels()},
                "spec": {"organization": org.name, "class": class, "product": format!("product-{i}")},
            }));
            let bound = json!({ENTITLEMENT_LABEL: name});
            let meta = |suffix: &str| json!({"name": format!("{name}-{suffix}"), "namespace": org.namespace, "labels": bound});
            objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("config"), "data": {"invoices": "42"}}));
            if class == "environment" {
                objects.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta("secret"), "stringData": {"token": "t"}}));
                objects.push(json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta("data"),
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }));
                objects.push(json!({
                    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"),
                    "spec": {
                        "replicas": 1,
                        "selector": {"matchLabels": {"app": format!("{name}-web")}},
                        "template": {
                            "metadata": {"labels": {"app": format!("{name}-web")}},
                            "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
                        },
                    },
                }));
            }
        }
        // Decoys: bound to no entitlement, never deleted but with the namespace.
        objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unbound-notes", "namespace": org.namespace}, "data": {"k": "v"}}));
        objects.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unbound-secret", "namespace": org.namespace, "labels": {ENTITLEMENT_LABEL: "no-such-entitlement"}}, "stringData": {"k": "v"}}));
    }
    create_all(&entitlements);
    create_all(&objects);
    entitlements.iter().for_each(|e| world.remember(e));
    world.remember_objects(&objects);

    // The holds in force from the start, placed before any fact is due.
    let holds: Vec<(String, Value)> = world
        .orgs
        .iter()
        .filter_map(|org| match org.story {
            Story::HeldThenLifted | Story::HeldForever => Some((
                format!("{}-hold", org.name),
                json!({"organization": org.name}),
            )),
            Story::ActiveWithUnpaidEntitlements => Some((
                format!("{}-ent-0-hold", org.name),
                json!({"entitlement": {"namespace": org.namespace, "name": "ent-0"}}),
            )),
            _ => None,
        })
        .collect();
    world.place_holds(holds);
    // Day 0 comes once setting the facts is surely done (two simulated
    // days, 8 s at least): the offboardings are facts that take effect at a
    // known instant.
    let margin = (schedule.day * 2).max(Duration::from_secs(8));
    clock.day0 = clock
        .at(Utc::now() + TimeDelta::from_std(margin).unwrap())
        .trunc_subsecs(0);
    let day0 = clock.day0;
    let offboarded: Vec<Value> = world
        .orgs
        .iter()
        .filter(|o| o.story != Story::ActiveWithUnpaidEntitlements)
        .map(|org| world.organization(org, Some(day0)))
        .collect();
    apply_all(&offboarded);
    offboarded.iter().for_each(|o| world.remember(o));
    let active: Vec<Value> = world
        .orgs
        .iter()
        .filter(|o| o.story == Story::ActiveWithUnpaidEntitlements)
        .map(|org| world.organization(org, None))
        .collect();
    active.iter().for_each(|o| world.remember(o));
    // In an Active organization, the payments of the environment
    // entitlements fail on day 0: suspended, cancelled after the payment
    // grace, purged after the retention and the final grace.
    let mut unpaid = Vec::new();
    for org in world
        .orgs
        .iter()
        .filter(|o| o.story == Story::ActiveWithUnpaidEntitlements)
    {
        for i in (0..schedule.entitlements_per_organization).step_by(3) {
            let mut entitlement =
                world.facts[&format!("Entitlement/{}/ent-{i}", org.namespace)].clone();
            entitlement["spec"]["payment"] = json!({"failedAt": rfc3339(day0)});
            unpaid.push(entitlement);
        }
    }
    apply_all(&unpaid);
    unpaid.iter().for_each(|e| world.remember(e));
    assert!(
        clock.now() < day0,
        "setting the facts took longer than {margin:?}"
    );
}

const ORGANIZATION_LABEL: &str = "tenure.dev/organization";
const ENTITLEMENT_LABEL: &str = "tenure.dev/entitlement";

impl World {
    fn remember_objects(&mut self, objects: &[Value]) {
        for object in objects {
            let resource = match object["kind"].as_str().unwrap() {
                "ConfigMap" => "configmaps",
                "Secret" => "secrets",
                "PersistentVolumeClaim" => "persistentvolumeclaims",
                "Deployment" => "deployments",
                other => panic!("no resource for {other}"),
            };
            let meta = &object["metadata"];
            let bound_to = meta["labels"][ENTITLEMENT_LABEL]
                .as_str()
                .filter(|e| *e != "no-such-entitlement")
                .map(String::from);
            self.data.push(DataObject {
                resource,
                namespace: meta["namespace"].as_str().unwrap().to_string(),
                name: meta["name"].as_str().unwrap().to_string(),
                bound_to,
            });
        }
    }
}

/// Hashes every Succeeded export's ZIP that is still there and compares it
/// with what its status reports (a ZIP removed meanwhile, by the purge or
/// the expiry, is skipped here and accounted for at the end).
fn check_export_zips(observed: &Mutex<Observed>, report: &mut Report) {
    let succeeded: Vec<Value> = observed
        .lock()
        .unwrap()
        .exports
        .values()
        .filter(|e| e["status"]["phase"] == "Succeeded")
        .cloned()
        .collect();
    for export in succeeded {
        let artifact = &export["status"]["artifact"];
        let Some(path) = artifact["uri"]
            .as_str()
            .and_then(|u| u.strip_prefix("file://"))
        else {
            report.check(EXPORTS, false, || {
                format!("Succeeded without a file artifact: {artifact}")
            });
            continue;
        };
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let matches = |bytes: &[u8], artifact: &Value| {
            artifact["sha256"].as_str() == Some(sha256_hex(bytes).as_str())
                && artifact["sizeBytes"].as_u64() == Some(bytes.len() as u64)
        };
        let mut good = matches(&bytes, artifact);
        if !good {
            // Read both again: a re-run may have replaced the ZIP and its
            // status between the watch event and the read.
            let meta = &export["metadata"];
            let fresh = get_json(&[
                "-n",
                meta["namespace"].as_str().unwrap(),
                "dataexport",
                meta["name"].as_str().unwrap(),
            ]);
            good = match (fresh, std::fs::read(path)) {
                (Ok(fresh), Ok(bytes)) => matches(&bytes, &fresh["status"]["artifact"]),
                _ => true,
            };
        }
        report.check(EXPORTS, good, || {
            format!("{path}: its sha256 or size differs from {artifact}")
        });
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => files_under(&entry.path()),
            _ => vec![entry.path()],
        })
        .collect()
}

/// A delete the API server's audit log recorded: its RequestReceived
/// instant (logged before the delete runs) and its response code.
struct AuditedDelete {
    at: DateTime<Utc>,
    user: String,
    verb: String,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    code: Option<i64>,
}

fn audited_deletes(since: DateTime<Utc>) -> Vec<AuditedDelete> {
    let log = std::fs::read_to_string(repo().join(".cluster/logs/audit.log")).unwrap_or_default();
    let mut by_id: BTreeMap<String, AuditedDelete> = BTreeMap::new();
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(at) = event["requestReceivedTimestamp"]
            .as_str()
            .and_then(|s| s.parse::<DateTime<Utc>>().ok())
        else {
            continue;
        };
        if at < since {
            continue;
        }
        let id = event["auditID"].as_str().unwrap_or_default().to_string();
        let object = &event["objectRef"];
        let entry = by_id.entry(id).or_insert_with(|| AuditedDelete {
            at,
            user: event["user"]["username"]
                .as_str()
                .unwrap_or_default()
                .into(),
            verb: event["verb"].as_str().unwrap_or_default().into(),
            resource: object["resource"].as_str().unwrap_or_default().into(),
            namespace: object["namespace"].as_str().map(String::from),
            name: object["name"].as_str().map(String::from),
            code: None,
        });
        if let Some(code) = event["responseStatus"]["code"].as_i64() {
            entry.code = Some(code);
        }
    }
    by_id.into_values().collect()
}

/// The earliest instant the facts allow the purge of `org` (simulated), by
/// the harness's own reckoning from what it applied and when; None: never.
fn earliest_org_purge(org: &Org, world: &World, clock: &SimClock) -> Option<DateTime<Utc>> {
    let grace = TimeDelta::days(FINAL_GRACE_DAYS);
    let retention_over = clock.day0 + TimeDelta::days(RETENTION_DAYS);
    let lifted = || {
        world
            .holds
            .iter()
            .filter(|h| h.organization.as_deref() == Some(org.name.as_str()))
            .map(|h| h.lift_sent.map(|at| clock.at(at)))
            .max()
            .flatten()
    };
    match org.story {
        Story::ConfirmedNonPayment => Some(retention_over.max(clock.at(org.confirm_sent?)) + grace),
        Story::Archived | Story::HeldWhileScheduled => Some(retention_over + grace),
        Story::HeldThenLifted => Some(retention_over.max(lifted()? + grace)),
        Story::HeldForever | Story::ActiveWithUnpaidEntitlements => None,
    }
}

/// The last finalPurgeAt an organization's status showed before `wall`.
fn announced_org_purge(
    observed: &Observed,
    org: &str,
    wall: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    observed
        .organizations
        .get(org)?
        .iter()
        .filter(|v| v.seen <= wall)
        .filter_map(|v| v.final_purge_at)
        .next_back()
}

/// Checks every delete of the run the audit log holds, and accounts for
/// every object the harness created that is gone.
fn check_deletes(
    world: &World,
    observed: &Observed,
    clock: &SimClock,
    since: DateTime<Utc>,
    report: &mut Report,
) {
    let deletes = audited_deletes(since);
    let ours = |d: &AuditedDelete| d.user == TENURE_USER;
    let mut namespace_deleted: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut object_deleted: BTreeSet<(String, String, String)> = BTreeSet::new();
    let tenure_deletes: Vec<&AuditedDelete> = deletes.iter().filter(|d| ours(d)).collect();
    report.figures.insert(
        "deletes audited (all users, since the run started)",
        deletes.len().to_string(),
    );
    report.figures.insert(
        "deletes by tenure audited",
        tenure_deletes.len().to_string(),
    );
    for delete in tenure_deletes {
        let what = format!(
            "{} {}/{}/{} at {} (simulated {}), code {:?}",
            delete.verb,
            delete.resource,
            delete.namespace.as_deref().unwrap_or(""),
            delete.name.as_deref().unwrap_or(""),
            precise(delete.at),
            rfc3339(clock.at(delete.at)),
            delete.code
        );
        let simulated = clock.at(delete.at);
        // Only a refusal (4xx) says it did not happen: a delete that timed
        // out (504 while etcd restarts) or whose API server died before
        // answering may still have been carried out.
        let took_effect = !delete.code.is_some_and(|c| (400..500).contains(&c));
        match (
            delete.resource.as_str(),
            delete.namespace.as_deref(),
            delete.name.as_deref(),
        ) {
            // The audit log names a namespace as its own namespace too.
            ("namespaces", _, Some(namespace)) => {
                let Some(org) = world.org_of_namespace(namespace) else {
                    report.check(OWNED, false, || {
                        format!("not a namespace of the run: {what}")
                    });
                    continue;
                };
                if took_effect {
                    namespace_deleted
                        .entry(namespace.to_string())
                        .or_insert(delete.at);
                }
                report.check(OWNED, world.owned_namespaces.contains(namespace), || {
                    format!("the namespace had no {ORGANIZATION_LABEL} label: {what}")
                });
                let announced = announced_org_purge(observed, &org.name, delete.at);
                report.check(
                    NOT_EARLY,
                    announced.is_some_and(|at| simulated >= at),
                    || format!("announced finalPurgeAt {announced:?}: {what}"),
                );
                let earliest = earliest_org_purge(org, world, clock);
                report.check(
                    NOT_EARLY,
                    earliest.is_some_and(|at| simulated >= at),
                    || format!("the facts allow it from {earliest:?} only: {what}"),
                );
                // Holds on the organization, and on any entitlement in its namespace.
                for hold in &world.holds {
                    let covers = hold.organization.as_deref() == Some(org.name.as_str())
                        || hold
                            .entitlement
                            .as_ref()
                            .is_some_and(|(ns, _)| ns == namespace);
                    if covers {
                        report.check(NOT_HELD, !hold.in_force(delete.at), || {
                            format!("RetentionHold {} in force: {what}", hold.name)
                        });
                    }
                }
            }
            ("networkpolicies", Some(_), Some("tenure-access-disabled")) => {
                report.check(OWNED, true, String::new);
            }
            (resource, Some(namespace), Some(name)) => {
                let Some(object) = world
                    .data
                    .iter()
                    .find(|o| o.resource == resource && o.namespace == namespace && o.name == name)
                else {
                    report.check(OWNED, false, || format!("not an object of the run: {what}"));
                    continue;
                };
                if took_effect {
                    object_deleted.insert((resource.into(), namespace.into(), name.into()));
                }
                let Some(entitlement) = &object.bound_to else {
                    report.check(OWNED, false, || format!("bound to no entitlement: {what}"));
                    continue;
                };
                report.check(OWNED, true, String::new);
                let seen = observed
                    .entitlements
                    .values()
                    .find(|e| e.key == (namespace.to_string(), entitlement.clone()));
                let announced = seen.and_then(|e| {
                    e.final_purge_at
                        .iter()
                        .filter(|(seen, _)| *seen <= delete.at)
                        .map(|(_, at)| *at)
                        .next_back()
                });
                report.check(
                    NOT_EARLY,
                    announced.is_some_and(|at| simulated >= at),
                    || format!("{entitlement}'s announced finalPurgeAt {announced:?}: {what}"),
                );
                let earliest = clock.day0
                    + TimeDelta::days(PAYMENT_GRACE_DAYS + RETENTION_DAYS + FINAL_GRACE_DAYS);
                let unpaid = world
                    .org_of_namespace(namespace)
                    .is_some_and(|o| o.story == Story::ActiveWithUnpaidEntitlements);
                report.check(NOT_EARLY, unpaid && simulated >= earliest, || {
                    format!(
                        "the facts allow it from {} only (if at all): {what}",
                        rfc3339(earliest)
                    )
                });
                for hold in &world.holds {
                    let org = world.org_of_namespace(namespace).map(|o| o.name.as_str());
                    let covers = hold.organization.as_deref() == org
                        || hold.entitlement == Some((namespace.to_string(), entitlement.clone()));
                    if covers {
                        report.check(NOT_HELD, !hold.in_force(delete.at), || {
                            format!("RetentionHold {} in force: {what}", hold.name)
                        });
                    }
                }
            }
            _ => report.check(OWNED, false, || format!("unexpected: {what}")),
        }
    }
    // Whatever the harness created and is gone went with a namespace tenure
    // deleted, or was deleted by tenure itself (checked above).
    let present: BTreeSet<(String, String, String)> = [
        "configmaps",
        "secrets",
        "persistentvolumeclaims",
        "deployments",
    ]
    .iter()
    .flat_map(|resource| {
        let list = get_json(&[resource, "-A", "-o", "json"]).unwrap_or_default();
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(move |o| {
                (
                    resource.to_string(),
                    o["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
    })
    .collect();
    for object in &world.data {
        let key = (
            object.resource.to_string(),
            object.namespace.clone(),
            object.name.clone(),
        );
        let accounted = present.contains(&key)
            || object_deleted.contains(&key)
            || namespace_deleted.contains_key(&object.namespace);
        report.check(OWNED, accounted, || {
            format!(
                "{}/{}/{} is gone, and tenure deleted neither it nor its namespace",
                key.0, key.1, key.2
            )
        });
    }
}

/// One tombstone per purged organization, never rewritten nor removed; one
/// `Purged` in its history.
fn check_tombstones(world: &World, observed: &Observed, report: &mut Report) {
    let selector = format!("{RUN_LABEL}={}", world.run);
    let organizations = get_json(&["organizations", "-l", &selector]).unwrap_or_default();
    for organization in organizations["items"].as_array().into_iter().flatten() {
        let status = &organization["status"];
        if status["phase"] != "Purged" {
            continue;
        }
        let purged_entries = status["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["event"] == "Purged")
            .count();
        report.check(
            TOMBSTONE,
            status["tombstone"].is_object() && purged_entries == 1,
            || {
                format!(
                    "organization {} Purged with tombstone {} and {purged_entries} Purged in its history",
                    organization["metadata"]["name"], status["tombstone"]
                )
            },
        );
    }
    for org in &world.orgs {
        let mut versions: Vec<&OrgVersion> = observed
            .organizations
            .get(&org.name)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        versions.sort_by_key(|v| v.resource_version);
        let mut first: Option<&Value> = None;
        for version in versions {
            let tombstone = &version.tombstone;
            let holds = match (first, tombstone.is_null()) {
                (None, true) => true,
                (None, false) => {
                    first = Some(tombstone);
                    true
                }
                (Some(first), _) => first == tombstone,
            };
            report.check(TOMBSTONE, holds, || {
                format!(
                    "organization {} at resourceVersion {}: tombstone {tombstone} after {}",
                    org.name,
                    version.resource_version,
                    first.cloned().unwrap_or_default()
                )
            });
        }
    }
}

fn check_codes(observed: &Observed, report: &mut Report) {
    let mut owners: BTreeMap<&String, Vec<&(String, String)>> = BTreeMap::new();
    for seen in observed.entitlements.values() {
        report.check(CODES, seen.codes.len() <= 1, || {
            format!("{:?} had codes {:?}", seen.key, seen.codes)
        });
        for code in &seen.codes {
            owners.entry(code).or_default().push(&seen.key);
        }
    }
    for (code, entitlements) in owners {
        report.check(CODES, entitlements.len() == 1, || {
            format!("{code} is the code of {entitlements:?}")
        });
    }
}

/// (kind, namespace, name) of an Organization or Entitlement.
type ObjectKey = (String, String, String);

/// What `tenure simulate` says every object of the run should be now, from
/// the facts as last applied: (kind, namespace, name) -> phase.
fn simulated_phases(world: &World, clock: &SimClock) -> BTreeMap<ObjectKey, String> {
    let dir = repo().join(format!(".cluster/chaos-{}", world.run));
    std::fs::create_dir_all(&dir).unwrap();
    let manifests = dir.join("facts.yaml");
    let documents: Vec<String> = world.facts.values().map(Value::to_string).collect();
    std::fs::write(&manifests, documents.join("\n---\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tenure"))
        .args(["simulate", "-f"])
        .arg(&manifests)
        .args([
            "--from",
            ORIGIN,
            "--until",
            &rfc3339(clock.now()),
            "-o",
            "json",
        ])
        .output()
        .expect("tenure simulate runs");
    assert!(
        out.status.success(),
        "tenure simulate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let simulation: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        simulation["unsettled"].is_null(),
        "the simulation did not settle: {}",
        simulation["unsettled"]
    );
    simulation["atTheEnd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let key = (
                s["kind"].as_str().unwrap().to_string(),
                s["namespace"].as_str().unwrap_or("").to_string(),
                s["name"].as_str().unwrap().to_string(),
            );
            (key, s["phase"].as_str().unwrap().to_string())
        })
        .collect()
}

/// The run's organizations and entitlements as the API server holds them:
/// (kind, namespace, name) -> phase, and whether each is current (its
/// status describes its latest generation).
fn actual_phases(run: &str) -> Result<BTreeMap<ObjectKey, (String, bool)>, String> {
    let selector = format!("{RUN_LABEL}={run}");
    let mut phases = BTreeMap::new();
    for (kind, resource) in [
        ("Organization", "organizations"),
        ("Entitlement", "entitlements"),
    ] {
        let list = get_json(&[resource, "-A", "-l", &selector])?;
        for object in list["items"].as_array().into_iter().flatten() {
            let meta = &object["metadata"];
            let key = (
                kind.to_string(),
                meta["namespace"].as_str().unwrap_or("").to_string(),
                meta["name"].as_str().unwrap_or("").to_string(),
            );
            let current = object["status"]["observedGeneration"] == meta["generation"];
            let phase = object["status"]["phase"].as_str().unwrap_or("").to_string();
            phases.insert(key, (phase, current));
        }
    }
    Ok(phases)
}

/// Waits until every object of the run is in the phase the simulation
/// gives it (an entitlement the simulation deletes with its namespace is
/// gone), and counts the comparisons of the last, converged round.
fn check_convergence(
    world: &World,
    clock: &SimClock,
    replicas: &mut Replicas,
    within: Duration,
    report: &mut Report,
) {
    let started = Instant::now();
    let mut last = Vec::new();
    let mut compared = 0;
    let mut exits = 0;
    while started.elapsed() < within {
        // A leader whose renewals stopped landing in the last faults steps
        // down and exits: it is started again, as its Deployment would.
        exits += replicas.supervise(clock);
        let expected = simulated_phases(world, clock);
        let actual = match actual_phases(&world.run) {
            Ok(actual) => actual,
            Err(error) => {
                last = vec![error];
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        compared = expected.len();
        last = expected
            .iter()
            .filter_map(|(key, phase)| {
                let found = actual.get(key);
                let agrees = match (phase.as_str(), found) {
                    ("Deleted", None) => true,
                    (phase, Some((actual, true))) => phase == actual,
                    _ => false,
                };
                (!agrees).then(|| {
                    format!("{key:?}: simulate says {phase}, the API server holds {found:?}")
                })
            })
            .collect();
        if last.is_empty() {
            break;
        }
        // Each round simulates and lists everything: space them out, so as
        // not to load the machine the replicas converge on.
        std::thread::sleep(Duration::from_secs(4));
    }
    let final_phases = simulated_phases(world, clock);
    let mut by_phase: BTreeMap<String, usize> = BTreeMap::new();
    for ((kind, _, _), phase) in &final_phases {
        *by_phase.entry(format!("{kind} {phase}")).or_default() += 1;
    }
    report
        .figures
        .insert("phases at the end (simulate)", format!("{by_phase:?}"));
    report.figures.insert(
        "converged after faults stopped",
        format!(
            "{:.1}s ({exits} replicas that stepped down meanwhile started again)",
            started.elapsed().as_secs_f64()
        ),
    );
    *report.checks.entry(CONVERGED).or_default() += compared.saturating_sub(last.len());
    for disagreement in last {
        report.check(CONVERGED, false, || disagreement);
    }
}

/// At the end: no partial ZIP anywhere, no ZIP that no Succeeded export
/// names (the purge removes an organization's ZIPs), and every Succeeded
/// export of an organization not purged still has its ZIP, intact.
fn check_export_files(world: &World, observed: &Mutex<Observed>, report: &mut Report) {
    check_export_zips(observed, report);
    let exports = observed.lock().unwrap().exports.clone();
    let named: BTreeMap<String, &Value> = exports
        .values()
        .filter(|e| e["status"]["phase"] == "Succeeded")
        .filter_map(|e| {
            let path = e["status"]["artifact"]["uri"]
                .as_str()?
                .strip_prefix("file://")?;
            Some((path.to_string(), e))
        })
        .collect();
    for file in files_under(&world.export_dir) {
        let path = file.to_string_lossy().into_owned();
        report.check(EXPORTS, !path.ends_with(".partial"), || {
            format!("a half-written ZIP was left: {path}")
        });
        if path.ends_with(".zip") {
            report.check(EXPORTS, named.contains_key(&path), || {
                format!("no Succeeded DataExport names {path}")
            });
        }
    }
    let purged = |namespace: &str| {
        world
            .org_of_namespace(namespace)
            .is_some_and(|o| o.story.purges())
    };
    for ((namespace, name), export) in &exports {
        report.check(
            EXPORTS,
            export["status"]["phase"] != "Running" || purged(namespace),
            || {
                format!(
                    "DataExport {namespace}/{name} still Running: {}",
                    export["status"]
                )
            },
        );
        if export["status"]["phase"] == "Succeeded" && !purged(namespace) {
            let path = export["status"]["artifact"]["uri"]
                .as_str()
                .unwrap_or_default();
            let path = path.strip_prefix("file://").unwrap_or(path);
            report.check(EXPORTS, Path::new(path).exists(), || {
                format!("DataExport {namespace}/{name} Succeeded, its ZIP {path} is gone")
            });
        }
    }
}

/// Deletes the run's objects when dropped, whether the test passed or not:
/// declared after the replicas, so that they still run meanwhile and let go
/// of the entitlements' finalizers (organizations not purged are let go of
/// by hand). Best effort, never panicking: it may run while unwinding.
struct CleanUp {
    run: String,
    namespaces: Vec<String>,
    export_dir: PathBuf,
}

impl Drop for CleanUp {
    fn drop(&mut self) {
        let selector = format!("{RUN_LABEL}={}", self.run);
        for resource in ["dataexports", "retentionholds"] {
            let _ = kubectl(&["delete", resource, "-A", "-l", &selector, "--wait=false"]);
        }
        // Deleted first, then let go of: a finalizer taken off before the
        // delete would be put back by the replicas' next reconcile.
        let _ = kubectl(&["delete", "organizations", "-l", &selector, "--wait=false"]);
        let organizations = kubectl(&["get", "organizations", "-l", &selector, "-o", "name"]);
        for organization in String::from_utf8_lossy(&organizations.stdout).lines() {
            let _ = kubectl(&[
                "patch",
                organization,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]);
        }
        for namespace in &self.namespaces {
            let _ = kubectl(&[
                "delete",
                "namespace",
                namespace,
                "--ignore-not-found",
                "--wait=false",
            ]);
        }
        // The replicas let go of the entitlements' finalizers; if they are
        // gone too (a failed run), the finalizers are taken off by hand.
        let deadline = Instant::now() + Duration::from_secs(120);
        while let Ok(mut left) = get_json(&["entitlements", "-A", "-l", &selector]) {
            let Some(items) = left["items"].as_array_mut().filter(|i| !i.is_empty()) else {
                break;
            };
            if Instant::now() >= deadline {
                items
                    .iter_mut()
                    .for_each(|e| e["metadata"]["finalizers"] = json!([]));
                let _ = kubectl_with_stdin(&["replace", "-f", "-"], Some(&left.to_string()));
                if let Ok(mut exports) = get_json(&["dataexports", "-A", "-l", &selector]) {
                    exports["items"]
                        .as_array_mut()
                        .into_iter()
                        .flatten()
                        .for_each(|e| e["metadata"]["finalizers"] = json!([]));
                    let _ = kubectl_with_stdin(&["replace", "-f", "-"], Some(&exports.to_string()));
                }
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let _ = kubectl(&[
            "delete",
            "lifecyclepolicies",
            "-l",
            &selector,
            "--wait=false",
        ]);
        let _ = std::fs::remove_dir_all(&self.export_dir);
    }
}

#[test]
fn a_mass_offboarding_under_faults_deletes_nothing_early_nothing_held_nothing_not_owned() {
    let schedule = Schedule::from_env();
    let seed = std::env::var("TENURE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_micros() as u64);
    let mut random = Random(seed);
    let began = Instant::now();
    let since = Utc::now();
    if !repo().join(".cluster/logs/audit.log").exists() {
        // A control plane started before hack/cluster audited deletes.
        restart("kube-apiserver");
    }
    let run = unique("chaos");
    let mut report = Report::default();
    report
        .figures
        .insert("seed (TENURE_CHAOS_SEED)", seed.to_string());
    let export_dir = repo().join(format!(".cluster/chaos-{run}/exports"));
    std::fs::create_dir_all(&export_dir).unwrap();
    let export_dir = export_dir.canonicalize().unwrap();
    let mut world = World {
        run: run.clone(),
        orgs: (0..schedule.organizations)
            .map(|i| {
                let name = format!("{run}-{i:03}");
                Org {
                    namespace: format!("org-{name}"),
                    name,
                    story: STORIES[i % STORIES.len()],
                    confirm_sent: None,
                }
            })
            .collect(),
        data: Vec::new(),
        holds: Vec::new(),
        facts: BTreeMap::new(),
        owned_namespaces: BTreeSet::new(),
        export_dir: export_dir.clone(),
    };

    let observed: Arc<Mutex<Observed>> = Arc::default();
    let relists = Arc::new(AtomicUsize::new(0));
    let selector = format!("{RUN_LABEL}={run}");
    let watches: Vec<Watch> = ["organizations", "entitlements", "dataexports"]
        .iter()
        .map(|resource| Watch::start(resource, &selector, observed.clone(), relists.clone()))
        .collect();

    let proxy = Proxy::start(api_server_port());
    let mut clock = SimClock {
        origin: ORIGIN.parse().unwrap(),
        wall_start: Utc::now(),
        rate: schedule.rate(),
        day0: ORIGIN.parse().unwrap(),
    };
    let lease = format!("{run}-lease");
    let mut replicas = Replicas {
        slots: [None, None],
        spawned: 0,
        args: [
            "--leader-election=true",
            "--lease-name",
            &lease,
            "--lease-namespace",
            CHART_NAMESPACE,
            "--lease-duration",
            &schedule.lease_seconds.to_string(),
            "--shard-selector",
            &selector,
            "--clock-rate",
            &schedule.rate().to_string(),
            "--export-dir",
            export_dir.to_str().unwrap(),
            // Longer than the run: every Succeeded ZIP is still there to
            // check at the end, unless a purge removed it.
            "--export-keep-days",
            "365",
        ]
        .map(String::from)
        .to_vec(),
        kubeconfig: kubeconfig_through(&proxy),
        lease,
        run: run.clone(),
    };
    replicas.supervise(&clock);
    let _clean_up = CleanUp {
        run: run.clone(),
        namespaces: world.orgs.iter().map(|o| o.namespace.clone()).collect(),
        export_dir: export_dir.clone(),
    };

    set_up(&mut world, &schedule, &mut clock);
    let exports: Vec<Value> = world
        .orgs
        .iter()
        .filter(|o| o.story.exported())
        .map(|org| {
            json!({
                "apiVersion": "tenure.dev/v1alpha1", "kind": "DataExport",
                "metadata": {"name": "chaos-export", "namespace": org.namespace, "labels": world.labels()},
                "spec": {"organization": org.name, "includeSecrets": true},
            })
        })
        .collect();
    report.figures.insert(
        "objects",
        format!(
            "{} organizations, {} entitlements, {} ConfigMaps/Secrets/PVCs/Deployments, {} holds placed, {} exports",
            world.orgs.len(),
            world.orgs.len() * schedule.entitlements_per_organization,
            world.data.len(),
            world.holds.len() + world.orgs.iter().filter(|o| o.story == Story::HeldWhileScheduled).count(),
            exports.len()
        ),
    );

    // The faults, spread evenly from day 0 to FAULTS_END_DAY in a shuffled order.
    let mut faults: Vec<Fault> = schedule
        .faults
        .iter()
        .flat_map(|(fault, count)| std::iter::repeat_n(*fault, *count))
        .collect();
    for i in (1..faults.len()).rev() {
        faults.swap(i, random.below(i as u64 + 1) as usize);
    }
    let fault_phase = clock.wall(clock.day(FAULTS_END_DAY)) - clock.wall(clock.day(0.0));
    let spacing = fault_phase / (faults.len() as i32 + 1);
    let mut next_fault_at = clock.wall(clock.day(0.0)) + spacing;
    let mut latency_ends: Option<DateTime<Utc>> = None;
    let mut frozen: Option<Frozen> = None;
    let mut next_zip_check = Instant::now();
    let mut done = [false; 4];
    let mut exports_created = false;
    let mut fault_index = 0;
    let faults_end = clock.wall(clock.day(FAULTS_END_DAY));
    while Utc::now() < faults_end || fault_index < faults.len() {
        let day = clock.days_since_day0(clock.now());
        if !exports_created && day >= 0.0 {
            create_all(&exports);
            exports_created = true;
        }
        if !done[0] && day >= CONFIRM_DAY {
            done[0] = true;
            for i in 0..world.orgs.len() {
                if world.orgs[i].story == Story::ConfirmedNonPayment {
                    world.orgs[i].confirm_sent = Some(Utc::now());
                    let confirmed = world.organization(&world.orgs[i], Some(clock.day0));
                    apply_all(std::slice::from_ref(&confirmed));
                    world.remember(&confirmed);
                }
            }
        }
        if !done[1] && day >= HOLD_WHILE_SCHEDULED_DAY {
            done[1] = true;
            let names: Vec<String> = world
                .orgs
                .iter()
                .filter(|o| o.story == Story::HeldWhileScheduled)
                .map(|o| o.name.clone())
                .collect();
            world.place_holds(
                names
                    .into_iter()
                    .map(|name| (format!("{name}-late-hold"), json!({"organization": name})))
                    .collect(),
            );
        }
        if !done[2] && day >= LIFT_FIRST_HOLDS_DAY {
            done[2] = true;
            world.lift_holds_of(Story::HeldThenLifted);
        }
        if !done[3] && day >= LIFT_SECOND_HOLDS_DAY {
            done[3] = true;
            world.lift_holds_of(Story::HeldWhileScheduled);
        }
        if latency_ends.is_some_and(|at| Utc::now() >= at) {
            proxy.post("/latency?ms=0");
            latency_ends = None;
        }
        if frozen.as_ref().is_some_and(|f| Instant::now() >= f.until) {
            frozen.take().unwrap().thaw();
        }
        let exited = replicas.supervise(&clock);
        for _ in 0..exited {
            report.fault("controller exited by itself (stepped down), restarted");
        }
        if fault_index < faults.len() && Utc::now() >= next_fault_at {
            let fault = faults[fault_index];
            fault_index += 1;
            next_fault_at += spacing;
            match fault {
                Fault::KillLeader | Fault::KillStandby => {
                    // Kills aim at a leader acting, with a standby ready to
                    // take over: they wait a little for one to lead.
                    let lease = Duration::from_secs(schedule.lease_seconds.into());
                    let leader = replicas.leader_within(&clock, lease * 2);
                    let (slot, what) = match leader {
                        Some(slot) if fault == Fault::KillLeader => {
                            (slot, "SIGKILL the leader (a standby runs)")
                        }
                        Some(slot) => (1 - slot, "SIGKILL the standby"),
                        None => (
                            random.below(2) as usize,
                            "SIGKILL a replica while none leads",
                        ),
                    };
                    replicas.kill(slot, &clock);
                    report.fault(what);
                }
                Fault::FreezeLeader => {
                    let lease = Duration::from_secs(schedule.lease_seconds.into());
                    let leader = replicas.leader_within(&clock, lease * 2);
                    let pid =
                        leader.and_then(|slot| replicas.slots[slot].as_ref().map(Controller::id));
                    if let (Some(pid), None) = (pid, &frozen) {
                        frozen = Some(Frozen::stop(pid, Instant::now() + lease * 2));
                        report.fault(
                            "the leader frozen (SIGSTOP) for two Lease durations, then let run",
                        );
                    }
                }
                Fault::RestartApiServer => {
                    restart("kube-apiserver");
                    report.fault("kube-apiserver SIGKILLed and restarted");
                }
                Fault::RestartEtcd => {
                    restart("etcd");
                    report.fault("etcd SIGKILLed and restarted");
                }
                Fault::Latency => {
                    let ms = 200 + random.below(800);
                    proxy.post(&format!("/latency?ms={ms}"));
                    latency_ends = Some(Utc::now() + TimeDelta::from_std(schedule.hold).unwrap());
                    report.fault("proxy: latency (200-1000 ms a chunk, for a while)");
                }
                Fault::ResetConnections => {
                    proxy.post("/reset");
                    report.fault("proxy: every connection reset");
                }
                Fault::HoldConnections => {
                    proxy.post(&format!("/hold?seconds={}", schedule.hold.as_secs()));
                    report.fault("proxy: requests held until they time out (then reset)");
                }
                Fault::CutWatches => {
                    proxy.post("/cut?older=1");
                    report.fault("proxy: long-lived connections (watches) cut");
                }
            }
        }
        if Instant::now() >= next_zip_check {
            check_export_zips(&observed, &mut report);
            next_zip_check = Instant::now() + Duration::from_secs(3);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    proxy.post("/latency?ms=0");
    if let Some(frozen) = frozen.take() {
        frozen.thaw();
    }
    let stats = proxy.stats();
    report.figures.insert("proxy", stats.to_string());
    report
        .figures
        .insert("controller processes started", replicas.spawned.to_string());
    report.figures.insert(
        "fault phase",
        format!(
            "simulated days 0 to {:.1}",
            clock.days_since_day0(clock.now())
        ),
    );

    // Faults stop: the replicas converge.
    replicas.supervise(&clock);
    check_convergence(
        &world,
        &clock,
        &mut replicas,
        schedule.converge_within,
        &mut report,
    );
    check_export_files(&world, &observed, &mut report);
    report.figures.insert(
        "watch (re)lists",
        relists.load(Ordering::SeqCst).to_string(),
    );
    {
        let observed = observed.lock().unwrap();
        check_deletes(&world, &observed, &clock, since, &mut report);
        check_tombstones(&world, &observed, &mut report);
        check_codes(&observed, &mut report);
    }
    report
        .figures
        .insert("duration", format!("{:.0}s", began.elapsed().as_secs_f64()));
    report.print();
    drop(watches);
    assert!(
        report.violations.is_empty(),
        "{} invariant violations (seed {seed}), first: {}",
        report.violations.len(),
        report.violations[0]
    );
}
