//! The ZIP a DataExport hands the customer: one JSON file per object, one CSV
//! per kind (laid out by [`crate::lifecycle::csv`]), and a manifest with
//! counts and a SHA-256 per file, every entry dated the export time. Objects
//! are written as they arrive, so an export never holds them all in memory;
//! only the CSV rows of the kind being written are kept until that kind is
//! done. Secret values never reach the ZIP unless asked for, nor any log.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, Write};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zip::ZipWriter;
use zip::write::FullFileOptions;

use crate::api::export::{DataExportSpec, ExportFormat};
use crate::lifecycle::csv;

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
    exported_at: DateTime<Utc>,
    files: Vec<ManifestFile>,
    counts: BTreeMap<String, i64>,
    written: BTreeSet<String>,
    rows: Vec<Vec<String>>,
}

impl<W: Write + Seek> ZipExport<W> {
    /// A ZIP of the export made at `exported_at` (the controller's clock):
    /// the manifest's export time and every entry's.
    pub fn new(sink: W, options: Options, exported_at: DateTime<Utc>) -> Self {
        Self {
            zip: ZipWriter::new(sink),
            options,
            exported_at,
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
            self.rows.extend(csv::rows(kind, &object));
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
        let mut text = csv::line(csv::header(kind));
        for row in rows {
            text.push_str(&csv::line(&row));
        }
        self.file(&format!("csv/{kind}.csv"), text.as_bytes())
    }

    /// Writes the manifest and closes the ZIP: the sink, and how many files.
    pub fn finish(mut self, organization: &str) -> std::io::Result<(W, i64)> {
        let manifest = json!({
            "organization": organization,
            "exportedAt": self.exported_at,
            "tenureVersion": env!("CARGO_PKG_VERSION"),
            "counts": self.counts,
            "files": self.files,
        });
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
        self.zip
            .start_file("manifest.json", entry_options(self.exported_at)?)
            .map_err(std::io::Error::other)?;
        self.zip.write_all(&bytes)?;
        let files = self.files.len() as i64 + 1;
        let sink = self.zip.finish().map_err(std::io::Error::other)?;
        Ok((sink, files))
    }

    fn file(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.zip
            .start_file(name, entry_options(self.exported_at)?)
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

/// How every entry is written: dated `at`, in the ZIP's own fields (a date
/// and time without a zone, two-second steps: given in UTC) and, exactly and
/// with its zone, in an extended timestamp (`UT`, Unix seconds), which unzip
/// tools show in the reader's local time. A time the ZIP fields cannot hold
/// (before 1980, after 2107) leaves them at their default.
fn entry_options(at: DateTime<Utc>) -> std::io::Result<FullFileOptions<'static, 'static>> {
    use chrono::{Datelike, Timelike};
    let mut options = FullFileOptions::default();
    let dos = u16::try_from(at.year()).ok().and_then(|year| {
        let small = |n: u32| u8::try_from(n).unwrap_or(u8::MAX);
        zip::DateTime::from_date_and_time(
            year,
            small(at.month()),
            small(at.day()),
            small(at.hour()),
            small(at.minute()),
            small(at.second()),
        )
        .ok()
    });
    if let Some(dos) = dos {
        options = options.last_modified_time(dos);
    }
    if let Ok(seconds) = u32::try_from(at.timestamp()) {
        // Flags: the modification time only; then it, little-endian.
        let mut field = vec![1u8];
        field.extend_from_slice(&seconds.to_le_bytes());
        options
            .add_extra_field(EXTENDED_TIMESTAMP, field, false)
            .map_err(std::io::Error::other)?;
    }
    Ok(options)
}

/// The header ID of the extended timestamp extra field.
const EXTENDED_TIMESTAMP: u16 = 0x5455;

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

    /// The export time of [`zip_of`]'s ZIPs: a simulated clock's, say.
    fn exported_at() -> DateTime<Utc> {
        "2032-03-14T15:09:27.5Z".parse().unwrap()
    }

    fn zip_of(options: Options, objects: Vec<(&str, Value)>) -> Vec<u8> {
        let mut export = ZipExport::new(Cursor::new(Vec::new()), options, exported_at());
        for (kind, object) in objects {
            export.add(kind, object).unwrap();
            export.finish_kind(kind).unwrap();
        }
        let (sink, _) = export.finish("acme").unwrap();
        sink.into_inner()
    }

    fn read(archive: &mut zip::ZipArchive<Cursor<Vec<u8>>>, name: &str) -> String {
        let mut text = String::new();
        archive
            .by_name(name)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
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
    fn secret_values_are_in_the_csv_as_text_only_when_asked_for() {
        let values = zip_of(options(true, true), vec![("Secret", secret())]);
        let mut archive = zip::ZipArchive::new(Cursor::new(values)).unwrap();
        let csv = read(&mut archive, "csv/Secret.csv");
        assert!(csv.contains(",password,hunter2,\r\n"), "{csv}");
    }

    #[test]
    fn every_entry_is_dated_the_export_time() {
        let configmap = json!({"metadata": {"name": "invoice", "namespace": "org-acme"},
                               "data": {"amount": "1,200.00"}});
        let bytes = zip_of(options(false, false), vec![("ConfigMap", configmap)]);
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        assert_eq!(archive.len(), 3);
        for i in 0..archive.len() {
            let entry = archive.by_index(i).unwrap();
            let name = entry.name().unwrap().to_string();
            let dos = entry.last_modified().unwrap();
            assert_eq!(
                (
                    dos.year(),
                    dos.month(),
                    dos.day(),
                    dos.hour(),
                    dos.minute(),
                    dos.second()
                ),
                (2032, 3, 14, 15, 9, 26),
                "{name}: two-second steps"
            );
            let exact = entry.extra_data_fields().find_map(|field| match field {
                zip::extra_fields::ExtraField::ExtendedTimestamp(ts) => ts.mod_time(),
                _ => None,
            });
            assert_eq!(
                exact.map(i64::from),
                Some(exported_at().timestamp()),
                "{name}"
            );
        }
        let manifest: Value = serde_json::from_str(&read(&mut archive, "manifest.json")).unwrap();
        assert_eq!(manifest["exportedAt"], json!(exported_at()));
        let csv = read(&mut archive, "csv/ConfigMap.csv");
        assert!(
            csv.ends_with("invoice,org-acme,,,amount,\"1,200.00\",\r\n"),
            "{csv}"
        );
    }
}
