//! Elasticsearch dates: time zones, date math (`now-1d/d`, `2023-06-01||+1M`), the calendar and
//! fixed intervals of `date_histogram`, and date formats (`strict_date_optional_time`,
//! `epoch_millis`, Java patterns). Instants are epoch milliseconds, UTC.

use chrono::{
    DateTime, Datelike, Days, FixedOffset, Months, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone as _, Timelike, Utc,
};
use chrono_tz::Tz;

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The formats Elasticsearch names in date errors of a field that sets none.
const DEFAULT_FORMAT: &str = "strict_date_optional_time||epoch_millis";

#[rustfmt::skip]
const MONTH_NAMES: [&str; 12] = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
];
#[rustfmt::skip]
const DAY_NAMES: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// The time zone of a query or an aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeZone {
    /// A fixed offset from UTC (`Z`, `UTC`, `+01:00`, `-0530`).
    Fixed(FixedOffset),
    /// A zone of the tz database, with its daylight saving rules (`Europe/Paris`).
    Named(Tz),
}

impl Default for TimeZone {
    fn default() -> Self {
        TimeZone::utc()
    }
}

impl TimeZone {
    /// UTC, the zone of requests that name none.
    pub fn utc() -> TimeZone {
        TimeZone::Fixed(Utc.fix())
    }

    /// Parses an Elasticsearch `time_zone`: `Z`, `UTC`, an offset (`+01:00`, `-0530`, `+1`,
    /// also after `UTC`/`GMT`) or a tz database name (`America/New_York`).
    pub fn parse(s: &str) -> Result<TimeZone, String> {
        if matches!(s, "Z" | "UTC" | "GMT" | "UT") {
            return Ok(TimeZone::utc());
        }
        let offset = ["UTC", "GMT", "UT"]
            .into_iter()
            .find_map(|prefix| s.strip_prefix(prefix))
            .unwrap_or(s);
        if offset.starts_with(['+', '-']) {
            return parse_offset(offset)
                .map(TimeZone::Fixed)
                .ok_or_else(|| format!("Invalid ID for ZoneOffset, invalid format: {offset}"));
        }
        s.parse::<Tz>()
            .map(TimeZone::Named)
            .map_err(|_| format!("Unknown time-zone ID: {s}"))
    }

    /// The offset of the zone from UTC, in milliseconds, at an instant.
    pub fn offset_ms_at(&self, utc_ms: i64) -> i64 {
        let seconds = match self {
            TimeZone::Fixed(offset) => offset.local_minus_utc(),
            TimeZone::Named(tz) => tz
                .offset_from_utc_datetime(&naive_utc(utc_ms))
                .fix()
                .local_minus_utc(),
        };
        i64::from(seconds) * SECOND_MS
    }

    /// The wall-clock time of an instant in the zone.
    pub fn local_time(&self, utc_ms: i64) -> NaiveDateTime {
        naive_utc(utc_ms.saturating_add(self.offset_ms_at(utc_ms)))
    }

    /// The instant of a wall-clock time in the zone, like java.time: the earlier instant of a time
    /// that occurs twice, and a time in a gap shifted later by the gap's length.
    pub fn utc_ms_of(&self, local: NaiveDateTime) -> i64 {
        let local_ms = local.and_utc().timestamp_millis();
        match self {
            TimeZone::Fixed(offset) => local_ms - i64::from(offset.local_minus_utc()) * SECOND_MS,
            TimeZone::Named(tz) => match tz.from_local_datetime(&local).earliest() {
                Some(instant) => instant.timestamp_millis(),
                // The offset in force a day before is the one before the gap.
                None => local_ms.saturating_sub(self.offset_ms_at(local_ms.saturating_sub(DAY_MS))),
            },
        }
    }
}

/// An offset such as `+01:00`, `-0530` or `+1`, at most 18 hours as in java.time.
fn parse_offset(s: &str) -> Option<FixedOffset> {
    let sign = if s.starts_with('-') { -1 } else { 1 };
    let digits = s.get(1..).filter(|digits| digits.is_ascii())?;
    let (hours, minutes) = match digits.len() {
        1 | 2 => (digits, "0"),
        4 => digits.split_at(2),
        5 if digits.as_bytes().get(2) == Some(&b':') => (&digits[..2], &digits[3..]),
        _ => return None,
    };
    let number = |text: &str| {
        if text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse::<i32>().ok()
        } else {
            None
        }
    };
    let (hours, minutes) = (number(hours)?, number(minutes)?);
    if hours > 18 || minutes > 59 || (hours == 18 && minutes > 0) {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// The UTC date-time of epoch milliseconds, clamped to chrono's range.
fn naive_utc(ms: i64) -> NaiveDateTime {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(instant) => instant.naive_utc(),
        None if ms < 0 => NaiveDateTime::MIN,
        None => NaiveDateTime::MAX,
    }
}

