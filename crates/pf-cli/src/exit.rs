//! The `pf` exit codes for library errors: 0 ok, 1 usage or bad input,
//! 2 not found, 3 auth, 4 integrity or signature, 5 transport or backend.

use pf_registry::RegistryError;

/// The exit code for `e`.
pub fn code(e: &RegistryError) -> u8 {
    match e {
        RegistryError::NotFound { .. } => 2,
        RegistryError::Unauthorized { .. } => 3,
        RegistryError::Integrity { .. }
        | RegistryError::InvalidData { .. }
        | RegistryError::Signature(_) => 4,
        RegistryError::BadReference { .. }
        | RegistryError::BadOption { .. }
        | RegistryError::Unsupported { .. }
        | RegistryError::NotSupported { .. } => 1,
        // Transport, Conflict, Io, and whatever a newer library adds.
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_by_kind() {
        let d = pf_registry::Digest::of(b"a");
        assert_eq!(code(&RegistryError::not_found("x")), 2);
        let auth = RegistryError::Unauthorized {
            registry: "r".into(),
            detail: "d".into(),
        };
        assert_eq!(code(&auth), 3);
        let integrity = RegistryError::Integrity {
            what: "b".into(),
            expected: d,
            actual: d,
        };
        assert_eq!(code(&integrity), 4);
        assert_eq!(code(&RegistryError::invalid("m", "bad")), 4);
        let bad = RegistryError::BadReference {
            input: "x".into(),
            reason: "y".into(),
        };
        assert_eq!(code(&bad), 1);
        let mut config = pf_registry::Config::default();
        config.options.insert("oci.nope".into(), "1".into());
        let bad_option = config
            .check_options("oci", &["oci.max_layers"])
            .unwrap_err();
        assert_eq!(code(&bad_option), 1);
        assert_eq!(code(&RegistryError::transient("t", "503")), 5);
        assert_eq!(code(&RegistryError::Conflict("c".into())), 5);
        let io = RegistryError::io("x", std::io::Error::other("e"));
        assert_eq!(code(&io), 5);
    }
}
