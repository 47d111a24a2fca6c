//! What a volume is: its attributes (StorageClass parameters, PersistentVolume
//! `volumeAttributes`, inline volume attributes), parsed once into a [`VolumeSpec`], and the
//! volume ids this driver gives dynamically provisioned volumes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use datamon::{BranchName, BundleId, BundleSelector, LabelName, RepoName};
use serde::{Deserialize, Serialize};
use tonic::Status;

/// Attribute: the repo (required).
pub const REPO: &str = "repo";
/// Attribute: a bundle id.
pub const BUNDLE: &str = "bundle";
/// Attribute: the bundle a label names (resolved when the volume is created or published).
pub const LABEL: &str = "label";
/// Attribute: the head of a branch (resolved when the volume is created or published).
pub const BRANCH: &str = "branch";
/// Attribute: `read-only` (default) or `versioned`.
pub const MODE: &str = "mode";
/// Attribute of a versioned volume: the commit interval (`5m` by default; `0` turns it off).
pub const AUTOSAVE: &str = "autosave";
/// Attribute of a versioned volume: the branch its commits advance (default: `branch`, else
/// `main`).
pub const COMMIT_BRANCH: &str = "commitBranch";
/// Attribute of a versioned volume: the label each commit sets.
pub const COMMIT_LABEL: &str = "commitLabel";
/// Attribute of a versioned volume: the message of its commits.
pub const MESSAGE: &str = "message";

/// Keys the kubelet adds to the volume context (pod info, ephemeral) and the external
/// provisioner adds to parameters (PVC name): never part of the volume's identity.
pub const K8S_PREFIX: &str = "csi.storage.k8s.io/";
/// The pod's name, in the volume context of a driver with `podInfoOnMount`.
pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
/// The pod's namespace.
pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";

/// How a volume is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The bundle, read-only.
    ReadOnly,
    /// A mutable mount starting from the bundle (or empty), committed as new bundles.
    Versioned {
        /// How often to commit while published (`None`: only on unpublish).
        #[serde(with = "humantime_serde_opt")]
        autosave: Option<Duration>,
        /// The branch commits advance.
        branch: Option<BranchName>,
        /// The label each commit sets.
        label: Option<LabelName>,
        /// The message of the commits.
        message: String,
    },
}

mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_millis().to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        v.map(|ms| {
            ms.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

/// Which bundle a volume shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selector {
    /// A bundle id.
    Bundle(BundleId),
    /// The bundle a label names.
    Label(LabelName),
    /// The head of a branch.
    Branch(BranchName),
    /// Nothing: an empty versioned volume.
    Empty,
}

impl Selector {
    /// The library's selector (`None` for [`Selector::Empty`]).
    pub fn to_library(&self) -> Option<BundleSelector> {
        match self {
            Selector::Bundle(id) => Some(BundleSelector::Id(*id)),
            Selector::Label(l) => Some(BundleSelector::Label(l.clone())),
            Selector::Branch(b) => Some(BundleSelector::Branch(b.clone())),
            Selector::Empty => None,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Bundle(id) => write!(f, "bundle {id}"),
            Selector::Label(l) => write!(f, "label {l}"),
            Selector::Branch(b) => write!(f, "branch {b}"),
            Selector::Empty => f.write_str("no bundle (empty)"),
        }
    }
}

/// A volume: repo, bundle selector and mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// The repo.
    pub repo: RepoName,
    /// The bundle.
    pub selector: Selector,
    /// Read-only or versioned.
    pub mode: Mode,
}

