//! Date parsing with Elasticsearch's format names (`strict_date_optional_time`,
//! `epoch_millis`, `epoch_second`, `yyyy-MM-dd HH:mm:ss`, ... joined by `||`).
//! Dates are stored as UTC epoch milliseconds.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::Number;

use crate::error::{Error, Result};

/// One alternative of a date format.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    EpochMillis,
    EpochSecond,
    IsoOptionalTime,
    /// A chrono format string translated from a Java-style pattern.
    Pattern(String),
}

/// A parsed Elasticsearch date format: alternatives tried in order.
#[derive(Debug, Clone, PartialEq)]
pub struct DateFormat {
    parts: Vec<Part>,
}

impl DateFormat {
    /// Elasticsearch's default date format.
    pub const DEFAULT: &'static str = "strict_date_optional_time||epoch_millis";

    /// Parses a format such as `yyyy-MM-dd||epoch_millis`.
    pub fn parse(format: &str) -> Result<DateFormat> {
        let mut parts = Vec::new();
        for alt in format.split("||") {
            let part = match alt.trim() {
                "epoch_millis" => Part::EpochMillis,
                "epoch_second" => Part::EpochSecond,
                "strict_date_optional_time"
                | "date_optional_time"
                | "strict_date_optional_time_nanos"
                | "strict_date_time"
                | "date_time"
                | "strict_date"
                | "date"
                | "iso8601" => Part::IsoOptionalTime,
                "basic_date" => Part::Pattern("%Y%m%d".into()),
                pattern => Part::Pattern(translate_pattern(pattern)?),
            };
            parts.push(part);
        }
        Ok(DateFormat { parts })
    }

    /// Parses a JSON number into epoch milliseconds.
    pub fn parse_number(&self, n: &Number) -> Option<i64> {
        let as_int = n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))?;
        self.parts.iter().find_map(|part| match part {
            Part::EpochMillis => Some(as_int),
            Part::EpochSecond => as_int.checked_mul(1000),
            _ => None,
        })
    }

    /// Parses a string into epoch milliseconds.
    pub fn parse_str(&self, s: &str) -> Option<i64> {
        self.parts.iter().find_map(|part| part.parse_str(s))
    }

    /// Parses a string into the first and the last millisecond of the
    /// period it names, the last as Elasticsearch's round-up parser reads
    /// it: by the units of the alternative of this format that parses `s`
    /// (a `yyyy/MM` date is a month, a `yyyyMMdd` one a day), by its shape
    /// for an ISO date ([`end_of_period`]); an epoch is an instant.
    pub fn parse_period(&self, s: &str) -> Option<(i64, i64)> {
        self.parts.iter().find_map(|part| {
            let start = part.parse_str(s)?;
            let end = match part {
                Part::IsoOptionalTime => end_of_period(s, start),
                Part::Pattern(p) => pattern_period_end(p, start),
                Part::EpochMillis | Part::EpochSecond => start,
            };
            Some((start, end))
        })
    }
}

impl Part {
    fn parse_str(&self, s: &str) -> Option<i64> {
        match self {
            Part::EpochMillis => s.parse::<i64>().ok(),
            Part::EpochSecond => s.parse::<i64>().ok().and_then(|v| v.checked_mul(1000)),
            Part::IsoOptionalTime => parse_iso(s),
            Part::Pattern(p) => parse_pattern(s, p),
        }
    }
}

/// The last millisecond of the period a date of chrono pattern `pattern`
/// names, given its first: its finest unit's.
fn pattern_period_end(pattern: &str, start: i64) -> i64 {
    let has = |unit: &str| pattern.contains(unit);
    let months = |n: u32| {
        chrono::DateTime::from_timestamp_millis(start)
            .and_then(|d| d.checked_add_months(chrono::Months::new(n)))
            .map_or(start, |d| d.timestamp_millis() - 1)
    };
    if has("%S") || has("f") {
        start
    } else if has("%M") {
        start + 60_000 - 1
    } else if has("%H") {
        start + 3_600_000 - 1
    } else if has("%d") {
        start + 86_400_000 - 1
    } else if has("%m") {
        months(1)
    } else if has("%Y") || has("%y") {
        months(12)
    } else {
        start
    }
}

