//! Key ids, public keys and signing keys (Ed25519 and ECDSA P-256), and
//! their PEM files.

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use pf_digest::Digest;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, UnparsedPublicKey, VerificationAlgorithm,
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, ED25519,
};
use serde::{Deserialize, Serialize};

use crate::{bounded, SignError};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of a P-256 SubjectPublicKeyInfo (RFC 5480: id-ecPublicKey,
/// prime256v1), followed by the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const MAX_KEY_FILE: u64 = 16 * 1024;

/// A signature algorithm pf signs and verifies with.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum Algorithm {
    /// Ed25519 (`ed25519`), what `pf keygen` makes.
    Ed25519,
    /// ECDSA over P-256 with SHA-256, ASN.1 DER signatures
    /// (`ecdsa-p256-sha256`), what `pf keygen --cosign` makes; cosign
    /// verifies it.
    EcdsaP256Sha256,
}

impl Algorithm {
    /// The name in a signature envelope's `algorithm` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
        }
    }

    /// Strictly parses an envelope's `algorithm` field.
    pub fn parse(s: &str) -> Option<Algorithm> {
        [Algorithm::Ed25519, Algorithm::EcdsaP256Sha256]
            .into_iter()
            .find(|a| a.as_str() == s)
    }

    /// The prefix of key ids of this algorithm's keys.
    fn key_id_prefix(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256",
        }
    }

    /// Signature sizes this algorithm produces (DER varies for ECDSA).
    pub(crate) fn signature_len_ok(self, n: usize) -> bool {
        match self {
            Algorithm::Ed25519 => n == 64,
            Algorithm::EcdsaP256Sha256 => (8..=72).contains(&n),
        }
    }

    fn verifier(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Algorithm::Ed25519 => &ED25519,
            Algorithm::EcdsaP256Sha256 => &ECDSA_P256_SHA256_ASN1,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifier of a public key: `ed25519:` or `ecdsa-p256:`, then the first
/// 16 bytes of SHA-256(raw public key) in lowercase hex (the raw key is the
/// 32-byte Ed25519 key or the 65-byte uncompressed P-256 point).
///
/// Always well formed: parsing (including serde `Deserialize`) rejects
/// anything else, so a key id taken from an envelope is safe to display.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// Strictly parses `ed25519:<32 lowercase hex>` or
    /// `ecdsa-p256:<32 lowercase hex>`.
    pub fn parse(s: &str) -> Result<KeyId, SignError> {
        let ok = s.split_once(':').is_some_and(|(p, h)| {
            [Algorithm::Ed25519, Algorithm::EcdsaP256Sha256]
                .iter()
                .any(|a| a.key_id_prefix() == p)
                && h.len() == 32
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(KeyId(s.to_owned()))
        } else {
            Err(SignError::Malformed(format!(
                "invalid key id \"{}\": expected \"ed25519:\" or \"ecdsa-p256:\" and 32 lowercase hex characters",
                bounded(&s.chars().take(48).collect::<String>())
            )))
        }
    }

    /// The string form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The algorithm of the key this id names.
    pub fn algorithm(&self) -> Algorithm {
        if self.0.starts_with("ecdsa-p256:") {
            Algorithm::EcdsaP256Sha256
        } else {
            Algorithm::Ed25519
        }
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
                f.write_str(
                    "a key id \"ed25519:<32 lowercase hex>\" or \"ecdsa-p256:<32 lowercase hex>\"",
                )
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

/// A public key: Ed25519, or ECDSA P-256 (what cosign's `--key` reads).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    alg: Algorithm,
    /// 32 bytes (Ed25519) or the 65-byte uncompressed point (P-256).
    raw: Vec<u8>,
}

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
    /// An Ed25519 key from its raw 32 bytes.
    pub fn from_raw(bytes: &[u8]) -> Result<Self, SignError> {
        if bytes.len() != 32 {
            return Err(SignError::Malformed(format!(
                "public key must be 32 bytes, got {}",
                bytes.len()
            )));
        }
        Ok(PublicKey {
            alg: Algorithm::Ed25519,
            raw: bytes.to_vec(),
        })
    }

    /// The raw key: 32 bytes (Ed25519) or the 65-byte uncompressed point (P-256).
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// SubjectPublicKeyInfo DER.
    fn spki_der(&self) -> Vec<u8> {
        let prefix: &[u8] = match self.alg {
            Algorithm::Ed25519 => &ED25519_SPKI_PREFIX,
            Algorithm::EcdsaP256Sha256 => &P256_SPKI_PREFIX,
        };
        [prefix, &self.raw].concat()
    }

    /// PEM `PUBLIC KEY` (SubjectPublicKeyInfo, as `openssl pkey -pubout`
    /// writes and `cosign verify --key` reads).
    pub fn to_pem(&self) -> String {
        pem_encode(&self.spki_der(), "PUBLIC KEY")
    }

    /// Parses a PEM `PUBLIC KEY` holding an Ed25519 or a P-256 SPKI (a
    /// P-256 point in uncompressed form, as openssl and cosign write it).
    pub fn from_pem(s: &str) -> Result<Self, SignError> {
        let der = pem_decode(s, "PUBLIC KEY")?;
        if der.len() == 44 && der[..12] == ED25519_SPKI_PREFIX {
            return Self::from_raw(&der[12..]);
        }
        if der.len() == 26 + 65 && der[..26] == P256_SPKI_PREFIX && der[26] == 0x04 {
            return Ok(PublicKey {
                alg: Algorithm::EcdsaP256Sha256,
                raw: der[26..].to_vec(),
            });
        }
        Err(SignError::Malformed(
            "not an Ed25519 or ECDSA P-256 (uncompressed) public key".into(),
        ))
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
        let d = Digest::of(&self.raw);
        KeyId(format!(
            "{}:{}",
            self.alg.key_id_prefix(),
            hex::encode(&d.as_bytes()[..16])
        ))
    }

    /// Whether `sig` is a valid signature of `msg` by this key (64 raw
    /// bytes for Ed25519, ASN.1 DER for ECDSA P-256 over SHA-256(`msg`)).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(self.alg.verifier(), &self.raw)
            .verify(msg, sig)
            .is_ok()
    }
}

