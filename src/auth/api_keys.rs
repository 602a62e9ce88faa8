//! API keys for backend services: configured as SHA-256 hashes, compared in
//! constant time. Keys are random (`roomcontrol api-key` makes one), so a
//! fast hash is enough: there is nothing to guess.

use std::collections::BTreeSet;
use std::fmt::Write;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Caller, CallerKind, RoomPatterns, Scope, Unauthenticated};
use crate::config::ApiKeyConfig;

const HASH_PREFIX: &str = "sha256:";

#[derive(Debug)]
struct ApiKey {
    name: String,
    hash: [u8; 32],
    scopes: BTreeSet<Scope>,
    rooms: RoomPatterns,
    revoked: bool,
}

#[derive(Debug, Default)]
pub(super) struct ApiKeys(Vec<ApiKey>);

impl ApiKeys {
    pub(super) fn new(config: &[ApiKeyConfig]) -> Result<Self, String> {
        let keys = config
            .iter()
            .map(|key| {
                Ok(ApiKey {
                    name: key.name.clone(),
                    hash: parse_hash(&key.hash).ok_or_else(|| format!("auth.api_keys {:?}: bad hash", key.name))?,
                    scopes: key.scopes.iter().filter_map(|scope| Scope::from_name(scope)).collect(),
                    rooms: RoomPatterns::new(key.rooms.clone()),
                    revoked: key.revoked,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self(keys))
    }

    /// The key's caller. Every configured hash is compared, in constant
    /// time, whatever matches, so timing tells nothing about the keys.
    pub(super) fn authenticate(&self, presented: &str) -> Result<Caller, Unauthenticated> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&ApiKey> = None;
        for key in &self.0 {
            if bool::from(key.hash.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        let Some(key) = found else {
            return Err(Unauthenticated(
                "the bearer credential is neither a known API key nor a JWT from an accepted issuer".to_owned(),
            ));
        };
        if key.revoked {
            return Err(Unauthenticated(format!("API key {:?} is revoked", key.name)));
        }
        Ok(Caller {
            kind: CallerKind::ApiKey { name: key.name.clone() },
            subject: key.name.clone(),
            display_name: None,
            scopes: key.scopes.clone(),
            rooms: key.rooms.clone(),
        })
    }
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix(HASH_PREFIX)?;
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (index, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(hash)
}

/// The configuration form of a key's hash: `sha256:` and 64 hex digits.
pub fn hash_api_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut text = String::from(HASH_PREFIX);
    for byte in digest {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// A new random API key: `rck_` and 32 random letters and digits (190 bits).
pub fn new_api_key() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let random: String = (0..32).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("rck_{random}")
}

pub(super) fn check_config(keys: &[ApiKeyConfig]) -> Result<(), (String, String, String)> {
    let mut names = BTreeSet::new();
    for key in keys {
        let field = |name: &str| format!("auth.api_keys[{:?}].{name}", key.name);
        if key.name.trim().is_empty() {
            return Err((
                "auth.api_keys.name".to_owned(),
                "\"\"".to_owned(),
                "expected a name for every key".to_owned(),
            ));
        }
        if !names.insert(key.name.as_str()) {
            return Err((field("name"), format!("{:?}", key.name), "expected names to be unique".to_owned()));
        }
        if parse_hash(&key.hash).is_none() {
            return Err((
                field("hash"),
                "(not shown)".to_owned(),
                "expected \"sha256:\" and 64 hex digits, as `roomcontrol api-key` prints".to_owned(),
            ));
        }
        for scope in &key.scopes {
            if Scope::from_name(scope).is_none() {
                return Err((field("scopes"), format!("{scope:?}"), scope_names()));
            }
        }
        if key.rooms.iter().any(String::is_empty) {
            return Err((
                field("rooms"),
                "\"\"".to_owned(),
                "expected room name patterns such as \"team-a-*\"".to_owned(),
            ));
        }
    }
    Ok(())
}

pub(super) fn scope_names() -> String {
    let names: Vec<_> = Scope::ALL.iter().map(|scope| scope.name()).collect();
    format!("expected one of {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        let config = |name: &str, key: &str, revoked: bool| ApiKeyConfig {
            name: name.to_owned(),
            hash: hash_api_key(key),
            scopes: vec!["rooms:read".to_owned()],
            rooms: vec!["*".to_owned()],
            revoked,
        };
        ApiKeys::new(&[config("live", "rck_live", false), config("old", "rck_old", true)]).unwrap()
    }

    #[test]
    fn a_known_key_authenticates_as_its_name_with_its_scopes() {
        let caller = keys().authenticate("rck_live").unwrap();
        assert_eq!(caller.subject(), "live");
        assert!(caller.has(Scope::RoomsRead) && !caller.has(Scope::RoomsWrite));
    }

    #[test]
    fn unknown_and_revoked_keys_are_refused_without_echoing_them() {
        let unknown = keys().authenticate("rck_guess").unwrap_err();
        assert!(!unknown.0.contains("rck_guess"));
        let revoked = keys().authenticate("rck_old").unwrap_err();
        assert_eq!(revoked.0, "API key \"old\" is revoked");
    }

    #[test]
    fn hashes_are_sha256_hex_and_new_keys_are_random() {
        assert_eq!(hash_api_key("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(parse_hash(&hash_api_key("abc")).is_some());
        assert!(parse_hash("sha256:xyz").is_none());
        let (a, b) = (new_api_key(), new_api_key());
        assert!(a.starts_with("rck_") && a.len() == 36 && a != b);
    }
}