impl VolumeSpec {
    /// Parses volume attributes (keys under [`K8S_PREFIX`] are ignored; unknown keys are
    /// refused, so a typo is not silently a different volume).
    ///
    /// # Errors
    /// `InvalidArgument` naming the attribute: a missing repo, two selectors, a read-only
    /// volume without one, a bad name, id, mode or duration.
    pub fn from_attributes(attrs: &HashMap<String, String>) -> Result<VolumeSpec, Status> {
        let known = [
            REPO,
            BUNDLE,
            LABEL,
            BRANCH,
            MODE,
            AUTOSAVE,
            COMMIT_BRANCH,
            COMMIT_LABEL,
            MESSAGE,
        ];
        let mut unknown: Vec<&str> = attrs
            .keys()
            .map(String::as_str)
            .filter(|k| !k.starts_with(K8S_PREFIX) && !known.contains(k))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(Status::invalid_argument(format!(
                "unknown volume attribute(s) {}: the attributes are {}",
                unknown.join(", "),
                known.join(", ")
            )));
        }
        let get = |k: &str| attrs.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let repo_s = get(REPO).ok_or_else(|| {
            Status::invalid_argument("volume attribute `repo` is missing: name the repo to mount")
        })?;
        let repo: RepoName = parse(REPO, repo_s)?;
        let given: Vec<&str> = [BUNDLE, LABEL, BRANCH]
            .into_iter()
            .filter(|k| get(k).is_some())
            .collect();
        if given.len() > 1 {
            return Err(Status::invalid_argument(format!(
                "repo {repo}: give one of the attributes bundle, label or branch, not {}",
                given.join(" and ")
            )));
        }
        let selector = if let Some(v) = get(BUNDLE) {
            Selector::Bundle(parse(BUNDLE, v)?)
        } else if let Some(v) = get(LABEL) {
            Selector::Label(parse(LABEL, v)?)
        } else if let Some(v) = get(BRANCH) {
            Selector::Branch(parse(BRANCH, v)?)
        } else {
            Selector::Empty
        };
        let mode = match get(MODE).unwrap_or("read-only") {
            "read-only" | "readonly" | "ro" => {
                if selector == Selector::Empty {
                    return Err(Status::invalid_argument(format!(
                        "repo {repo}: a read-only volume needs one of the attributes bundle, label or branch"
                    )));
                }
                for k in [AUTOSAVE, COMMIT_BRANCH, COMMIT_LABEL, MESSAGE] {
                    if get(k).is_some() {
                        return Err(Status::invalid_argument(format!(
                            "repo {repo}: attribute `{k}` is for versioned volumes (mode: versioned)"
                        )));
                    }
                }
                Mode::ReadOnly
            }
            "versioned" => {
                let autosave = match get(AUTOSAVE) {
                    None => Some(Duration::from_secs(300)),
                    Some("0") => None,
                    Some(v) => Some(humantime::parse_duration(v).map_err(|e| {
                        Status::invalid_argument(format!(
                            "repo {repo}: attribute autosave {v:?} is not a duration (30s, 5m, 1h): {e}"
                        ))
                    })?)
                    .filter(|d| !d.is_zero()),
                };
                let branch = match get(COMMIT_BRANCH) {
                    Some(v) => Some(parse(COMMIT_BRANCH, v)?),
                    None => match &selector {
                        Selector::Branch(b) => Some(b.clone()),
                        _ => None,
                    },
                };
                let label = get(COMMIT_LABEL)
                    .map(|v| parse(COMMIT_LABEL, v))
                    .transpose()?;
                Mode::Versioned {
                    autosave,
                    branch,
                    label,
                    message: get(MESSAGE)
                        .unwrap_or("versioned volume (datamon CSI)")
                        .to_owned(),
                }
            }
            other => {
                return Err(Status::invalid_argument(format!(
                "repo {repo}: volume attribute mode {other:?} is neither read-only nor versioned"
            )))
            }
        };
        Ok(VolumeSpec {
            repo,
            selector,
            mode,
        })
    }

    /// The attributes that describe this spec (the inverse of [`VolumeSpec::from_attributes`]).
    pub fn to_attributes(&self) -> HashMap<String, String> {
        let mut a = HashMap::new();
        a.insert(REPO.to_owned(), self.repo.to_string());
        match &self.selector {
            Selector::Bundle(id) => a.insert(BUNDLE.to_owned(), id.to_string()),
            Selector::Label(l) => a.insert(LABEL.to_owned(), l.to_string()),
            Selector::Branch(b) => a.insert(BRANCH.to_owned(), b.to_string()),
            Selector::Empty => None,
        };
        match &self.mode {
            Mode::ReadOnly => {
                a.insert(MODE.to_owned(), "read-only".to_owned());
            }
            Mode::Versioned {
                autosave,
                branch,
                label,
                message,
            } => {
                a.insert(MODE.to_owned(), "versioned".to_owned());
                a.insert(
                    AUTOSAVE.to_owned(),
                    autosave.map_or("0".to_owned(), |d| {
                        humantime::format_duration(d).to_string()
                    }),
                );
                if let Some(b) = branch {
                    a.insert(COMMIT_BRANCH.to_owned(), b.to_string());
                }
                if let Some(l) = label {
                    a.insert(COMMIT_LABEL.to_owned(), l.to_string());
                }
                a.insert(MESSAGE.to_owned(), message.clone());
            }
        }
        a
    }

    /// Whether the volume is versioned (writable).
    pub fn is_versioned(&self) -> bool {
        matches!(self.mode, Mode::Versioned { .. })
    }
}

fn parse<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, Status>
where
    T::Err: fmt::Display,
{
    v.parse()
        .map_err(|e| Status::invalid_argument(format!("volume attribute {key} {v:?}: {e}")))
}

/// The pod metadata the kubelet passes in the volume context (with `podInfoOnMount`), as
/// bundle metadata: `k8s.pod.name`, `k8s.pod.namespace`.
pub fn pod_meta(context: &HashMap<String, String>) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (k, key) in [
        (POD_NAME, "k8s.pod.name"),
        (POD_NAMESPACE, "k8s.pod.namespace"),
    ] {
        if let Some(v) = context.get(k) {
            m.insert(key.to_owned(), v.clone());
        }
    }
    m
}

