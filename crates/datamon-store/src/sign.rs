//! Signed writes and the trust list (`docs/security.md`, `docs/format/encryption.md`).
//!
//! A writer with an [`Identity`] (an ed25519 key) signs every record it creates: the stored
//! record is an envelope `{"signed_by":"<public key>","signature":"<sig>","record":<record>}`,
//! the signature covering the record's key and bytes (so a signed record moved to another key
//! does not verify). A store whose `trust/` sequence holds a valid trust list believes only
//! records signed by a key on the list, for the repos the list gives it: other records (unsigned,
//! signed by others, or by a key trusted for other repos) are ignored and reported, as if they
//! were not there. The first trust list is signed by the store's trust root (pinned by the
//! opener, else the signer of `trust/0000000001`); each later one by an admin of the list before.

use std::path::Path;

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{keys, Error, Result, Store};

/// The environment variable naming the identity file that signs this user's writes.
pub const ENV_SIGNING_KEY_FILE: &str = "DATAMON_SIGNING_KEY_FILE";
/// The environment variable pinning the trust root (a public key, hex) a store must have.
pub const ENV_TRUST_ROOT: &str = "DATAMON_TRUST_ROOT";

/// The prefix of the trust list's sequence.
pub const TRUST: &str = "trust/";

const ENVELOPE_START: &[u8] = b"{\"signed_by\":\"";

/// A writer's signing key (ed25519).
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.public_key())
    }
}

impl Identity {
    /// Writes a new identity file (the 32-byte seed in hex, mode 0600; never overwrites).
    ///
    /// # Errors
    /// The file exists or cannot be written.
    pub fn generate_file(path: &Path) -> Result<Identity> {
        crate::crypto::generate_key_file(path)?;
        Identity::from_file(path)
    }

    /// Reads an identity file.
    ///
    /// # Errors
    /// The file cannot be read or is not an identity file.
    pub fn from_file(path: &Path) -> Result<Identity> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?);
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), &mut seed[..]).map_err(|_| Error::Locked {
            detail: format!(
                "{} is not a datamon identity file (64 hex digits, as `identity generate` writes)",
                path.display()
            ),
        })?;
        Ok(Identity {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The public key, hex: how trust lists name this identity.
    pub fn public_key(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    fn sign(&self, key: &str, payload: &[u8]) -> String {
        hex::encode(self.key.sign(&signed_bytes(key, payload)).to_bytes())
    }
}

fn signed_bytes(key: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + key.len() + payload.len());
    m.extend_from_slice(b"datamon-record\0");
    m.extend_from_slice(key.as_bytes());
    m.push(0);
    m.extend_from_slice(payload);
    m
}

/// A key on a trust list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    /// Its public key, hex.
    pub key: String,
    /// Who holds it; shown as the author of what it signs.
    pub name: String,
    /// The repos it may write (`*`: all of them, and store-wide records).
    pub repos: Vec<String>,
    /// Whether it may change the trust list.
    #[serde(default)]
    pub admin: bool,
}

impl TrustedKey {
    fn may_write(&self, key: &str) -> bool {
        if self.repos.iter().any(|r| r == "*") {
            return true;
        }
        match key
            .strip_prefix(keys::REPOS)
            .and_then(|r| r.split('/').next())
        {
            Some(repo) => self.repos.iter().any(|r| r == repo),
            // Runs: any trusted writer; gc plans and other store-wide records: `*` only.
            None => key.starts_with(keys::RUNS),
        }
    }
}

/// One record of the trust list's sequence: the whole list.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrustList {
    keys: Vec<TrustedKey>,
    author: String,
    time: DateTime<Utc>,
}

/// The trust list in force.
#[derive(Debug)]
pub(crate) struct Policy {
    keys: Vec<TrustedKey>,
    root: String,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    signed_by: String,
    signature: String,
    #[serde(borrow)]
    record: &'a serde_json::value::RawValue,
}

