//! Encrypted stores (`docs/format/encryption.md`, `docs/security.md`).
//!
//! A random 32-byte master key, wrapped by one or more user keys (`keys/<id>.json`: a passphrase
//! through Argon2id, or a key file), gives two subkeys (BLAKE3 `derive_key`):
//! - the **id key**: chunk and tree ids are BLAKE3 keyed with it ([`ContentHasher::Keyed`]), so
//!   ids say nothing about content to whoever lacks the key, and dedup keeps working;
//! - the **seal key**: every object but `config` and `keys/` is sealed under a random 24-byte
//!   nonce, with AES-256-GCM under a subkey per nonce ([`Cipher::Aes`]; XChaCha20-Poly1305 in
//!   the stores made before 2026-12-03). The associated data binds each sealed thing to its place: an
//!   object to its key (so a record moved or replayed under another key fails to open), a blob
//!   to its id, a pack's footer to the pack format.
//!
//! What an observer of the bucket still sees: keys (repo, label and branch names, bundle, run and
//! pack ids, sequence numbers), object sizes and write times, and the key objects' names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use datamon_types::{ContentHasher, EncryptionConfig, ENCRYPTED_FORMAT_VERSION};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{keys, Error, Result, Store};

/// The prefix of a sealed object: magic (8), nonce (24), then ciphertext and tag (16).
const SEAL_MAGIC: &[u8; 8] = b"DMSEAL\0\x01";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// What sealing adds to a blob: its nonce and tag.
pub const BLOB_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const CTX_IDS: &str = "datamon 2026-12 chunk and tree ids";
const CTX_SEAL: &str = "datamon 2026-12 object sealing";
const CTX_CHECK: &str = "datamon 2026-12 key check";
const CTX_KEY_FILE: &str = "datamon 2026-12 key file";

/// Argon2id settings for new passphrase keys: 64 MiB, 3 passes (about 0.3 s on one core).
const KDF_M_KIB: u32 = 64 * 1024;
const KDF_T: u32 = 3;
const KDF_P: u32 = 1;

/// The environment variable holding a passphrase (for scripts; prefer a file).
pub const ENV_PASSPHRASE: &str = "DATAMON_PASSPHRASE";
/// The environment variable naming a file whose first line is the passphrase.
pub const ENV_PASSPHRASE_FILE: &str = "DATAMON_PASSPHRASE_FILE";
/// The environment variable naming a key file (`datamon key generate`).
pub const ENV_KEY_FILE: &str = "DATAMON_KEY_FILE";

/// A user key: what opens an encrypted store.
#[derive(Clone)]
pub enum Secret {
    /// A passphrase (stretched with Argon2id).
    Passphrase(Zeroizing<String>),
    /// The 32 random bytes of a key file.
    KeyFile(Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Passphrase(_) => "Secret::Passphrase(..)",
            Secret::KeyFile(_) => "Secret::KeyFile(..)",
        })
    }
}

impl Secret {
    /// A passphrase; refused when empty.
    ///
    /// # Errors
    /// [`Error::Locked`] for an empty passphrase.
    pub fn passphrase(p: impl Into<String>) -> Result<Secret> {
        let p = Zeroizing::new(p.into());
        if p.is_empty() {
            return Err(Error::Locked {
                detail: "the passphrase is empty".into(),
            });
        }
        Ok(Secret::Passphrase(p))
    }

    /// The passphrase on the first line of a file.
    ///
    /// # Errors
    /// The file cannot be read, or its first line is empty.
    pub fn passphrase_file(path: &Path) -> Result<Secret> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?);
        let line = text.lines().next().unwrap_or("");
        Secret::passphrase(line).map_err(|_| Error::Locked {
            detail: format!("the passphrase file {} is empty", path.display()),
        })
    }

    /// Reads a key file written by [`generate_key_file`] (64 hex digits).
    ///
    /// # Errors
    /// The file cannot be read or is not a datamon key file.
    pub fn key_file(path: &Path) -> Result<Secret> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?);
        let mut k = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), &mut k[..]).map_err(|_| Error::Locked {
            detail: format!(
                "{} is not a datamon key file (64 hex digits, as `key generate` writes)",
                path.display()
            ),
        })?;
        Ok(Secret::KeyFile(k))
    }

    fn kind(&self) -> KeyKind {
        match self {
            Secret::Passphrase(_) => KeyKind::Passphrase,
            Secret::KeyFile(_) => KeyKind::KeyFile,
        }
    }
}

