//! Content digests (`sha256:<64 lowercase hex>`) with strict parsing.
//!
//! A [`Digest`] can only be obtained by hashing bytes or by parsing a string
//! that is exactly `sha256:` followed by 64 lowercase hex characters, so a
//! value of this type is always safe to splice into a path or URL.
//!
//! ```
//! use pf_digest::{Digest, Hasher};
//! let d = Digest::of(b"hello");
//! assert_eq!(d.to_string().len(), "sha256:".len() + 64);
//! assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
//! assert!(Digest::parse("sha256:ABC").is_err()); // upper case, too short
//! let mut h = Hasher::new();
//! h.update(b"hel");
//! h.update(b"lo");
//! assert_eq!(h.finish(), d);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

/// The only algorithm prefix accepted.
pub const ALGORITHM: &str = "sha256";
const PREFIX: &str = "sha256:";
const HEX_LEN: usize = 64;

/// Each byte's value as a lowercase hex digit, or `0x10` if it is not one.
const NIBBLE: [u8; 256] = {
    let mut t = [0x10u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Why a string is not a valid digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// The algorithm prefix is missing or not `sha256:`.
    #[error("invalid digest {shown:?}: must start with \"sha256:\"")]
    BadAlgorithm {
        /// The offending input, truncated for display.
        shown: String,
    },
    /// The hex part has the wrong length.
    #[error("invalid digest {shown:?}: expected 64 hex characters after \"sha256:\", found {len}")]
    BadLength {
        /// The offending input, truncated for display.
        shown: String,
        /// Length of the part after the prefix.
        len: usize,
    },
    /// The hex part contains something other than `0-9a-f`.
    #[error("invalid digest {shown:?}: only lowercase hex (0-9, a-f) is allowed")]
    BadHex {
        /// The offending input, truncated for display.
        shown: String,
    },
}

fn shown(s: &str) -> String {
    // Never echo unbounded attacker-controlled input into error messages.
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// A SHA-256 digest of some bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Hashes `bytes` in one go.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new();
        h.update(bytes);
        h.finish()
    }

    /// Hashes everything `reader` yields, returning the digest and byte count.
    pub fn of_reader<R: Read>(mut reader: R) -> io::Result<(Digest, u64)> {
        let mut h = Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
        }
        let len = h.len();
        Ok((h.finish(), len))
    }

    /// Builds a digest from raw hash bytes (e.g. from a trusted hasher).
    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// Strictly parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let Some(hex_part) = s.strip_prefix(PREFIX) else {
            return Err(DigestError::BadAlgorithm { shown: shown(s) });
        };
        Self::parse_hex(hex_part).map_err(|e| match e {
            DigestError::BadLength { len, .. } => DigestError::BadLength {
                shown: shown(s),
                len,
            },
            DigestError::BadHex { .. } => DigestError::BadHex { shown: shown(s) },
            other => other,
        })
    }

    /// Strictly parses the bare 64-character lowercase hex form (no prefix).
    pub fn parse_hex(hex_part: &str) -> Result<Digest, DigestError> {
        if hex_part.len() != HEX_LEN {
            return Err(DigestError::BadLength {
                shown: shown(hex_part),
                len: hex_part.len(),
            });
        }
        // One pass, lowercase only (trees hold tens of thousands of these):
        // a table lookup per character, one check per digest.
        let b = hex_part.as_bytes();
        let mut out = [0u8; 32];
        let mut bad = 0u8;
        for (i, o) in out.iter_mut().enumerate() {
            let (h, l) = (NIBBLE[b[2 * i] as usize], NIBBLE[b[2 * i + 1] as usize]);
            bad |= (h | l) & 0x10;
            *o = h << 4 | (l & 0x0f);
        }
        if bad != 0 {
            return Err(DigestError::BadHex {
                shown: shown(hex_part),
            });
        }
        Ok(Digest(out))
    }

    /// The raw 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex characters, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The two-character shard directory used by on-disk layouts (`aa`).
    pub fn shard(&self) -> String {
        hex::encode(&self.0[..1])
    }

    /// A short form for humans: `sha256:` plus the first 12 hex characters.
    pub fn short(&self) -> String {
        format!("{PREFIX}{}", &self.hex()[..12])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a digest string \"sha256:<64 lowercase hex>\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Digest, E> {
                Digest::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Incremental SHA-256 hasher.
pub struct Hasher {
    ctx: ring::digest::Context,
    len: u64,
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Hasher {
        Hasher {
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
            len: 0,
        }
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.ctx.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Number of bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Finishes and returns the digest.
    pub fn finish(self) -> Digest {
        let d = self.ctx.finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Digest(out)
    }
}

/// A reader adapter that hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(),
        }
    }
    /// Returns the digest and byte count of everything read so far.
    pub fn finish(self) -> (Digest, u64) {
        let len = self.hasher.len();
        (self.hasher.finish(), len)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer adapter that hashes everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(),
        }
    }
    /// Returns the inner writer, the digest and byte count written.
    pub fn finish(self) -> (W, Digest, u64) {
        let len = self.hasher.len();
        (self.inner, self.hasher.finish(), len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vector() {
        assert_eq!(
            Digest::of(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn rejects_bad_forms() {
        let good = Digest::of(b"x").to_string();
        assert!(Digest::parse(&good).is_ok());
        assert!(matches!(
            Digest::parse(&good.to_uppercase()),
            Err(DigestError::BadAlgorithm { .. })
        ));
        assert!(matches!(
            Digest::parse(&good.replace("sha256:", "sha512:")),
            Err(DigestError::BadAlgorithm { .. })
        ));
        let upper_hex = format!("sha256:{}", good[7..].to_uppercase());
        assert!(matches!(
            Digest::parse(&upper_hex),
            Err(DigestError::BadHex { .. })
        ));
        assert!(matches!(
            Digest::parse(&good[..good.len() - 1]),
            Err(DigestError::BadLength { len: 63, .. })
        ));
        assert!(Digest::parse(&format!("{good}0")).is_err());
        assert!(Digest::parse(&format!("sha256:../../{}", &good[13..])).is_err());
        assert!(Digest::parse("").is_err());
    }

    #[test]
    fn serde_validates() {
        let d = Digest::of(b"y");
        let json = serde_json::to_string(&d).unwrap();
        let back: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:abc\"").is_err());
        assert!(serde_json::from_str::<Digest>("42").is_err());
    }

    #[test]
    fn streaming_matches_oneshot() {
        let data = vec![7u8; 1_000_000];
        let (d, n) = Digest::of_reader(&data[..]).unwrap();
        assert_eq!(n, 1_000_000);
        assert_eq!(d, Digest::of(&data));
        let mut r = HashingReader::new(&data[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.finish().0, d);
    }

    #[test]
    fn error_message_is_bounded() {
        let long = "x".repeat(100_000);
        let msg = Digest::parse(&long).unwrap_err().to_string();
        assert!(msg.len() < 300, "{}", msg.len());
    }

    proptest! {
        #[test]
        fn display_parse_roundtrip(bytes in any::<[u8; 32]>()) {
            let d = Digest::from_bytes(bytes);
            prop_assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        }

        #[test]
        fn parse_hex_takes_exactly_64_lowercase_hex_digits(
            hex in "[0-9a-f]{64}",
            at in 0usize..64,
            c in any::<char>(),
        ) {
            prop_assert_eq!(Digest::parse_hex(&hex).unwrap().hex(), hex.clone());
            let mut s: Vec<char> = hex.chars().collect();
            s[at] = c;
            let s: String = s.into_iter().collect();
            let valid = c.is_ascii_digit() || ('a'..='f').contains(&c);
            prop_assert_eq!(Digest::parse_hex(&s).is_ok(), valid, "{}", s);
        }

        #[test]
        fn parse_never_panics_and_is_strict(s in "\\PC{0,80}") {
            if let Ok(d) = Digest::parse(&s) {
                prop_assert_eq!(d.to_string(), s);
            }
        }
    }
}
