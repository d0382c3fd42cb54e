//! The key envelope: the data key wrapped once per recipient.
//!
//! For each recipient `R`: a fresh ephemeral X25519 key `e`, shared secret
//! `s = X25519(e, R)` (refused if all-zero), wrap key
//! `HKDF-SHA256(salt = e_pub || R, ikm = s, info = "pf-crypt wrap v1")`,
//! and `wrapped = ChaCha20-Poly1305(wrap key, nonce 0, aad = key id, K)`.
//! Each wrap key is fresh, so the fixed nonce is used once per key.
//! Adding a recipient wraps the same `K` again: no blob is re-encrypted.
//! The envelope is JSON in clear (it must be, to be opened): it shows the
//! recipients' key ids, nothing else.

use ring::{aead, hkdf};
use serde::{Deserialize, Serialize};

use crate::keys::{random32, DataKey, Identity, KeyId, Recipient};
use crate::{CryptError, Result};

/// The envelope's algorithm name.
pub const ALGORITHM: &str = "x25519-hkdf-sha256-chacha20poly1305";
/// Most recipients one envelope may list.
pub const MAX_RECIPIENTS: usize = 1024;

/// The data key wrapped for each recipient (JSON, in clear).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEnvelope {
    /// Always 1.
    pub version: u32,
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// One stanza per recipient.
    pub recipients: Vec<Stanza>,
}

/// The data key wrapped for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stanza {
    /// The recipient's key id (16 hex).
    pub key_id: String,
    /// The ephemeral public key (64 hex).
    pub ephemeral: String,
    /// The wrapped data key and its tag (96 hex).
    pub wrapped: String,
}

fn wrap_key(shared: &[u8; 32], eph: &[u8; 32], recipient: &[u8; 32]) -> aead::LessSafeKey {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph);
    salt[32..].copy_from_slice(recipient);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(shared);
    // 32 bytes of output and a ChaCha20-Poly1305 key: neither can fail.
    let okm = prk
        .expand(&[b"pf-crypt wrap v1"], &aead::CHACHA20_POLY1305)
        .unwrap_or_else(|_| unreachable!("HKDF output of a key's length"));
    aead::LessSafeKey::new(aead::UnboundKey::from(okm))
}

