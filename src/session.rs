//! Browser sessions for the page: a cookie that stands for the admin token without being it.
//!
//! The cookie is stateless: the expiry and a fingerprint of the admin token, sealed with the
//! master key (XChaCha20-Poly1305, bound to the name "session"). So sessions survive a restart,
//! nobody without the key can forge or extend one, and replacing the admin token
//! (`plexsync secret set admin-token`) ends every session at once.

use sha2::{Digest, Sha256};

use subtle::ConstantTimeEq;

use crate::secrets::{MasterKey, SealedSecret, SecretError, hex, random_bytes, unhex};
use plexsync_plugin_api::Secret;

/// The cookie's name.
pub const COOKIE: &str = "plexsync_session";

/// The request header that carries the page key (see the module documentation).
pub const PAGE_KEY_HEADER: &str = "x-plexsync-page-key";

const AAD_NAME: &str = "session";

/// A page key's hash, as the cookie holds it: 128 bits are plenty against guessing, and keep
/// the cookie short.
fn page_key_hash(page_key: &str) -> String {
    let digest = Sha256::digest(page_key.as_bytes());
    hex(&digest[..16])
}

fn fingerprint(token: &Secret) -> String {
    let digest = Sha256::digest(token.expose().as_bytes());
    hex(&digest[..16])
}

/// A new session valid until `expires` (unix seconds): the cookie value and its page key.
pub fn mint(
    key: &MasterKey,
    token: &Secret,
    expires: i64,
) -> Result<(String, Secret), SecretError> {
    let page_key = Secret::new(hex(&random_bytes::<32>()?));
    let sealed = key.seal(
        AAD_NAME,
        &format!(
            "{expires}:{}:{}",
            fingerprint(token),
            page_key_hash(page_key.expose())
        ),
    )?;
    let cookie = format!("{}.{}", hex(&sealed.nonce), hex(&sealed.ciphertext));
    Ok((cookie, page_key))
}

/// Whether `cookie` was minted by [`mint`] under this key for this token, is not expired, and
/// `page_key` is the key minted with it.
pub fn valid(key: &MasterKey, token: &Secret, cookie: &str, page_key: &str, now: i64) -> bool {
    expires(key, token, cookie, page_key, now).is_some()
}

/// The handle a logout revokes a session by: its page key's hash (unique per login, and what
/// the cookie holds). Only a valid session's handle is ever recorded.
pub fn handle(page_key: &str) -> String {
    page_key_hash(page_key)
}

/// When the session expires, if it is [`valid`].
pub fn expires(
    key: &MasterKey,
    token: &Secret,
    cookie: &str,
    page_key: &str,
    now: i64,
) -> Option<i64> {
    // A session cookie is about 200 characters; anything much longer is not ours.
    if cookie.len() > 512 {
        return None;
    }
    let (nonce, ciphertext) = cookie.split_once('.')?;
    let sealed = SealedSecret {
        key_id: key.id().to_string(),
        nonce: unhex(nonce)?,
        ciphertext: unhex(ciphertext)?,
    };
    let plain = key.open(AAD_NAME, &sealed).ok()?;
    let mut fields = plain.expose().split(':');
    let (Some(expires), Some(fp), Some(key_hash), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    let expires = expires.parse::<i64>().ok()?;
    let key_ok = bool::from(
        key_hash
            .as_bytes()
            .ct_eq(page_key_hash(page_key).as_bytes()),
    );
    (expires > now && fp == fingerprint(token) && key_ok).then_some(expires)
}

/// Most session cookie values tried for one request: each costs a decryption, and a browser
/// sends a handful at most.
pub const MAX_TRIED: usize = 8;

/// Every session cookie value in a `Cookie` header, in the order sent. There can be several:
/// another server on this host (any port) may set its own `plexsync_session`, with a longer
/// `Path` that browsers send first, so the first one alone could hide ours.
pub fn from_header(cookie_header: &str) -> impl Iterator<Item = &str> {
    cookie_header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == COOKIE)
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
        let (c, k) = mint(&key(), &t, 1_000).unwrap();
        assert!(valid(&key(), &t, &c, k.expose(), 999));
        assert!(!valid(&key(), &t, &c, k.expose(), 1_000));
        assert!(!c.contains("0123456789abcdef0123"));
        assert!(!c.contains(k.expose()));
    }

    #[test]
    fn a_cookie_needs_its_own_page_key() {
        let t = Secret::new("0123456789abcdef0123".into());
        let (c, k) = mint(&key(), &t, 1_000).unwrap();
        let (_, other) = mint(&key(), &t, 1_000).unwrap();
        assert!(!valid(&key(), &t, &c, "", 0));
        assert!(!valid(&key(), &t, &c, other.expose(), 0));
        assert!(!valid(&key(), &t, &c, &k.expose()[1..], 0));
        assert!(valid(&key(), &t, &c, k.expose(), 0));
    }

    #[test]
    fn another_token_key_or_a_tampered_cookie_is_refused() {
        let t = Secret::new("0123456789abcdef0123".into());
        let (c, k) = mint(&key(), &t, 1_000).unwrap();
        let k = k.expose();
        let other_token = Secret::new("fedcba9876543210fedc".into());
        assert!(!valid(&key(), &other_token, &c, k, 0));
        assert!(!valid(&MasterKey::from_bytes([4u8; 32]), &t, &c, k, 0));
        let mut bytes = c.clone().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
        assert!(!valid(&key(), &t, &String::from_utf8(bytes).unwrap(), k, 0));
        for junk in ["", ".", "zz.zz", "abc", &"a".repeat(600)] {
            assert!(!valid(&key(), &t, junk, k, 0), "{junk}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let all = |h| from_header(h).collect::<Vec<_>>();
        assert_eq!(all("a=1; plexsync_session=xyz.abc; b=2"), ["xyz.abc"]);
        assert_eq!(
            all("plexsync_session=other; a=1; plexsync_session=\"xyz.abc\""),
            ["other", "xyz.abc"],
            "every value, in order"
        );
        assert!(all("plexsync_sessionx=1").is_empty());
        assert!(all("").is_empty());
    }
}
