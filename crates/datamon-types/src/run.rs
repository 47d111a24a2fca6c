//! Runs: the record of one pipeline step (`runs/<run-id>.json`): code version, parameters, input
//! and output bundles, times, status and metrics. Runs are the lineage that answers "what
//! changed?" between two results.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{BundleId, Error, RepoName};

/// The id of a run: a KSUID like a [`BundleId`] (27 base62 characters, sortable by time).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(BundleId);

impl RunId {
    /// A new id for the current time.
    pub fn generate() -> Self {
        RunId(BundleId::generate())
    }

    /// The time encoded in the id, in seconds since the Unix epoch.
    pub fn timestamp_seconds(&self) -> i64 {
        self.0.timestamp_seconds()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({self})")
    }
}

impl FromStr for RunId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        s.parse::<BundleId>()
            .map(RunId)
            .map_err(|_| Error::InvalidRunId { id: s.to_owned() })
    }
}

impl Serialize for RunId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// The command exited with status 0 and its outputs were uploaded.
    Succeeded,
    /// The command failed; nothing was uploaded.
    Failed,
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        })
    }
}

/// The version of the code a run executed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeVersion {
    /// The git commit of the working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// Whether the git working tree had uncommitted changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_dirty: Option<bool>,
    /// The container image (ideally with its digest) the run executed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl fmt::Display for CodeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(c) = &self.git_commit {
            let dirty = if self.git_dirty == Some(true) {
                "+dirty"
            } else {
                ""
            };
            parts.push(format!("git {c}{dirty}"));
        }
        if let Some(i) = &self.image {
            parts.push(format!("image {i}"));
        }
        if parts.is_empty() {
            f.write_str("unknown")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// A bundle a run read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInput {
    /// The repo.
    pub repo: RepoName,
    /// The bundle the selector resolved to.
    pub bundle: BundleId,
    /// The selector as given (a bundle id, a label, a branch), for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The part of the bundle that was read, when not all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A bundle a run wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutput {
    /// The repo.
    pub repo: RepoName,
    /// The new bundle.
    pub bundle: BundleId,
}

/// One run of a pipeline step (`runs/<run-id>.json`), written once when the run ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Its id, generated when the run started.
    pub id: RunId,
    /// The pipeline step (`prepare`, `train`...).
    pub step: String,
    /// How it ended.
    pub status: RunStatus,
    /// The command's exit status, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The command line, when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The code version.
    #[serde(default)]
    pub code: CodeVersion,
    /// The machine it ran on.
    #[serde(default)]
    pub host: String,
    /// Who ran it.
    #[serde(default)]
    pub user: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// The bundles it read.
    #[serde(default)]
    pub inputs: Vec<RunInput>,
    /// The bundles it wrote (empty for a failed run).
    #[serde(default)]
    pub outputs: Vec<RunOutput>,
    /// Metrics the command reported; nested JSON objects are flattened to dotted keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, serde_json::Value>,
    /// User metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_round_trip_and_errors() {
        let id = RunId::generate();
        assert_eq!(id.to_string().parse::<RunId>().unwrap(), id);
        let e = "nope".parse::<RunId>().unwrap_err();
        assert!(e.to_string().contains("invalid run id"), "{e}");
    }

    #[test]
    fn run_json_round_trip() {
        let run = Run {
            id: RunId::generate(),
            step: "train".into(),
            status: RunStatus::Succeeded,
            exit_code: Some(0),
            command: vec!["python".into(), "train.py".into()],
            code: CodeVersion {
                git_commit: Some("abc".into()),
                git_dirty: Some(false),
                image: None,
            },
            host: "h".into(),
            user: "u".into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            params: [("lr".to_owned(), "0.1".to_owned())].into(),
            inputs: vec![RunInput {
                repo: "data".parse().unwrap(),
                bundle: BundleId::generate(),
                selector: Some("latest".into()),
                path: None,
            }],
            outputs: vec![],
            metrics: [("acc".to_owned(), serde_json::json!(0.9))].into(),
            meta: BTreeMap::new(),
        };
        let s = serde_json::to_string(&run).unwrap();
        assert_eq!(serde_json::from_str::<Run>(&s).unwrap(), run);
        assert!(s.contains("\"status\":\"succeeded\""));
    }
}
