//! Manifest signing and verification (via `ring`): Ed25519 keys, and ECDSA
//! P-256 keys that cosign also verifies ([`cosign`]); key files, the
//! signature envelope wire format, and the trust policy applied on pull.
//!
//! A signature covers the exact manifest bytes. Verification happens before
//! the manifest is parsed. Key material never appears in `Debug` output or
//! error messages.
//!
//! ```
//! use pf_sign::{Algorithm, SigningKey, TrustPolicy, Verification};
//! # fn main() -> Result<(), pf_sign::SignError> {
//! for key in [SigningKey::generate()?, SigningKey::generate_for(Algorithm::EcdsaP256Sha256)?] {
//!     let manifest = br#"{"schema_version":1}"#;
//!     let envelope = key.sign_manifest(manifest).to_json_bytes();
//!     let trust = TrustPolicy::new(vec![key.public_key()]);
//!     let v = trust.verify(manifest, Some(&envelope))?;
//!     assert_eq!(v, Verification::Verified { key_id: key.key_id() });
//!     // Other bytes under the same envelope are refused.
//!     assert!(trust.verify(b"{}", Some(&envelope)).is_err());
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cosign;
mod keys;

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use pf_digest::Digest;
use serde::{Deserialize, Serialize};

pub use keys::{Algorithm, KeyId, PublicKey, SigningKey};

/// The Ed25519 algorithm name (`Algorithm::Ed25519.as_str()`).
pub const ALGORITHM: &str = "ed25519";

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
    /// An algorithm pf does not know (nor the key type it needs).
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

impl SigningKey {
    /// Signs the exact manifest bytes with this key's algorithm.
    ///
    /// # Panics
    /// Only if the operating system's random number generator fails while
    /// an ECDSA key signs (Ed25519 signing uses no randomness).
    pub fn sign_manifest(&self, manifest_bytes: &[u8]) -> SignatureEnvelope {
        let sig = match self.sign_bytes(manifest_bytes) {
            Ok(s) => s,
            Err(e) => panic!("cannot sign the manifest: {e}"),
        };
        SignatureEnvelope {
            algorithm: self.algorithm().as_str().into(),
            key_id: self.key_id(),
            manifest_digest: Digest::of(manifest_bytes),
            signature: B64.encode(sig),
        }
    }
}

