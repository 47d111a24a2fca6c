//! Parsers of the arguments several commands share: `KEY=VALUE` items, `--where` filters and
//! times.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use chrono::{DateTime, NaiveDate, Utc};

/// Parses `KEY=VALUE` items.
pub(crate) fn parse_kv(flag: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("--{flag} {kv:?}: expected KEY=VALUE"),
        })
        .collect()
}

/// Parses `--where meta.KEY=VALUE` filters.
pub(crate) fn parse_where(items: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|w| {
            let kv = w.strip_prefix("meta.").with_context(|| {
                format!("--where {w:?}: only metadata can be queried, as meta.KEY=VALUE")
            })?;
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => bail!("--where {w:?}: expected meta.KEY=VALUE"),
            }
        })
        .collect()
}

/// Parses a time: RFC 3339, a date (midnight UTC), or a duration ago (`90s`, `30m`, `12h`, `7d`, `2w`).
pub(crate) fn parse_time(s: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    // An age: `90s`, `30m`, `12h`, `7d`, `2w`, or humantime's longer forms (`1h 30m`).
    if let Ok(age) = humantime::parse_duration(s) {
        if let Ok(age) = chrono::Duration::from_std(age) {
            return Ok(Utc::now() - age);
        }
    }
    bail!("{s:?} is not a time: use RFC 3339 (2026-01-31T12:00:00Z), a date (2026-01-31) or an age (30m, 12h, 7d)")
}

/// Parses a positive duration: a number of seconds, or humantime's forms (`30s`, `5m`, `1h`,
/// `1h 30m`).
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let d = match s.parse::<u64>() {
        Ok(n) => std::time::Duration::from_secs(n),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("{s:?}: {e}; expected a duration such as 30s, 5m or 1h"))?,
    };
    if d.is_zero() {
        return Err("the duration must be positive".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(
            parse_time("2026-01-02").unwrap().to_rfc3339(),
            "2026-01-02T00:00:00+00:00"
        );
        assert!(parse_time("2026-01-02T03:04:05Z").is_ok());
        let week = parse_time("7d").unwrap();
        let expected = Utc::now() - chrono::Duration::days(7);
        assert!((week - expected).num_seconds().abs() < 5, "{week}");
        let half = parse_time("30m").unwrap();
        assert!(
            (Utc::now() - half - chrono::Duration::minutes(30))
                .num_seconds()
                .abs()
                < 5
        );
        assert!(parse_time("2w").unwrap() < week);
        assert!(parse_time("90s").unwrap() > half);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("").is_err());
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn filters() {
        assert_eq!(
            parse_where(&["meta.a=b=c".into()]).unwrap(),
            vec![("a".to_owned(), "b=c".to_owned())]
        );
        assert!(parse_where(&["a=b".into()]).is_err());
        assert!(parse_kv("param", &["=x".into()]).is_err());
    }
}
