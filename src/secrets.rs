//! Secret handling: the 32-byte master key (key file or systemd credential) and the
//! XChaCha20-Poly1305 envelope that stored secrets live in.
//!
//! This module never touches redb: it turns a name + value into a [`SealedSecret`] and back;
//! the store keeps the sealed bytes. The associated data binds each ciphertext to its name, so a
//! ciphertext copied to another name does not decrypt. Decrypted values are [`Secret`]s
//! (redacted `Debug`, zeroized on drop) and are never logged.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use plexsync_plugin_api::Secret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Names a stored secret may have. Anything else is refused (typos would otherwise be stored
/// silently and never used).
pub const SECRET_NAMES: &[&str] = &["plex-token", "tracker-key", "tmdb-key", "admin-token"];
/// The webhook path secret; generated, never set by hand.
pub const WEBHOOK_SECRET: &str = "webhook-secret";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("key file {path}: {message}")]
    KeyFile { path: PathBuf, message: String },
    #[error("secret {name:?} cannot be decrypted with the current key (wrong key file?)")]
    Decrypt { name: String },
    #[error("secret {name:?} was encrypted with key {stored}, the current key is {current}")]
    WrongKey {
        name: String,
        stored: String,
        current: String,
    },
    #[error(
        "unknown secret name {0:?}; expected one of: plex-token, tracker-key, tmdb-key, admin-token"
    )]
    UnknownName(String),
    #[error("secret value is empty")]
    Empty,
    #[error("secret {name:?} refused: {reason}")]
    Invalid { name: String, reason: &'static str },
    #[error("random number generator failed: {0}")]
    Random(String),
}

/// The master key. Never printed.
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id={}, <redacted>)", self.id)
    }
}

/// A sealed secret as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedSecret {
    /// Which key sealed it (first 8 bytes of SHA-256 of the key, hex).
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(b)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Bytes of an even-length hex string; None for anything else.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        let digest = Sha256::digest(bytes);
        MasterKey {
            id: hex(&digest[..8]),
            key: Zeroizing::new(bytes),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Parse key file contents: 32 raw bytes, or 64 hex characters (surrounding whitespace
    /// allowed).
    pub fn parse(contents: &[u8]) -> Option<MasterKey> {
        if contents.len() == 32 {
            let mut k = [0u8; 32];
            k.copy_from_slice(contents);
            return Some(MasterKey::from_bytes(k));
        }
        let text = std::str::from_utf8(contents).ok()?.trim();
        let bytes = Zeroizing::new(unhex(text)?);
        let arr: [u8; 32] = bytes.as_slice().try_into().ok()?;
        Some(MasterKey::from_bytes(arr))
    }

    /// Load the key from `path`; with `create`, write a new random one (mode 0600) when the
    /// file does not exist.
    pub fn load_or_create(path: &Path, create: bool) -> Result<MasterKey, SecretError> {
        let err = |message: String| SecretError::KeyFile {
            path: path.to_path_buf(),
            message,
        };
        match std::fs::read(path) {
            Ok(contents) => {
                let contents = Zeroizing::new(contents);
                check_permissions(path).map_err(err)?;
                MasterKey::parse(&contents).ok_or_else(|| {
                    err(format!(
                        "must hold 32 raw bytes or 64 hex characters (found {} bytes)",
                        contents.len()
                    ))
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let key = Zeroizing::new(random_bytes::<32>()?);
                write_new_key(path, &key).map_err(|e| err(format!("cannot create: {e}")))?;
                tracing::info!(path = %path.display(), "created a new secrets key file (mode 0600)");
                Ok(MasterKey::from_bytes(*key))
            }
            Err(e) => Err(err(format!("cannot read: {e}"))),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&(*self.key).into())
    }

    /// Encrypt `value` for `name` with a fresh random nonce.
    pub fn seal(&self, name: &str, value: &str) -> Result<SealedSecret, SecretError> {
        let nonce_bytes = random_bytes::<24>()?;
        let nonce = XNonce::from(nonce_bytes);
        let ciphertext = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: aad(name).as_bytes(),
                },
            )
            .map_err(|_| SecretError::Decrypt { name: name.into() })?;
        Ok(SealedSecret {
            key_id: self.id.clone(),
            nonce: nonce_bytes.to_vec(),
            ciphertext,
        })
    }

    pub fn open(&self, name: &str, sealed: &SealedSecret) -> Result<Secret, SecretError> {
        if sealed.key_id != self.id {
            return Err(SecretError::WrongKey {
                name: name.into(),
                stored: sealed.key_id.clone(),
                current: self.id.clone(),
            });
        }
        let nonce_bytes: [u8; 24] = sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| SecretError::Decrypt { name: name.into() })?;
        let plain = Zeroizing::new(
            self.cipher()
                .decrypt(
                    &XNonce::from(nonce_bytes),
                    Payload {
                        msg: &sealed.ciphertext,
                        aad: aad(name).as_bytes(),
                    },
                )
                .map_err(|_| SecretError::Decrypt { name: name.into() })?,
        );
        let text =
            std::str::from_utf8(&plain).map_err(|_| SecretError::Decrypt { name: name.into() })?;
        Ok(Secret::new(text.to_string()))
    }
}