/// Evaluates Elasticsearch date math: `now`, `now-1d/d`, `now/M`, `2023-06-01||+1M/d`, or a plain
/// date. Dates (a plain one, or the anchor before `||`) go to `parse_anchor`, which returns epoch
/// milliseconds; a plain date is returned as parsed (filling its missing fields for `round_up`,
/// as Elasticsearch does for `lte: 2023-06-01`, is the caller's). Rounding `/unit` goes to the
/// start of the unit in `tz`, or with `round_up` to its last millisecond, like Elasticsearch's
/// `JavaDateMathParser`.
pub fn parse_date_math(
    expr: &str,
    now_ms: i64,
    round_up: bool,
    tz: &TimeZone,
    parse_anchor: &dyn Fn(&str) -> Option<i64>,
) -> Result<i64, String> {
    let unparsable = || format!("failed to parse date field [{expr}] with format [{DEFAULT_FORMAT}]");
    let (anchor, math) = if let Some(math) = expr.strip_prefix("now") {
        (now_ms, math)
    } else if let Some((date, math)) = expr.split_once("||") {
        (parse_anchor(date).ok_or_else(unparsable)?, math)
    } else {
        return parse_anchor(expr).ok_or_else(unparsable);
    };
    apply_math(math, anchor, round_up, tz).map_err(|reason| format!("{}: [{reason}]", unparsable()))
}

/// Applies the operations after the anchor (`-1d/d`) to an instant.
fn apply_math(math: &str, mut utc_ms: i64, round_up: bool, tz: &TimeZone) -> Result<i64, String> {
    let bytes = math.as_bytes();
    let mut i = 0;
    while let Some(&operator) = bytes.get(i) {
        i += 1;
        let sign = match operator {
            b'/' | b'+' => 1,
            b'-' => -1,
            _ => return Err(format!("operator not supported for date math [{math}]")),
        };
        let digits_start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let num = if i == digits_start {
            1
        } else {
            let digits = &math[digits_start..i];
            i64::from(
                digits
                    .parse::<i32>()
                    .map_err(|_| format!("invalid number [{digits}] in date math [{math}]"))?,
            )
        };
        let Some(&unit) = bytes.get(i) else {
            return Err(format!("truncated date math [{math}]"));
        };
        i += 1;
        let round = operator == b'/';
        if round && num != 1 {
            return Err(format!(
                "rounding `/` can only be used on single unit types [{math}]"
            ));
        }
        let unit = match unit {
            b'y' => CalendarUnit::Year,
            b'M' => CalendarUnit::Month,
            b'w' => CalendarUnit::Week,
            b'd' => CalendarUnit::Day,
            b'h' | b'H' => CalendarUnit::Hour,
            b'm' => CalendarUnit::Minute,
            b's' => CalendarUnit::Second,
            _ => {
                let unit = char::from(unit);
                return Err(format!("unit [{unit}] not supported for date math [{math}]"));
            }
        };
        utc_ms = if !round {
            unit.add(utc_ms, sign * num, tz)
                .ok_or_else(|| format!("date math [{math}] is out of range"))?
        } else if round_up {
            unit.next(unit.floor(utc_ms, tz), tz).saturating_sub(1)
        } else {
            unit.floor(utc_ms, tz)
        };
    }
    Ok(utc_ms)
}

/// A calendar unit: of a `calendar_interval`, and of date math rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CalendarUnit {
    /// One second (`second`, `1s`).
    Second,
    /// One minute (`minute`, `1m`).
    Minute,
    /// One hour (`hour`, `1h`).
    Hour,
    /// One day (`day`, `1d`).
    Day,
    /// One week, from Monday (`week`, `1w`).
    Week,
    /// One month (`month`, `1M`).
    Month,
    /// Three months, from January, April, July or October (`quarter`, `1q`).
    Quarter,
    /// One year (`year`, `1y`).
    Year,
}

impl CalendarUnit {
    /// The unit of an Elasticsearch `calendar_interval` (`month`, `1M`, ...).
    pub fn parse(s: &str) -> Option<CalendarUnit> {
        Some(match s {
            "second" | "1s" => CalendarUnit::Second,
            "minute" | "1m" => CalendarUnit::Minute,
            "hour" | "1h" => CalendarUnit::Hour,
            "day" | "1d" => CalendarUnit::Day,
            "week" | "1w" => CalendarUnit::Week,
            "month" | "1M" => CalendarUnit::Month,
            "quarter" | "1q" => CalendarUnit::Quarter,
            "year" | "1y" => CalendarUnit::Year,
            _ => return None,
        })
    }

