//! Entitlement codes: `<PREFIX>-<YYYY><MM><NNNN>`, from the class prefix, the
//! month of creation and a per-class, per-month sequence.

use chrono::{DateTime, Utc};

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
        && rest.chars().all(|c| c.is_ascii_digit());
    valid.then(|| (prefix, &rest[..6], rest[6..].parse().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
