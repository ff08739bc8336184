//! The CSVs of a DataExport's ZIP (`csv/<Kind>.csv`), as a spreadsheet user
//! reads them: RFC 4180, comma-separated, CRLF line ends, a header row, and a
//! field quoted when it holds a comma, a quote or a line break.
//!
//! ConfigMaps and Secrets hold their data as key/value pairs, one object
//! often with keys no other has: their CSVs have **one row per key** (name,
//! namespace, created, labels, key, value, encoding), so that every value
//! stands in a cell of its own under the same columns, and a filter on
//! `name` shows one object; an object without data has one row with key and
//! value empty. A value is the text itself; one that is not text
//! (`binaryData` of a ConfigMap, a Secret value that is not UTF-8) is given
//! in base64, with `base64` in the `encoding` column. A Secret's values are
//! there only when the export includes them (`spec.includeSecretValues`);
//! otherwise the value cells are empty: the object reaching this module is
//! already redacted as the DataExport's spec says.
//!
//! Every other kind has one row per object: name, namespace, created, phase,
//! code, startsAt, endsAt, labels and the keys of its `data`, if any.

use serde_json::Value;

/// The columns of a kind's CSV.
pub fn header(kind: &str) -> &'static [&'static str] {
    if is_key_value(kind) {
        &[
            "name",
            "namespace",
            "created",
            "labels",
            "key",
            "value",
            "encoding",
        ]
    } else {
        &[
            "name",
            "namespace",
            "created",
            "phase",
            "code",
            "startsAt",
            "endsAt",
            "labels",
            "data keys",
        ]
    }
}

/// Whether a kind's CSV has one row per key (see the module).
fn is_key_value(kind: &str) -> bool {
    matches!(kind, "ConfigMap" | "Secret")
}