    /// The start of the unit that holds an instant, in the local time of `tz`.
    pub fn floor(self, utc_ms: i64, tz: &TimeZone) -> i64 {
        let date = tz.local_time(utc_ms).date();
        let start = match self {
            CalendarUnit::Second => return floor_fixed(utc_ms, SECOND_MS, tz),
            CalendarUnit::Minute => return floor_fixed(utc_ms, MINUTE_MS, tz),
            CalendarUnit::Hour => return floor_fixed(utc_ms, HOUR_MS, tz),
            CalendarUnit::Day => Some(date),
            CalendarUnit::Week => {
                date.checked_sub_days(Days::new(u64::from(date.weekday().num_days_from_monday())))
            }
            CalendarUnit::Month => date.with_day(1),
            CalendarUnit::Quarter => NaiveDate::from_ymd_opt(date.year(), date.month0() / 3 * 3 + 1, 1),
            CalendarUnit::Year => NaiveDate::from_ymd_opt(date.year(), 1, 1),
        };
        start.map_or(utc_ms, |start| tz.utc_ms_of(start.and_time(NaiveTime::MIN)))
    }

    /// The start of the unit after the one that starts at `bucket_start_ms`.
    pub fn next(self, bucket_start_ms: i64, tz: &TimeZone) -> i64 {
        let Some(after) = self.add(bucket_start_ms, 1, tz) else {
            return i64::MAX;
        };
        // Realigns a start that a gap at midnight moved, never going backwards.
        let next = self.floor(after, tz);
        if next > bucket_start_ms { next } else { after }
    }

    /// Adds `n` units: on the instant time-line for hours and smaller, on the local calendar of
    /// `tz` for days and larger (clamping to the end of shorter months, like java.time).
    fn add(self, utc_ms: i64, n: i64, tz: &TimeZone) -> Option<i64> {
        if n == 0 {
            return Some(utc_ms);
        }
        let local = tz.local_time(utc_ms);
        let shifted = match self {
            CalendarUnit::Second => return n.checked_mul(SECOND_MS)?.checked_add(utc_ms),
            CalendarUnit::Minute => return n.checked_mul(MINUTE_MS)?.checked_add(utc_ms),
            CalendarUnit::Hour => return n.checked_mul(HOUR_MS)?.checked_add(utc_ms),
            CalendarUnit::Day => add_days(local, n),
            CalendarUnit::Week => add_days(local, n.checked_mul(7)?),
            CalendarUnit::Month => add_months(local, n),
            CalendarUnit::Quarter => add_months(local, n.checked_mul(3)?),
            CalendarUnit::Year => add_months(local, n.checked_mul(12)?),
        }?;
        Some(tz.utc_ms_of(shifted))
    }
}

/// Rounds an instant down to a multiple of `unit_ms` of local time.
fn floor_fixed(utc_ms: i64, unit_ms: i64, tz: &TimeZone) -> i64 {
    let offset = tz.offset_ms_at(utc_ms);
    let local_ms = utc_ms.saturating_add(offset);
    (local_ms - local_ms.rem_euclid(unit_ms)).saturating_sub(offset)
}

fn add_days(local: NaiveDateTime, n: i64) -> Option<NaiveDateTime> {
    let days = Days::new(n.unsigned_abs());
    if n >= 0 {
        local.checked_add_days(days)
    } else {
        local.checked_sub_days(days)
    }
}

fn add_months(local: NaiveDateTime, n: i64) -> Option<NaiveDateTime> {
    let months = Months::new(u32::try_from(n.unsigned_abs()).ok()?);
    if n >= 0 {
        local.checked_add_months(months)
    } else {
        local.checked_sub_months(months)
    }
}

/// Parses a `fixed_interval` (`500ms`, `30s`, `1m`, `12h`, `7d`) to milliseconds.
pub fn parse_fixed_interval(s: &str) -> Result<i64, String> {
    let invalid = || {
        format!(
            "failed to parse setting [date_histogram.fixedInterval] with value [{s}] as a time value: \
             unit is missing or unrecognized"
        )
    };
    let unit_start = s
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .ok_or_else(invalid)?;
    let (number, unit) = s.split_at(unit_start);
    let unit_ms = match unit {
        "ms" => 1,
        "s" => SECOND_MS,
        "m" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        _ => return Err(invalid()),
    };
    let value: i64 = number.parse().map_err(|_| invalid())?;
    if value <= 0 {
        return Err("Zero or negative time interval not supported".to_owned());
    }
    value.checked_mul(unit_ms).ok_or_else(invalid)
}