/// Writes a new random key file (mode 0600); never overwrites a file.
///
/// # Errors
/// The file exists or cannot be written.
pub fn generate_key_file(path: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let k = Zeroizing::new(random_key());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(&k[..])));
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// What an opener holds: the secrets that may open an encrypted store (tried in order), the
/// identity that signs its writes, and the trust root it expects of the store's trust list.
#[derive(Debug, Clone, Default)]
pub struct Unlock {
    secrets: Vec<Secret>,
    /// Where the secrets came from, for error messages ("DATAMON_PASSPHRASE", a path).
    sources: Vec<String>,
    problems: Vec<String>,
    pub(crate) identity: Option<Arc<crate::sign::Identity>>,
    pub(crate) trust_root: Option<String>,
}

impl Unlock {
    /// Nothing: only plain stores open.
    pub fn none() -> Unlock {
        Unlock::default()
    }

    /// One secret.
    pub fn with(secret: Secret, source: impl Into<String>) -> Unlock {
        let mut u = Unlock::none();
        u.add(secret, source);
        u
    }

    /// Adds a secret to try.
    pub fn add(&mut self, secret: Secret, source: impl Into<String>) {
        self.secrets.push(secret);
        self.sources.push(source.into());
    }

    /// The secrets named by `DATAMON_PASSPHRASE`, `DATAMON_PASSPHRASE_FILE` and
    /// `DATAMON_KEY_FILE`. A file that cannot be read is reported when a store needs it.
    pub fn from_env() -> Unlock {
        let mut u = Unlock::none();
        if let Ok(p) = std::env::var(ENV_PASSPHRASE) {
            match Secret::passphrase(p) {
                Ok(s) => u.add(s, ENV_PASSPHRASE),
                Err(e) => u.problems.push(format!("{ENV_PASSPHRASE}: {e}")),
            }
        }
        if let Some(p) = std::env::var_os(ENV_PASSPHRASE_FILE) {
            let p = PathBuf::from(p);
            match Secret::passphrase_file(&p) {
                Ok(s) => u.add(s, format!("{ENV_PASSPHRASE_FILE} ({})", p.display())),
                Err(e) => u.problems.push(format!("{ENV_PASSPHRASE_FILE}: {e}")),
            }
        }
        if let Some(p) = std::env::var_os(ENV_KEY_FILE) {
            let p = PathBuf::from(p);
            match Secret::key_file(&p) {
                Ok(s) => u.add(s, format!("{ENV_KEY_FILE} ({})", p.display())),
                Err(e) => u.problems.push(format!("{ENV_KEY_FILE}: {e}")),
            }
        }
        if let Some(p) = std::env::var_os(crate::sign::ENV_SIGNING_KEY_FILE) {
            match crate::sign::Identity::from_file(Path::new(&p)) {
                Ok(id) => u.set_identity(id),
                Err(e) => tracing::warn!(
                    "{}: {e}; writes are not signed",
                    crate::sign::ENV_SIGNING_KEY_FILE
                ),
            }
        }
        if let Ok(r) = std::env::var(crate::sign::ENV_TRUST_ROOT) {
            u.pin_trust_root(r);
        }
        u
    }

    /// Signs this opener's writes with `identity` (see `docs/security.md`).
    pub fn set_identity(&mut self, identity: crate::sign::Identity) {
        self.identity = Some(Arc::new(identity));
    }

    /// Refuses a store whose trust list does not start with `root` (a public key, hex), or
    /// that has none.
    pub fn pin_trust_root(&mut self, root: impl Into<String>) {
        self.trust_root = Some(root.into());
    }

    /// Adds the secrets of `other` after these.
    pub fn extend(&mut self, other: Unlock) {
        self.secrets.extend(other.secrets);
        self.sources.extend(other.sources);
        self.problems.extend(other.problems);
        self.identity = self.identity.take().or(other.identity);
        self.trust_root = self.trust_root.take().or(other.trust_root);
    }

    /// Whether no secret was given.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

/// What a key object wraps the master key with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// A passphrase through Argon2id.
    Passphrase,
    /// A key file.
    KeyFile,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyKind::Passphrase => "passphrase",
            KeyKind::KeyFile => "key-file",
        })
    }
}