/// Whether a string is detected as a date by dynamic mapping
/// (Elasticsearch's `dynamic_date_formats`: ISO dates with at least `yyyy-MM-dd`).
pub fn looks_like_dynamic_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && parse_iso(s).is_some()
}

/// Parses ISO-8601 dates with optional time and offset into epoch milliseconds.
pub fn parse_iso(s: &str) -> Option<i64> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M%:z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some(dt.timestamp_millis());
        }
    }
    let naive = s.strip_suffix('Z').unwrap_or(s);
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(naive, fmt) {
            return Some(dt.and_utc().timestamp_millis());
        }
    }
    for fmt in ["%Y-%m-%d", "%Y-%m", "%Y"] {
        let candidate;
        let (input, fmt) = match fmt {
            "%Y-%m" => {
                candidate = format!("{naive}-01");
                (candidate.as_str(), "%Y-%m-%d")
            }
            "%Y" => {
                candidate = format!("{naive}-01-01");
                (candidate.as_str(), "%Y-%m-%d")
            }
            _ => (naive, fmt),
        };
        if let Ok(d) = NaiveDate::parse_from_str(input, fmt) {
            return d.and_hms_opt(0, 0, 0).map(|dt| dt.and_utc().timestamp_millis());
        }
    }
    None
}

/// The last millisecond of the period a date without a time of day names,
/// given its first millisecond: a year (`2024`), a month (`2024-01`) or a
/// day (`2024-01-31`, `31/01/2024`). Other text names an instant: `start`.
/// This is Elasticsearch's round-up parsing, used where a bound includes
/// the whole period (`lte`, `gt`).
pub fn end_of_period(text: &str, start: i64) -> i64 {
    let t = text.trim();
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let next = |months: u32| {
        chrono::DateTime::from_timestamp_millis(start)
            .and_then(|d| d.checked_add_months(chrono::Months::new(months)))
            .map_or(start, |d| d.timestamp_millis() - 1)
    };
    if t.len() == 4 && digits(t) {
        return next(12);
    }
    if let Some((y, m)) = t.split_once('-')
        && y.len() == 4
        && digits(y)
        && m.len() == 2
        && digits(m)
    {
        return next(1);
    }
    if !t.contains(['T', ' ', ':']) && t.len() <= 10 && !digits(t) {
        return start + 86_400_000 - 1;
    }
    start
}

fn parse_pattern(s: &str, pattern: &str) -> Option<i64> {
    // A pattern without a month or day (`yyyy-MM`, `yyyy`) names its first day.
    if (pattern.contains("%Y") || pattern.contains("%y")) && !pattern.contains("%d") {
        let month = pattern.contains("%m");
        let s = format!("{s}|{}01", if month { "" } else { "01|" });
        let pattern = format!("{pattern}|{}%d", if month { "" } else { "%m|" });
        return parse_pattern(&s, &pattern);
    }
    if pattern.contains("%z") || pattern.contains("%:z") {
        return DateTime::parse_from_str(s, pattern)
            .ok()
            .map(|dt| dt.timestamp_millis());
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(s, pattern) {
        return Some(dt.and_utc().timestamp_millis());
    }
    NaiveDate::parse_from_str(s, pattern)
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp_millis())
}