/// The rows of one object of `kind`, in the columns of [`header`].
pub fn rows(kind: &str, object: &Value) -> Vec<Vec<String>> {
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
    let (name, namespace, created) = (
        text(&meta["name"]),
        text(&meta["namespace"]),
        text(&meta["creationTimestamp"]),
    );
    if !is_key_value(kind) {
        let keys = ["data", "binaryData"]
            .iter()
            .filter_map(|field| object[field].as_object())
            .flat_map(|data| data.keys().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        return vec![vec![
            name,
            namespace,
            created,
            text(&object["status"]["phase"]),
            text(&object["status"]["code"]),
            text(&object["spec"]["startsAt"]),
            text(&object["spec"]["endsAt"]),
            labels,
            keys,
        ]];
    }
    let row = |key: &str, (value, encoding): (String, &str)| {
        vec![
            name.clone(),
            namespace.clone(),
            created.clone(),
            labels.clone(),
            key.to_string(),
            value,
            encoding.to_string(),
        ]
    };
    let pairs = |field: &str| object[field].as_object().into_iter().flatten();
    // A Secret's `data` is base64 in the API: shown as text when it is text.
    let data = |v: &Value| match kind {
        "Secret" => decoded(v),
        _ => (text(v), ""),
    };
    let mut rows: Vec<Vec<String>> = pairs("data")
        .map(|(key, value)| row(key, data(value)))
        .chain(pairs("binaryData").map(|(key, value)| row(key, (text(value), BASE64))))
        .collect();
    if rows.is_empty() {
        rows.push(row("", (String::new(), "")));
    }
    rows
}

/// The `encoding` of a value given in base64.
const BASE64: &str = "base64";

/// A base64 value as text when it decodes to UTF-8, else as it is, marked
/// base64. An empty value (a Secret's keys without values) stays empty.
fn decoded(value: &Value) -> (String, &'static str) {
    let raw = value.as_str().unwrap_or_default();
    if raw.is_empty() {
        return (String::new(), "");
    }
    let bytes = serde_json::from_value::<k8s_openapi::ByteString>(value.clone());
    match bytes.map(|b| String::from_utf8(b.0)) {
        Ok(Ok(text)) => (text, ""),
        _ => (raw.to_string(), BASE64),
    }
}

/// One CSV line (with its CRLF) of `fields`.
pub fn line<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = fields
        .iter()
        .map(|f| field(f.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// A CSV field, quoted when it must be (RFC 4180): a comma, a quote or a
/// line break inside; quotes doubled.
pub fn field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(kind: &str, object: &Value) -> String {
        std::iter::once(line(header(kind)))
            .chain(rows(kind, object).iter().map(|r| line(r)))
            .collect()
    }

    #[test]
    fn fields_with_commas_quotes_and_line_breaks_are_quoted() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("1,200.00"), "\"1,200.00\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("cr\r"), "\"cr\r\"");
        assert_eq!(line(&["a", "b,c", ""]), "a,\"b,c\",\r\n");
    }

    #[test]
    fn a_config_map_has_a_row_per_key_with_its_value() {
        let invoice = json!({
            "metadata": {"name": "invoice-2031-12", "namespace": "org-acme",
                         "creationTimestamp": "2031-12-31T10:00:00Z",
                         "labels": {"kind": "invoice", "year": "2031"}},
            "data": {"amount": "1,234.50 EUR", "note": "paid \"late\"\nby wire"},
            "binaryData": {"logo": "iVBORw0K"},
        });
        assert_eq!(
            render("ConfigMap", &invoice),
            "name,namespace,created,labels,key,value,encoding\r\n\
             invoice-2031-12,org-acme,2031-12-31T10:00:00Z,kind=invoice year=2031,amount,\"1,234.50 EUR\",\r\n\
             invoice-2031-12,org-acme,2031-12-31T10:00:00Z,kind=invoice year=2031,note,\"paid \"\"late\"\"\nby wire\",\r\n\
             invoice-2031-12,org-acme,2031-12-31T10:00:00Z,kind=invoice year=2031,logo,iVBORw0K,base64\r\n"
        );
    }

    #[test]
    fn an_object_without_data_still_has_its_row() {
        let empty = json!({"metadata": {"name": "marker", "namespace": "org-acme"}});
        assert_eq!(
            rows("ConfigMap", &empty),
            vec![vec!["marker", "org-acme", "", "", "", "", ""]]
        );
    }

    #[test]
    fn secret_values_are_shown_as_text_when_included_and_left_empty_otherwise() {
        // "hunter2" and two bytes that are not UTF-8.
        let with_values = json!({
            "metadata": {"name": "db", "namespace": "org-acme"},
            "data": {"password": "aHVudGVyMg==", "salt": "/w=="},
        });
        let rows_of = |object: &Value| -> Vec<(String, String, String)> {
            rows("Secret", object)
                .into_iter()
                .map(|r| (r[4].clone(), r[5].clone(), r[6].clone()))
                .collect()
        };
        assert_eq!(
            rows_of(&with_values),
            vec![
                ("password".into(), "hunter2".into(), "".into()),
                ("salt".into(), "/w==".into(), "base64".into()),
            ]
        );
        // As an export with includeSecrets but not includeSecretValues hands it over.
        let keys_only = json!({
            "metadata": {"name": "db", "namespace": "org-acme"},
            "data": {"password": "", "salt": ""},
        });
        assert_eq!(
            rows_of(&keys_only),
            vec![
                ("password".into(), "".into(), "".into()),
                ("salt".into(), "".into(), "".into()),
            ]
        );
    }

    #[test]
    fn other_kinds_have_a_row_per_object() {
        let entitlement = json!({
            "metadata": {"name": "seat", "namespace": "org-acme", "creationTimestamp": "2031-01-01T00:00:00Z"},
            "spec": {"startsAt": "2031-01-01T00:00:00Z"},
            "status": {"phase": "Active", "code": "SUP-1"},
        });
        assert_eq!(
            render("Entitlement", &entitlement),
            "name,namespace,created,phase,code,startsAt,endsAt,labels,data keys\r\n\
             seat,org-acme,2031-01-01T00:00:00Z,Active,SUP-1,2031-01-01T00:00:00Z,,,\r\n"
        );
    }
}
