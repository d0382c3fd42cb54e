//! Identities (X25519 secret keys), recipients (their public keys), key
//! ids, and the repository data key.
//!
//! Files are one line of text: `pf-crypt-identity-v1:<64 hex>` (written
//! 0600, never overwritten) and `pf-crypt-recipient-v1:<64 hex>`. A key id
//! is the first 8 bytes (16 hex) of SHA-256 over the public key: it names
//! a recipient in errors and in the key envelope without revealing more.

use std::io::Write;
use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};

use crate::{CryptError, Result};

const IDENTITY_TAG: &str = "pf-crypt-identity-v1:";
const RECIPIENT_TAG: &str = "pf-crypt-recipient-v1:";
/// Largest key file read (a key is one short line).
const MAX_KEY_FILE: u64 = 4096;

/// 32 bytes from the system's secure random source.
pub(crate) fn random32() -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CryptError::Random)?;
    Ok(b)
}

/// A short public name of a recipient key: 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub(crate) String);

impl KeyId {
    fn of(public: &[u8; 32]) -> KeyId {
        let d = pf_digest::Digest::of(public);
        KeyId(hex::encode(&d.as_bytes()[..8]))
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A public key images are encrypted to (`pf push --encrypt-to FILE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub(crate) public: x25519_dalek::PublicKey,
}

impl Recipient {
    /// The recipient's key id.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(self.public.as_bytes())
    }

    /// Parses the one-line text form.
    pub fn parse(text: &str) -> Result<Recipient> {
        let bytes = parse_tagged(text, RECIPIENT_TAG, "recipient")?;
        Ok(Recipient {
            public: x25519_dalek::PublicKey::from(bytes),
        })
    }

    /// The one-line text form (with a trailing newline).
    pub fn to_text(&self) -> String {
        format!("{RECIPIENT_TAG}{}\n", hex::encode(self.public.as_bytes()))
    }

    /// Reads a recipient file.
    pub fn load(path: &Path) -> Result<Recipient> {
        Recipient::parse(&read_small(path)?)
    }

    /// Writes the recipient file (mode 0644; refuses to overwrite).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_new(path, self.to_text().as_bytes(), 0o644)
    }
}

/// A secret key that opens images encrypted to its [`Recipient`]
/// (`pf pull --identity FILE`). Its Debug output shows the key id only.
#[derive(Clone)]
pub struct Identity {
    pub(crate) secret: x25519_dalek::StaticSecret,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A new random identity.
    pub fn generate() -> Result<Identity> {
        Ok(Identity {
            secret: x25519_dalek::StaticSecret::from(random32()?),
        })
    }

    /// The recipient (public key) of this identity.
    pub fn recipient(&self) -> Recipient {
        Recipient {
            public: x25519_dalek::PublicKey::from(&self.secret),
        }
    }

    /// The key id of this identity's recipient.
    pub fn key_id(&self) -> KeyId {
        self.recipient().key_id()
    }

    /// Reads an identity file.
    pub fn load(path: &Path) -> Result<Identity> {
        let bytes = parse_tagged(&read_small(path)?, IDENTITY_TAG, "identity")?;
        Ok(Identity {
            secret: x25519_dalek::StaticSecret::from(bytes),
        })
    }

    /// Writes the identity file (mode 0600; refuses to overwrite).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = format!("{IDENTITY_TAG}{}\n", hex::encode(self.secret.to_bytes()));
        write_new(path, text.as_bytes(), 0o600)
    }
}

/// The repository data key: 32 random bytes every chunk key of one
/// destination derives from. Its Debug output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey(pub(crate) [u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    /// A new random data key.
    pub fn generate() -> Result<DataKey> {
        Ok(DataKey(random32()?))
    }
}

fn parse_tagged(text: &str, tag: &str, what: &str) -> Result<[u8; 32]> {
    let bad = || CryptError::BadKeyFile(format!("not a pf-crypt {what} file"));
    let hex_part = text.trim().strip_prefix(tag).ok_or_else(bad)?;
    let v = hex::decode(hex_part).map_err(|_| bad())?;
    v.try_into().map_err(|_| bad())
}

fn read_small(path: &Path) -> Result<String> {
    use std::io::Read;
    let io = |e| CryptError::io(format!("reading {}", path.display()), e);
    let f = std::fs::File::open(path).map_err(io)?;
    let mut s = String::new();
    f.take(MAX_KEY_FILE).read_to_string(&mut s).map_err(io)?;
    Ok(s)
}

/// Creates `path` with `mode` and writes `bytes`; an existing file is
/// never overwritten.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| CryptError::io(format!("writing {}", path.display()), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_files_round_trip_with_modes_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::generate().unwrap();
        let (ip, rp) = (
            dir.path().join("k.identity"),
            dir.path().join("k.recipient"),
        );
        id.save(&ip).unwrap();
        id.recipient().save(&rp).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ip), 0o600);
        let back = Identity::load(&ip).unwrap();
        assert_eq!(back.key_id(), id.key_id());
        assert_eq!(Recipient::load(&rp).unwrap(), id.recipient());
        assert_eq!(id.key_id().to_string().len(), 16);
        assert!(
            id.save(&ip).is_err(),
            "an identity file is never overwritten"
        );
        // Each file is refused as the other kind.
        assert!(Identity::load(&rp).is_err());
        assert!(Recipient::load(&ip).is_err());
        // No secret in Debug output.
        let secret_hex = hex::encode(id.secret.to_bytes());
        assert!(!format!("{id:?}").contains(&secret_hex));
        assert!(!format!("{:?}", DataKey::generate().unwrap()).contains("0x"));
    }
}
