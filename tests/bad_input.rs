//! The bad input corpus, end to end: every manifest under tests/bad-input is
//! either refused by the API server (CRD schema, CEL rules) or reported
//! Stalled by the controller, each with a message that names the field to
//! fix; and none of them keeps the controller from serving everything else.
//!
//! Each file is one case. Its header comment says what is wrong and what must
//! happen, in lines the test reads:
//!
//! ```text
//! # expect: refused | stalled
//! # reason: <the Stalled condition's reason>        (stalled only)
//! # message: <text the refusal or the Stalled message must contain>  (one or more)
//! # steps: apply-all-but-last-then-last             (optional)
//! ```
//!
//! Without `steps` the whole file is applied at once. With it, every document
//! but the last is applied first (and must be accepted; for a stalled case the
//! tenure objects among them must also become Ready), then the last one: the
//! forbidden change, or the object that refers to the others. A stalled case's
//! condition is read from its last document. `SUFFIX` is replaced by a value
//! unique to the case and the run, `PREFIX` by a code prefix unique to both.

mod common;

use common::*;
use std::time::Instant;

const STEPS_LAST_SEPARATELY: &str = "apply-all-but-last-then-last";

#[derive(Debug, PartialEq)]
enum Expect {
    Refused,
    Stalled { reason: String },
}

struct Case {
    file: String,
    expect: Expect,
    messages: Vec<String>,
    last_separately: bool,
    documents: Vec<String>,
}

impl Case {
    fn parse(file: &str, text: &str) -> Self {
        let header: Vec<(&str, &str)> = text
            .lines()
            .take_while(|line| line.starts_with('#'))
            .filter_map(|line| {
                let (key, value) = line.trim_start_matches('#').split_once(':')?;
                Some((key.trim(), value.trim()))
            })
            .collect();
        let values = |key: &str| -> Vec<String> {
            header
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
                .collect()
        };
        let one = |key: &str| values(key).into_iter().next();
        let expect = match one("expect").as_deref() {
            Some("refused") => Expect::Refused,
            Some("stalled") => Expect::Stalled {
                reason: one("reason")
                    .unwrap_or_else(|| panic!("{file}: a stalled case names its # reason:")),
            },
            other => panic!("{file}: # expect: is refused or stalled, not {other:?}"),
        };
        let last_separately = match one("steps").as_deref() {
            None => false,
            Some(STEPS_LAST_SEPARATELY) => true,
            Some(other) => panic!("{file}: unknown # steps: {other}"),
        };
        let messages = values("message");
        assert!(
            !messages.is_empty(),
            "{file}: a case names the field in a # message: line"
        );
        let documents: Vec<String> = text
            .split("\n---\n")
            .map(str::to_string)
            .filter(|doc| {
                doc.lines()
                    .any(|l| !l.starts_with('#') && !l.trim().is_empty())
            })
            .collect();
        assert!(
            !last_separately || documents.len() > 1,
            "{file}: {STEPS_LAST_SEPARATELY} needs two documents or more"
        );
        Self {
            file: file.to_string(),
            expect,
            messages,
            last_separately,
            documents,
        }
    }

    /// The kind of the object the case is about (its last document).
    fn kind(&self) -> String {
        let last: serde_yaml::Value = serde_yaml::from_str(self.documents.last().unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", self.file));
        last["kind"].as_str().unwrap_or_default().to_string()
    }

    /// The documents applied before the last, if the case applies it separately.
    fn setup(&self) -> Option<String> {
        self.last_separately
            .then(|| self.documents[..self.documents.len() - 1].join("\n---\n"))
    }

    /// What is applied to be refused or to stall: the last document, or all.
    fn subject(&self) -> String {
        if self.last_separately {
            self.documents.last().unwrap().clone()
        } else {
            self.documents.join("\n---\n")
        }
    }

    /// Where `text` lacks one of the expected messages, which.
    fn missing_messages(&self, text: &str) -> Vec<&str> {
        self.messages
            .iter()
            .filter(|m| !text.contains(m.as_str()))
            .map(String::as_str)
            .collect()
    }
}

/// Every case of the corpus, its placeholders replaced for this run.
fn corpus() -> Vec<Case> {
    let dir = repo().join("tests/bad-input");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let run = unique("b");
    let first_prefix = unique_prefix();
    files
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(path).unwrap();
            let text = text
                .replace("SUFFIX", &format!("{run}-{i}"))
                .replace("PREFIX", &nth_prefix(&first_prefix, i));
            Case::parse(&file, &text)
        })
        .collect()
}

/// The `n`th code prefix after `first` (five upper-case letters, least
/// significant first): distinct for every case of a run.
fn nth_prefix(first: &str, n: usize) -> String {
    let mut value = first
        .bytes()
        .rev()
        .fold(0usize, |acc, b| acc * 26 + usize::from(b - b'A'))
        + n;
    (0..first.len())
        .map(|_| {
            let letter = char::from(b'A' + (value % 26) as u8);
            value /= 26;
            letter
        })
        .collect()
}