/// Argon2id parameters of a passphrase key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Kdf {
    alg: String,
    m_kib: u32,
    t: u32,
    p: u32,
    salt: String,
}

/// A key object, `keys/<id>.json`: the master key wrapped by one user key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRecord {
    id: String,
    name: String,
    kind: KeyKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<Kdf>,
    /// Hex of nonce (24) || sealed master key.
    wrapped: String,
    created_at: DateTime<Utc>,
    created_by: String,
}

/// A key of an encrypted store, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// Its id (`keys/<id>.json`).
    pub id: String,
    /// The name given when it was added.
    pub name: String,
    /// Passphrase or key file.
    pub kind: KeyKind,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// Who added it.
    pub created_by: String,
}

impl From<&KeyRecord> for KeyInfo {
    fn from(r: &KeyRecord) -> KeyInfo {
        KeyInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            kind: r.kind,
            created_at: r.created_at,
            created_by: r.created_by.clone(),
        }
    }
}

/// `EncryptionConfig::cipher` of stores made from 2026-12-03 on: see [`Cipher::Aes`].
pub(crate) const CIPHER_AES: &str = "aes256gcm-blake3-subkey";
/// `EncryptionConfig::cipher` of the stores made before.
const CIPHER_XCHACHA: &str = "xchacha20poly1305";
const CTX_SEAL_AES: &str = "datamon 2026-12 object sealing, aes-256-gcm";

/// The AEAD a store seals with. Both take a random 24-byte nonce, so the sealed layout (nonce,
/// ciphertext, tag) is the same.
enum Cipher {
    /// XChaCha20-Poly1305 (RustCrypto): about 1.3 GB/s on one core here.
    XChaCha(XChaCha20Poly1305),
    /// AES-256-GCM (ring, with AES-NI and carry-less multiply: about 8 GB/s here) under a key
    /// of its own for every sealed thing: BLAKE3 keyed with the seal key over the nonce's first
    /// 12 bytes, the other 12 being the GCM nonce. A fresh key each time (about 0.6 us) lifts
    /// GCM's limit of about 2^32 random nonces per key, which a large store would reach.
    Aes(Zeroizing<[u8; 32]>),
}

impl Cipher {
    fn aes_key(k: &[u8; 32], nonce: &[u8]) -> ring::aead::LessSafeKey {
        let sub = Zeroizing::new(*blake3::keyed_hash(k, &nonce[..12]).as_bytes());
        ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &sub[..])
                .expect("a 32-byte key is an AES-256 key"),
        )
    }

    fn gcm_nonce(nonce: &[u8]) -> ring::aead::Nonce {
        ring::aead::Nonce::try_assume_unique_for_key(&nonce[12..])
            .expect("12 bytes are a GCM nonce")
    }

    /// Encrypts `buf` in place; returns the tag.
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        match self {
            Cipher::XChaCha(c) => c
                .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, buf)
                .expect("XChaCha20-Poly1305 seals any length a pack holds")
                .into(),
            Cipher::Aes(k) => {
                let tag = Cipher::aes_key(k, nonce)
                    .seal_in_place_separate_tag(
                        Cipher::gcm_nonce(nonce),
                        ring::aead::Aad::from(aad),
                        buf,
                    )
                    .expect("AES-256-GCM seals any length a pack holds");
                tag.as_ref().try_into().expect("a 16-byte tag")
            }
        }
    }

    /// Decrypts `buf` in place when it authenticates with `tag`.
    fn open(&self, nonce: &[u8], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> Option<()> {
        match self {
            Cipher::XChaCha(c) => c
                .decrypt_in_place_detached(
                    XNonce::from_slice(nonce),
                    aad,
                    buf,
                    Tag::from_slice(tag),
                )
                .ok(),
            Cipher::Aes(k) => Cipher::aes_key(k, nonce)
                .open_in_place_separate_tag(
                    Cipher::gcm_nonce(nonce),
                    ring::aead::Aad::from(aad),
                    ring::aead::Tag::try_from(tag).ok()?,
                    buf,
                    0..,
                )
                .ok()
                .map(|_| ()),
        }
    }
}