/// A date format, rendering instants as Elasticsearch prints them (`key_as_string`, `fields`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateFormatter {
    printer: Printer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Printer {
    EpochMillis,
    EpochSecond,
    Pattern(Vec<Token>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    /// A pattern letter and how many times it repeats: `yyyy` is `('y', 4)`.
    Field(char, usize),
}

impl DateFormatter {
    /// Parses an Elasticsearch `format`: named formats (`strict_date_optional_time`,
    /// `epoch_millis`, `date`, ...) and Java patterns (`yyyy-MM-dd'T'HH:mm`), joined by `||`.
    /// Every alternative must be valid; the first renders.
    pub fn parse(format: &str) -> Result<DateFormatter, String> {
        let printers = format
            .split("||")
            .map(|alternative| Printer::parse(alternative.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| format!("Invalid format: [{format}]: {reason}"))?;
        printers
            .into_iter()
            .next()
            .map(|printer| DateFormatter { printer })
            .ok_or_else(|| format!("Invalid format: [{format}]"))
    }

    /// Renders an instant in the local time of `tz`.
    pub fn format(&self, utc_ms: i64, tz: &TimeZone) -> String {
        match &self.printer {
            Printer::EpochMillis => utc_ms.to_string(),
            Printer::EpochSecond => epoch_seconds(utc_ms),
            Printer::Pattern(tokens) => {
                let local = tz.local_time(utc_ms);
                let offset_secs = tz.offset_ms_at(utc_ms) / SECOND_MS;
                tokens
                    .iter()
                    .map(|token| match token {
                        Token::Literal(text) => text.clone(),
                        Token::Field(letter, count) => render_field(*letter, *count, &local, offset_secs),
                    })
                    .collect()
            }
        }
    }
}

impl Printer {
    fn parse(format: &str) -> Result<Printer, String> {
        Ok(match format {
            "epoch_millis" => Printer::EpochMillis,
            "epoch_second" => Printer::EpochSecond,
            "" => return Err("empty date format".to_owned()),
            _ => Printer::Pattern(parse_pattern(named_pattern(format).unwrap_or(format))?),
        })
    }
}

/// The Java pattern that prints like a named Elasticsearch format.
fn named_pattern(name: &str) -> Option<&'static str> {
    Some(match name.strip_prefix("strict_").unwrap_or(name) {
        "date_optional_time" | "date_time" => "yyyy-MM-dd'T'HH:mm:ss.SSSXXX",
        "date_optional_time_nanos" => "yyyy-MM-dd'T'HH:mm:ss.SSSSSSSSSXXX",
        "date_time_no_millis" => "yyyy-MM-dd'T'HH:mm:ssXXX",
        "date" | "year_month_day" => "yyyy-MM-dd",
        "basic_date" => "yyyyMMdd",
        "basic_date_time" => "yyyyMMdd'T'HHmmss.SSSXX",
        "basic_date_time_no_millis" => "yyyyMMdd'T'HHmmssXX",
        "date_hour" => "yyyy-MM-dd'T'HH",
        "date_hour_minute" => "yyyy-MM-dd'T'HH:mm",
        "date_hour_minute_second" => "yyyy-MM-dd'T'HH:mm:ss",
        "date_hour_minute_second_millis" | "date_hour_minute_second_fraction" => "yyyy-MM-dd'T'HH:mm:ss.SSS",
        "year_month" => "yyyy-MM",
        "year" => "yyyy",
        "hour_minute" => "HH:mm",
        "hour_minute_second" => "HH:mm:ss",
        "time" => "HH:mm:ss.SSSXXX",
        _ => return None,
    })
}

/// Splits a Java pattern into literals and fields; `[` and `]` (optional sections) always print.
fn parse_pattern(pattern: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            let mut text = String::new();
            loop {
                match chars.next() {
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        text.push('\'');
                    }
                    Some('\'') => break,
                    Some(quoted) => text.push(quoted),
                    None => return Err("Pattern ends with an incomplete string literal".to_owned()),
                }
            }
            push_literal(&mut tokens, if text.is_empty() { "'" } else { text.as_str() });
        } else if c.is_ascii_alphabetic() {
            let mut count = 1;
            while chars.next_if_eq(&c).is_some() {
                count += 1;
            }
            check_field(c, count)?;
            tokens.push(Token::Field(c, count));
        } else if c != '[' && c != ']' {
            push_literal(&mut tokens, c.encode_utf8(&mut [0; 4]));
        }
    }
    Ok(tokens)
}

fn push_literal(tokens: &mut Vec<Token>, text: &str) {
    if let Some(Token::Literal(last)) = tokens.last_mut() {
        last.push_str(text);
    } else {
        tokens.push(Token::Literal(text.to_owned()));
    }
}

/// Checks that a pattern field is one `render_field` prints.
fn check_field(letter: char, count: usize) -> Result<(), String> {
    let max = match letter {
        'y' | 'u' => 19,
        'M' | 'E' => 4,
        'd' | 'H' | 'h' | 'm' | 's' => 2,
        'S' => 9,
        'a' => 1,
        'X' => 3,
        'Z' => 5,
        _ => return Err(format!("Unsupported pattern letter: {letter}")),
    };
    if count > max || (letter == 'Z' && count == 4) {
        return Err(format!(
            "Unsupported pattern: {}",
            letter.to_string().repeat(count)
        ));
    }
    Ok(())
}

