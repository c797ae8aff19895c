//! FHIR primitive formats that the REST layer needs outside full validation:
//! logical ids, version ids, and instants (`meta.lastUpdated`, `_since`).
//!
//! The complete set of primitive regexes used when validating a resource body lives in
//! [`crate::validate`]; this module is the part the server needs on every request.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// `id`: 1 to 64 characters of `[A-Za-z0-9\-\.]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A version id as Bastion issues them: a decimal integer starting at 1.
pub fn parse_version_id(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|n| *n >= 1)
}

/// A point in time with millisecond precision, as stored in `meta.lastUpdated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    /// Milliseconds since the Unix epoch, UTC.
    pub millis: i64,
}

impl Instant {
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        Instant { millis: (now.unix_timestamp_nanos() / 1_000_000) as i64 }
    }

    pub fn from_millis(millis: i64) -> Self {
        Instant { millis }
    }

    fn to_offset_datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(self.millis as i128 * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// FHIR instant with millisecond precision in UTC: `2026-12-02T19:10:00.123Z`.
    pub fn to_fhir(self) -> String {
        let t = self.to_offset_datetime();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }

    /// The HTTP-date form used in `Last-Modified` (second precision).
    pub fn to_http_date(self) -> String {
        let t = self.to_offset_datetime();
        const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        format!(
            "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
            DAYS[t.weekday().number_days_from_monday() as usize],
            t.day(),
            MONTHS[u8::from(t.month()) as usize - 1],
            t.year(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }

    /// Parses a FHIR `instant` (full precision to the second, with a zone), or a
    /// `dateTime` with at least a day; a bare date is taken as its start in UTC.
    /// Used for `_since` and `_at`, where the spec requires an instant but clients
    /// commonly send a date.
    pub fn parse_fhir(s: &str) -> Option<Self> {
        if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
            let t = t.to_offset(UtcOffset::UTC);
            return Some(Instant { millis: (t.unix_timestamp_nanos() / 1_000_000) as i64 });
        }
        // YYYY-MM-DD
        if s.len() == 10 {
            let with_time = format!("{s}T00:00:00Z");
            return Self::parse_fhir(&with_time).filter(|_| s.as_bytes()[4] == b'-');
        }
        None
    }

    /// Parses an HTTP-date (`If-Modified-Since`).
    pub fn parse_http_date(s: &str) -> Option<Self> {
        let fmt = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let t = time::PrimitiveDateTime::parse(s.trim(), &fmt).ok()?.assume_utc();
        Some(Instant { millis: t.unix_timestamp() * 1000 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_valid_id("abc-1.2"));
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("a_b"));
        assert!(!is_valid_id("ä"));
    }

    #[test]
    fn version_ids() {
        assert_eq!(parse_version_id("1"), Some(1));
        assert_eq!(parse_version_id("42"), Some(42));
        assert_eq!(parse_version_id("0"), None);
        assert_eq!(parse_version_id("-1"), None);
        assert_eq!(parse_version_id("1a"), None);
        assert_eq!(parse_version_id(""), None);
    }

    #[test]
    fn instants_round_trip() {
        let i = Instant::parse_fhir("2026-12-02T19:10:00.123Z").unwrap();
        assert_eq!(i.to_fhir(), "2026-12-02T19:10:00.123Z");
        let j = Instant::parse_fhir("2026-12-02T20:10:00.123+01:00").unwrap();
        assert_eq!(i, j);
        assert_eq!(Instant::parse_fhir("2026-12-02").unwrap().to_fhir(), "2026-12-02T00:00:00.000Z");
        assert!(Instant::parse_fhir("2026-13-02").is_none());
        assert!(Instant::parse_fhir("yesterday").is_none());
    }

    #[test]
    fn http_dates() {
        let i = Instant::parse_fhir("2026-12-02T19:10:05Z").unwrap();
        assert_eq!(i.to_http_date(), "Wed, 02 Dec 2026 19:10:05 GMT");
        assert_eq!(Instant::parse_http_date("Wed, 02 Dec 2026 19:10:05 GMT"), Some(i));
        assert_eq!(Instant::parse_http_date("garbage"), None);
    }
}

/// The span of time a FHIR `date`, `dateTime` or `instant` denotes at its precision, as
/// inclusive milliseconds since the epoch: `2020` is the whole year, `2020-03-04T10:00:00Z`
/// is that second. A dateTime without a zone is taken as UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub low: i64,
    pub high: i64,
}

