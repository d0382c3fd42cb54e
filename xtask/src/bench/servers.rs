//! The servers the remote rows run against: pf-testsupport's docker-registry
//! and moto launchers (the ones the tests use), on 127.0.0.1.

use std::path::Path;

use pf_testsupport::{OciAuth, OciRegistry, S3Server, ServerProcess};

/// A docker-registry (CNCF distribution), anonymous, filesystem storage.
pub struct Registry {
    reg: OciRegistry,
}

impl Registry {
    /// Starts it (panics with what to install if it cannot).
    pub fn start() -> Registry {
        Registry {
            reg: OciRegistry::start(OciAuth::Anonymous),
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> &str {
        &self.reg.host
    }

    /// Its log (one access-log line per request).
    pub fn log(&self) -> &Path {
        self.reg.process().log()
    }

    /// User + system CPU seconds the registry process has used so far.
    pub fn cpu_secs(&self) -> f64 {
        self.reg.process().cpu_secs()
    }
}

/// A moto S3 server with one bucket.
pub struct Moto {
    server: S3Server,
}

impl Moto {
    /// Starts it (panics with what to install if it cannot).
    pub fn start() -> Moto {
        Moto {
            server: S3Server::start(),
        }
    }

    /// `env K=V ...` prefix giving `pf` the endpoint and credentials.
    pub fn env(&self) -> String {
        let s = &self.server;
        format!(
            "env AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_REGION={} AWS_ENDPOINT_URL={}",
            s.access_key, s.secret_key, s.region, s.endpoint
        )
    }

    /// The bucket to push to.
    pub fn bucket(&self) -> &str {
        &self.server.bucket
    }

    /// Its log (one line per request).
    pub fn log(&self) -> &Path {
        self.server.process().log()
    }
}