/// The signature envelope stored next to a manifest (wire format v1; the
/// `algorithm` names how `signature` was made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEnvelope {
    /// `ed25519` or `ecdsa-p256-sha256` (see [`Algorithm`]).
    pub algorithm: String,
    /// Id of the signing key.
    pub key_id: KeyId,
    /// Digest of the signed manifest bytes.
    pub manifest_digest: Digest,
    /// Base64 (standard) of the signature: 64 bytes (Ed25519) or ASN.1 DER
    /// (ECDSA P-256).
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
        let alg = Algorithm::parse(&env.algorithm)
            .ok_or_else(|| SignError::UnsupportedAlgorithm(bounded(&env.algorithm)))?;
        if env.key_id.algorithm() != alg {
            return Err(SignError::Malformed(format!(
                "key id {} is not an {alg} key",
                env.key_id
            )));
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
        if !alg.signature_len_ok(sig.len()) {
            return Err(SignError::Malformed(format!(
                "an {alg} signature of {} bytes",
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
    /// Written by `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`.
    const P256_KEY: &str = include_str!("../tests/fixtures/test-key-p256.pem");
    /// Its public half, by `openssl pkey -pubout`.
    const P256_PUB: &str = include_str!("../tests/fixtures/test-key-p256.pub");

    fn p256() -> SigningKey {
        SigningKey::from_pkcs8_pem(P256_KEY).unwrap()
    }

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
        let der = B64.decode(body.as_bytes()).unwrap();
        assert!(!dbg.contains(&hex::encode(&der[16..])));
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

    #[test]
    fn p256_keys_from_openssl_roundtrip_and_sign() {
        let k = p256();
        assert_eq!(k.algorithm(), Algorithm::EcdsaP256Sha256);
        // Our SPKI PEM is byte for byte what openssl writes.
        assert_eq!(k.public_key().to_pem(), P256_PUB);
        let pk = PublicKey::from_pem(P256_PUB).unwrap();
        assert_eq!(pk, k.public_key());
        assert_eq!(pk.as_bytes().len(), 65);
        let id = pk.key_id();
        assert_eq!(id.algorithm(), Algorithm::EcdsaP256Sha256);
        assert_eq!(
            id.as_str(),
            format!("ecdsa-p256:{}", &Digest::of(pk.as_bytes()).hex()[..32])
        );
        assert_eq!(KeyId::parse(id.as_str()).unwrap(), id);
        // generated keys round-trip through their PEM files
        let dir = tempfile::tempdir().unwrap();
        let g = SigningKey::generate_for(Algorithm::EcdsaP256Sha256).unwrap();
        g.save(&dir.path().join("c.key")).unwrap();
        g.public_key().save(&dir.path().join("c.pub")).unwrap();
        let back = SigningKey::load(&dir.path().join("c.key")).unwrap();
        assert_eq!(back.key_id(), g.key_id());
        assert_eq!(
            PublicKey::load(&dir.path().join("c.pub")).unwrap(),
            g.public_key()
        );
        // a compressed or truncated point is refused
        let der = keys_der(P256_PUB);
        let mut compressed = der.clone();
        compressed[26] = 0x02;
        for bad in [compressed, der[..der.len() - 1].to_vec()] {
            let pem = format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                B64.encode(&bad)
            );
            assert!(matches!(
                PublicKey::from_pem(&pem),
                Err(SignError::Malformed(_))
            ));
        }
    }

    fn keys_der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        B64.decode(body.as_bytes()).unwrap()
    }

    #[test]
    fn p256_envelope_wire_format_snapshot() {
        let m = b"{\"schema_version\": 1}\n";
        let env = p256().sign_manifest(m);
        // ECDSA signatures are randomised: check it, then fix it for the snapshot.
        let trust = TrustPolicy::new(vec![p256().public_key()]);
        assert_eq!(
            trust.verify(m, Some(&env.to_json_bytes())).unwrap(),
            Verification::Verified {
                key_id: p256().key_id()
            }
        );
        let der = B64.decode(env.signature.as_bytes()).unwrap();
        assert_eq!(der[0], 0x30, "ASN.1 DER SEQUENCE");
        let mut shown = env.clone();
        shown.signature = "<base64 of the ASN.1 DER signature>".into();
        insta::assert_snapshot!(
            "signature_envelope_v1_ecdsa_p256",
            String::from_utf8(shown.to_json_bytes()).unwrap()
        );
    }

    #[test]
    fn algorithms_do_not_mix() {
        let m = b"m";
        let ec = p256();
        let ed = fixed();
        let both = TrustPolicy::new(vec![ec.public_key(), ed.public_key()]);
        for k in [&ec, &ed] {
            assert_eq!(
                both.verify(m, Some(&k.sign_manifest(m).to_json_bytes()))
                    .unwrap(),
                Verification::Verified { key_id: k.key_id() }
            );
        }
        // An ECDSA envelope relabelled as Ed25519 (and the reverse) is refused.
        let mut relabelled = ec.sign_manifest(m);
        relabelled.algorithm = "ed25519".into();
        let mut relabelled2 = ed.sign_manifest(m);
        relabelled2.algorithm = "ecdsa-p256-sha256".into();
        for env in [relabelled, relabelled2] {
            assert!(matches!(
                both.verify(m, Some(&env.to_json_bytes())),
                Err(SignError::Malformed(_))
            ));
        }
        // An Ed25519 signature under an ECDSA key id, algorithm to match.
        let mut swapped = ec.sign_manifest(m);
        swapped.signature = ed.sign_manifest(m).signature;
        assert!(matches!(
            both.verify(m, Some(&swapped.to_json_bytes())),
            Err(SignError::BadSignature { .. })
        ));
        // Another P-256 key's signature under this key's id.
        let other = SigningKey::generate_for(Algorithm::EcdsaP256Sha256).unwrap();
        let mut forged = other.sign_manifest(m);
        forged.key_id = ec.key_id();
        assert!(matches!(
            both.verify(m, Some(&forged.to_json_bytes())),
            Err(SignError::BadSignature { .. })
        ));
        assert!(SigningKey::from_pkcs8_pem(&ec.to_pkcs8_pem()).is_ok());
        assert_eq!(
            Algorithm::parse("ecdsa-p256-sha256"),
            Some(Algorithm::EcdsaP256Sha256)
        );
        assert_eq!(Algorithm::parse("ECDSA-P256-SHA256"), None);
    }

    proptest! {
        #[test]
        fn p256_policy_never_panics_and_never_verifies_garbage(
            sig in proptest::collection::vec(any::<u8>(), 0..100),
            m in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let k = p256();
            let mut env = k.sign_manifest(&m);
            env.signature = B64.encode(&sig);
            let trust = TrustPolicy::new(vec![k.public_key()]);
            prop_assert!(trust.verify(&m, Some(&env.to_json_bytes())).is_err());
        }

        #[test]
        fn envelope_parser_never_panics(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = SignatureEnvelope::from_json_bytes(&b);
            let _ = TrustPolicy::default().verify(b"m", Some(&b));
        }
    }
}