/// Translates a Java-style date pattern (`yyyy-MM-dd HH:mm:ss`) into chrono's syntax.
fn translate_pattern(pattern: &str) -> Result<String> {
    const TOKENS: [(&str, &str); 12] = [
        ("yyyy", "%Y"),
        ("uuuu", "%Y"),
        ("SSS", "%3f"),
        ("XXX", "%:z"),
        ("MM", "%m"),
        ("dd", "%d"),
        ("HH", "%H"),
        ("mm", "%M"),
        ("ss", "%S"),
        ("yy", "%y"),
        ("Z", "%z"),
        ("X", "%z"),
    ];
    let mut out = String::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        if let Some(stripped) = rest.strip_prefix('\'') {
            let end = stripped.find('\'').ok_or_else(|| {
                Error::mapper_parsing(format!("invalid date format [{pattern}]: unclosed quote"))
            })?;
            out.push_str(&stripped[..end].replace('%', "%%"));
            rest = &stripped[end + 1..];
            continue;
        }
        if let Some((token, chrono)) = TOKENS.iter().find(|(t, _)| rest.starts_with(t)) {
            out.push_str(chrono);
            rest = &rest[token.len()..];
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        if c.is_ascii_alphabetic() {
            return Err(Error::mapper_parsing(format!(
                "invalid date format [{pattern}]: unsupported pattern letter [{c}]"
            )));
        }
        if c == '%' {
            out.push_str("%%");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_format_accepts_iso_and_epoch_millis() -> Result<()> {
        let f = DateFormat::parse(DateFormat::DEFAULT)?;
        assert_eq!(f.parse_str("1970-01-02"), Some(86_400_000));
        assert_eq!(f.parse_str("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(f.parse_str("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(f.parse_number(&1234.into()), Some(1234));
        // As in Elasticsearch, a digits-only string is read as a year first.
        assert_eq!(f.parse_str("1234"), Some(-23_225_875_200_000));
        assert_eq!(f.parse_str("yesterday"), None);
        Ok(())
    }

    #[test]
    fn custom_patterns() -> Result<()> {
        let f = DateFormat::parse("yyyy-MM-dd HH:mm:ss||epoch_second")?;
        assert_eq!(f.parse_str("1970-01-01 00:01:00"), Some(60_000));
        assert_eq!(f.parse_number(&2.into()), Some(2_000));
        let d = DateFormat::parse("dd/MM/yyyy")?;
        assert_eq!(d.parse_str("02/01/1970"), Some(86_400_000));
        assert!(DateFormat::parse("yyyy-QQ").is_err());
        assert_eq!(
            DateFormat::parse("yyyy-MM")?.parse_str("1970-02"),
            Some(31 * 86_400_000)
        );
        assert_eq!(
            DateFormat::parse("yyyy")?.parse_str("1971"),
            Some(365 * 86_400_000)
        );
        Ok(())
    }

    #[test]
    fn periods_round_up_to_their_last_millisecond() -> anyhow::Result<()> {
        let day = 86_400_000;
        assert_eq!(end_of_period("1970-01-02", day), 2 * day - 1);
        assert_eq!(end_of_period("1970-02", 31 * day), 59 * day - 1);
        assert_eq!(end_of_period("1970", 0), 365 * day - 1);
        assert_eq!(end_of_period("1970-01-02T00:00:00Z", day), day);
        assert_eq!(end_of_period("86400000", day), day);
        // By the units of the format that parses the text.
        let format = DateFormat::parse("epoch_millis||yyyy/MM||yyyyMMdd||dd.MM.yyyy HH")?;
        let period = |format: &DateFormat, s: &str| {
            format
                .parse_period(s)
                .ok_or_else(|| anyhow::anyhow!("{s} does not parse"))
        };
        let (_, march_end) = period(&format, "2024/03")?;
        let (april, _) = period(&format, "2024/04")?;
        assert_eq!(march_end, april - 1);
        // Digits are epoch millis first: an instant.
        assert_eq!(period(&format, "20240301")?, (20_240_301, 20_240_301));
        let (first, end) = period(&DateFormat::parse("yyyyMMdd")?, "20240301")?;
        assert_eq!(end, first + day - 1);
        let (hour, end) = period(&format, "01.03.2024 07")?;
        assert_eq!(end, hour + 3_600_000 - 1);
        Ok(())
    }

    #[test]
    fn dynamic_date_detection() {
        assert!(looks_like_dynamic_date("2024-05-06"));
        assert!(looks_like_dynamic_date("2024-05-06T07:08:09Z"));
        assert!(!looks_like_dynamic_date("2024"));
        assert!(!looks_like_dynamic_date("2024-13-45 is not a date"));
    }
}
