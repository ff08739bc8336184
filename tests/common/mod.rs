//! The end-to-end harness: the local control plane that `hack/cluster up`
//! started, a tenure controller process per test binary, kubectl, and waits
//! that synchronise on observed state with a timeout.
#![allow(dead_code)] // each test binary uses its own part of the harness

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn kubeconfig() -> PathBuf {
    let path = repo().join(".cluster/kubeconfig");
    assert!(
        path.exists(),
        "no local control plane: run `hack/cluster up` (make test does)"
    );
    path
}

/// kubectl of the server's version, against the local control plane.
pub fn kubectl(args: &[&str]) -> Output {
    kubectl_with_stdin(args, None)
}

pub fn kubectl_with_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(repo().join(".cluster/bin/kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Runs kubectl and returns its stdout, failing the test on a non-zero exit.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A name no other test run has used, so tests never see each other's objects.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{:x}", nanos % 0xffff_ffff)
}

/// A code prefix (2 to 5 upper-case letters) no other test run has used.
pub fn unique_prefix() -> String {
    let mut n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        / 1000;
    (0..5)
        .map(|_| {
            let letter = (b'A' + (n % 26) as u8) as char;
            n /= 26;
            letter
        })
        .collect()
}

/// A new EntitlementClass of its own, so that its code sequences start at 1:
/// its name and code prefix.
pub fn new_class(name: &str) -> (String, String) {
    let class = unique(name);
    let prefix = unique_prefix();
    apply(
        &serde_json::json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "EntitlementClass",
            "metadata": {"name": class}, "spec": {"codePrefix": prefix},
        })
        .to_string(),
    );
    (class, prefix)
}

/// Creates `count` entitlements of `class` in namespace default in one apply,
/// labelled `batch=<batch>` and named `<batch>-<i>`.
pub fn create_batch(class: &str, batch: &str, count: usize) {
    let items: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            serde_json::json!({
                "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
                "metadata": {"name": format!("{batch}-{i}"), "namespace": "default", "labels": {"batch": batch}},
                "spec": {"class": class, "product": batch},
            })
        })
        .collect();
    apply(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string());
}

/// Entitlement name -> code, of those of `batch` that have one.
pub fn codes_of_batch(batch: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let list = get_json(&[
        "-n",
        "default",
        "entitlements",
        "-l",
        &format!("batch={batch}"),
    ])?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let code = e["status"]["code"].as_str()?;
            Some((
                e["metadata"]["name"].as_str()?.to_string(),
                code.to_string(),
            ))
        })
        .collect())
}

/// Waits until all `count` entitlements of `batch` have a code; name -> code.
pub fn all_coded(batch: &str, count: usize) -> std::collections::BTreeMap<String, String> {
    wait_for(
        &format!("{count} codes of {batch}"),
        Duration::from_secs(120),
        || {
            let codes = codes_of_batch(batch)?;
            (codes.len() == count)
                .then_some(codes.clone())
                .ok_or(format!("{} codes", codes.len()))
        },
    )
}

/// The value of one sample (`name{labels}`) in a Prometheus text, if present.
pub fn metric_sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name_and_labels)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// `base` with the fields of `more` added or replaced (both JSON objects).
pub fn merged(mut base: serde_json::Value, more: serde_json::Value) -> serde_json::Value {
    if let (Some(base), Some(more)) = (base.as_object_mut(), more.as_object()) {
        base.extend(more.clone());
    }
    base
}

/// Applies the Organization `name` with `spec`.
pub fn apply_organization(name: &str, spec: serde_json::Value) {
    apply(
        &serde_json::json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Organization",
            "metadata": {"name": name}, "spec": spec,
        })
        .to_string(),
    );
}

/// A LifecyclePolicy giving `organization` no final grace: its purge starts
/// as soon as nothing else holds it back.
pub fn without_final_grace(organization: &str) {
    apply(
        &serde_json::json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": unique("no-grace")},
            "spec": {"scope": {"organization": organization}, "purge": {"finalGraceDays": 0}},
        })
        .to_string(),
    );
}

/// Applies a DataExport of `organization` (Secrets included, keys only).
pub fn apply_data_export(namespace: &str, name: &str, organization: &str) {
    apply(
        &serde_json::json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "DataExport",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"organization": organization, "includeSecrets": true},
        })
        .to_string(),
    );
}

/// Waits until the DataExport is in `phase`, and returns it.
pub fn wait_export(namespace: &str, name: &str, phase: &str) -> serde_json::Value {
    wait_for(&format!("DataExport {name} {phase}"), TIMEOUT, || {
        let object = get_json(&["-n", namespace, "dataexport", name])?;
        (object["status"]["phase"] == phase)
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    })
}

