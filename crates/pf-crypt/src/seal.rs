//! Deterministic sealing of one piece of plaintext (a chunk, a whole
//! index) under the repository data key.
//!
//! A sealed piece is `id (32) || form (6) || AES-256-GCM(k, nonce 0, aad,
//! body) || tag (16)`, where `id = HMAC-SHA256(K_mac, SHA-256(plaintext))`
//! (the chunk's digest, which the snapshot already computed, so sealing
//! hashes no plaintext again; AES-256-GCM runs at several GB/s with
//! AES-NI, about 4x ChaCha20-Poly1305 here), `body` is the plaintext itself
//! (`form` = flag 0 and five zero bytes) or its zstd compression when that
//! is smaller (`form` = flag 1, the zstd level as one signed byte and the
//! zstd library's version number, u32 little-endian), and
//! `k = HKDF-SHA256(K, info = "pf-crypt chunk key v2" || id || form)`.
//! `K_mac` is derived from the data key `K` with its own HKDF info. So:
//!
//! - the same plaintext under the same `K` (and the same zstd level and
//!   library) seals to the same bytes: dedup across versions of one
//!   repository works on ciphertext digests;
//! - every key is used with the one nonce, and a key is a function of the
//!   plaintext's keyed hash AND of how its body was made: the raw body is
//!   the plaintext, and zstd's output is a function of the input, the
//!   level and the library version. So a (key, nonce) pair never encrypts
//!   two different bodies (short of an HMAC-SHA256 or SHA-256 collision),
//!   also when one repository is pushed at several `--zstd-level`s or by
//!   pf builds with different zstd libraries;
//! - [`Sealer::open`] checks the tag, then recomputes the id from the
//!   plaintext: a piece is accepted only if it is exactly what was sealed
//!   under that id. [`Sealer::open_in_place`] and [`Sealer::open_into`]
//!   check the tag only, for callers that check the plaintext's digest
//!   themselves (a pack's readers check each chunk, or the whole pack).
//!
//! The form is in clear: storage learns which chunks compressed, and the
//! level and zstd version they were compressed with.

use std::cell::RefCell;

use pf_digest::Digest;
use ring::{aead, hkdf, hmac};

use crate::keys::DataKey;
use crate::{CryptError, Result};

/// Bytes a sealed piece adds to its (compressed) body.
pub const OVERHEAD: usize = 32 + FORM + 16;
/// Bytes of a piece's clear form: flag, zstd level, zstd version.
const FORM: usize = 6;
const AAD: &[u8] = b"pf-crypt sealed piece v1";
const FLAG_RAW: u8 = 0;
const FLAG_ZSTD: u8 = 1;