impl KeyEnvelope {
    /// Wraps `key` for every recipient (at least one).
    pub fn wrap(key: &DataKey, recipients: &[Recipient]) -> Result<KeyEnvelope> {
        if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
            return Err(CryptError::BadKeyFile(format!(
                "an image is encrypted to 1..={MAX_RECIPIENTS} recipients"
            )));
        }
        let mut stanzas = Vec::with_capacity(recipients.len());
        for r in recipients {
            let e = x25519_dalek::StaticSecret::from(random32()?);
            let e_pub = x25519_dalek::PublicKey::from(&e);
            let shared = e.diffie_hellman(&r.public);
            if !shared.was_contributory() {
                return Err(CryptError::BadKeyFile(format!(
                    "recipient {} is a low-order point",
                    r.key_id()
                )));
            }
            let k = wrap_key(shared.as_bytes(), e_pub.as_bytes(), r.public.as_bytes());
            let id = r.key_id();
            let mut buf = key.0.to_vec();
            k.seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key([0u8; 12]),
                aead::Aad::from(id.0.as_bytes()),
                &mut buf,
            )
            .map_err(|_| CryptError::Random)?;
            stanzas.push(Stanza {
                key_id: id.0,
                ephemeral: hex::encode(e_pub.as_bytes()),
                wrapped: hex::encode(buf),
            });
        }
        Ok(KeyEnvelope {
            version: 1,
            algorithm: ALGORITHM.into(),
            recipients: stanzas,
        })
    }

    /// The key ids the envelope was made for.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.recipients
            .iter()
            .map(|s| KeyId(s.key_id.chars().take(16).collect()))
            .collect()
    }

    /// Unwraps the data key with `identity`, or fails with
    /// [`CryptError::WrongIdentity`] naming the envelope's key ids.
    pub fn unwrap_key(&self, identity: &Identity) -> Result<DataKey> {
        let me = identity.recipient();
        let my_id = me.key_id();
        for s in self.recipients.iter().filter(|s| s.key_id == my_id.0) {
            let Some(eph) = hex::decode(&s.ephemeral)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
            else {
                continue;
            };
            let Ok(mut buf) = hex::decode(&s.wrapped) else {
                continue;
            };
            let shared = identity
                .secret
                .diffie_hellman(&x25519_dalek::PublicKey::from(eph));
            if !shared.was_contributory() {
                continue;
            }
            let k = wrap_key(shared.as_bytes(), &eph, me.public.as_bytes());
            if let Ok(plain) = k.open_in_place(
                aead::Nonce::assume_unique_for_key([0u8; 12]),
                aead::Aad::from(s.key_id.as_bytes()),
                &mut buf,
            ) {
                if let Ok(key) = <[u8; 32]>::try_from(&plain[..]) {
                    return Ok(DataKey(key));
                }
            }
        }
        Err(CryptError::WrongIdentity {
            tried: my_id,
            recipients: self.key_ids(),
        })
    }

    /// Canonical JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Strictly parses an envelope.
    pub fn from_bytes(bytes: &[u8]) -> Result<KeyEnvelope> {
        let e: KeyEnvelope = serde_json::from_slice(bytes)
            .map_err(|e| CryptError::Malformed(format!("key envelope: {e}")))?;
        if e.version != 1 || e.algorithm != ALGORITHM || e.recipients.len() > MAX_RECIPIENTS {
            return Err(CryptError::Malformed(
                "key envelope: unsupported version, algorithm or recipient count".into(),
            ));
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn envelope_wire_format() {
        let env = KeyEnvelope {
            version: 1,
            algorithm: ALGORITHM.into(),
            recipients: vec![Stanza {
                key_id: "0123456789abcdef".into(),
                ephemeral: "11".repeat(32),
                wrapped: "22".repeat(48),
            }],
        };
        let bytes = env.to_bytes();
        insta::assert_snapshot!(String::from_utf8(bytes.clone()).unwrap());
        assert_eq!(KeyEnvelope::from_bytes(&bytes).unwrap(), env);
        // Unknown fields, versions and algorithms are refused.
        let text = String::from_utf8(bytes).unwrap();
        for bad in [
            text.replace("\"version\":1", "\"version\":2"),
            text.replace("x25519-hkdf", "p256-hkdf"),
            text.replace("\"recipients\"", "\"extra\":1,\"recipients\""),
        ] {
            assert!(KeyEnvelope::from_bytes(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Arbitrary bytes never panic the parser, and an envelope that
        /// parses never unwraps for a stranger.
        #[test]
        fn arbitrary_envelopes_are_refused_or_open_nothing(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(e) = KeyEnvelope::from_bytes(&bytes) {
                prop_assert!(e.unwrap_key(&Identity::generate().unwrap()).is_err());
            }
        }
    }

    #[test]
    fn every_recipient_and_no_one_else_unwraps_the_same_key() {
        let (a, b, c) = (
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
        );
        let k = DataKey::generate().unwrap();
        let env = KeyEnvelope::wrap(&k, &[a.recipient(), b.recipient()]).unwrap();
        let env = KeyEnvelope::from_bytes(&env.to_bytes()).unwrap();
        assert_eq!(env.unwrap_key(&a).unwrap(), k);
        assert_eq!(env.unwrap_key(&b).unwrap(), k);
        match env.unwrap_key(&c) {
            Err(CryptError::WrongIdentity { tried, recipients }) => {
                assert_eq!(tried, c.key_id());
                assert_eq!(recipients, vec![a.key_id(), b.key_id()]);
            }
            other => panic!("{other:?}"),
        }
        // Adding a recipient wraps the same key again.
        let env2 = KeyEnvelope::wrap(&k, &[a.recipient(), c.recipient()]).unwrap();
        assert_eq!(env2.unwrap_key(&c).unwrap(), k);
        // A tampered stanza does not open.
        let mut bad = env.clone();
        let w = &mut bad.recipients[0].wrapped;
        w.replace_range(0..2, if w.starts_with("00") { "01" } else { "00" });
        assert!(bad.unwrap_key(&a).is_err());
        assert!(!String::from_utf8_lossy(&env.to_bytes()).contains(&hex::encode(k.0)));
    }
}