/// Installs a CRD of `kind` (plural `<kind>s`, any fields) in `group` with
/// `scope` (Namespaced or Cluster), and waits until it is Established.
pub fn apply_test_crd(group: &str, kind: &str, scope: &str) {
    let plural = format!("{}s", kind.to_lowercase());
    apply(
        &serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {
                "group": group, "scope": scope,
                "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": true,
                }}}],
            },
        })
        .to_string(),
    );
    kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        &format!("crd/{plural}.{group}"),
    ]);
}

/// A LifecyclePolicy giving `organization` no final grace and a purge that
/// waits for a DataExport (`purge.requireExport`).
pub fn requiring_an_export(organization: &str) {
    apply(
        &serde_json::json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": unique("export-first")},
            "spec": {"scope": {"organization": organization}, "purge": {"finalGraceDays": 0, "requireExport": true}},
        })
        .to_string(),
    );
}

/// Applies a manifest (YAML or JSON), failing the test if it is refused.
pub fn apply(manifest: &str) {
    let out = kubectl_with_stdin(&["apply", "-f", "-"], Some(manifest));
    assert!(
        out.status.success(),
        "refused: {}\n{manifest}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the object's `status.phase` is `phase` and status describes
/// its latest generation; returns the object.
pub fn wait_phase(args: &[&str], phase: &str) -> serde_json::Value {
    wait_for(&format!("{args:?} to be {phase}"), TIMEOUT, || {
        let object = get_json(args)?;
        let current = object["status"]["observedGeneration"] == object["metadata"]["generation"];
        (current && object["status"]["phase"] == phase)
            .then_some(())
            .ok_or_else(|| object["status"].to_string())?;
        Ok(object)
    })
}

/// What every test controller runs with unless its test says otherwise:
/// alone (no election), its metrics on a free loopback port.
fn with_test_defaults(args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if !args.iter().any(|a| a.starts_with("--leader-election")) {
        all.push("--leader-election=false".into());
    }
    if !args.iter().any(|a| a.starts_with("--metrics-addr")) {
        all.extend(["--metrics-addr".into(), "127.0.0.1:0".into()]);
    }
    all
}

/// Where the controller of this test binary ([`start_controller`]) logs.
pub fn controller_log() -> PathBuf {
    let binary = std::env::args()
        .next()
        .and_then(|a| a.rsplit('/').next().map(String::from))
        .unwrap_or_default();
    repo().join(format!(".cluster/logs/tenure-{binary}.log"))
}

/// The tenure controller of this test binary, started once with `args`. A shell
/// watchdog kills it (SIGKILL, so that it is gone before the next test binary
/// starts, not still shutting down and acting on that binary's objects) when
/// the test process exits for any reason: it waits for the end of its stdin,
/// which only this process holds open.
pub struct ControllerProcess {
    _watchdog: Child,
}

static CONTROLLER: OnceLock<ControllerProcess> = OnceLock::new();

pub fn start_controller(args: &[&str]) {
    CONTROLLER.get_or_init(|| {
        let log = std::fs::File::create(controller_log()).expect("a log file");
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" "$@" & child=$!; read _ignored; kill -KILL "$child"; wait "$child""#)
            .arg(env!("CARGO_BIN_EXE_tenure"))
            .arg("run")
            .args(with_test_defaults(args))
            .env("KUBECONFIG", controller_kubeconfig())
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the controller starts");
        ControllerProcess {
            _watchdog: watchdog,
        }
    });
}

/// A controller process a test starts and stops itself (e.g. with SIGKILL);
/// killed when dropped, so a failing test leaves none behind.
pub struct Controller(Child);

impl Controller {
    pub fn spawn(args: &[&str], log_name: &str) -> Self {
        Self::spawn_with_env(args, &[], log_name)
    }

    /// Spawns with these environment variables set, besides KUBECONFIG.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)], log_name: &str) -> Self {
        let controller = controller_kubeconfig();
        let mut env = env.to_vec();
        if !env.iter().any(|(name, _)| *name == "KUBECONFIG") {
            env.push(("KUBECONFIG", controller.to_str().unwrap()));
        }
        let log = std::fs::File::create(repo().join(format!(".cluster/logs/{log_name}.log")))
            .expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_tenure"))
            .arg("run")
            .args(with_test_defaults(args))
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the controller starts");
        Self(child)
    }

    /// SIGTERM, as a rolling update stops a pod; waits until it exits.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "SIGTERM to {pid}");
        self.0.wait().expect("it exits")
    }

    /// Waits until it exits by itself (it refused to start, say).
    pub fn wait_for_exit(mut self, timeout: Duration) -> std::process::ExitStatus {
        wait_for("the controller to exit", timeout, || {
            match self.0.try_wait() {
                Ok(Some(status)) => Ok(status),
                Ok(None) => Err("still running".to_string()),
                Err(error) => Err(error.to_string()),
            }
        })
    }

    /// Its process id (what its leader Lease identity ends with).
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Whether it exited by itself (a leader stepping down exits).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL: no shutdown, no cleanup, as a crash or an OOM kill.
    pub fn kill(mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reaped");
    }
}