/// Wraps a record's bytes in a signed envelope.
pub(crate) fn envelope(identity: &Identity, key: &str, payload: &[u8]) -> Vec<u8> {
    let sig = identity.sign(key, payload);
    let mut out = Vec::with_capacity(payload.len() + 220);
    out.extend_from_slice(ENVELOPE_START);
    out.extend_from_slice(identity.public_key().as_bytes());
    out.extend_from_slice(b"\",\"signature\":\"");
    out.extend_from_slice(sig.as_bytes());
    out.extend_from_slice(b"\",\"record\":");
    out.extend_from_slice(payload);
    out.push(b'}');
    out
}

/// The signer and the record of a signed envelope; `None` for an unsigned record.
///
/// # Errors
/// [`Error::Corrupt`] for an envelope whose signature does not verify.
pub(crate) fn open_envelope<'a>(key: &str, bytes: &'a [u8]) -> Result<Option<(String, &'a [u8])>> {
    if !bytes.starts_with(ENVELOPE_START) {
        return Ok(None);
    }
    let bad = |detail: &str| Error::Corrupt {
        what: key.to_owned(),
        detail: detail.to_owned(),
    };
    let e: Envelope<'a> =
        serde_json::from_slice(bytes).map_err(|_| bad("a damaged signed record"))?;
    let mut pk = [0u8; 32];
    hex::decode_to_slice(&e.signed_by, &mut pk).map_err(|_| bad("a bad signer key"))?;
    let mut sig = [0u8; 64];
    hex::decode_to_slice(&e.signature, &mut sig).map_err(|_| bad("a bad signature"))?;
    let payload = e.record.get().as_bytes();
    VerifyingKey::from_bytes(&pk)
        .map_err(|_| bad("a bad signer key"))?
        .verify(&signed_bytes(key, payload), &Signature::from_bytes(&sig))
        .map_err(|_| {
            bad("its signature does not verify: altered, or moved from another key, refused")
        })?;
    Ok(Some((e.signed_by, payload)))
}

/// Whether records under `key` are signed by a writer with an identity.
pub(crate) fn signed_key(key: &str) -> bool {
    key != keys::CONFIG && !key.starts_with(keys::KEYS) && !key.starts_with("tmp/")
}

impl Store {
    /// What is believed of record `key` read as `bytes` (already opened): the record itself,
    /// its author shown as the trusted signer's name. With a trust list in force, a record not
    /// signed by a key trusted for it is ignored: reported (a warning) and answered as
    /// [`Error::NotFound`].
    pub(crate) fn believe(&self, key: &str, bytes: bytes::Bytes) -> Result<bytes::Bytes> {
        let signed = open_envelope(key, &bytes)?;
        let Some(policy) = self.policy.as_deref() else {
            return Ok(match signed {
                Some((_, payload)) => bytes.slice_ref(payload),
                None => bytes,
            });
        };
        if key.starts_with(TRUST) {
            return Ok(match signed {
                Some((_, payload)) => bytes.slice_ref(payload),
                None => bytes,
            });
        }
        let ignored = |why: String| {
            tracing::warn!("ignoring {key}: {why}");
            Err(Error::NotFound {
                key: format!("{key} (ignored: {why})"),
            })
        };
        let Some((signer, payload)) = signed else {
            return ignored("not signed, and the store has a trust list".into());
        };
        let Some(tk) = policy.keys.iter().find(|k| k.key == signer) else {
            return ignored(format!(
                "signed by {}, which is not on the trust list",
                short(&signer)
            ));
        };
        if !tk.may_write(key) {
            return ignored(format!(
                "signed by {} ({}), which the trust list does not let write there",
                tk.name,
                short(&signer)
            ));
        }
        // The author shown is the signing identity.
        let mut v: serde_json::Value =
            serde_json::from_slice(payload).map_err(|source| Error::Json {
                key: key.to_owned(),
                source,
            })?;
        if let Some(o) = v.as_object_mut() {
            let field = if key.starts_with(keys::RUNS) {
                "user"
            } else {
                "author"
            };
            if o.get(field).is_some_and(serde_json::Value::is_string) {
                o.insert(
                    field.into(),
                    serde_json::Value::String(format!("{} [{}]", tk.name, short(&signer))),
                );
            }
        }
        Ok(bytes::Bytes::from(
            serde_json::to_vec(&v).expect("values serialize"),
        ))
    }