fn render_field(letter: char, count: usize, local: &NaiveDateTime, offset_secs: i64) -> String {
    let pad = |value: u32| format!("{value:0count$}");
    let name = |full: &str| {
        if count >= 4 {
            full.to_owned()
        } else {
            full[..3].to_owned()
        }
    };
    match letter {
        'y' | 'u' => {
            let year = local.year();
            match count {
                2 => format!("{:02}", year.rem_euclid(100)),
                4 if year > 9999 => format!("+{year}"),
                _ if year < 0 => format!("-{:0count$}", year.unsigned_abs()),
                _ => format!("{year:0count$}"),
            }
        }
        'M' if count >= 3 => name(MONTH_NAMES[local.month0() as usize]),
        'M' => pad(local.month()),
        'd' => pad(local.day()),
        'H' => pad(local.hour()),
        'h' => pad((local.hour() + 11) % 12 + 1),
        'm' => pad(local.minute()),
        's' => pad(local.second()),
        'S' => format!("{:09}", local.nanosecond())[..count].to_owned(),
        'a' => String::from(if local.hour() < 12 { "AM" } else { "PM" }),
        'E' => name(DAY_NAMES[local.weekday().num_days_from_monday() as usize]),
        // `check_field` leaves only the offsets `X` and `Z`.
        _ => render_offset(letter, count, offset_secs),
    }
}

/// `X` is `+01`/`Z`, `XX` `+0100`/`Z`, `XXX` `+01:00`/`Z`; `Z` to `ZZZ` `+0100`/`+0000`, `ZZZZZ`
/// like `XXX`.
fn render_offset(letter: char, count: usize, offset_secs: i64) -> String {
    if offset_secs == 0 && (letter == 'X' || count == 5) {
        return "Z".to_owned();
    }
    let sign = if offset_secs < 0 { '-' } else { '+' };
    let abs = offset_secs.unsigned_abs();
    let (hours, minutes) = (abs / 3600, abs / 60 % 60);
    match (letter, count) {
        ('X', 1) if minutes == 0 => format!("{sign}{hours:02}"),
        ('X', 1 | 2) | ('Z', 1..=3) => format!("{sign}{hours:02}{minutes:02}"),
        _ => format!("{sign}{hours:02}:{minutes:02}"),
    }
}

