//! Browser sessions for the page: a cookie that stands for the admin token without being it.
//!
//! The cookie is stateless: the expiry and a fingerprint of the admin token, sealed with the
//! master key (XChaCha20-Poly1305, bound to the name "session"). So sessions survive a restart,
//! nobody without the key can forge or extend one, and replacing the admin token
//! (`plexsync secret set admin-token`) ends every session at once.

use sha2::{Digest, Sha256};

use crate::secrets::{MasterKey, SealedSecret, SecretError, hex, unhex};
use plexsync_plugin_api::Secret;

/// The cookie's name.
pub const COOKIE: &str = "plexsync_session";

const AAD_NAME: &str = "session";

fn fingerprint(token: &Secret) -> String {
    let digest = Sha256::digest(token.expose().as_bytes());
    hex(&digest[..16])
}

/// A cookie value valid until `expires` (unix seconds).
pub fn mint(key: &MasterKey, token: &Secret, expires: i64) -> Result<String, SecretError> {
    let sealed = key.seal(AAD_NAME, &format!("{expires}:{}", fingerprint(token)))?;
    Ok(format!(
        "{}.{}",
        hex(&sealed.nonce),
        hex(&sealed.ciphertext)
    ))
}

/// Whether `cookie` was minted by [`mint`] under this key for this token and is not expired.
pub fn valid(key: &MasterKey, token: &Secret, cookie: &str, now: i64) -> bool {
    // A session cookie is about 140 characters; anything much longer is not ours.
    if cookie.len() > 512 {
        return false;
    }
    let Some((nonce, ciphertext)) = cookie.split_once('.') else {
        return false;
    };
    let (Some(nonce), Some(ciphertext)) = (unhex(nonce), unhex(ciphertext)) else {
        return false;
    };
    let sealed = SealedSecret {
        key_id: key.id().to_string(),
        nonce,
        ciphertext,
    };
    let Ok(plain) = key.open(AAD_NAME, &sealed) else {
        return false;
    };
    let Some((expires, fp)) = plain.expose().split_once(':') else {
        return false;
    };
    let Ok(expires) = expires.parse::<i64>() else {
        return false;
    };
    expires > now && fp == fingerprint(token)
}

/// The session cookie's value from a `Cookie` header, if present.
pub fn from_header(cookie_header: &str) -> Option<&str> {
    cookie_header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_bytes([3u8; 32])
    }

    #[test]
    fn a_minted_session_is_valid_until_it_expires() {
        let t = Secret::new("0123456789abcdef0123".into());
        let c = mint(&key(), &t, 1_000).unwrap();
        assert!(valid(&key(), &t, &c, 999));
        assert!(!valid(&key(), &t, &c, 1_000));
        assert!(!c.contains("0123456789abcdef0123"));
    }

    #[test]
    fn another_token_key_or_a_tampered_cookie_is_refused() {
        let t = Secret::new("0123456789abcdef0123".into());
        let c = mint(&key(), &t, 1_000).unwrap();
        let other_token = Secret::new("fedcba9876543210fedc".into());
        assert!(!valid(&key(), &other_token, &c, 0));
        assert!(!valid(&MasterKey::from_bytes([4u8; 32]), &t, &c, 0));
        let mut bytes = c.clone().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
        assert!(!valid(&key(), &t, &String::from_utf8(bytes).unwrap(), 0));
        for junk in ["", ".", "zz.zz", "abc", &"a".repeat(600)] {
            assert!(!valid(&key(), &t, junk, 0), "{junk}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        assert_eq!(
            from_header("a=1; plexsync_session=xyz.abc; b=2"),
            Some("xyz.abc")
        );
        assert_eq!(from_header("plexsync_sessionx=1"), None);
        assert_eq!(from_header(""), None);
    }
}
