//! Query strings: `a=1&b=x%20y&meta=k%3Dv&meta=k2%3Dv2`, repeated keys kept, values decoded.

use chrono::{DateTime, Utc};
use datamon::RepoName;
use percent_encoding::percent_decode_str;

use crate::error::{ApiError, ApiResult};

/// The largest page any listing returns.
pub(crate) const MAX_LIMIT: usize = 1000;

/// A decoded query string.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

fn decode(s: &str) -> ApiResult<String> {
    let plus = s.replace('+', " ");
    percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::bad("the query string is not UTF-8"))
}

impl Params {
    /// Parses a raw query string (`None`: no query).
    pub(crate) fn parse(raw: Option<&str>) -> ApiResult<Params> {
        let mut out = Vec::new();
        for part in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            out.push((decode(k)?, decode(v)?));
        }
        Ok(Params(out))
    }

    /// The last value of `key`, if given and not empty.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub(crate) fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `key` parsed, or `None` when absent.
    pub(crate) fn parsed<T: std::str::FromStr>(&self, key: &str) -> ApiResult<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.get(key)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| ApiError::bad(format!("invalid {key} {v:?}: {e}")))
            })
            .transpose()
    }

    /// `limit` (default `default`, at most [`MAX_LIMIT`]).
    pub(crate) fn limit(&self, default: usize) -> ApiResult<usize> {
        Ok(self
            .parsed::<usize>("limit")?
            .unwrap_or(default)
            .clamp(1, MAX_LIMIT))
    }

    /// `offset` (default 0).
    pub(crate) fn offset(&self) -> ApiResult<usize> {
        Ok(self.parsed::<usize>("offset")?.unwrap_or(0))
    }

    /// A time: RFC 3339 (`2024-05-01T12:00:00Z`) or a date (`2024-05-01`, midnight UTC).
    pub(crate) fn time(&self, key: &str) -> ApiResult<Option<DateTime<Utc>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        if let Ok(t) = DateTime::parse_from_rfc3339(v) {
            return Ok(Some(t.with_timezone(&Utc)));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
            let t = d.and_hms_opt(0, 0, 0).expect("midnight exists");
            return Ok(Some(t.and_utc()));
        }
        Err(ApiError::bad(format!(
            "invalid {key} {v:?}: expected an RFC 3339 time or a date (YYYY-MM-DD)"
        )))
    }

    /// `meta=KEY=VALUE` filters.
    pub(crate) fn meta(&self) -> ApiResult<Vec<(String, String)>> {
        self.all("meta")
            .filter(|m| !m.is_empty())
            .map(|m| {
                m.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| ApiError::bad(format!("invalid meta {m:?}: expected KEY=VALUE")))
            })
            .collect()
    }

    /// The required `key`.
    pub(crate) fn required(&self, key: &str) -> ApiResult<&str> {
        self.get(key)
            .ok_or_else(|| ApiError::bad(format!("the query parameter {key} is required")))
    }
}

/// A repo name from a URL.
pub(crate) fn repo_name(s: &str) -> ApiResult<RepoName> {
    s.parse()
        .map_err(|e: datamon::types::Error| ApiError::bad(e.to_string()))
}

/// The components of a path inside a bundle. `.`, `..`, empty components and NUL are refused:
/// a path names an entry of the bundle or nothing.
pub(crate) fn components(path: &str) -> ApiResult<Vec<&str>> {
    let mut out = Vec::new();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." || c.contains('\0') {
            return Err(ApiError::bad(format!(
                "invalid path {path:?}: . and .. components are not allowed"
            )));
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_paths_stay_inside() {
        let p = Params::parse(Some("a=1&meta=k%3Dv&meta=x%3Dy+z&b=&path=%2E%2E%2Fetc")).unwrap();
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
        assert_eq!(
            p.meta().unwrap(),
            [("k".into(), "v".into()), ("x".into(), "y z".into())]
        );
        assert!(components(p.get("path").unwrap()).is_err());
        assert!(components("a/../b").is_err());
        assert!(components("./a").is_err());
        assert_eq!(components("/a//b/").unwrap(), ["a", "b"]);
        assert!(Params::parse(Some("limit=x")).unwrap().limit(5).is_err());
        assert_eq!(Params::parse(None).unwrap().limit(5).unwrap(), 5);
        assert!(Params::parse(Some("since=2024-05-01"))
            .unwrap()
            .time("since")
            .unwrap()
            .is_some());
        assert!(Params::parse(Some("since=yesterday"))
            .unwrap()
            .time("since")
            .is_err());
    }
}