    /// Reads the trust list (when the store has one) and puts it in force. `pinned`: the trust
    /// root the opener expects. Returns the trust root, if any.
    pub(crate) async fn load_trust(&mut self, pinned: Option<&str>) -> Result<Option<String>> {
        let listed: Vec<String> = self
            .list(TRUST)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if listed.is_empty() {
            if let Some(root) = pinned {
                return Err(Error::Locked {
                    detail: format!(
                        "store {} has no trust list, but its trust root {} is pinned: the list \
                         was deleted (tampering?); nothing was read",
                        self.url,
                        short(root)
                    ),
                });
            }
            self.policy = None;
            return Ok(None);
        }
        let mut current: Option<Vec<TrustedKey>> = None;
        let mut root: Option<String> = pinned.map(str::to_owned);
        for key in listed {
            let bytes = self.open_for(&key, self.get(&key).await?)?;
            let signed = match open_envelope(&key, &bytes) {
                Ok(Some(s)) => s,
                Ok(None) => {
                    tracing::warn!("ignoring {key}: an unsigned trust list");
                    continue;
                }
                Err(e) => {
                    tracing::warn!("ignoring {key}: {e}");
                    continue;
                }
            };
            let (signer, payload) = signed;
            let Ok(list) = serde_json::from_slice::<TrustList>(payload) else {
                tracing::warn!("ignoring {key}: a damaged trust list");
                continue;
            };
            let authorized = match &current {
                None => {
                    let r = root.get_or_insert_with(|| signer.clone());
                    *r == signer && list.keys.iter().any(|k| k.key == signer && k.admin)
                }
                Some(cur) => cur.iter().any(|k| k.key == signer && k.admin),
            };
            if authorized {
                current = Some(list.keys);
            } else {
                tracing::warn!(
                    "ignoring {key}: signed by {}, not an admin of the trust list before it",
                    short(&signer)
                );
            }
        }
        let (Some(keys), Some(root)) = (current, root) else {
            return Err(Error::Locked {
                detail: format!(
                    "store {} has a trust list but no valid record of it{}: refusing to believe \
                     anything",
                    self.url,
                    pinned.map_or(String::new(), |r| format!(
                        " signed by the pinned trust root {}",
                        short(r)
                    ))
                ),
            });
        };
        self.policy = Some(std::sync::Arc::new(Policy {
            keys,
            root: root.clone(),
        }));
        Ok(Some(root))
    }

    /// Refuses, before anything is written, a record that readers would ignore: with a trust
    /// list in force, one this opener cannot sign with a key trusted for it.
    ///
    /// # Errors
    /// [`Error::Locked`] naming the missing identity or the key.
    pub(crate) fn may_write(&self, key: &str) -> Result<()> {
        let Some(policy) = self.policy.as_deref() else {
            return Ok(());
        };
        if !signed_key(key) || key.starts_with(TRUST) {
            return Ok(());
        }
        let Some(me) = self.identity() else {
            return Err(Error::Locked {
                detail: format!(
                    "store {} believes only signed records (it has a trust list): give an \
                     identity ({ENV_SIGNING_KEY_FILE}) that the list trusts; nothing was written",
                    self.url
                ),
            });
        };
        match policy.keys.iter().find(|k| k.key == me) {
            Some(k) if k.may_write(key) => Ok(()),
            Some(k) => Err(Error::Locked {
                detail: format!(
                    "identity {} ({}) may not write {key}: the trust list gives it {}; nothing \
                     was written",
                    k.name,
                    short(&me),
                    k.repos.join(", ")
                ),
            }),
            None => Err(Error::Locked {
                detail: format!(
                    "identity {} is not on the store's trust list, so readers would ignore what \
                     it writes: ask an admin to `trust add` it; nothing was written",
                    short(&me)
                ),
            }),
        }
    }