/// The keys of an opened encrypted store: the id hasher and the sealing cipher.
pub struct Sealer {
    master: Zeroizing<[u8; 32]>,
    aead: Cipher,
    hasher: ContentHasher,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

fn random_key() -> [u8; 32] {
    use rand::TryRngCore;
    let mut k = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut k)
        .expect("the operating system's random source works");
    k
}

fn object_aad(key: &str) -> Vec<u8> {
    let mut aad = b"datamon-object\0".to_vec();
    aad.extend_from_slice(key.as_bytes());
    aad
}

fn blob_aad(hash: &datamon_types::Hash) -> [u8; 45] {
    let mut aad = [0u8; 45];
    aad[..13].copy_from_slice(b"datamon-blob\0");
    aad[13..].copy_from_slice(hash.as_bytes());
    aad
}

const FOOTER_AAD: &[u8] = b"datamon-pack-footer";

impl Sealer {
    /// The keys of a store sealing with `cipher` (an `EncryptionConfig::cipher`), or `None`
    /// for a cipher this version does not know.
    fn new(master: Zeroizing<[u8; 32]>, cipher: &str) -> Option<Sealer> {
        let aead = match cipher {
            CIPHER_AES => Cipher::Aes(Zeroizing::new(blake3::derive_key(
                CTX_SEAL_AES,
                &master[..],
            ))),
            CIPHER_XCHACHA => {
                let seal = Zeroizing::new(blake3::derive_key(CTX_SEAL, &master[..]));
                Cipher::XChaCha(XChaCha20Poly1305::new(Key::from_slice(&seal[..])))
            }
            _ => return None,
        };
        let ids = blake3::derive_key(CTX_IDS, &master[..]);
        Some(Sealer {
            aead,
            hasher: ContentHasher::Keyed(ids),
            master,
        })
    }

    fn key_check(&self) -> String {
        hex::encode(blake3::derive_key(CTX_CHECK, &self.master[..]))
    }

    /// How this store names content.
    pub fn hasher(&self) -> ContentHasher {
        self.hasher
    }

    fn seal(&self, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        let nonce: [u8; NONCE_LEN] = rand::random();
        out.extend_from_slice(&nonce);
        let at = out.len();
        out.extend_from_slice(plain);
        let tag = self.aead.seal(&nonce, aad, &mut out[at..]);
        out.extend_from_slice(&tag);
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let mut buf = sealed.to_vec();
        let r = self.open_in_place(aad, &mut buf)?;
        buf.copy_within(r.clone(), 0);
        buf.truncate(r.len());
        Some(buf)
    }

    /// Opens `sealed` where it lies: on success the plaintext is decrypted in place and its
    /// range within `sealed` returned (no allocation, no copy).
    fn open_in_place(&self, aad: &[u8], sealed: &mut [u8]) -> Option<std::ops::Range<usize>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let body_len = rest.len() - TAG_LEN;
        let (body, tag) = rest.split_at_mut(body_len);
        self.aead.open(nonce, aad, body, tag)?;
        Some(NONCE_LEN..NONCE_LEN + body_len)
    }

    /// Seals a whole object stored under `key`.
    pub(crate) fn seal_object(&self, key: &str, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEAL_MAGIC.len() + plain.len() + BLOB_OVERHEAD);
        out.extend_from_slice(SEAL_MAGIC);
        self.seal(&object_aad(key), plain, &mut out);
        out
    }

    /// Opens an object read from `key`.
    pub(crate) fn open_object(&self, key: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let Some(body) = sealed.strip_prefix(SEAL_MAGIC) else {
            return Err(Error::Corrupt {
                what: key.to_owned(),
                detail: "not sealed, in an encrypted store: written by someone without the \
                         store's key (tampering), refused"
                    .into(),
            });
        };
        self.open(&object_aad(key), body)
            .ok_or_else(|| Error::Corrupt {
                what: key.to_owned(),
                detail:
                    "does not authenticate: altered, or copied from another key (a replayed or \
                     swapped record), refused"
                        .into(),
            })
    }

    /// Appends blob `hash`'s stored bytes to a pack, sealed.
    pub(crate) fn seal_blob_into(
        &self,
        hash: &datamon_types::Hash,
        stored: &[u8],
        out: &mut Vec<u8>,
    ) {
        self.seal(&blob_aad(hash), stored, out);
    }

    /// Opens blob `hash`'s sealed bytes in place (see [`Sealer::open_in_place`]).
    pub(crate) fn open_blob_in_place(
        &self,
        hash: &datamon_types::Hash,
        sealed: &mut [u8],
    ) -> Option<std::ops::Range<usize>> {
        self.open_in_place(&blob_aad(hash), sealed)
    }

    pub(crate) fn seal_footer(&self, footer: &[u8], out: &mut Vec<u8>) {
        self.seal(FOOTER_AAD, footer, out);
    }

    pub(crate) fn open_footer(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        self.open(FOOTER_AAD, sealed)
    }
}

