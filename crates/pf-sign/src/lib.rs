//! Ed25519 signing of manifest bytes (via `ring`), key files, the signature
//! envelope wire format, and the trust policy applied on pull.
//!
//! A signature covers the exact manifest bytes. Verification happens before
//! the manifest is parsed. Key material never appears in `Debug` output or
//! error messages.
//!
//! ```
//! use pf_sign::{SigningKey, TrustPolicy, Verification};
//! # fn main() -> Result<(), pf_sign::SignError> {
//! let key = SigningKey::generate()?;
//! let manifest = br#"{"schema_version":1}"#;
//! let envelope = key.sign_manifest(manifest).to_json_bytes();
//! let trust = TrustPolicy::new(vec![key.public_key()]);
//! let v = trust.verify(manifest, Some(&envelope))?;
//! assert_eq!(v, Verification::Verified { key_id: key.key_id() });
//! // Other bytes under the same envelope are refused.
//! assert!(trust.verify(b"{}", Some(&envelope)).is_err());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use pf_digest::Digest;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

/// The only signature algorithm.
pub const ALGORITHM: &str = "ed25519";
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Signing and verification failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// No signature, but trusted keys are configured.
    #[error("image is unsigned but trusted keys are configured")]
    Unsigned,
    /// Signed by a key that is not trusted.
    #[error("image is signed by key {key_id}, which is not trusted")]
    Untrusted {
        /// The signer's key id.
        key_id: KeyId,
    },
    /// The signature does not verify under the named key.
    #[error("signature by key {key_id} does not verify over the manifest bytes")]
    BadSignature {
        /// The key id.
        key_id: KeyId,
    },
    /// The envelope was made for a different manifest.
    #[error("signature envelope is for manifest {envelope}, but the manifest is {actual}")]
    DigestMismatch {
        /// Digest named by the envelope.
        envelope: Digest,
        /// Digest of the manifest bytes.
        actual: Digest,
    },
    /// An envelope or key file that does not parse.
    #[error("malformed: {0}")]
    Malformed(String),
    /// An algorithm other than ed25519.
    #[error("unsupported signature algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// Reading or writing a key file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// ring rejected key material.
    #[error("key rejected: {0}")]
    KeyRejected(String),
}

/// At most 160 characters of `s`, with control characters escaped, so
/// attacker-controlled text cannot flood or drive a terminal.
fn bounded(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().take(160) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Identifier of a public key: `ed25519:` + the first 16 bytes of
/// SHA-256(raw public key) in lowercase hex.
///
/// Always well formed: parsing (including serde `Deserialize`) rejects
/// anything else, so a key id taken from an envelope is safe to display.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// Strictly parses `ed25519:<32 lowercase hex>`.
    pub fn parse(s: &str) -> Result<KeyId, SignError> {
        let ok = s.strip_prefix("ed25519:").is_some_and(|h| {
            h.len() == 32
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(KeyId(s.to_owned()))
        } else {
            Err(SignError::Malformed(format!(
                "invalid key id \"{}\": expected \"ed25519:\" and 32 lowercase hex characters",
                bounded(&s.chars().take(48).collect::<String>())
            )))
        }
    }

    /// The string form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for KeyId {
    type Err = SignError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyId::parse(s)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = KeyId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key id \"ed25519:<32 lowercase hex>\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyId, E> {
                KeyId::parse(v).map_err(|e| match e {
                    SignError::Malformed(m) => E::custom(m),
                    other => E::custom(other),
                })
            }
        }
        d.deserialize_str(V)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

fn pem_decode(s: &str, label: &str) -> Result<Vec<u8>, SignError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = s
        .find(&begin)
        .ok_or_else(|| SignError::Malformed(format!("no {begin} block")))?;
    let rest = &s[start + begin.len()..];
    let stop = rest
        .find(&end)
        .ok_or_else(|| SignError::Malformed(format!("no {end} line")))?;
    let body: String = rest[..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    B64.decode(body.as_bytes())
        .map_err(|_| SignError::Malformed(format!("{label}: invalid base64")))
}

