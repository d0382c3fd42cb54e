//! Deterministic sealing of one piece of plaintext (a chunk, a whole
//! index) under the repository data key.
//!
//! A sealed piece is `id (32) || ChaCha20-Poly1305(k_id, nonce 0, aad,
//! flag || body) || tag (16)`, where `id = HMAC-SHA256(K_mac, plaintext)`,
//! `k_id = HKDF-SHA256(K, info = "pf-crypt chunk key v1" || id)`, `body`
//! is the zstd-compressed plaintext (`flag` 1) or the plaintext itself
//! when that is not larger (`flag` 0). `K_mac` is derived from the data
//! key `K` with its own HKDF info. So:
//!
//! - the same plaintext under the same `K` seals to the same bytes (dedup
//!   across versions of one repository works on ciphertext digests);
//! - every key is used with the one nonce, and a key is a function of the
//!   plaintext's keyed hash: two different plaintexts share a key only on
//!   an HMAC-SHA256 collision, so a (key, nonce) pair never seals two
//!   plaintexts by construction;
//! - opening checks the tag, then recomputes the id from the plaintext: a
//!   piece is accepted only if it is exactly what was sealed under that id.

use ring::{aead, hkdf, hmac};

use crate::keys::DataKey;
use crate::{CryptError, Result};

/// Bytes a sealed piece adds to its (compressed) body.
pub const OVERHEAD: usize = 32 + 1 + 16;
const AAD: &[u8] = b"pf-crypt sealed piece v1";
const FLAG_RAW: u8 = 0;
const FLAG_ZSTD: u8 = 1;

/// The keys derived from one [`DataKey`].
pub struct Sealer {
    prk: hkdf::Prk,
    mac: hmac::Key,
    level: i32,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

fn expand(prk: &hkdf::Prk, info: &[&[u8]]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 255 * 32 limit: cannot fail.
    if let Ok(okm) = prk.expand(info, Len32) {
        let _ = okm.fill(&mut out);
    }
    out
}

impl Sealer {
    /// The sealer of data key `key`, compressing at zstd `level`.
    pub fn new(key: &DataKey, level: i32) -> Sealer {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"pf-crypt v1").extract(&key.0);
        let mac_key = expand(&prk, &[b"pf-crypt chunk id v1"]);
        Sealer {
            mac: hmac::Key::new(hmac::HMAC_SHA256, &mac_key),
            prk,
            level,
        }
    }

    /// The keyed id of `plain`: HMAC-SHA256 under the id key.
    pub fn id(&self, plain: &[u8]) -> [u8; 32] {
        let mut id = [0u8; 32];
        id.copy_from_slice(hmac::sign(&self.mac, plain).as_ref());
        id
    }

    /// The AEAD key of the piece with id `id` (exposed for the property
    /// test that distinct plaintexts never share a key).
    pub fn piece_key(&self, id: &[u8; 32]) -> [u8; 32] {
        expand(&self.prk, &[b"pf-crypt chunk key v1", id])
    }

