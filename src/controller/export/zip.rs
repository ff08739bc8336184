//! The ZIP a DataExport hands the customer: one JSON file per object, one CSV
//! per kind, and a manifest with counts and a SHA-256 per file. Objects are
//! written as they arrive, so an export never holds them all in memory; only
//! the CSV rows of the kind being written are kept until that kind is done.
//! Secret values never reach the ZIP unless asked for, nor any log.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, Write};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zip::ZipWriter;
use zip::write::SimpleFileOptions;

use crate::api::export::{DataExportSpec, ExportFormat};

/// What the export includes, from the DataExport's spec.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub json: bool,
    pub csv: bool,
    pub include_secrets: bool,
    pub include_secret_values: bool,
}

impl Options {
    /// What the DataExport's spec asks for.
    pub fn of(spec: &DataExportSpec) -> Self {
        Self {
            json: spec.formats.contains(&ExportFormat::Json),
            csv: spec.formats.contains(&ExportFormat::Csv),
            include_secrets: spec.include_secrets == Some(true),
            include_secret_values: spec.include_secret_values == Some(true),
        }
    }
}

/// One file of the ZIP, as the manifest lists it.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestFile {
    pub name: String,
    pub sha256: String,
    pub size_bytes: u64,
}

/// A ZIP being written.
pub struct ZipExport<W: Write + Seek> {
    zip: ZipWriter<W>,
    options: Options,
    files: Vec<ManifestFile>,
    counts: BTreeMap<String, i64>,
    written: BTreeSet<String>,
    rows: Vec<Vec<String>>,
}

const CSV_HEADER: [&str; 9] = [
    "name",
    "namespace",
    "created",
    "phase",
    "code",
    "startsAt",
    "endsAt",
    "labels",
    "data keys",
];

impl<W: Write + Seek> ZipExport<W> {
    pub fn new(sink: W, options: Options) -> Self {
        Self {
            zip: ZipWriter::new(sink),
            options,
            files: Vec::new(),
            counts: BTreeMap::new(),
            written: BTreeSet::new(),
            rows: Vec::new(),
        }
    }

    /// How many objects are in so far.
    pub fn objects(&self) -> i64 {
        self.counts.values().sum()
    }

    /// Adds one object of `kind` (skipped when already in, or a Secret not
    /// asked for). Call [`Self::finish_kind`] after the last of a kind.
    pub fn add(&mut self, kind: &str, object: Value) -> std::io::Result<()> {
        let Some(object) = self.redact(kind, object) else {
            return Ok(());
        };
        let meta = &object["metadata"];
        let name = meta["name"].as_str().unwrap_or_default().to_string();
        let namespace = meta["namespace"].as_str().unwrap_or("cluster").to_string();
        let path = format!("json/{kind}/{namespace}/{name}.json");
        if !self.written.insert(path.clone()) {
            return Ok(());
        }
        *self.counts.entry(kind.to_string()).or_insert(0) += 1;
        if self.options.csv {
            self.rows.push(csv_row(&object));
        }
        if self.options.json {
            let bytes = serde_json::to_vec_pretty(&object).map_err(std::io::Error::other)?;
            self.file(&path, &bytes)?;
        }
        Ok(())
    }

    /// Writes the CSV of `kind` from the rows gathered since the last kind.
    pub fn finish_kind(&mut self, kind: &str) -> std::io::Result<()> {
        let rows = std::mem::take(&mut self.rows);
        if !self.options.csv || rows.is_empty() {
            return Ok(());
        }
        let mut csv = String::new();
        for row in std::iter::once(CSV_HEADER.map(String::from).to_vec()).chain(rows) {
            let line: Vec<String> = row.iter().map(|field| csv_field(field)).collect();
            csv.push_str(&line.join(","));
            csv.push_str("\r\n");
        }
        self.file(&format!("csv/{kind}.csv"), csv.as_bytes())
    }

    /// Writes the manifest and closes the ZIP: the sink, and how many files.
    pub fn finish(
        mut self,
        organization: &str,
        exported_at: DateTime<Utc>,
    ) -> std::io::Result<(W, i64)> {
        let manifest = json!({
            "organization": organization,
            "exportedAt": exported_at,
            "tenureVersion": env!("CARGO_PKG_VERSION"),
            "counts": self.counts,
            "files": self.files,
        });
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
        self.zip
            .start_file("manifest.json", SimpleFileOptions::default())
            .map_err(std::io::Error::other)?;
        self.zip.write_all(&bytes)?;
        let files = self.files.len() as i64 + 1;
        let sink = self.zip.finish().map_err(std::io::Error::other)?;
        Ok((sink, files))
    }