fn pem_encode(der: &[u8], label: &str) -> String {
    let b = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn read_small(path: &Path) -> Result<String, SignError> {
    let ctx = || format!("reading key file {}", path.display());
    let md = std::fs::metadata(path).map_err(|e| SignError::Io {
        context: ctx(),
        source: e,
    })?;
    if md.len() > MAX_KEY_FILE {
        return Err(SignError::Malformed(format!(
            "{} is too large for a key file",
            path.display()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| SignError::Io {
        context: ctx(),
        source: e,
    })
}

impl PublicKey {
    /// From the raw 32-byte key.
    pub fn from_raw(bytes: &[u8]) -> Result<Self, SignError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            SignError::Malformed(format!("public key must be 32 bytes, got {}", bytes.len()))
        })?;
        Ok(PublicKey(arr))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// PEM `PUBLIC KEY` (SubjectPublicKeyInfo, as `openssl pkey -pubout` writes).
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem_encode(&der, "PUBLIC KEY")
    }

    /// Parses a PEM `PUBLIC KEY` holding an Ed25519 SPKI.
    pub fn from_pem(s: &str) -> Result<Self, SignError> {
        let der = pem_decode(s, "PUBLIC KEY")?;
        if der.len() != 44 || der[..12] != SPKI_PREFIX {
            return Err(SignError::Malformed("not an Ed25519 public key".into()));
        }
        Self::from_raw(&der[12..])
    }

    /// Loads a public key file.
    pub fn load(path: &Path) -> Result<Self, SignError> {
        Self::from_pem(&read_small(path)?)
    }

    /// Writes a public key file.
    pub fn save(&self, path: &Path) -> Result<(), SignError> {
        std::fs::write(path, self.to_pem()).map_err(|e| SignError::Io {
            context: format!("writing {}", path.display()),
            source: e,
        })
    }

    /// This key's id.
    pub fn key_id(&self) -> KeyId {
        let d = Digest::of(&self.0);
        KeyId(format!("{ALGORITHM}:{}", hex::encode(&d.as_bytes()[..16])))
    }

    /// Whether `sig` is a valid signature of `msg` by this key.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(msg, sig)
            .is_ok()
    }
}

/// An Ed25519 private key. `Debug` shows only the key id.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, private bytes redacted)", self.key_id())
    }
}

impl SigningKey {
    /// Generates a fresh key from the system RNG.
    pub fn generate() -> Result<Self, SignError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| SignError::KeyRejected("rng failure".into()))?;
        Self::from_pkcs8_der(doc.as_ref())
    }

    /// From PKCS#8 DER (v1 or v2).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SignError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| SignError::KeyRejected(bounded(&e.to_string())))?;
        Ok(SigningKey {
            pair,
            pkcs8: der.to_vec(),
        })
    }

    /// PEM `PRIVATE KEY` (PKCS#8).
    pub fn to_pkcs8_pem(&self) -> String {
        pem_encode(&self.pkcs8, "PRIVATE KEY")
    }

    /// Parses a PEM `PRIVATE KEY`.
    pub fn from_pkcs8_pem(s: &str) -> Result<Self, SignError> {
        Self::from_pkcs8_der(&pem_decode(s, "PRIVATE KEY")?)
    }

    /// Loads a private key file.
    pub fn load(path: &Path) -> Result<Self, SignError> {
        Self::from_pkcs8_pem(&read_small(path)?)
    }

    /// Writes a new private key file (mode 0600; refuses to overwrite).
    pub fn save(&self, path: &Path) -> Result<(), SignError> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let ctx = || format!("writing {}", path.display());
        let mut f = opts.open(path).map_err(|e| SignError::Io {
            context: ctx(),
            source: e,
        })?;
        f.write_all(self.to_pkcs8_pem().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| SignError::Io {
                context: ctx(),
                source: e,
            })
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(raw)
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.public_key().key_id()
    }

    /// Signs the exact manifest bytes.
    pub fn sign_manifest(&self, manifest_bytes: &[u8]) -> SignatureEnvelope {
        let sig = self.pair.sign(manifest_bytes);
        SignatureEnvelope {
            algorithm: ALGORITHM.into(),
            key_id: self.key_id(),
            manifest_digest: Digest::of(manifest_bytes),
            signature: B64.encode(sig.as_ref()),
        }
    }
}