fn aad(name: &str) -> String {
    format!("plexsync-secret-v1:{name}")
}

/// A key file open to group or others is refused, not tightened as the store file is
/// (`Store::open`): the stored secrets are sealed by this key, so the key itself is the
/// whole secret, and one that others could read may already be copied. Making it private
/// silently would hide that; a person decides (`chmod 600`, or a new key and `rekey`).
/// Only loads check this; read-only commands that never load the key (status) are unaffected.
#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if in_credentials_directory(path) {
        // systemd writes a credential 0400 and, on a filesystem with ACLs (tmpfs, systemd
        // 256 and later), grants the service's user read through an ACL entry, whose mask
        // `stat` shows in the group bits: 0440. The directory is the service's alone, and
        // read-only; only a credential others may read or anyone but the owner may write is
        // refused.
        if mode & 0o027 != 0 {
            return Err(format!(
                "is a systemd credential others may read or write (mode {mode:03o}); check the unit's LoadCredential= source"
            ));
        }
        return Ok(());
    }
    if mode & 0o077 != 0 {
        return Err(format!(
            "is readable or writable by group/others (mode {mode:03o}); run `chmod 600 {}`",
            path.display()
        ));
    }
    Ok(())
}

/// Whether `path` is a file of this service's systemd credentials directory
/// (`$CREDENTIALS_DIRECTORY`), whose directory others cannot enter.
#[cfg(unix)]
fn in_credentials_directory(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
        return false;
    };
    let (Ok(dir), Some(Ok(parent))) = (
        std::fs::canonicalize(&dir),
        path.parent().map(std::fs::canonicalize),
    ) else {
        return false;
    };
    dir == parent && std::fs::metadata(&dir).is_ok_and(|m| m.permissions().mode() & 0o007 == 0)
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path) -> Result<(), String> {
    Ok(())
}

/// `plexsync key generate`: a new random key in a new file (mode 0600); an existing file is
/// never overwritten (it may be the key that opens the store).
pub fn generate_key_file(path: &Path) -> Result<MasterKey, SecretError> {
    let key = Zeroizing::new(random_bytes::<32>()?);
    write_new_key(path, &key).map_err(|e| SecretError::KeyFile {
        path: path.to_path_buf(),
        message: if e.kind() == std::io::ErrorKind::AlreadyExists {
            "already exists; refusing to overwrite a key (choose another path)".into()
        } else {
            format!("cannot create: {e}")
        },
    })?;
    Ok(MasterKey::from_bytes(*key))
}

/// Write a new key file (raw 32 bytes), failing if it already exists.
pub fn write_new_key(path: &Path, key: &[u8; 32]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(key)?;
    f.sync_all()
}