    fn file(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.zip
            .start_file(name, SimpleFileOptions::default())
            .map_err(std::io::Error::other)?;
        self.zip.write_all(bytes)?;
        self.files.push(ManifestFile {
            name: name.to_string(),
            sha256: hex(&Sha256::digest(bytes)),
            size_bytes: bytes.len() as u64,
        });
        Ok(())
    }

    /// The object as the customer gets it: without server bookkeeping, and a
    /// Secret only when asked for, with its values only when asked for.
    fn redact(&self, kind: &str, mut object: Value) -> Option<Value> {
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("managedFields");
        }
        if kind != "Secret" {
            return Some(object);
        }
        if !self.options.include_secrets {
            return None;
        }
        if !self.options.include_secret_values {
            // The last applied configuration repeats the values.
            if let Some(annotations) = object["metadata"]["annotations"].as_object_mut() {
                annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
            }
            if let Some(data) = object["data"].as_object_mut() {
                data.values_mut()
                    .for_each(|v| *v = Value::String(String::new()));
            }
            if let Some(object) = object.as_object_mut() {
                object.remove("stringData");
            }
        }
        Some(object)
    }
}

fn csv_row(object: &Value) -> Vec<String> {
    let text = |v: &Value| v.as_str().map(String::from).unwrap_or_default();
    let meta = &object["metadata"];
    let labels = meta["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let keys = ["data", "binaryData"]
        .iter()
        .filter_map(|field| object[field].as_object())
        .flat_map(|data| data.keys().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        text(&meta["name"]),
        text(&meta["namespace"]),
        text(&meta["creationTimestamp"]),
        text(&object["status"]["phase"]),
        text(&object["status"]["code"]),
        text(&object["spec"]["startsAt"]),
        text(&object["spec"]["endsAt"]),
        labels,
        keys,
    ]
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 and size of everything `reader` yields, read in chunks.
pub fn digest(mut reader: impl Read) -> std::io::Result<(String, i64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size = 0i64;
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as i64;
    }
    Ok((hex(&hasher.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn options(include_secrets: bool, include_secret_values: bool) -> Options {
        Options {
            json: true,
            csv: true,
            include_secrets,
            include_secret_values,
        }
    }

    fn secret() -> Value {
        json!({
            "metadata": {"name": "db", "namespace": "org-acme", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"aHVudGVyMg==\"}}"}},
            "data": {"password": "aHVudGVyMg=="},
        })
    }

    fn zip_of(options: Options, objects: Vec<(&str, Value)>) -> Vec<u8> {
        let mut export = ZipExport::new(Cursor::new(Vec::new()), options);
        for (kind, object) in objects {
            export.add(kind, object).unwrap();
            export.finish_kind(kind).unwrap();
        }
        let (sink, _) = export.finish("acme", Utc::now()).unwrap();
        sink.into_inner()
    }

    #[test]
    fn secrets_are_left_out_unless_asked_and_then_only_their_keys() {
        let none = zip_of(options(false, false), vec![("Secret", secret())]);
        assert!(!String::from_utf8_lossy(&none).contains("db.json"));
        let keys = zip_of(options(true, false), vec![("Secret", secret())]);
        let mut archive = zip::ZipArchive::new(Cursor::new(keys)).unwrap();
        let mut json = String::new();
        archive
            .by_name("json/Secret/org-acme/db.json")
            .unwrap()
            .read_to_string(&mut json)
            .unwrap();
        assert!(
            json.contains("password") && !json.contains("aHVudGVyMg"),
            "{json}"
        );
        let mut csv = String::new();
        archive
            .by_name("csv/Secret.csv")
            .unwrap()
            .read_to_string(&mut csv)
            .unwrap();
        assert!(
            csv.contains("password") && !csv.contains("aHVudGVyMg"),
            "{csv}"
        );
    }

    #[test]
    fn csv_fields_with_commas_and_quotes_are_quoted() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