/// The signature envelope stored next to a manifest (wire format v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEnvelope {
    /// Always `ed25519`.
    pub algorithm: String,
    /// Id of the signing key.
    pub key_id: KeyId,
    /// Digest of the signed manifest bytes.
    pub manifest_digest: Digest,
    /// Base64 (standard) of the 64-byte signature.
    pub signature: String,
}

impl SignatureEnvelope {
    /// Largest envelope accepted.
    pub const MAX_LEN: usize = 64 * 1024;

    /// Wire bytes: pretty JSON plus newline.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Strictly parses wire bytes.
    pub fn from_json_bytes(b: &[u8]) -> Result<Self, SignError> {
        if b.len() > Self::MAX_LEN {
            return Err(SignError::Malformed(format!(
                "signature envelope of {} bytes is too large",
                b.len()
            )));
        }
        serde_json::from_slice(b).map_err(|e| {
            SignError::Malformed(format!("signature envelope: {}", bounded(&e.to_string())))
        })
    }
}

/// The outcome of checking an image's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verification {
    /// Signed by a trusted key and verified.
    Verified {
        /// The key.
        key_id: KeyId,
    },
    /// No signature (only possible when no keys are trusted).
    Unsigned,
    /// Signed by a key we do not know (only when no keys are trusted); not verified.
    UnknownKey {
        /// The claimed key.
        key_id: KeyId,
    },
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verification::Verified { key_id } => write!(f, "verified (key {key_id})"),
            Verification::Unsigned => f.write_str("unsigned"),
            Verification::UnknownKey { key_id } => write!(f, "signed by unknown key {key_id}"),
        }
    }
}

/// The set of keys a pulled image must be signed by. Empty = report only.
#[derive(Clone, Default, Debug)]
pub struct TrustPolicy {
    keys: Vec<PublicKey>,
}

impl TrustPolicy {
    /// Trusts exactly `keys`.
    pub fn new(keys: Vec<PublicKey>) -> Self {
        TrustPolicy { keys }
    }