/// The id of a dynamically provisioned volume: `ro:<repo>:<bundle>:<h>` or
/// `rw:<repo>:<bundle or ->:<h>`, where `<h>` is a hash of the volume's name, so the id
/// records the bundle a label resolved to at creation and differs between claims.
pub fn volume_id(spec: &VolumeSpec, bundle: Option<&BundleId>, name: &str) -> String {
    let h = datamon::Hash::of(name.as_bytes()).to_hex();
    format!(
        "{}:{}:{}:{}",
        if spec.is_versioned() { "rw" } else { "ro" },
        spec.repo,
        bundle.map_or("-".to_owned(), ToString::to_string),
        &h[..12]
    )
}

/// What a volume id of [`volume_id`]'s form names: versioned or not, repo, bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedId {
    /// A versioned volume.
    pub versioned: bool,
    /// The repo.
    pub repo: RepoName,
    /// The bundle (none: an empty versioned volume).
    pub bundle: Option<BundleId>,
}

/// Parses a volume id made by [`volume_id`]; `None` for any other id (a static volume's
/// handle is free-form).
pub fn parse_volume_id(id: &str) -> Option<ParsedId> {
    let mut it = id.split(':');
    let versioned = match it.next()? {
        "ro" => false,
        "rw" => true,
        _ => return None,
    };
    let repo = it.next()?.parse().ok()?;
    let bundle = match it.next()? {
        "-" if versioned => None,
        b => Some(b.parse().ok()?),
    };
    let h = it.next()?;
    if h.len() != 12 || it.next().is_some() {
        return None;
    }
    Some(ParsedId {
        versioned,
        repo,
        bundle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn attributes_parse_and_round_trip() {
        let s = VolumeSpec::from_attributes(&attrs(&[
            ("repo", "imgs"),
            ("label", "prod"),
            (POD_NAME, "p"),
        ]))
        .expect("valid");
        assert_eq!(s.selector, Selector::Label("prod".parse().expect("name")));
        assert_eq!(s.mode, Mode::ReadOnly);
        assert_eq!(
            VolumeSpec::from_attributes(&s.to_attributes()).ok(),
            Some(s)
        );

        let v = VolumeSpec::from_attributes(&attrs(&[
            ("repo", "nb"),
            ("mode", "versioned"),
            ("autosave", "30s"),
            ("commitLabel", "latest"),
        ]))
        .expect("valid");
        let Mode::Versioned { autosave, .. } = &v.mode else {
            panic!("versioned")
        };
        assert_eq!(*autosave, Some(Duration::from_secs(30)));
        assert_eq!(
            VolumeSpec::from_attributes(&v.to_attributes()).ok(),
            Some(v)
        );
    }

    #[test]
    fn bad_attributes_are_invalid_arguments_naming_the_problem() {
        for (kv, needle) in [
            (vec![("label", "x")], "repo"),
            (vec![("repo", "r")], "needs one of"),
            (
                vec![("repo", "r"), ("label", "a"), ("branch", "b")],
                "label and branch",
            ),
            (vec![("repo", "r"), ("bundle", "nope")], "bundle"),
            (
                vec![("repo", "r"), ("label", "a"), ("colour", "x")],
                "colour",
            ),
            (vec![("repo", "r"), ("mode", "rw")], "mode"),
            (
                vec![("repo", "r"), ("mode", "versioned"), ("autosave", "soon")],
                "autosave",
            ),
            (
                vec![("repo", "r"), ("label", "a"), ("autosave", "1m")],
                "versioned",
            ),
        ] {
            let e = VolumeSpec::from_attributes(&attrs(&kv)).expect_err("invalid");
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{kv:?}");
            assert!(e.message().contains(needle), "{kv:?}: {}", e.message());
        }
    }

    #[test]
    fn volume_ids_record_repo_and_bundle() {
        let id: BundleId = BundleId::generate();
        let spec = VolumeSpec {
            repo: "imgs".parse().expect("name"),
            selector: Selector::Label("prod".parse().expect("name")),
            mode: Mode::ReadOnly,
        };
        let v = volume_id(&spec, Some(&id), "pvc-1");
        assert!(v.len() <= 128);
        assert_ne!(v, volume_id(&spec, Some(&id), "pvc-2"));
        let p = parse_volume_id(&v).expect("ours");
        assert_eq!((p.versioned, p.bundle), (false, Some(id)));
        assert_eq!(p.repo.as_str(), "imgs");
        assert_eq!(parse_volume_id("my-static-pv"), None);
        assert_eq!(parse_volume_id("ro:imgs:-:0123456789ab"), None);
    }
}
