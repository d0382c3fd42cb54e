//! cosign's simple-signing payload and its signature (sigstore/cosign
//! `specs/SIGNATURE_SPEC.md`), so `cosign verify --key` accepts what an
//! ECDSA P-256 pf key signs.
//!
//! The payload names the signed OCI manifest by digest; its signature is
//! ECDSA P-256 over SHA-256(payload bytes), ASN.1 DER, base64. Storing it
//! in a registry (the `<repo>:sha256-<hex>.sig` manifest) is the `oci://`
//! backend's job.
//!
//! ```
//! use pf_sign::{cosign, Algorithm, SigningKey};
//! # fn main() -> Result<(), pf_sign::SignError> {
//! let key = SigningKey::generate_for(Algorithm::EcdsaP256Sha256)?;
//! let image = pf_digest::Digest::of(b"an OCI manifest");
//! let sig = cosign::sign(&key, "registry.example/agent", &image)?;
//! cosign::verify(&key.public_key(), &sig.payload, &sig.signature, &image)?;
//! // The payload names the image; another image does not verify.
//! let other = pf_digest::Digest::of(b"another manifest");
//! assert!(cosign::verify(&key.public_key(), &sig.payload, &sig.signature, &other).is_err());
//! # Ok(()) }
//! ```

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use pf_digest::Digest;
use serde::{Deserialize, Serialize};

use crate::{bounded, Algorithm, PublicKey, SignError, SigningKey};

/// Media type of the payload blob (the `.sig` manifest's layer).
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign signature payload.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";
/// Largest payload [`verify`] reads.
pub const MAX_PAYLOAD: usize = 64 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    critical: Critical,
    optional: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// The simple-signing payload for the OCI manifest `image` of the
/// repository `docker_reference` (`host[:port]/repo`, as cosign writes it;
/// cosign ignores it when verifying), byte for byte as cosign writes it.
pub fn payload(docker_reference: &str, image: &Digest) -> Vec<u8> {
    let p = Payload {
        critical: Critical {
            identity: Identity {
                docker_reference: docker_reference.into(),
            },
            image: Image {
                docker_manifest_digest: image.to_string(),
            },
            kind: SIGNATURE_TYPE.into(),
        },
        optional: None,
    };
    serde_json::to_vec(&p).unwrap_or_default()
}

/// A cosign signature: the payload bytes and the base64 signature over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The simple-signing payload (stored as a blob).
    pub payload: Vec<u8>,
    /// Base64 (standard) of the ASN.1 DER ECDSA signature over `payload`.
    pub signature: String,
}

/// Signs the payload for `image` with `key`, which must be an ECDSA P-256
/// key (the scheme every cosign verifies); an Ed25519 key is
/// [`SignError::UnsupportedAlgorithm`].
pub fn sign(
    key: &SigningKey,
    docker_reference: &str,
    image: &Digest,
) -> Result<Signature, SignError> {
    if key.algorithm() != Algorithm::EcdsaP256Sha256 {
        return Err(SignError::UnsupportedAlgorithm(format!(
            "{} for cosign signatures (use a key from `pf keygen --cosign`)",
            key.algorithm()
        )));
    }
    let payload = payload(docker_reference, image);
    let sig = key.sign_bytes(&payload)?;
    Ok(Signature {
        payload,
        signature: B64.encode(sig),
    })
}

/// Checks a cosign signature as `cosign verify --key` does: the base64
/// `signature` verifies over the exact `payload` bytes under `key`, and the
/// payload is a cosign simple-signing payload for `image`. Never panics on
/// hostile input; messages are bounded.
pub fn verify(
    key: &PublicKey,
    payload: &[u8],
    signature: &str,
    image: &Digest,
) -> Result<(), SignError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(SignError::Malformed(format!(
            "cosign payload of {} bytes is too large",
            payload.len()
        )));
    }
    let sig = B64
        .decode(signature.trim().as_bytes())
        .map_err(|_| SignError::Malformed("cosign signature is not base64".into()))?;
    if !key.algorithm().signature_len_ok(sig.len()) || !key.verify(payload, &sig) {
        return Err(SignError::BadSignature {
            key_id: key.key_id(),
        });
    }
    let p: Payload = serde_json::from_slice(payload).map_err(|e| {
        SignError::Malformed(format!("cosign payload: {}", bounded(&e.to_string())))
    })?;
    if p.critical.kind != SIGNATURE_TYPE {
        return Err(SignError::Malformed(format!(
            "cosign payload type {:?}",
            bounded(&p.critical.kind)
        )));
    }
    let named = Digest::parse(&p.critical.image.docker_manifest_digest).map_err(|_| {
        SignError::Malformed("cosign payload: invalid docker-manifest-digest".into())
    })?;
    if named != *image {
        return Err(SignError::DigestMismatch {
            envelope: named,
            actual: *image,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P256_KEY: &str = include_str!("../tests/fixtures/test-key-p256.pem");

    fn p256() -> SigningKey {
        SigningKey::from_pkcs8_pem(P256_KEY).unwrap()
    }

    #[test]
    fn payload_is_byte_for_byte_what_cosign_writes() {
        let d = Digest::of(b"x");
        let p = payload("127.0.0.1:5000/agents/demo", &d);
        assert_eq!(
            String::from_utf8(p).unwrap(),
            format!(
                "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"127.0.0.1:5000/agents/demo\"}},\
                 \"image\":{{\"docker-manifest-digest\":\"{d}\"}},\
                 \"type\":\"cosign container image signature\"}},\"optional\":null}}"
            )
        );
    }

    #[test]
    fn signs_verifies_and_refuses_others() {
        let k = p256();
        let d = Digest::of(b"manifest");
        let s = sign(&k, "r/x", &d).unwrap();
        verify(&k.public_key(), &s.payload, &s.signature, &d).unwrap();
        // another key
        let other = SigningKey::generate_for(Algorithm::EcdsaP256Sha256).unwrap();
        assert!(matches!(
            verify(&other.public_key(), &s.payload, &s.signature, &d),
            Err(SignError::BadSignature { .. })
        ));
        // a payload byte changed
        let mut bad = s.payload.clone();
        let n = bad.len() - 3;
        bad[n] ^= 1;
        assert!(verify(&k.public_key(), &bad, &s.signature, &d).is_err());
        // signed for another image
        assert!(matches!(
            verify(&k.public_key(), &s.payload, &s.signature, &Digest::of(b"y")),
            Err(SignError::DigestMismatch { .. })
        ));
        // an Ed25519 key does not make cosign signatures
        let ed = SigningKey::generate().unwrap();
        assert!(matches!(
            sign(&ed, "r/x", &d),
            Err(SignError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn a_signed_payload_of_another_type_is_refused() {
        let k = p256();
        let d = Digest::of(b"m");
        let p = String::from_utf8(payload("r", &d))
            .unwrap()
            .replace(SIGNATURE_TYPE, "atomic container signature");
        let sig = B64.encode(k.sign_bytes(p.as_bytes()).unwrap());
        assert!(matches!(
            verify(&k.public_key(), p.as_bytes(), &sig, &d),
            Err(SignError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn verify_never_panics(
            payload in proptest::collection::vec(any::<u8>(), 0..512),
            sig in ".{0,120}",
        ) {
            let k = p256();
            let d = Digest::of(b"m");
            let _ = verify(&k.public_key(), &payload, &sig, &d);
            // Signed hostile payloads reach the payload parser.
            let signed = B64.encode(k.sign_bytes(&payload).unwrap());
            prop_assert!(verify(&k.public_key(), &payload, &signed, &d).is_err());
        }
    }
}