    /// True when no key is trusted (signatures are reported, not required).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Checks `envelope` (raw bytes as fetched) against the exact
    /// `manifest_bytes`. A malformed envelope, or one naming another
    /// manifest, is an error even when no keys are trusted.
    pub fn verify(
        &self,
        manifest_bytes: &[u8],
        envelope: Option<&[u8]>,
    ) -> Result<Verification, SignError> {
        let Some(raw) = envelope else {
            return if self.is_empty() {
                Ok(Verification::Unsigned)
            } else {
                Err(SignError::Unsigned)
            };
        };
        let env = SignatureEnvelope::from_json_bytes(raw)?;
        if env.algorithm != ALGORITHM {
            return Err(SignError::UnsupportedAlgorithm(bounded(&env.algorithm)));
        }
        let actual = Digest::of(manifest_bytes);
        if env.manifest_digest != actual {
            return Err(SignError::DigestMismatch {
                envelope: env.manifest_digest,
                actual,
            });
        }
        let sig = B64
            .decode(env.signature.as_bytes())
            .map_err(|_| SignError::Malformed("signature is not base64".into()))?;
        if sig.len() != 64 {
            return Err(SignError::Malformed(format!(
                "signature must be 64 bytes, got {}",
                sig.len()
            )));
        }
        match self.keys.iter().find(|k| k.key_id() == env.key_id) {
            Some(k) if k.verify(manifest_bytes, &sig) => {
                Ok(Verification::Verified { key_id: env.key_id })
            }
            Some(_) => Err(SignError::BadSignature { key_id: env.key_id }),
            None if self.is_empty() => Ok(Verification::UnknownKey { key_id: env.key_id }),
            None => Err(SignError::Untrusted { key_id: env.key_id }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXED_KEY: &str = include_str!("../tests/fixtures/test-key.pem");

    fn fixed() -> SigningKey {
        SigningKey::from_pkcs8_pem(FIXED_KEY).unwrap()
    }

    #[test]
    fn roundtrip_and_policy() {
        let k = SigningKey::generate().unwrap();
        let m = b"{\"a\": 1}\n";
        let env = k.sign_manifest(m).to_json_bytes();
        let trust = TrustPolicy::new(vec![k.public_key()]);
        assert_eq!(
            trust.verify(m, Some(&env)).unwrap(),
            Verification::Verified { key_id: k.key_id() }
        );
        // re-serialised manifest with different whitespace
        assert!(matches!(
            trust.verify(b"{\"a\":1}\n", Some(&env)),
            Err(SignError::DigestMismatch { .. })
        ));
        // no trust configured
        let none = TrustPolicy::default();
        assert_eq!(
            none.verify(m, Some(&env)).unwrap(),
            Verification::UnknownKey { key_id: k.key_id() }
        );
        assert_eq!(none.verify(m, None).unwrap(), Verification::Unsigned);
        assert!(matches!(trust.verify(m, None), Err(SignError::Unsigned)));
        // untrusted key
        let other = SigningKey::generate().unwrap();
        let t2 = TrustPolicy::new(vec![other.public_key()]);
        assert!(matches!(
            t2.verify(m, Some(&env)),
            Err(SignError::Untrusted { .. })
        ));
    }

    #[test]
    fn forged_signature_fails() {
        let k = SigningKey::generate().unwrap();
        let m = b"manifest one";
        let mut env = k.sign_manifest(b"manifest two");
        env.manifest_digest = Digest::of(m); // fix up the digest, keep the wrong signature
        let trust = TrustPolicy::new(vec![k.public_key()]);
        assert!(matches!(
            trust.verify(m, Some(&env.to_json_bytes())),
            Err(SignError::BadSignature { .. })
        ));
        let mut env2 = k.sign_manifest(m);
        env2.algorithm = "rsa".into();
        assert!(matches!(
            trust.verify(m, Some(&env2.to_json_bytes())),
            Err(SignError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn key_files_roundtrip_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let k = SigningKey::generate().unwrap();
        let kp = dir.path().join("k.key");
        let pp = dir.path().join("k.pub");
        k.save(&kp).unwrap();
        k.public_key().save(&pp).unwrap();
        assert!(k.save(&kp).is_err(), "must not overwrite a key file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&kp).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let k2 = SigningKey::load(&kp).unwrap();
        assert_eq!(k2.key_id(), k.key_id());
        assert_eq!(PublicKey::load(&pp).unwrap(), k.public_key());
        assert!(PublicKey::from_pem("garbage").is_err());
        assert!(PublicKey::from_pem(&k.to_pkcs8_pem().replace("PRIVATE", "PUBLIC")).is_err());
        assert!(SigningKey::from_pkcs8_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
        )
        .is_err());
    }

    #[test]
    fn debug_never_shows_key_material() {
        let k = fixed();
        let dbg = format!("{k:?} {:?}", k.public_key());
        let pem = k.to_pkcs8_pem();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!dbg.contains(&body[..20]));
        assert!(!dbg.contains(&hex::encode(&k.pkcs8[16..])));
        assert!(dbg.contains(k.key_id().as_str()));
    }

    #[test]
    fn envelope_wire_format_snapshot() {
        let env = fixed().sign_manifest(b"{\"schema_version\": 1}\n");
        insta::assert_snapshot!(
            "signature_envelope_v1",
            String::from_utf8(env.to_json_bytes()).unwrap()
        );
        let back = SignatureEnvelope::from_json_bytes(&env.to_json_bytes()).unwrap();
        assert_eq!(back, env);
        let extra = String::from_utf8(env.to_json_bytes())
            .unwrap()
            .replacen('{', "{\"x\":1,", 1);
        assert!(SignatureEnvelope::from_json_bytes(extra.as_bytes()).is_err());
    }

    #[test]
    fn tampered_manifest_byte_is_a_digest_mismatch_even_without_trust() {
        let k = fixed();
        let m = b"{\"schema_version\": 1}\n".to_vec();
        let env = k.sign_manifest(&m).to_json_bytes();
        let mut bad = m.clone();
        bad[3] ^= 1;
        for policy in [
            TrustPolicy::new(vec![k.public_key()]),
            TrustPolicy::default(),
        ] {
            match policy.verify(&bad, Some(&env)) {
                Err(SignError::DigestMismatch { envelope, actual }) => {
                    assert_eq!(envelope, Digest::of(&m));
                    assert_eq!(actual, Digest::of(&bad));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn malformed_envelopes_are_errors_even_without_trust() {
        let k = fixed();
        let m = b"m";
        let good = k.sign_manifest(m);
        let none = TrustPolicy::default();
        let mut short = good.clone();
        short.signature = B64.encode([0u8; 63]);
        let mut not_b64 = good.clone();
        not_b64.signature = "***".into();
        for env in [short, not_b64] {
            assert!(matches!(
                none.verify(m, Some(&env.to_json_bytes())),
                Err(SignError::Malformed(_))
            ));
        }
        for raw in [
            &b""[..],
            b"{}",
            b"null",
            b"[1]",
            b"{\"algorithm\":\"ed25519\"}",
        ] {
            assert!(matches!(
                none.verify(m, Some(raw)),
                Err(SignError::Malformed(_))
            ));
        }
        let huge = vec![b' '; SignatureEnvelope::MAX_LEN + 1];
        assert!(matches!(
            SignatureEnvelope::from_json_bytes(&huge),
            Err(SignError::Malformed(_))
        ));
    }

    #[test]
    fn hostile_key_id_is_rejected_with_a_bounded_clean_message() {
        let good = String::from_utf8(fixed().sign_manifest(b"m").to_json_bytes()).unwrap();
        let id = fixed().key_id().to_string();
        for evil in [
            format!("{id}\\u001b[31m{}", "x".repeat(10_000)),
            id.to_uppercase(),
            format!("{id}0"),
            "ed25519:".into(),
        ] {
            let raw = good.replace(&id, &evil);
            let err = TrustPolicy::default()
                .verify(b"m", Some(raw.as_bytes()))
                .unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, SignError::Malformed(_)), "{msg}");
            assert!(msg.len() < 400, "{}", msg.len());
            assert!(!msg.chars().any(char::is_control), "{msg:?}");
        }
        assert_eq!(KeyId::parse(&id).unwrap(), fixed().key_id());
        assert!(KeyId::parse("ed25519:00").is_err());
    }

    #[test]
    fn key_id_format() {
        let id = fixed().key_id();
        let hex = id.as_str().strip_prefix("ed25519:").unwrap();
        assert_eq!(hex.len(), 32);
        assert_eq!(
            hex,
            &Digest::of(fixed().public_key().as_bytes()).hex()[..32]
        );
        let pem = fixed().public_key().to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"));
        assert_eq!(PublicKey::from_pem(&pem).unwrap(), fixed().public_key());
    }

    proptest! {
        #[test]
        fn envelope_parser_never_panics(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = SignatureEnvelope::from_json_bytes(&b);
            let _ = TrustPolicy::default().verify(b"m", Some(&b));
        }
    }
}