    /// The trust list in force, if the store has one.
    pub fn trust_list(&self) -> Option<&[TrustedKey]> {
        self.policy.as_deref().map(|p| p.keys.as_slice())
    }

    /// The store's trust root (the signer of its first trust list), if it has one: pin it
    /// (`Unlock::pin_trust_root`) so that a replaced trust list is refused.
    pub fn trust_root(&self) -> Option<&str> {
        self.policy.as_deref().map(|p| p.root.as_str())
    }

    /// The public key of the identity that signs this opener's writes, if any.
    pub fn identity(&self) -> Option<String> {
        self.identity.as_deref().map(Identity::public_key)
    }

    /// Replaces the trust list by `keys`, signed by this opener's identity: an admin of the
    /// list in force or, for the first list, any identity that lists itself as an admin (it
    /// becomes the trust root). Returns the record's sequence number.
    ///
    /// # Errors
    /// [`Error::KeyChange`] without an identity, when it may not change the list, or for a
    /// list that no admin could change again; a backend error.
    pub async fn set_trust(&mut self, keys: Vec<TrustedKey>, author: &str) -> Result<u64> {
        let refuse = |detail: String| Err(Error::KeyChange { detail });
        let Some(me) = self.identity() else {
            return refuse("changing the trust list needs an identity to sign it".into());
        };
        for k in &keys {
            let mut pk = [0u8; 32];
            if hex::decode_to_slice(&k.key, &mut pk).is_err()
                || VerifyingKey::from_bytes(&pk).is_err()
            {
                return refuse(format!(
                    "{:?} is not an ed25519 public key (64 hex digits)",
                    k.key
                ));
            }
        }
        match self.trust_list() {
            Some(cur) if !cur.iter().any(|k| k.key == me && k.admin) => {
                return refuse(format!(
                    "identity {} is not an admin of the trust list",
                    short(&me)
                ))
            }
            None if !keys.iter().any(|k| k.key == me && k.admin) => return refuse(
                "the first trust list must name its signer as an admin (it becomes the trust root)"
                    .into(),
            ),
            _ => {}
        }
        if !keys.iter().any(|k| k.admin) {
            return refuse("the trust list needs at least one admin".into());
        }
        let author = author.to_owned();
        let (seq, _) = self
            .append::<TrustList, Error>(TRUST, |_| {
                Ok(TrustList {
                    keys: keys.clone(),
                    author: author.clone(),
                    time: Utc::now(),
                })
            })
            .await?;
        let pinned = self.trust_root().map(str::to_owned);
        self.load_trust(pinned.as_deref()).await?;
        Ok(seq)
    }
}

/// The first 16 hex digits of a public key, for messages.
fn short(key: &str) -> &str {
    &key[..key.len().min(16)]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_verify_only_under_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::generate_file(&dir.path().join("id")).unwrap();
        let env = envelope(&id, "repos/r/labels/p/0000000001", b"{\"bundle\":\"x\"}");
        let (signer, payload) = open_envelope("repos/r/labels/p/0000000001", &env)
            .unwrap()
            .unwrap();
        assert_eq!(signer, id.public_key());
        assert_eq!(payload, b"{\"bundle\":\"x\"}");
        let moved = open_envelope("repos/r/labels/p/0000000002", &env).unwrap_err();
        assert!(moved.to_string().contains("does not verify"), "{moved}");
        let mut altered = env.clone();
        let at = altered.len() - 4;
        altered[at] = b'y';
        assert!(open_envelope("repos/r/labels/p/0000000001", &altered).is_err());
        assert!(open_envelope("k", b"{\"bundle\":1}").unwrap().is_none());
    }
}