/// The namespace and name the chart's ServiceAccount has in the tests.
pub const CHART_NAMESPACE: &str = "tenure-system";
pub const CHART_RELEASE: &str = "tenure";

/// Runs the helm that hack/cluster builds, in the repository; its stdout.
pub fn helm(args: &[&str]) -> String {
    let out = Command::new(repo().join(".cluster/bin/helm"))
        .args(args)
        .current_dir(repo())
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("helm runs (hack/cluster up builds it)");
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The kubeconfig every test controller runs with unless its test says
/// otherwise: it authenticates as the chart's ServiceAccount (a token from
/// `kubectl create token`), which has exactly the RBAC the chart grants and
/// is under the chart's admission guard (both rendered by helm with
/// tests/chart-values.yaml and applied): the suite proves them sufficient.
pub fn controller_kubeconfig() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let _ = kubectl(&["create", "namespace", CHART_NAMESPACE]);
        let rendered = helm(&[
            "template",
            CHART_RELEASE,
            "charts/tenure",
            "--namespace",
            CHART_NAMESPACE,
            "--values",
            "tests/chart-values.yaml",
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
            "--show-only",
            "templates/guard.yaml",
        ]);
        let applied = kubectl_with_stdin(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(&rendered),
        );
        assert!(
            applied.status.success(),
            "the chart's RBAC applies: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
        let token = kubectl_ok(&[
            "create",
            "token",
            CHART_RELEASE,
            "--namespace",
            CHART_NAMESPACE,
            "--duration",
            "24h",
        ]);
        service_account_kubeconfig("chart-serviceaccount", token.trim())
    })
    .clone()
}

/// A kubeconfig for the local control plane that authenticates with a
/// ServiceAccount `token`.
pub fn service_account_kubeconfig(name: &str, token: &str) -> PathBuf {
    let admin = std::fs::read_to_string(kubeconfig()).unwrap();
    let field = |key: &str| {
        admin
            .lines()
            .find_map(|line| line.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in the admin kubeconfig"))
            .trim()
            .to_string()
    };
    let (server, authority) = (field("server:"), field("certificate-authority:"));
    let path = repo().join(format!(".cluster/kubeconfig-{name}"));
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: {server}, certificate-authority: {authority}}}\n\
         users:\n- name: {name}\n  user: {{token: {token}}}\ncontexts:\n- name: {name}\n  context: {{cluster: local, user: {name}}}\ncurrent-context: {name}\n"
    );
    std::fs::write(&path, config).unwrap();
    path
}

/// A kubeconfig for the local control plane that acts as `user` (admin
/// impersonation), for a controller with only the rights RBAC gives `user`.
pub fn kubeconfig_as(user: &str) -> PathBuf {
    let admin = std::fs::read_to_string(kubeconfig()).unwrap();
    let path = repo().join(format!(".cluster/kubeconfig-{user}"));
    let impersonating = admin.replace(
        "    client-key:",
        &format!("    as: {user}\n    client-key:"),
    );
    assert_ne!(
        impersonating, admin,
        "the admin kubeconfig has a client key"
    );
    std::fs::write(&path, impersonating).unwrap();
    path
}