/// Validate a name given to `secret set`.
pub fn check_name(name: &str) -> Result<(), SecretError> {
    if SECRET_NAMES.contains(&name) {
        Ok(())
    } else {
        Err(SecretError::UnknownName(name.to_string()))
    }
}

/// The shortest admin token accepted: it is the one credential of the admin API over TCP.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// The longest secret value accepted (tokens and API keys are far shorter).
pub const MAX_SECRET_LEN: usize = 4096;

/// Value rules every secret obeys before it is stored: secrets travel in HTTP headers and
/// URLs, where a control character either breaks the request or splits a header, so such a
/// value would be stored and then refuse to start the daemon.
pub fn check_value(name: &str, value: &str) -> Result<(), SecretError> {
    let invalid = |reason| SecretError::Invalid {
        name: name.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(SecretError::Empty);
    }
    if value.len() > MAX_SECRET_LEN {
        return Err(invalid("longer than 4096 bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(
            "contains a control character (a line break or tab?)",
        ));
    }
    if value.trim() != value {
        return Err(invalid("starts or ends with white space"));
    }
    if name == "admin-token" {
        if value.len() < MIN_ADMIN_TOKEN_LEN {
            return Err(invalid("an admin token needs at least 16 characters"));
        }
        if value.chars().any(char::is_whitespace) {
            return Err(invalid("an admin token has no white space"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_with_control_characters_are_refused() {
        assert!(check_value("tracker-key", "abc-def").is_ok());
        for bad in [
            "abc\ndef",
            "abc\rdef",
            "a\tb",
            "x\u{1b}[2J",
            " lead",
            "trail ",
        ] {
            assert!(
                matches!(
                    check_value("tracker-key", bad),
                    Err(SecretError::Invalid { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            check_value("plex-token", ""),
            Err(SecretError::Empty)
        ));
        assert!(check_value("admin-token", "short").is_err());
        assert!(check_value("admin-token", "with a space in it!!").is_err());
        assert!(check_value("admin-token", "0123456789abcdef").is_ok());
        assert!(check_value("tmdb-key", &"k".repeat(MAX_SECRET_LEN + 1)).is_err());
    }

    #[test]
    fn seal_open_roundtrip_and_name_binding() {
        let k = MasterKey::from_bytes([7u8; 32]);
        let s = k.seal("plex-token", "abc-123").unwrap();
        assert_eq!(k.open("plex-token", &s).unwrap().expose(), "abc-123");
        assert!(!s.ciphertext.windows(7).any(|w| w == b"abc-123"));
        // Bound to its name: the same bytes under another name do not open.
        assert!(matches!(
            k.open("tracker-key", &s),
            Err(SecretError::Decrypt { .. })
        ));
        // Nonces are fresh per write.
        let s2 = k.seal("plex-token", "abc-123").unwrap();
        assert_ne!(s.nonce, s2.nonce);
        // Another key is detected by id.
        let other = MasterKey::from_bytes([8u8; 32]);
        assert!(matches!(
            other.open("plex-token", &s),
            Err(SecretError::WrongKey { .. })
        ));
    }

    #[test]
    fn key_file_forms_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let created = MasterKey::load_or_create(&p, true).unwrap();
        let again = MasterKey::load_or_create(&p, false).unwrap();
        assert_eq!(created.id(), again.id());
        assert!(!format!("{created:?}").contains(&hex(&*created.key)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = MasterKey::load_or_create(&p, false)
                .unwrap_err()
                .to_string();
            assert!(e.contains("group/others"), "{e}");
        }
        let hexkey = format!("{}\n", "ab".repeat(32));
        assert!(MasterKey::parse(hexkey.as_bytes()).is_some());
        assert!(MasterKey::parse(b"short").is_none());
        assert!(MasterKey::load_or_create(&dir.path().join("missing"), false).is_err());
    }
}