fn wrap_aad(store_id: &str, key_id: &str) -> Vec<u8> {
    format!("datamon-key\0{store_id}\0{key_id}").into_bytes()
}

/// The key-encryption key of a secret.
fn kek(secret: &Secret, kdf: Option<&Kdf>) -> Result<Zeroizing<[u8; 32]>> {
    let mut out = Zeroizing::new([0u8; 32]);
    match secret {
        Secret::KeyFile(k) => *out = blake3::derive_key(CTX_KEY_FILE, &k[..]),
        Secret::Passphrase(p) => {
            let kdf = kdf.ok_or_else(|| Error::Corrupt {
                what: "key object".into(),
                detail: "a passphrase key without KDF settings".into(),
            })?;
            let salt = hex::decode(&kdf.salt).map_err(|_| Error::Corrupt {
                what: "key object".into(),
                detail: "bad salt".into(),
            })?;
            let bad = |e: argon2::Error| Error::Corrupt {
                what: "key object".into(),
                detail: format!("bad Argon2id settings: {e}"),
            };
            let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32)).map_err(bad)?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(p.as_bytes(), &salt, &mut out[..])
                .map_err(bad)?;
        }
    }
    Ok(out)
}

fn wrap(
    master: &[u8; 32],
    secret: &Secret,
    store_id: &str,
    name: &str,
    author: &str,
) -> Result<KeyRecord> {
    let id = hex::encode(rand::random::<[u8; 8]>());
    let kdf = matches!(secret, Secret::Passphrase(_)).then(|| Kdf {
        alg: "argon2id".into(),
        m_kib: KDF_M_KIB,
        t: KDF_T,
        p: KDF_P,
        salt: hex::encode(rand::random::<[u8; 16]>()),
    });
    let kek = kek(secret, kdf.as_ref())?;
    let nonce: [u8; NONCE_LEN] = rand::random();
    let sealed = XChaCha20Poly1305::new(Key::from_slice(&kek[..]))
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &master[..],
                aad: &wrap_aad(store_id, &id),
            },
        )
        .expect("sealing 32 bytes cannot fail");
    let mut wrapped = nonce.to_vec();
    wrapped.extend_from_slice(&sealed);
    Ok(KeyRecord {
        id,
        name: name.to_owned(),
        kind: secret.kind(),
        kdf,
        wrapped: hex::encode(wrapped),
        created_at: Utc::now(),
        created_by: author.to_owned(),
    })
}

fn unwrap(record: &KeyRecord, secret: &Secret, store_id: &str) -> Result<Option<[u8; 32]>> {
    if record.kind != secret.kind() {
        return Ok(None);
    }
    let kek = kek(secret, record.kdf.as_ref())?;
    let wrapped = hex::decode(&record.wrapped).unwrap_or_default();
    if wrapped.len() < NONCE_LEN {
        return Ok(None);
    }
    let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
    let opened = XChaCha20Poly1305::new(Key::from_slice(&kek[..])).decrypt(
        XNonce::from_slice(nonce),
        Payload {
            msg: sealed,
            aad: &wrap_aad(store_id, &record.id),
        },
    );
    Ok(opened
        .ok()
        .and_then(|m| <[u8; 32]>::try_from(m.as_slice()).ok()))
}