/// A process a test started, killed when the test is done with it.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` until it returns Some, or fails the test after `timeout` with
/// `what` and the last observation.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The object as JSON, or why it could not be read.
pub fn get_json(args: &[&str]) -> Result<serde_json::Value, String> {
    let mut all = vec!["get", "-o", "json"];
    all.extend_from_slice(args);
    let out = kubectl(&all);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// Waits until the object is Ready and its status describes its latest generation.
pub fn wait_ready(args: &[&str]) -> serde_json::Value {
    wait_for(&format!("{args:?} to be Ready"), TIMEOUT, || {
        let object = get_json(args)?;
        ready_and_current(&object).map(|()| object)
    })
}

/// The condition of `type_` on an object, if present.
pub fn condition<'a>(object: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The Ready condition of an object, and whether status describes its latest
/// generation, as kstatus reads them.
pub fn ready_and_current(object: &serde_json::Value) -> Result<(), String> {
    let generation = object["metadata"]["generation"].as_i64();
    let observed = object["status"]["observedGeneration"].as_i64();
    let ready = condition(object, "Ready").is_some_and(|c| c["status"] == "True");
    if ready && observed == generation {
        Ok(())
    } else {
        Err(format!(
            "generation {generation:?}, observed {observed:?}, status {}",
            object["status"]
        ))
    }
}

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A free loopback port for a controller's metrics.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// GET `path` from a controller's metrics listener: status code and body.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or(format!("no status line in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A DataExport's ZIP as the customer opens it: each entry's content, and
/// its date as the ZIP's own fields give it (UTC, two-second steps) and as
/// its extended timestamp gives it (Unix seconds), if any.
pub struct ExportZip {
    pub files: std::collections::BTreeMap<String, Vec<u8>>,
    pub dates: std::collections::BTreeMap<String, (zip::DateTime, Option<u32>)>,
}

impl ExportZip {
    /// The ZIP a Succeeded DataExport's `status.artifact.uri` (a file) names.
    pub fn of(export: &serde_json::Value) -> Self {
        use std::io::Read;
        let uri = export["status"]["artifact"]["uri"].as_str().unwrap();
        let path = uri.strip_prefix("file://").expect("a file artifact");
        let bytes = std::fs::read(path).unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut files = std::collections::BTreeMap::new();
        let mut dates = std::collections::BTreeMap::new();
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).unwrap();
            let name = entry.name().unwrap().to_string();
            let exact = entry.extra_data_fields().find_map(|field| match field {
                zip::extra_fields::ExtraField::ExtendedTimestamp(ts) => ts.mod_time(),
                _ => None,
            });
            let dos = entry.last_modified().expect("a modification time");
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            dates.insert(name.clone(), (dos, exact));
            files.insert(name, content);
        }
        Self { files, dates }
    }

    /// `manifest.json`'s export time.
    pub fn exported_at(&self) -> chrono::DateTime<chrono::Utc> {
        let manifest: serde_json::Value =
            serde_json::from_slice(&self.files["manifest.json"]).unwrap();
        manifest["exportedAt"].as_str().unwrap().parse().unwrap()
    }

    /// Fails unless every entry is dated `at`: the ZIP's own fields in UTC
    /// (to the two seconds they can hold), the extended timestamp exactly.
    pub fn assert_every_entry_dated(&self, at: chrono::DateTime<chrono::Utc>) {
        use chrono::{Datelike, Timelike};
        let expected = (
            at.year() as u16,
            at.month() as u8,
            at.day() as u8,
            at.hour() as u8,
            at.minute() as u8,
            (at.second() as u8) / 2 * 2,
        );
        for (name, (dos, exact)) in &self.dates {
            let found = (
                dos.year(),
                dos.month(),
                dos.day(),
                dos.hour(),
                dos.minute(),
                dos.second(),
            );
            assert_eq!(found, expected, "{name} is not dated the export time {at}");
            assert_eq!(
                exact.map(i64::from),
                Some(at.timestamp()),
                "{name}'s extended timestamp"
            );
        }
    }

    /// The rows of a CSV in the ZIP, each as column -> value, read as a
    /// spreadsheet reads RFC 4180 (quoted fields, doubled quotes, line
    /// breaks inside quotes).
    pub fn csv(&self, name: &str) -> Vec<std::collections::BTreeMap<String, String>> {
        let text = String::from_utf8(self.files[name].clone()).unwrap();
        let (mut records, mut record, mut field) = (Vec::new(), Vec::new(), String::new());
        let (mut chars, mut quoted) = (text.chars().peekable(), false);
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') => quoted = true,
                (false, ',') => record.push(std::mem::take(&mut field)),
                (false, '\r') => {}
                (false, '\n') => {
                    record.push(std::mem::take(&mut field));
                    records.push(std::mem::take(&mut record));
                }
                (false, c) => field.push(c),
            }
        }
        assert!(
            record.is_empty() && field.is_empty(),
            "{name} ends mid-line"
        );
        let mut records = records.into_iter();
        let header = records.next().unwrap_or_default();
        records
            .map(|r| {
                assert_eq!(r.len(), header.len(), "{name}: {r:?}");
                header.iter().cloned().zip(r).collect()
            })
            .collect()
    }

    /// The entries whose name contains `part`.
    pub fn named(&self, part: &str) -> Vec<&String> {
        self.files.keys().filter(|n| n.contains(part)).collect()
    }
}

/// Waits until Kubernetes and tenure made what they make by themselves in a
/// tenant namespace: the `kube-root-ca.crt` ConfigMap, the `default`
/// ServiceAccount and, if `access_revoked`, tenure's deny-all NetworkPolicy.
pub fn wait_system_objects(namespace: &str, access_revoked: bool) {
    let mut objects = vec!["configmap/kube-root-ca.crt", "serviceaccount/default"];
    if access_revoked {
        objects.push("networkpolicy/tenure-access-disabled");
    }
    for object in objects {
        wait_for(&format!("{namespace}/{object}"), TIMEOUT, || {
            get_json(&["-n", namespace, object]).map(|_| ())
        });
    }
}