fn apply_result(manifest: &str) -> (bool, String) {
    let out = kubectl_with_stdin(&["apply", "-f", "-"], Some(manifest));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The tenure objects among `manifest` (name and namespace as kubectl reads them).
fn tenure_objects(manifest: &str) -> Vec<Vec<String>> {
    manifest
        .split("\n---\n")
        .filter_map(|doc| serde_yaml::from_str::<serde_yaml::Value>(doc).ok())
        .filter(|doc| {
            doc["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("tenure.dev/"))
        })
        .map(|doc| {
            let kind = doc["kind"].as_str().unwrap().to_lowercase();
            let name = doc["metadata"]["name"].as_str().unwrap().to_string();
            let mut args = vec![format!("{kind}.tenure.dev"), name];
            if let Some(namespace) = doc["metadata"]["namespace"].as_str() {
                args.extend(["-n".to_string(), namespace.to_string()]);
            }
            args
        })
        .collect()
}

/// Whether the object of a stalled case stalls as expected; else what it shows.
fn stalled_as_expected(case: &Case, reason: &str) -> Result<(), String> {
    let out = kubectl_with_stdin(&["get", "-o", "json", "-f", "-"], Some(&case.subject()));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let listed: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    // One object is printed as itself, several as a List: the last is the case's.
    let object = match listed["items"].as_array() {
        Some(items) => items.last().cloned().unwrap_or_default(),
        None => listed,
    };
    let stalled = condition(&object, "Stalled").filter(|c| c["status"] == "True");
    let Some(stalled) = stalled else {
        return Err(format!("not Stalled: {}", object["status"]["conditions"]));
    };
    let message = stalled["message"].as_str().unwrap_or_default();
    let missing = case.missing_messages(message);
    if stalled["reason"] != reason || !missing.is_empty() {
        return Err(format!(
            "Stalled with reason {} and message {message:?}; expected reason {reason} and {missing:?}",
            stalled["reason"]
        ));
    }
    Ok(())
}

#[test]
fn every_bad_input_is_refused_or_stalled_naming_the_field_and_nothing_else_stalls() {
    start_controller(&[]);
    let started = Instant::now();
    let cases = corpus();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let kinds: std::collections::BTreeSet<String> = cases.iter().map(Case::kind).collect();
    for kind in [
        "Organization",
        "Entitlement",
        "EntitlementClass",
        "LifecyclePolicy",
        "RetentionHold",
        "DataExport",
    ] {
        assert!(kinds.contains(kind), "no case of {kind}: {kinds:?}");
    }

    let mut failures = Vec::new();
    // The valid objects the cases build on, applied first; a stalled case's
    // setup must also be Ready before the object that refers to it comes.
    for case in &cases {
        if let Some(setup) = case.setup() {
            let (accepted, stderr) = apply_result(&setup);
            if !accepted {
                failures.push(format!(
                    "{}: its valid setup was refused: {stderr}",
                    case.file
                ));
            }
        }
    }
    for case in &cases {
        if let (Expect::Stalled { .. }, Some(setup)) = (&case.expect, case.setup()) {
            for object in tenure_objects(&setup) {
                let args: Vec<&str> = object.iter().map(String::as_str).collect();
                wait_ready(&args);
            }
        }
    }
    for case in &cases {
        let (accepted, stderr) = apply_result(&case.subject());
        match (&case.expect, accepted) {
            (Expect::Refused, true) => {
                failures.push(format!("{}: accepted, expected a refusal", case.file));
            }
            (Expect::Refused, false) => {
                let missing = case.missing_messages(&stderr);
                if !missing.is_empty() {
                    failures.push(format!(
                        "{}: refused without {missing:?}: {stderr}",
                        case.file
                    ));
                }
            }
            (Expect::Stalled { .. }, false) => {
                failures.push(format!(
                    "{}: refused, expected to stall: {stderr}",
                    case.file
                ));
            }
            (Expect::Stalled { .. }, true) => {}
        }
    }
    let refused = cases.iter().filter(|c| c.expect == Expect::Refused).count();
    println!("{refused} refusals checked in {:?}", started.elapsed());

    let stalled: Vec<(&Case, &str)> = cases
        .iter()
        .filter_map(|case| match &case.expect {
            Expect::Stalled { reason } => Some((case, reason.as_str())),
            Expect::Refused => None,
        })
        .collect();
    // Said before the wait, which fails on its own.
    for failure in &failures {
        eprintln!("{failure}");
    }
    wait_for(
        "every stalled case to stall with its reason, naming the field",
        TIMEOUT,
        || {
            let waiting: Vec<String> = stalled
                .iter()
                .filter_map(|(case, reason)| {
                    stalled_as_expected(case, reason)
                        .err()
                        .map(|why| format!("{}: {why}", case.file))
                })
                .collect();
            waiting.is_empty().then_some(()).ok_or(waiting.join("\n"))
        },
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!(
        "{} cases ({refused} refused, {} stalled) in {:?}",
        cases.len(),
        stalled.len(),
        started.elapsed()
    );

    // The whole corpus is in; the controller still serves a new customer promptly.
    let fresh = Instant::now();
    let (class, _) = new_class("after-bad-input");
    let org = unique("after-bad-input");
    apply_organization(
        &org,
        serde_json::json!({"displayName": "After the bad input"}),
    );
    let organization = wait_ready(&["organization", &org]);
    assert_eq!(organization["status"]["phase"], "Active");
    apply(
        &serde_json::json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": "seat", "namespace": format!("org-{org}")},
            "spec": {"class": class, "product": "after-bad-input", "organization": org},
        })
        .to_string(),
    );
    wait_ready(&["-n", &format!("org-{org}"), "entitlement", "seat"]);
    wait_phase(
        &["-n", &format!("org-{org}"), "entitlement", "seat"],
        "Active",
    );
    println!(
        "a fresh Organization and Entitlement were Ready and Active {:?} after applying",
        fresh.elapsed()
    );

    let log = std::fs::read_to_string(controller_log()).unwrap_or_default();
    assert!(
        !log.contains("panicked"),
        "the controller panicked: {}",
        controller_log().display()
    );
}