enum Pair {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
}

/// A private key (Ed25519 or ECDSA P-256). `Debug` shows only the key id.
pub struct SigningKey {
    pair: Pair,
    pkcs8: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, private bytes redacted)", self.key_id())
    }
}

impl SigningKey {
    /// Generates a fresh Ed25519 key from the system RNG.
    pub fn generate() -> Result<Self, SignError> {
        Self::generate_for(Algorithm::Ed25519)
    }

    /// Generates a fresh key of `alg` from the system RNG
    /// ([`Algorithm::EcdsaP256Sha256`] for keys cosign verifies).
    pub fn generate_for(alg: Algorithm) -> Result<Self, SignError> {
        let rng = SystemRandom::new();
        let rng_failed = |_| SignError::KeyRejected("rng failure".into());
        let doc = match alg {
            Algorithm::Ed25519 => Ed25519KeyPair::generate_pkcs8(&rng).map_err(rng_failed)?,
            Algorithm::EcdsaP256Sha256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                    .map_err(rng_failed)?
            }
        };
        Self::from_pkcs8_der(doc.as_ref())
    }

    /// From PKCS#8 DER: an Ed25519 key (v1 or v2) or an ECDSA P-256 key
    /// (v1, with its public key, as ring and `openssl genpkey` write it).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SignError> {
        let pair = match Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            Ok(p) => Pair::Ed25519(p),
            Err(ed) => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &SystemRandom::new())
                    .map(Pair::P256)
                    .map_err(|ec| {
                        SignError::KeyRejected(bounded(&format!(
                            "neither an Ed25519 key ({ed}) nor an ECDSA P-256 key ({ec})"
                        )))
                    })?
            }
        };
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

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self.pair {
            Pair::Ed25519(_) => Algorithm::Ed25519,
            Pair::P256(_) => Algorithm::EcdsaP256Sha256,
        }
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        let raw = match &self.pair {
            Pair::Ed25519(p) => p.public_key().as_ref().to_vec(),
            Pair::P256(p) => p.public_key().as_ref().to_vec(),
        };
        PublicKey {
            alg: self.algorithm(),
            raw,
        }
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.public_key().key_id()
    }

    /// Signs `msg`: 64 bytes (Ed25519) or ASN.1 DER (ECDSA P-256, over
    /// SHA-256(`msg`), nonce from the system RNG hedged with the key and
    /// message). Fails only when the system RNG does.
    pub(crate) fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        match &self.pair {
            Pair::Ed25519(p) => Ok(p.sign(msg).as_ref().to_vec()),
            Pair::P256(p) => p
                .sign(&SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SignError::KeyRejected("rng failure while signing".into())),
        }
    }
}