impl Store {
    /// Whether the store is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.config.encryption.is_some()
    }

    /// How this store names chunks and tree nodes (keyed in an encrypted store).
    pub fn hasher(&self) -> ContentHasher {
        self.sealer
            .as_ref()
            .map_or(ContentHasher::Plain, |s| s.hasher())
    }

    /// Seals an object's bytes for `key` (unchanged in a plain store, and for `config` and
    /// `keys/`, which stay readable).
    pub(crate) fn seal_for(&self, key: &str, plain: Vec<u8>) -> Vec<u8> {
        match &self.sealer {
            Some(s) if sealed_key(key) => s.seal_object(key, &plain),
            _ => plain,
        }
    }

    /// Opens an object's bytes read from `key` (see [`Store::seal_for`]).
    ///
    /// # Errors
    /// [`Error::Corrupt`] when a sealed object does not authenticate.
    pub(crate) fn open_for(&self, key: &str, stored: Bytes) -> Result<Bytes> {
        match &self.sealer {
            Some(s) if sealed_key(key) => s.open_object(key, &stored).map(Bytes::from),
            _ => Ok(stored),
        }
    }

    /// Reads a record's bytes and opens them (for callers that parse records themselves).
    ///
    /// # Errors
    /// As [`Store::get`], and [`Error::Corrupt`] for a sealed object that does not authenticate.
    pub async fn get_record(&self, key: &str) -> Result<Bytes> {
        let b = self.get(key).await?;
        self.open_for(key, b)
    }

    /// Creates an encrypted store at `url`, openable with `secret` (named `name`), and opens it.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when a store is already there (encryption is chosen when a store
    /// is created), or a backend error.
    pub async fn create_encrypted(
        url: &str,
        options: &[(String, String)],
        secret: &Secret,
        name: &str,
        author: &str,
    ) -> Result<Store> {
        Store::create_encrypted_with(url, options, secret, name, author, CIPHER_AES).await
    }

    /// [`Store::create_encrypted`] sealing with `cipher` (`aes256gcm-blake3-subkey`, or
    /// `xchacha20poly1305` as stores made before 2026-12-03 do; for the tests that those still
    /// open).
    ///
    /// # Errors
    /// As [`Store::create_encrypted`]; [`Error::UnsupportedVersion`] for an unknown cipher.
    #[doc(hidden)]
    pub async fn create_encrypted_with(
        url: &str,
        options: &[(String, String)],
        secret: &Secret,
        name: &str,
        author: &str,
        cipher: &str,
    ) -> Result<Store> {
        let mut store = Store::open_raw(url, options)?;
        match store.get(keys::CONFIG).await {
            Ok(_) => {
                return Err(Error::AlreadyExists {
                    key: format!("{url} (a store is already there; encryption is chosen when a store is created)"),
                })
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let master = Zeroizing::new(random_key());
        let sealer =
            Sealer::new(master.clone(), cipher).ok_or_else(|| Error::UnsupportedVersion {
                found: ENCRYPTED_FORMAT_VERSION,
                supported: datamon_types::MAX_FORMAT_VERSION,
            })?;
        let mut config = crate::store::default_config();
        config.version = ENCRYPTED_FORMAT_VERSION;
        config.encryption = Some(EncryptionConfig {
            cipher: cipher.into(),
            ids: "blake3-keyed".into(),
            key_check: sealer.key_check(),
        });
        // The key first: a config that names no key would be a store nobody can open.
        let record = wrap(&master, secret, &config.id, name, author)?;
        store.create_json(&keys::key(&record.id), &record).await?;
        store.create_json(keys::CONFIG, &config).await?;
        store.config = config;
        store.sealer = Some(Arc::new(sealer));
        Ok(store)
    }

    /// Opens the master key of an encrypted store with one of `unlock`'s secrets.
    pub(crate) async fn unlock(&mut self, unlock: &Unlock) -> Result<()> {
        let Some(enc) = self.config.encryption.clone() else {
            return Ok(());
        };
        if ![CIPHER_AES, CIPHER_XCHACHA].contains(&enc.cipher.as_str()) || enc.ids != "blake3-keyed"
        {
            return Err(Error::UnsupportedVersion {
                found: self.config.version,
                supported: datamon_types::MAX_FORMAT_VERSION,
            });
        }
        if unlock.is_empty() {
            let mut detail = format!(
                "store {} is encrypted: give a passphrase ({ENV_PASSPHRASE} or \
                 {ENV_PASSPHRASE_FILE}) or a key file ({ENV_KEY_FILE})",
                self.url
            );
            for p in &unlock.problems {
                detail.push_str(&format!("; {p}"));
            }
            return Err(Error::Locked { detail });
        }
        let records = self.key_records().await?;
        for secret in &unlock.secrets {
            for r in &records {
                if let Some(master) = unwrap(r, secret, &self.config.id)? {
                    let sealer = Sealer::new(Zeroizing::new(master), &enc.cipher)
                        .expect("the cipher was checked above");
                    if sealer.key_check() != enc.key_check {
                        tracing::warn!(key = %r.id, "a key object wraps another store's master key; ignored");
                        continue;
                    }
                    tracing::debug!(key = %r.id, name = %r.name, "store unlocked");
                    self.sealer = Some(Arc::new(sealer));
                    return Ok(());
                }
            }
        }
        Err(Error::Locked {
            detail: format!(
                "no key of store {} opens with the {} given ({}): wrong passphrase or key file, \
                 or its key was removed",
                self.url,
                if unlock.secrets.len() == 1 {
                    "secret"
                } else {
                    "secrets"
                },
                unlock.sources.join(", ")
            ),
        })
    }

    async fn key_records(&self) -> Result<Vec<KeyRecord>> {
        let mut out = Vec::new();
        for (k, _) in self.list(keys::KEYS).await? {
            match self.get_json::<KeyRecord>(&k).await {
                Ok(r) => out.push(r),
                Err(Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(key = %k, error = %e, "skipping an unreadable key object"),
            }
        }
        Ok(out)
    }

    fn sealer_or_plain(&self) -> Result<&Sealer> {
        self.sealer.as_deref().ok_or_else(|| Error::KeyChange {
            detail: format!(
                "store {} is not encrypted: it has no keys (encryption is chosen when a store is created)",
                self.url
            ),
        })
    }

    /// Lets `secret` open this encrypted store too (nothing is re-encrypted).
    ///
    /// # Errors
    /// [`Error::KeyChange`] on a plain store; a backend error.
    pub async fn add_key(&self, secret: &Secret, name: &str, author: &str) -> Result<KeyInfo> {
        let sealer = self.sealer_or_plain()?;
        let record = wrap(&sealer.master, secret, &self.config.id, name, author)?;
        self.create_json(&keys::key(&record.id), &record).await?;
        Ok(KeyInfo::from(&record))
    }

    /// The keys that open this encrypted store, oldest first.
    ///
    /// # Errors
    /// [`Error::KeyChange`] on a plain store; a backend error.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        self.sealer_or_plain()?;
        let mut keys: Vec<KeyInfo> = self
            .key_records()
            .await?
            .iter()
            .map(KeyInfo::from)
            .collect();
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    /// Removes key `id` (by id, or by name when one key has it), so its secret no longer opens
    /// the store. The last key is never removed. Whoever read the master key with it before
    /// keeps it: removing a key is not revoking data already shared (see `docs/security.md`).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown key, [`Error::KeyChange`] for the last key, an
    /// ambiguous name or a plain store; a backend error.
    pub async fn remove_key(&self, id_or_name: &str) -> Result<KeyInfo> {
        let keys = self.list_keys().await?;
        let matching: Vec<&KeyInfo> = match keys.iter().find(|k| k.id == id_or_name) {
            Some(k) => vec![k],
            None => keys.iter().filter(|k| k.name == id_or_name).collect(),
        };
        let k = match matching.as_slice() {
            [k] => *k,
            [] => {
                return Err(Error::NotFound {
                    key: format!("key {id_or_name} (see the key list)"),
                })
            }
            _ => {
                return Err(Error::KeyChange {
                    detail: format!(
                        "{} keys are named {id_or_name}: remove one by its id",
                        matching.len()
                    ),
                })
            }
        };
        if keys.len() == 1 {
            return Err(Error::KeyChange {
                detail: format!(
                    "key {} is the store's last key: add another before removing it, or nobody \
                     can open the store",
                    k.id
                ),
            });
        }
        self.delete(&keys::key(&k.id)).await?;
        Ok(k.clone())
    }
}

/// Whether objects under `key` are sealed in an encrypted store.
fn sealed_key(key: &str) -> bool {
    key != keys::CONFIG && !key.starts_with(keys::KEYS) && !key.starts_with("tmp/")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn objects_open_only_under_their_key() {
        for cipher in [CIPHER_AES, CIPHER_XCHACHA] {
            objects_open_only_under_their_key_with(cipher);
        }
    }

    #[test]
    fn blobs_open_in_place_and_only_as_themselves() {
        for cipher in [CIPHER_AES, CIPHER_XCHACHA] {
            let s = Sealer::new(Zeroizing::new([7u8; 32]), cipher).unwrap();
            let (a, b) = (datamon_types::Hash::of(b"a"), datamon_types::Hash::of(b"b"));
            let mut sealed = Vec::new();
            s.seal_blob_into(&a, b"chunk bytes", &mut sealed);
            assert_eq!(sealed.len(), 11 + BLOB_OVERHEAD);
            assert!(
                s.open_blob_in_place(&b, &mut sealed.clone()).is_none(),
                "{cipher}: bound to its id"
            );
            let mut buf = sealed.clone();
            let r = s.open_blob_in_place(&a, &mut buf).unwrap();
            assert_eq!(&buf[r], b"chunk bytes", "{cipher}");
            let mut flipped = sealed.clone();
            flipped[30] ^= 1;
            assert!(s.open_blob_in_place(&a, &mut flipped).is_none(), "{cipher}");
            let other = Sealer::new(
                Zeroizing::new([7u8; 32]),
                [CIPHER_XCHACHA, CIPHER_AES][usize::from(cipher == CIPHER_XCHACHA)],
            )
            .unwrap();
            assert!(
                other.open_blob_in_place(&a, &mut sealed.clone()).is_none(),
                "{cipher}: the other cipher"
            );
        }
        assert!(Sealer::new(Zeroizing::new([7u8; 32]), "rot13").is_none());
    }

    fn objects_open_only_under_their_key_with(cipher: &str) {
        let s = Sealer::new(Zeroizing::new([7u8; 32]), cipher).unwrap();
        let sealed = s.seal_object("repos/r/labels/latest/0000000002", b"{\"bundle\":1}");
        assert!(!sealed.windows(6).any(|w| w == b"bundle"));
        assert_eq!(
            s.open_object("repos/r/labels/latest/0000000002", &sealed)
                .unwrap(),
            b"{\"bundle\":1}"
        );
        let replayed = s.open_object("repos/r/labels/latest/0000000003", &sealed);
        assert!(replayed.unwrap_err().to_string().contains("replayed"));
        let mut flipped = sealed.clone();
        let n = flipped.len();
        flipped[n - 20] ^= 1;
        assert!(s
            .open_object("repos/r/labels/latest/0000000002", &flipped)
            .is_err());
        let other = Sealer::new(Zeroizing::new([8u8; 32]), cipher).unwrap();
        assert!(other
            .open_object("repos/r/labels/latest/0000000002", &sealed)
            .is_err());
        let plain = s.open_object("k", b"{}");
        assert!(plain.unwrap_err().to_string().contains("not sealed"));
    }

    #[test]
    fn keys_wrap_and_unwrap_with_their_secret_only() {
        let master = [3u8; 32];
        let pass = Secret::passphrase("correct horse").unwrap();
        let r = wrap(&master, &pass, "store1", "alice", "a").unwrap();
        assert_eq!(unwrap(&r, &pass, "store1").unwrap(), Some(master));
        let wrong = Secret::passphrase("wrong horse").unwrap();
        assert_eq!(unwrap(&r, &wrong, "store1").unwrap(), None);
        assert_eq!(
            unwrap(&r, &pass, "store2").unwrap(),
            None,
            "bound to its store"
        );
        let file = Secret::KeyFile(Zeroizing::new([9u8; 32]));
        let rf = wrap(&master, &file, "store1", "ci", "a").unwrap();
        assert_eq!(unwrap(&rf, &file, "store1").unwrap(), Some(master));
        assert_eq!(unwrap(&rf, &pass, "store1").unwrap(), None);
        assert!(!serde_json::to_string(&r).unwrap().contains("horse"));
    }

    #[test]
    fn key_files_round_trip_and_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        generate_key_file(&p).unwrap();
        assert!(generate_key_file(&p).is_err());
        assert!(matches!(Secret::key_file(&p).unwrap(), Secret::KeyFile(_)));
        std::fs::write(dir.path().join("bad"), "not hex").unwrap();
        let e = Secret::key_file(&dir.path().join("bad")).unwrap_err();
        assert!(e.to_string().contains("not a datamon key file"), "{e}");
    }
}
