//! Entitlement codes: `<PREFIX>-<YYYY><MM><NNNN>`, from the class prefix, the
//! month of creation and a per-class, per-month sequence.

use chrono::{DateTime, Utc};

use super::conditions::Verdict;
use crate::api::EntitlementClass;

/// The sequence key of the month `at` falls in: `YYYYMM`.
pub fn month_of(at: DateTime<Utc>) -> String {
    at.format("%Y%m").to_string()
}

/// The last number of a month's sequence: codes have four digits for it.
pub const LAST_SEQUENCE: i32 = 9999;

pub fn format(prefix: &str, month: &str, sequence: i32) -> String {
    format!("{prefix}-{month}{sequence:04}")
}

/// The parts of a code: prefix, month (`YYYYMM`) and sequence number.
pub fn parse(code: &str) -> Option<(&str, &str, i32)> {
    let (prefix, rest) = code.split_once('-')?;
    let valid = (2..=5).contains(&prefix.len())
        && prefix.chars().all(|c| c.is_ascii_uppercase())
        && rest.len() == 10
        && rest.chars().all(|c| c.is_ascii_digit())
        && (1..=12).contains(&rest[4..6].parse::<u32>().unwrap_or_default());
    valid.then(|| (prefix, &rest[..6], rest[6..].parse().unwrap_or_default()))
}

/// Why `spec.code` cannot be imported into a class with prefix
/// `class_prefix`, if it cannot: a code is reserved only in the class its
/// prefix names, so that no class can ever hand it out again.
pub fn import_problem(code: &str, class_prefix: &str) -> Option<String> {
    match parse(code) {
        None => Some(format!(
            "spec.code {code} is not a code: <PREFIX>-<YYYY><MM><NNNN> with month 01 to 12"
        )),
        Some((prefix, _, _)) if prefix != class_prefix => Some(format!(
            "spec.code {code} has prefix {prefix}, but its class's codePrefix is {class_prefix}: an imported code keeps the prefix of the class it belongs to"
        )),
        Some(_) => None,
    }
}

/// A class as code allocation sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassPrefix<'a> {
    pub name: &'a str,
    pub prefix: &'a str,
    pub created: Option<DateTime<Utc>>,
}

impl<'a> ClassPrefix<'a> {
    pub fn of(class: &'a EntitlementClass) -> Self {
        Self {
            name: class.metadata.name.as_deref().unwrap_or_default(),
            prefix: &class.spec.code_prefix,
            created: class
                .metadata
                .creation_timestamp
                .as_ref()
                .map(super::conditions::from_time),
        }
    }
}

/// The class that owns `class`'s prefix when another class shares it: the
/// oldest (then the name that sorts first) keeps the prefix, the others hand
/// out no codes. None when `class` owns its prefix.
pub fn prefix_taken_by<'a>(class: &ClassPrefix, classes: &[ClassPrefix<'a>]) -> Option<&'a str> {
    let owner = classes
        .iter()
        .filter(|c| c.prefix == class.prefix)
        .min_by_key(|c| (c.created, c.name))?;
    (owner.name != class.name).then_some(owner.name)
}

/// Why an import cannot have `code`: `holder` (`namespace/name`) has it.
pub fn in_use(code: &str, holder: &str) -> Verdict {
    Verdict::stalled(
        "CodeInUse",
        format!("spec.code {code} is already the code of entitlement {holder}; codes are unique"),
    )
}

/// Why an entitlement of `class` created at `created` gets no code.
pub fn exhausted(class: &str, created: DateTime<Utc>) -> Verdict {
    Verdict::stalled(
        "CodesExhausted",
        format!(
            "EntitlementClass {class} handed out all {LAST_SEQUENCE} codes of the month {}; create the entitlement with another class, or pin spec.code",
            month_of(created)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_keeps_its_own_classs_prefix_and_a_real_month() {
        assert_eq!(import_problem("PLG-2026050007", "PLG"), None);
        assert!(
            import_problem("ENV-2026050007", "PLG")
                .unwrap()
                .contains("spec.code")
        );
        assert!(import_problem("PLG-2026130007", "PLG").is_some());
        assert!(import_problem("PLG-2026000007", "PLG").is_some());
    }

    #[test]
    fn the_oldest_class_keeps_a_shared_prefix() {
        let at = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        let classes = [
            ClassPrefix {
                name: "plugin",
                prefix: "PLG",
                created: at("2026-01-01T00:00:00Z"),
            },
            ClassPrefix {
                name: "copy",
                prefix: "PLG",
                created: at("2026-02-01T00:00:00Z"),
            },
            ClassPrefix {
                name: "env",
                prefix: "ENV",
                created: at("2026-03-01T00:00:00Z"),
            },
        ];
        assert_eq!(prefix_taken_by(&classes[1], &classes), Some("plugin"));
        assert_eq!(prefix_taken_by(&classes[0], &classes), None);
        assert_eq!(prefix_taken_by(&classes[2], &classes), None);
    }

    #[test]
    fn codes_carry_prefix_month_and_a_four_digit_sequence() {
        let at = "2026-05-31T23:59:59Z".parse().unwrap();
        let code = format("PLG", &month_of(at), 7);
        assert_eq!(code, "PLG-2026050007");
        assert_eq!(parse(&code), Some(("PLG", "202605", 7)));
        assert_eq!(parse("plg-2026050007"), None);
        assert_eq!(parse("PLG-20260500"), None);
    }
}
