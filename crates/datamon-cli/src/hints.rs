//! What to do next, in CLI terms, for the library's errors.
//!
//! The library says what happened (and its `ErrorKind`); only the CLI knows its commands and
//! flags, so the advice ("create it with `datamon repo create ...`", "pass --force") is added
//! here, from the error's variant.

use datamon::{Error, PathRole};

/// The advice for `e`, to append to its message (it starts with its separator), if any.
pub(crate) fn hint(e: &Error) -> Option<String> {
    Some(match e.root() {
        Error::RepoNotFound { repo } => format!(
            ": create it with `datamon repo create --repo {repo} --description ...` or see `datamon repo list`"
        ),
        Error::RepoExists { repo } => {
            format!(": pick another name, or see it with `datamon repo get --repo {repo}`")
        }
        Error::BundleNotFound { repo, .. } => format!(": see `datamon bundle list --repo {repo}`"),
        Error::NoBundles { repo } => format!(
            ": upload one with `datamon bundle upload --repo {repo} --path DIR --message ...`"
        ),
        Error::LabelNotFound { repo, .. } => format!(": see `datamon label list --repo {repo}`"),
        Error::BranchNotFound { repo, .. } => {
            format!(": see `datamon branch list --repo {repo}`")
        }
        Error::LabelConflict { .. } => {
            "; check with `datamon label get --history` and retry".to_owned()
        }
        Error::RunNotFound { .. } => ": see `datamon run list`".to_owned(),
        Error::BundleDeleted {
            replaced_by: Some(n),
            ..
        } => format!(": use bundle {n}"),
        Error::BundleDeleted { repo, .. } => format!(": see `datamon bundle list --repo {repo}`"),
        Error::RepoDeleted {
            renamed_to: Some(to),
            ..
        } => format!(": use --repo {to}"),
        Error::RepoDeleted { .. } => ": see `datamon repo list`".to_owned(),
        Error::BundleReferenced { .. } => {
            ": move or delete them first, or pass --remove-refs to delete them too".to_owned()
        }
        Error::CollectedMeanwhile { .. } => ": run the upload again".to_owned(),
        Error::SelectorNotFound { repo, .. } => format!(
            ": see `datamon label list --repo {repo}` and `datamon branch list --repo {repo}`"
        ),
        Error::PathNotInBundle { repo, id, .. } => {
            format!(": see `datamon bundle list files --repo {repo} --bundle {id}`")
        }
        Error::DestinationNotEmpty { .. } => {
            ": choose an empty or new directory, or pass --force to overwrite its files".to_owned()
        }
        Error::DestinationExists { .. } => ": remove it or pass --force to overwrite it".to_owned(),
        Error::DestinationConflict { .. } => ": pass --force to replace it".to_owned(),
        Error::Corrupt { .. } => " (run `datamon fsck --read-data`)".to_owned(),
        Error::Store(datamon::StoreError::Locked { .. }) => {
            " (run in a terminal to be asked for the passphrase, or give the context a key file: \
             `datamon context create ... --key-file PATH`)"
                .to_owned()
        }
        Error::UnreadableSource { .. } => "; check --path".to_owned(),
        Error::Unreadable { .. } => " (pass --skip-on-error to upload without it)".to_owned(),
        Error::NotADirectory { role, .. } => match role {
            PathRole::UploadSource => {
                ": --path takes the folder whose content becomes the bundle".to_owned()
            }
            PathRole::DownloadDestination => ": --destination takes a folder".to_owned(),
            _ => return None,
        },
        Error::DiamondNotFound { repo, .. } => {
            format!(": see `datamon diamond list --repo {repo}`")
        }
        Error::DiamondClosed { repo, diamond, .. } => format!(
            ": start a new one with `datamon diamond initialize --repo {repo}` (see `datamon diamond get --repo {repo} --diamond {diamond}`)"
        ),
        Error::DiamondSplitUndecided { repo, diamond, .. } => format!(
            ": `datamon diamond get --repo {repo} --diamond {diamond}` shows whether it is in once the commit ends"
        ),
        Error::DiamondEmpty { repo, diamond } => format!(
            ": add one with `datamon diamond split add --repo {repo} --diamond {diamond} --path DIR`"
        ),
        Error::DiamondConflicts { .. } => {
            ": pass --conflicts latest or --conflicts keep-all to resolve them".to_owned()
        }
        Error::Invalid(datamon::types::Error::InvalidBundleId { .. }) => {
            " (see `datamon bundle list`)".to_owned()
        }
        Error::Invalid(datamon::types::Error::InvalidRunId { .. }) => {
            " (see `datamon run list`)".to_owned()
        }
        _ => return None,
    })
}

/// The advice for the library error in `e`'s chain, if any.
pub(crate) fn hint_for(e: &anyhow::Error) -> Option<String> {
    e.chain()
        .filter_map(|c| c.downcast_ref::<Error>())
        .last()
        .and_then(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_messages_have_no_flags_and_the_cli_adds_them() {
        let e = Error::RepoNotFound { repo: "r".into() };
        assert_eq!(e.to_string(), "repo \"r\" not found");
        assert_eq!(
            format!("{e}{}", hint(&e).unwrap()),
            "repo \"r\" not found: create it with `datamon repo create --repo r --description ...` or see `datamon repo list`"
        );
        let e = Error::DestinationNotEmpty { path: "/d".into() };
        assert!(!e.to_string().contains("--"), "{e}");
        assert!(hint(&e).unwrap().contains("--force"));
    }
}
