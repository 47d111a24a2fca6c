//! Validated names of repos, labels and branches.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

const RULE: &str =
    "use 1-64 characters: letters, digits, '-', '_' and '.', starting with a letter or digit";

fn validate(kind: &'static str, name: &str) -> Result<(), Error> {
    let bad = |reason| Error::InvalidName {
        kind,
        name: name.to_owned(),
        reason,
    };
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 64 || !first_ok {
        return Err(bad(RULE));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad(RULE));
    }
    if name.contains("..") {
        return Err(bad("'..' is not allowed in names"));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                validate($kind, s)?;
                Ok($ty(s.to_owned()))
            }
        }

        impl TryFrom<String> for $ty {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                validate($kind, &s)?;
                Ok($ty(s))
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}

name_type!(
    /// The name of a repo: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
    RepoName,
    "repo"
);
name_type!(
    /// The name of a label: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
    LabelName,
    "label"
);
name_type!(
    /// The name of a branch: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
    BranchName,
    "branch"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "my-repo", "v1.2_x", "A9"] {
            ok.parse::<RepoName>().unwrap();
        }
        for bad in ["", "-a", ".x", "a/b", "a b", "a..b", &"x".repeat(65), "é"] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad}");
        }
    }
}