/// Seconds, with the milliseconds as a fraction without trailing zeros (`1.5`).
fn epoch_seconds(utc_ms: i64) -> String {
    let sign = if utc_ms < 0 { "-" } else { "" };
    let abs = utc_ms.unsigned_abs();
    let (seconds, millis) = (abs / 1000, abs % 1000);
    if millis == 0 {
        return format!("{sign}{seconds}");
    }
    let fraction = format!("{millis:03}");
    format!("{sign}{seconds}.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .expect("RFC 3339 instant")
            .timestamp_millis()
    }

    fn zone(name: &str) -> TimeZone {
        TimeZone::parse(name).expect("valid time zone")
    }

    fn anchor(text: &str) -> Option<i64> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|instant| instant.timestamp_millis())
            .or_else(|| {
                let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
                Some(date.and_time(NaiveTime::MIN).and_utc().timestamp_millis())
            })
    }

    fn math(expr: &str, round_up: bool, tz: &str) -> Result<i64, String> {
        parse_date_math(expr, at("2024-03-15T10:30:45.123Z"), round_up, &zone(tz), &anchor)
    }

    #[test]
    fn parses_time_zones() {
        for utc in ["Z", "UTC", "+00:00", "GMT"] {
            assert_eq!(zone(utc).offset_ms_at(0), 0, "{utc}");
        }
        assert_eq!(zone("+01:00").offset_ms_at(0), HOUR_MS);
        assert_eq!(zone("+0100").offset_ms_at(0), HOUR_MS);
        assert_eq!(zone("-05:30").offset_ms_at(0), -5 * HOUR_MS - 30 * MINUTE_MS);
        assert_eq!(zone("UTC+2").offset_ms_at(0), 2 * HOUR_MS);
        let paris = zone("Europe/Paris");
        assert_eq!(paris.offset_ms_at(at("2024-01-15T00:00:00Z")), HOUR_MS);
        assert_eq!(paris.offset_ms_at(at("2024-07-15T00:00:00Z")), 2 * HOUR_MS);
        assert_eq!(
            zone("America/New_York").offset_ms_at(at("2024-07-15T00:00:00Z")),
            -4 * HOUR_MS
        );
        for bad in ["Mars/Olympus", "+25:00", "+1:00", "+01:0a", "", "+"] {
            assert!(TimeZone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolves_local_times_in_dst_gaps_and_overlaps() {
        let ny = zone("America/New_York");
        let local = |text: &str| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M").expect("local time");
        assert_eq!(
            ny.utc_ms_of(local("2024-03-10T02:30")),
            at("2024-03-10T03:30:00-04:00")
        );
        assert_eq!(
            ny.utc_ms_of(local("2024-11-03T01:30")),
            at("2024-11-03T01:30:00-04:00")
        );
    }

    #[test]
    fn date_math_rounds_down_and_up() {
        assert_eq!(math("now", false, "UTC"), Ok(at("2024-03-15T10:30:45.123Z")));
        assert_eq!(math("now-1d", false, "UTC"), Ok(at("2024-03-14T10:30:45.123Z")));
        assert_eq!(math("now-1d/d", false, "UTC"), Ok(at("2024-03-14T00:00:00Z")));
        assert_eq!(math("now-1d/d", true, "UTC"), Ok(at("2024-03-14T23:59:59.999Z")));
        assert_eq!(math("now+1h/d", false, "UTC"), Ok(at("2024-03-15T00:00:00Z")));
        assert_eq!(math("now/M", false, "UTC"), Ok(at("2024-03-01T00:00:00Z")));
        assert_eq!(math("now/M", true, "UTC"), Ok(at("2024-03-31T23:59:59.999Z")));
        assert_eq!(math("now/w", false, "UTC"), Ok(at("2024-03-11T00:00:00Z")));
        assert_eq!(math("now/H", false, "UTC"), Ok(at("2024-03-15T10:00:00Z")));
        assert_eq!(math("now-90m/m", true, "UTC"), Ok(at("2024-03-15T09:00:59.999Z")));
        assert_eq!(
            math("now/y", false, "+02:00"),
            Ok(at("2024-01-01T00:00:00+02:00"))
        );
        assert_eq!(
            math("now/d", true, "+02:00"),
            Ok(at("2024-03-15T23:59:59.999+02:00"))
        );
        assert_eq!(
            math("now+14h/d", false, "+02:00"),
            Ok(at("2024-03-16T00:00:00+02:00"))
        );
    }

    #[test]
    fn date_math_anchors_and_clamps_months() {
        assert_eq!(
            math("2023-06-01||+1M/d", false, "UTC"),
            Ok(at("2023-07-01T00:00:00Z"))
        );
        assert_eq!(
            math("2023-06-01||+1M/d", true, "UTC"),
            Ok(at("2023-07-01T23:59:59.999Z"))
        );
        assert_eq!(math("2023-06-01", false, "UTC"), Ok(at("2023-06-01T00:00:00Z")));
        assert_eq!(
            math("2024-01-31||+1M", false, "UTC"),
            Ok(at("2024-02-29T00:00:00Z"))
        );
        assert_eq!(
            math("2023-01-31||+1M", false, "UTC"),
            Ok(at("2023-02-28T00:00:00Z"))
        );
        assert_eq!(
            math("2024-03-31||-1M", false, "UTC"),
            Ok(at("2024-02-29T00:00:00Z"))
        );
        assert_eq!(
            math("2024-02-29||+1y", false, "UTC"),
            Ok(at("2025-02-28T00:00:00Z"))
        );
        assert_eq!(
            math("2024-01-31||+2w-1d", false, "UTC"),
            Ok(at("2024-02-13T00:00:00Z"))
        );
        // Days are calendar days in the zone; hours are elapsed time.
        let ny = "America/New_York";
        assert_eq!(
            math("2024-03-09T12:00:00-05:00||+1d", false, ny),
            Ok(at("2024-03-10T12:00:00-04:00"))
        );
        assert_eq!(
            math("2024-03-09T12:00:00-05:00||+24h", false, ny),
            Ok(at("2024-03-10T13:00:00-04:00"))
        );
    }

    #[test]
    fn date_math_errors() {
        let error = math("now-1x", false, "UTC").expect_err("bad unit");
        assert_eq!(
            error,
            "failed to parse date field [now-1x] with format [strict_date_optional_time||epoch_millis]: \
             [unit [x] not supported for date math [-1x]]"
        );
        let cases = [
            ("now*1d", "operator not supported"),
            ("now-1", "truncated date math"),
            ("now-", "truncated date math"),
            ("now/2d", "single unit types"),
            ("garbage||+1d", "failed to parse date field [garbage||+1d]"),
            ("garbage", "failed to parse date field [garbage]"),
        ];
        for (expr, message) in cases {
            let error = math(expr, false, "UTC").expect_err(expr);
            assert!(error.contains(message), "{expr}: {error}");
        }
    }

    #[test]
    fn calendar_units_parse() {
        assert_eq!(CalendarUnit::parse("1M"), Some(CalendarUnit::Month));
        assert_eq!(CalendarUnit::parse("1m"), Some(CalendarUnit::Minute));
        assert_eq!(CalendarUnit::parse("quarter"), Some(CalendarUnit::Quarter));
        assert_eq!(CalendarUnit::parse("1w"), Some(CalendarUnit::Week));
        assert_eq!(CalendarUnit::parse("2d"), None);
    }

    fn bucket(unit: CalendarUnit, instant: &str, tz: &str) -> (i64, i64) {
        let tz = zone(tz);
        let start = unit.floor(at(instant), &tz);
        (start, unit.next(start, &tz))
    }

    #[test]
    fn calendar_buckets_in_utc() {
        let t = "2024-05-15T10:30:00Z";
        let cases = [
            (CalendarUnit::Week, "2024-05-13T00:00:00Z", "2024-05-20T00:00:00Z"),
            (
                CalendarUnit::Month,
                "2024-05-01T00:00:00Z",
                "2024-06-01T00:00:00Z",
            ),
            (
                CalendarUnit::Quarter,
                "2024-04-01T00:00:00Z",
                "2024-07-01T00:00:00Z",
            ),
            (CalendarUnit::Year, "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
            (CalendarUnit::Hour, "2024-05-15T10:00:00Z", "2024-05-15T11:00:00Z"),
        ];
        for (unit, start, next) in cases {
            assert_eq!(bucket(unit, t, "UTC"), (at(start), at(next)), "{unit:?}");
        }
        assert_eq!(
            bucket(CalendarUnit::Week, "2024-01-01T00:00:00Z", "UTC").0,
            at("2024-01-01T00:00:00Z")
        );
    }

    #[test]
    fn calendar_buckets_in_fixed_offsets() {
        let (plus2, t) = ("+02:00", "2024-03-31T23:00:00Z");
        let day = (at("2024-04-01T00:00:00+02:00"), at("2024-04-02T00:00:00+02:00"));
        assert_eq!(bucket(CalendarUnit::Day, t, plus2), day);
        let month = (at("2024-04-01T00:00:00+02:00"), at("2024-05-01T00:00:00+02:00"));
        assert_eq!(bucket(CalendarUnit::Month, t, plus2), month);
        let week = (at("2024-04-01T00:00:00+02:00"), at("2024-04-08T00:00:00+02:00"));
        assert_eq!(bucket(CalendarUnit::Week, t, plus2), week);
        let quarter = (at("2024-04-01T00:00:00+02:00"), at("2024-07-01T00:00:00+02:00"));
        assert_eq!(bucket(CalendarUnit::Quarter, t, plus2), quarter);
        let year = (at("2024-01-01T00:00:00+02:00"), at("2025-01-01T00:00:00+02:00"));
        assert_eq!(bucket(CalendarUnit::Year, t, plus2), year);
        let new_year = (at("2025-01-01T00:00:00+02:00"), at("2026-01-01T00:00:00+02:00"));
        assert_eq!(
            bucket(CalendarUnit::Year, "2024-12-31T23:00:00Z", plus2),
            new_year
        );
        let hour = (at("2024-03-15T15:00:00+05:30"), at("2024-03-15T16:00:00+05:30"));
        assert_eq!(bucket(CalendarUnit::Hour, "2024-03-15T10:10:00Z", "+05:30"), hour);
    }

    #[test]
    fn calendar_buckets_across_dst_in_new_york() {
        let ny = "America/New_York";
        // Spring forward on 2024-03-10: a 23-hour day; fall back on 2024-11-03: a 25-hour day.
        let spring = (at("2024-03-10T00:00:00-05:00"), at("2024-03-11T00:00:00-04:00"));
        assert_eq!(bucket(CalendarUnit::Day, "2024-03-10T12:00:00Z", ny), spring);
        assert_eq!(spring.1 - spring.0, 23 * HOUR_MS);
        let fall = (at("2024-11-03T00:00:00-04:00"), at("2024-11-04T00:00:00-05:00"));
        assert_eq!(bucket(CalendarUnit::Day, "2024-11-03T12:00:00Z", ny), fall);
        assert_eq!(fall.1 - fall.0, 25 * HOUR_MS);
        let week = (at("2024-03-04T00:00:00-05:00"), at("2024-03-11T00:00:00-04:00"));
        assert_eq!(bucket(CalendarUnit::Week, "2024-03-10T12:00:00Z", ny), week);
        let month = (at("2024-03-01T00:00:00-05:00"), at("2024-04-01T00:00:00-04:00"));
        assert_eq!(bucket(CalendarUnit::Month, "2024-03-15T12:00:00Z", ny), month);
        let quarter = (at("2024-10-01T00:00:00-04:00"), at("2025-01-01T00:00:00-05:00"));
        assert_eq!(bucket(CalendarUnit::Quarter, "2024-11-20T12:00:00Z", ny), quarter);
        let year = (at("2024-01-01T00:00:00-05:00"), at("2025-01-01T00:00:00-05:00"));
        assert_eq!(bucket(CalendarUnit::Year, "2024-06-01T00:00:00Z", ny), year);
        // Hours: 01:00 EST is followed by 03:00 EDT; 01:00 EDT by 01:00 EST.
        let tz = zone(ny);
        assert_eq!(
            CalendarUnit::Hour.next(at("2024-03-10T01:00:00-05:00"), &tz),
            at("2024-03-10T03:00:00-04:00")
        );
        assert_eq!(
            CalendarUnit::Hour.next(at("2024-11-03T01:00:00-04:00"), &tz),
            at("2024-11-03T01:00:00-05:00")
        );
        assert_eq!(
            CalendarUnit::Hour.floor(at("2024-11-03T01:30:00-05:00"), &tz),
            at("2024-11-03T01:00:00-05:00")
        );
    }

    #[test]
    fn parses_fixed_intervals() {
        assert_eq!(parse_fixed_interval("500ms"), Ok(500));
        assert_eq!(parse_fixed_interval("30s"), Ok(30_000));
        assert_eq!(parse_fixed_interval("1m"), Ok(60_000));
        assert_eq!(parse_fixed_interval("12h"), Ok(12 * HOUR_MS));
        assert_eq!(parse_fixed_interval("7d"), Ok(7 * DAY_MS));
        for bad in ["1M", "1y", "2w", "1q", "h", "10", "1.5h", "-", ""] {
            let error = parse_fixed_interval(bad).expect_err(bad);
            assert!(
                error.contains("unit is missing or unrecognized"),
                "{bad}: {error}"
            );
        }
        for bad in ["0s", "-1h"] {
            assert_eq!(
                parse_fixed_interval(bad),
                Err("Zero or negative time interval not supported".to_owned())
            );
        }
    }

    fn render(format: &str, instant: &str, tz: &str) -> String {
        DateFormatter::parse(format)
            .expect("valid format")
            .format(at(instant), &zone(tz))
    }

    #[test]
    fn formats_named_formats() {
        let t = "2024-01-01T00:00:00Z";
        assert_eq!(
            render("strict_date_optional_time", t, "UTC"),
            "2024-01-01T00:00:00.000Z"
        );
        assert_eq!(
            render("date_optional_time", t, "+02:00"),
            "2024-01-01T02:00:00.000+02:00"
        );
        assert_eq!(
            render("strict_date_optional_time||epoch_millis", t, "-05:30"),
            "2023-12-31T18:30:00.000-05:30"
        );
        let summer = "2024-07-01T12:00:00.250Z";
        assert_eq!(
            render("strict_date_optional_time", summer, "America/New_York"),
            "2024-07-01T08:00:00.250-04:00"
        );
        assert_eq!(render("epoch_millis", t, "+02:00"), "1704067200000");
        assert_eq!(render("epoch_second", summer, "UTC"), "1719835200.25");
        assert_eq!(render("epoch_second", t, "UTC"), "1704067200");
        assert_eq!(render("strict_date", t, "+02:00"), "2024-01-01");
        assert_eq!(render("date||epoch_millis", t, "-01:00"), "2023-12-31");
        assert_eq!(render("basic_date", t, "UTC"), "20240101");
        assert_eq!(render("yyyy-MM-dd", t, "UTC"), "2024-01-01");
    }

    #[test]
    fn formats_java_patterns() {
        let t = "2024-03-05T15:07:09.045Z";
        assert_eq!(
            render("yyyy/MM/dd HH:mm:ss.SSS", t, "UTC"),
            "2024/03/05 15:07:09.045"
        );
        assert_eq!(render("dd MMM yyyy h:mm a", t, "UTC"), "05 Mar 2024 3:07 PM");
        assert_eq!(render("EEEE d MMMM yy", t, "+02:00"), "Tuesday 5 March 24");
        assert_eq!(
            render("'week of' yy.M.d, hh 'o''clock'", t, "UTC"),
            "week of 24.3.5, 03 o'clock"
        );
        assert_eq!(render("yyyy-MM-dd'T'HH:mmZ", t, "UTC"), "2024-03-05T15:07+0000");
        assert_eq!(render("HH:mmXXX", t, "+02:00"), "17:07+02:00");
        assert_eq!(render("HH:mmX", t, "-05:30"), "09:37-0530");
        assert_eq!(render("yyyy-MM-dd[ HH:mm]", t, "UTC"), "2024-03-05 15:07");
        for bad in ["yyyy-qq", "'open", "MMMMM", "ZZZZ", "date||nonsense"] {
            assert!(DateFormatter::parse(bad).is_err(), "{bad}");
        }
    }
}