    fn aead_key(&self, id: &[u8; 32]) -> aead::LessSafeKey {
        let k = self.piece_key(id);
        // A 32-byte key is always accepted by ChaCha20-Poly1305.
        let unbound = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &k)
            .unwrap_or_else(|_| unreachable!("32-byte ChaCha20-Poly1305 key"));
        aead::LessSafeKey::new(unbound)
    }

    /// Seals `plain` (deterministically, see the module doc).
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let id = self.id(plain);
        let packed = zstd::bulk::compress(plain, self.level).ok();
        let (flag, body) = match &packed {
            Some(z) if z.len() < plain.len() => (FLAG_ZSTD, z.as_slice()),
            _ => (FLAG_RAW, plain),
        };
        let mut out = Vec::with_capacity(body.len() + OVERHEAD);
        out.extend_from_slice(&id);
        out.push(flag);
        out.extend_from_slice(body);
        let key = self.aead_key(&id);
        let tag = key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key([0u8; 12]),
                aead::Aad::from(AAD),
                &mut out[32..],
            )
            .unwrap_or_else(|_| unreachable!("ChaCha20-Poly1305 seals any length below 256 GiB"));
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Opens a sealed piece whose plaintext is at most `max_len` bytes.
    /// Fails with [`CryptError::Authentication`] if it was not sealed under
    /// this key exactly as it is.
    pub fn open(&self, sealed: &[u8], max_len: usize) -> Result<Vec<u8>> {
        if sealed.len() < OVERHEAD {
            return Err(CryptError::Authentication);
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&sealed[..32]);
        let mut buf = sealed[32..].to_vec();
        let key = self.aead_key(&id);
        let body = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key([0u8; 12]),
                aead::Aad::from(AAD),
                &mut buf,
            )
            .map_err(|_| CryptError::Authentication)?;
        let plain = match body.split_first() {
            Some((&FLAG_RAW, rest)) if rest.len() <= max_len => rest.to_vec(),
            Some((&FLAG_ZSTD, rest)) => {
                zstd::bulk::decompress(rest, max_len).map_err(|_| CryptError::Authentication)?
            }
            _ => return Err(CryptError::Authentication),
        };
        if self.id(&plain) != id {
            return Err(CryptError::Authentication);
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn sealer() -> Sealer {
        Sealer::new(&DataKey::generate().unwrap(), 3)
    }

    #[test]
    fn seals_deterministically_and_opens_what_it_sealed() {
        let s = sealer();
        let text = b"agent notes: the token is hunter2 ".repeat(100);
        let a = s.seal(&text);
        assert_eq!(a, s.seal(&text), "same plaintext, same bytes");
        assert!(a.len() < text.len(), "compressed before sealing");
        assert_eq!(s.open(&a, text.len()).unwrap(), text);
        // Incompressible and empty plaintexts round-trip too.
        let noise: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert_eq!(s.open(&s.seal(&noise), noise.len()).unwrap(), noise);
        assert_eq!(s.open(&s.seal(b""), 0).unwrap(), b"");
        // No plaintext in the sealed bytes.
        assert!(!a.windows(7).any(|w| w == b"hunter2"));
        // Another data key neither produces nor opens the same bytes.
        let other = sealer();
        assert_ne!(other.seal(&text), a);
        assert!(matches!(
            other.open(&a, text.len()),
            Err(CryptError::Authentication)
        ));
    }

    #[test]
    fn any_flipped_bit_or_cut_fails_authentication() {
        let s = sealer();
        let sealed = s.seal(b"some secret chunk of an agent's world");
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x40;
            assert!(
                matches!(s.open(&t, 1 << 20), Err(CryptError::Authentication)),
                "byte {i}"
            );
        }
        assert!(s.open(&sealed[..sealed.len() - 1], 1 << 20).is_err());
        assert!(s.open(&sealed[..10], 1 << 20).is_err());
        // A plaintext larger than the caller allows is refused.
        assert!(s.open(&sealed, 3).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Over many seals under one data key, a (key, nonce) pair never
        /// seals two different plaintexts: the nonce is fixed, so that is
        /// "distinct plaintexts never share a key".
        #[test]
        fn distinct_plaintexts_never_share_a_key(
            plains in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..200)
        ) {
            let s = sealer();
            let mut by_key: HashMap<[u8; 32], Vec<u8>> = HashMap::new();
            for p in &plains {
                let sealed = s.seal(p);
                let key = s.piece_key(sealed[..32].try_into().unwrap());
                if let Some(prev) = by_key.insert(key, p.clone()) {
                    prop_assert_eq!(&prev, p, "two plaintexts sealed under one key and nonce");
                }
                prop_assert_eq!(s.open(&sealed, 64).unwrap(), p.clone());
            }
        }
    }
}