type SealScratch = (Option<(i32, zstd::bulk::Compressor<'static>)>, Vec<u8>);

thread_local! {
    /// One zstd context (per level) and one output buffer per thread,
    /// reused across pieces: a context per 64 KiB chunk costs about as
    /// much as compressing it.
    static SCRATCH: RefCell<SealScratch> =
        const { RefCell::new((None, Vec::new())) };
    /// A zstd decoding context per thread, for opening compressed pieces.
    static OPEN_SCRATCH: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

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

    /// The keyed id of `plain`: HMAC-SHA256 of its SHA-256 digest under
    /// the id key.
    pub fn id(&self, plain: &[u8]) -> [u8; 32] {
        self.id_of(&Digest::of(plain))
    }

    /// The keyed id of the plaintext whose SHA-256 digest is `digest`.
    pub fn id_of(&self, digest: &Digest) -> [u8; 32] {
        let mut id = [0u8; 32];
        id.copy_from_slice(hmac::sign(&self.mac, digest.as_bytes()).as_ref());
        id
    }

    /// The AEAD key of the piece with id `id` whose body was made as
    /// `form` says (exposed for the property tests that distinct bodies
    /// never share a key).
    pub fn piece_key(&self, id: &[u8; 32], form: &[u8]) -> [u8; 32] {
        expand(&self.prk, &[b"pf-crypt chunk key v2", id, form])
    }

    fn aead_key(&self, id: &[u8; 32], form: &[u8]) -> aead::LessSafeKey {
        let k = self.piece_key(id, form);
        // A 32-byte key is always accepted by AES-256-GCM.
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, &k)
            .unwrap_or_else(|_| unreachable!("32-byte AES-256-GCM key"));
        aead::LessSafeKey::new(unbound)
    }

    /// Seals `plain` (deterministically, see the module doc).
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.seal_into(plain, &Digest::of(plain), &mut out);
        out
    }

    /// Appends the sealed form of `plain`, whose SHA-256 digest is
    /// `digest`, to `out` and returns its length. The caller vouches for
    /// `digest`: a wrong one seals a piece [`Sealer::open`] refuses (and
    /// that dedups with nothing). Compresses with a per-thread zstd
    /// context.
    pub fn seal_into(&self, plain: &[u8], digest: &Digest, out: &mut Vec<u8>) -> usize {
        self.seal_body(plain, digest, true, out)
    }

    /// [`Sealer::seal_into`] for a piece known not to compress (it was
    /// sealed before with a raw body): the same bytes, without trying
    /// zstd again.
    pub fn seal_raw_into(&self, plain: &[u8], digest: &Digest, out: &mut Vec<u8>) -> usize {
        self.seal_body(plain, digest, false, out)
    }

    fn seal_body(&self, plain: &[u8], digest: &Digest, try_zstd: bool, out: &mut Vec<u8>) -> usize {
        let id = self.id_of(digest);
        let start = out.len();
        out.reserve(plain.len() + OVERHEAD);
        out.extend_from_slice(&id);
        let form = SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let (cctx, buf) = &mut *scratch;
            buf.clear();
            let mut packed = false;
            // A chunk that looks random is sealed raw without a try, as
            // zstd would not shrink it (the choice depends on its bytes
            // alone, so equal chunks still seal equally).
            if try_zstd && !pf_registry_core::codec::looks_random(plain) {
                if cctx.as_ref().is_none_or(|(l, _)| *l != self.level) {
                    *cctx = zstd::bulk::Compressor::new(self.level)
                        .ok()
                        .map(|c| (self.level, c));
                }
                buf.reserve(zstd::zstd_safe::compress_bound(plain.len()));
                packed = match cctx {
                    Some((_, c)) => c.compress_to_buffer(plain, buf).is_ok(),
                    None => false,
                };
            }
            let form = if packed && buf.len() < plain.len() {
                self.zstd_form()
            } else {
                [FLAG_RAW, 0, 0, 0, 0, 0]
            };
            out.extend_from_slice(&form);
            out.extend_from_slice(if form[0] == FLAG_ZSTD { buf } else { plain });
            form
        });
        let key = self.aead_key(&id, &form);
        let tag = key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key([0u8; 12]),
                aead::Aad::from(AAD),
                &mut out[start + 32 + FORM..],
            )
            .unwrap_or_else(|_| unreachable!("AES-256-GCM seals any piece (at most 4 GiB)"));
        out.extend_from_slice(tag.as_ref());
        out.len() - start
    }

    /// The form of a body compressed by this sealer: flag 1, the level
    /// (clamped to a signed byte, as zstd's levels are) and the zstd
    /// library's version number.
    fn zstd_form(&self) -> [u8; FORM] {
        let level = self.level.clamp(i32::from(i8::MIN), i32::from(i8::MAX)) as i8;
        let v = zstd::zstd_safe::version_number().to_le_bytes();
        [FLAG_ZSTD, level as u8, v[0], v[1], v[2], v[3]]
    }

    /// Opens a sealed piece into `out` (appended) without checking that
    /// the plaintext hashes back to the piece's id: for callers that check
    /// the digest of what they opened anyway. Still fails with [`CryptError::Authentication`] on
    /// any ciphertext not sealed under this data key as it is, or a
    /// plaintext over `max_len` bytes.
    pub fn open_into(&self, sealed: &[u8], max_len: usize, out: &mut Vec<u8>) -> Result<()> {
        let mut buf = sealed.to_vec();
        let mut decoded = Vec::new();
        match self.open_in_place(&mut buf, max_len, &mut decoded)? {
            Some(r) => out.extend_from_slice(&buf[r]),
            None => out.extend_from_slice(&decoded),
        }
        Ok(())
    }

    /// [`Sealer::open_into`] in place: `sealed` is decrypted where it
    /// lies. Returns the range of `sealed` that holds the plaintext of a
    /// raw piece, or `None` for a compressed one, whose plaintext is then
    /// `out` (cleared first). Same checks and errors; after an error
    /// `sealed` holds garbage.
    pub fn open_in_place(
        &self,
        sealed: &mut [u8],
        max_len: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<std::ops::Range<usize>>> {
        if sealed.len() < OVERHEAD {
            return Err(CryptError::Authentication);
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&sealed[..32]);
        let mut form = [0u8; FORM];
        form.copy_from_slice(&sealed[32..32 + FORM]);
        let body = 32 + FORM..sealed.len() - 16;
        let tag =
            aead::Tag::try_from(&sealed[body.end..]).map_err(|_| CryptError::Authentication)?;
        self.aead_key(&id, &form)
            .open_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key([0u8; 12]),
                aead::Aad::from(AAD),
                tag,
                &mut sealed[body.clone()],
                0..,
            )
            .map_err(|_| CryptError::Authentication)?;
        match form[0] {
            FLAG_RAW if body.len() <= max_len => Ok(Some(body)),
            FLAG_ZSTD => OPEN_SCRATCH.with(|cell| {
                let mut dctx = cell.borrow_mut();
                if dctx.is_none() {
                    *dctx = zstd::bulk::Decompressor::new().ok();
                }
                let d = dctx.as_mut().ok_or(CryptError::Authentication)?;
                out.clear();
                out.reserve(max_len);
                // Fails if the frame decodes to more than `max_len`.
                d.decompress_to_buffer(&sealed[body], out)
                    .map_err(|_| CryptError::Authentication)?;
                if out.len() > max_len {
                    return Err(CryptError::Authentication);
                }
                Ok(None)
            }),
            _ => Err(CryptError::Authentication),
        }
    }

    /// Opens a sealed piece whose plaintext is at most `max_len` bytes.
    /// Fails with [`CryptError::Authentication`] if it was not sealed under
    /// this key exactly as it is.
    pub fn open(&self, sealed: &[u8], max_len: usize) -> Result<Vec<u8>> {
        let mut plain = Vec::new();
        self.open_into(sealed, max_len, &mut plain)?;
        if sealed.get(..32) != Some(&self.id(&plain)[..]) {
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
        // A random chunk is sealed raw (zstd is not tried on it); a large
        // text chunk still compresses.
        let random =
            pf_testsupport::noise(pf_registry_core::codec::PROBE_MIN, 0x9E37_79B9_7F4A_7C15);
        let sealed = s.seal(&random);
        assert_eq!(sealed[32], FLAG_RAW);
        assert_eq!(s.open(&sealed, random.len()).unwrap(), random);
        let long = b"agent notes: the token is hunter2 ".repeat(1000);
        assert_eq!(s.seal(&long)[32], FLAG_ZSTD);
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

    /// One repository pushed at several zstd levels: the same chunk's
    /// compressed bodies differ, so their keys must too (a fixed nonce
    /// under one key for two bodies would leak their XOR and GCM's
    /// authentication key).
    #[test]
    fn bodies_made_at_other_levels_never_share_a_key() {
        let key = DataKey::generate().unwrap();
        let text = b"the same chunk, pushed at another --zstd-level; ".repeat(300);
        let mut by_key: HashMap<[u8; 32], Vec<u8>> = HashMap::new();
        for level in [1, 3, 9, 19] {
            let s = Sealer::new(&key, level);
            let sealed = s.seal(&text);
            assert_eq!(sealed[32], FLAG_ZSTD, "compressible text is compressed");
            assert_eq!(sealed[33] as i8, level as i8);
            let k = s.piece_key(sealed[..32].try_into().unwrap(), &sealed[32..32 + FORM]);
            let body = sealed[32 + FORM..].to_vec();
            if let Some(prev) = by_key.insert(k, body.clone()) {
                assert_eq!(prev, body, "level {level}: two bodies under one key");
            }
            // Any level's sealer opens any level's piece.
            assert_eq!(
                Sealer::new(&key, 3).open(&sealed, text.len()).unwrap(),
                text
            );
        }
        assert_eq!(by_key.len(), 4, "a key per level");
        // Raw bodies (random bytes do not compress) do not depend on it.
        let noise: Vec<u8> = (0..160)
            .flat_map(|_| crate::keys::random32().unwrap())
            .collect();
        let raw = Sealer::new(&key, 1).seal(&noise);
        assert_eq!(raw[32..32 + FORM], [FLAG_RAW, 0, 0, 0, 0, 0]);
        assert_eq!(raw, Sealer::new(&key, 19).seal(&noise));
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
                let key = s.piece_key(sealed[..32].try_into().unwrap(), &sealed[32..32 + FORM]);
                if let Some(prev) = by_key.insert(key, p.clone()) {
                    prop_assert_eq!(&prev, p, "two plaintexts sealed under one key and nonce");
                }
                prop_assert_eq!(s.open(&sealed, 64).unwrap(), p.clone());
            }
        }
    }
}