impl DateRange {
    pub fn parse(s: &str) -> Option<DateRange> {
        use time::{Date, Month, PrimitiveDateTime, Time};
        let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
        let ymd = |y: i32, m: u8, d: u8| Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok();
        let start = |d: Date| ms(PrimitiveDateTime::new(d, Time::MIDNIGHT).assume_utc());
        let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
        if !s.contains('T') {
            let parts: Vec<&str> = s.split('-').collect();
            return match parts.as_slice() {
                [y] if digits(y, 4) => {
                    let y: i32 = y.parse().ok()?;
                    Some(DateRange { low: start(ymd(y, 1, 1)?), high: start(ymd(y + 1, 1, 1)?) - 1 })
                }
                [y, m] if digits(y, 4) && digits(m, 2) => {
                    let (y, m): (i32, u8) = (y.parse().ok()?, m.parse().ok()?);
                    let next = if m == 12 { ymd(y + 1, 1, 1)? } else { ymd(y, m + 1, 1)? };
                    Some(DateRange { low: start(ymd(y, m, 1)?), high: start(next) - 1 })
                }
                [y, m, d] if digits(y, 4) && digits(m, 2) && digits(d, 2) => {
                    let day = ymd(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
                    Some(DateRange { low: start(day), high: start(day.next_day()?) - 1 })
                }
                _ => None,
            };
        }
        // A time: with a zone as given, or UTC when none.
        if s.len() < 19 || !s.is_char_boundary(10) || !s.is_char_boundary(11) {
            return None;
        }
        let has_zone = s.ends_with('Z') || s[10..].contains('+') || s[11..].contains('-');
        let full = if has_zone { s.to_string() } else { format!("{s}Z") };
        let t = OffsetDateTime::parse(&full, &Rfc3339).ok()?;
        let low = ms(t);
        let has_fraction = s.contains('.');
        Some(DateRange { low, high: if has_fraction { low } else { low + 999 } })
    }
}

#[cfg(test)]
mod date_range_tests {
    use super::*;

    #[test]
    fn ranges_follow_precision() {
        let y = DateRange::parse("2020").unwrap();
        assert_eq!(Instant::from_millis(y.low).to_fhir(), "2020-01-01T00:00:00.000Z");
        assert_eq!(Instant::from_millis(y.high).to_fhir(), "2020-12-31T23:59:59.999Z");
        let m = DateRange::parse("2020-02").unwrap();
        assert_eq!(Instant::from_millis(m.high).to_fhir(), "2020-02-29T23:59:59.999Z");
        let d = DateRange::parse("2020-12-31").unwrap();
        assert_eq!(Instant::from_millis(d.high).to_fhir(), "2020-12-31T23:59:59.999Z");
        let t = DateRange::parse("2020-03-04T10:00:00+01:00").unwrap();
        assert_eq!(Instant::from_millis(t.low).to_fhir(), "2020-03-04T09:00:00.000Z");
        assert_eq!(t.high - t.low, 999);
        let f = DateRange::parse("2020-03-04T10:00:00.250Z").unwrap();
        assert_eq!(f.low, f.high);
        assert!(DateRange::parse("2020-13").is_none());
        assert!(DateRange::parse("2020-02-30").is_none());
        assert!(DateRange::parse("20-01-01").is_none());
        assert!(DateRange::parse("2020-01-01T25:00:00Z").is_none());
    }
}
