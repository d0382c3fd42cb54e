//! The test binary's `main`: one named test per (target, suite, case), one
//! lazily started server per target shared by its cases, one tokio runtime.
//!
//! ```text
//! oci_token::conformance::rollback_under_pin ... ok
//! s3::faults::transient_faults_are_retried ... FAILED
//! ```

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use libtest_mimic::{Arguments, Trial};
use tokio::runtime::Handle;

use crate::{conformance, crash, faults, large, lifecycle, Backend, Opener, Subject};

/// One of the shared suites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Suite {
    /// The conformance properties ([`conformance`]).
    Conformance,
    /// The fault scenarios behind a fault proxy ([`faults`]); targets made
    /// with [`Target::without_proxy`] get none.
    Faults,
    /// The `kill -9` crash loop ([`crash`]).
    Crash,
    /// The large-blob memory scenario ([`large`]). Its peak-RSS figure is
    /// process-wide, so a binary running it runs its cases one at a time and
    /// should run nothing else.
    LargeBlob,
    /// The lifecycle cases ([`lifecycle`]); a backend without the key
    /// methods answers them as not supported (the case says so and passes).
    Lifecycle,
}

impl Suite {
    const ALL: [Suite; 5] = [
        Suite::Conformance,
        Suite::Faults,
        Suite::Crash,
        Suite::LargeBlob,
        Suite::Lifecycle,
    ];

    fn label(self) -> &'static str {
        match self {
            Suite::Conformance => "conformance",
            Suite::Faults => "faults",
            Suite::Crash => "crash",
            Suite::LargeBlob => "large",
            Suite::Lifecycle => "lifecycle",
        }
    }

    /// (case, needs mutable references) of this suite.
    fn cases(self) -> &'static [(&'static str, bool)] {
        match self {
            Suite::Conformance => conformance::CASES,
            Suite::Faults => faults::CASES,
            Suite::Crash => crash::CASES,
            Suite::LargeBlob => large::CASES,
            Suite::Lifecycle => lifecycle::CASES,
        }
    }
}

type Start = Box<dyn Fn(&Handle) -> Box<dyn Backend> + Send + Sync>;

/// A backend-specific case run on a target's shared server: gets the
/// started backend and the runtime to block on.
pub type Extra = fn(&Subject, &Handle);

/// One server flavour of one backend.
pub struct Target {
    pub(crate) name: String,
    pub(crate) open: Opener,
    start: Start,
    mutable: bool,
    proxy: bool,
    extras: Vec<(String, Extra)>,
    gaps: Vec<(String, String)>,
    only: Option<String>,
}

impl Target {
    /// Target `name` (a test-name prefix such as `oci_token`): `start`
    /// starts its server (blocking; `Handle` is the shared runtime for
    /// in-process servers), `open` is the backend's transport constructor.
    pub fn new<B: Backend + 'static>(
        name: &str,
        open: Opener,
        start: impl Fn(&Handle) -> B + Send + Sync + 'static,
    ) -> Target {
        Target {
            name: name.to_string(),
            open,
            start: Box::new(move |h| Box::new(start(h))),
            mutable: true,
            proxy: true,
            extras: Vec::new(),
            gaps: Vec::new(),
            only: None,
        }
    }

    /// Pushes create new immutable references (IPFS): cases about
    /// replacing what a reference shows are not run.
    pub fn immutable_refs(mut self) -> Target {
        self.mutable = false;
        self
    }

    /// No fault proxy can stand between client and storage (a local
    /// directory, a TLS connection whose bytes a proxy cannot rewrite): the
    /// fault suite has no cases for this target.
    pub fn without_proxy(mut self) -> Target {
        self.proxy = false;
        self
    }

    /// Marks `case` (`<suite>::<case>`) as a known gap of this backend:
    /// listed as ignored, with `reason` shown next to its name, and run
    /// with `--ignored` / `--include-ignored`.
    pub fn known_gap(mut self, case: &str, reason: &str) -> Target {
        self.gaps.push((case.to_string(), reason.to_string()));
        self
    }

    /// Runs only `case` (`<suite>::<case>`) on this target: for a server
    /// whose state one case must not share with another (a target per
    /// case, each with its own server).
    pub fn only(mut self, case: &str) -> Target {
        self.only = Some(case.to_string());
        self
    }

    /// Adds a backend-specific case `name` run on the shared server (in a
    /// binary that runs the conformance suite).
    pub fn extra(mut self, name: &str, case: Extra) -> Target {
        self.extras.push((name.to_string(), case));
        self
    }
}

struct Lazy {
    target: Target,
    subject: OnceLock<Subject>,
}

impl Lazy {
    fn get(&self, rt: &Handle) -> &Subject {
        self.subject.get_or_init(|| {
            let t = &self.target;
            Subject::new(&t.name, (t.start)(rt), t.open, t.mutable)
        })
    }
}

/// Runs `suites` on every target as named tests (libtest's command line:
/// filters, `--list`, `--exact`, `--test-threads`), stops the servers and
/// returns the exit code for `main`. In a crash-loop child process (see
/// [`crash`]) it does the child's push and exits instead.
pub fn run(suites: &[Suite], targets: Vec<Target>) -> ExitCode {
    if crash::is_child() {
        crash::child_main(&targets);
    }
    let mut args = Arguments::from_args();
    if suites.contains(&Suite::LargeBlob) {
        args.test_threads = Some(1);
    }
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("tokio runtime"),
    );
    let lazies: Vec<Arc<Lazy>> = targets
        .into_iter()
        .map(|target| {
            Arc::new(Lazy {
                target,
                subject: OnceLock::new(),
            })
        })
        .collect();
    let mut trials = Vec::new();
    for lazy in &lazies {
        let t = &lazy.target;
        for case in t.gaps.iter().map(|g| &g.0).chain(&t.only) {
            let known = Suite::ALL.iter().any(|s| {
                s.cases()
                    .iter()
                    .any(|(c, _)| *case == format!("{}::{c}", s.label()))
            });
            assert!(known, "{}: {case} names no case", t.name);
        }
        for &suite in suites {
            if suite == Suite::Faults && !t.proxy {
                continue;
            }
            for &(case, needs_mutable) in suite.cases() {
                if needs_mutable && !t.mutable {
                    continue;
                }
                let (lazy, rt) = (lazy.clone(), rt.clone());
                let case_name = format!("{}::{case}", suite.label());
                if t.only.as_ref().is_some_and(|o| *o != case_name) {
                    continue;
                }
                let gap = t.gaps.iter().find(|(c, _)| *c == case_name);
                let name = format!("{}::{case_name}", t.name);
                let trial = Trial::test(name, move || {
                    let s = lazy.get(rt.handle());
                    match suite {
                        Suite::Conformance => rt.block_on(conformance::run(case, s)),
                        Suite::Faults => rt.block_on(faults::run(case, s)),
                        Suite::Crash => rt.block_on(crash::run(case, s)),
                        Suite::LargeBlob => rt.block_on(large::run(case, s)),
                        Suite::Lifecycle => rt.block_on(lifecycle::run(case, s)),
                    }
                    Ok(())
                });
                trials.push(match gap {
                    Some((_, reason)) => trial
                        .with_ignored_flag(true)
                        .with_kind(format!("known gap: {reason}")),
                    None => trial,
                });
            }
        }
        // Backend-specific cases go with the conformance suite.
        let extras = if suites.contains(&Suite::Conformance) {
            t.extras.len()
        } else {
            0
        };
        for (i, (name, _)) in t.extras.iter().enumerate().take(extras) {
            let (lazy, rt) = (lazy.clone(), rt.clone());
            trials.push(Trial::test(format!("{}::{name}", t.name), move || {
                let s = lazy.get(rt.handle());
                (lazy.target.extras[i].1)(s, rt.handle());
                Ok(())
            }));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // Stop the servers (child processes, in-process servers on `rt`) before
    // the runtime.
    drop(lazies);
    drop(rt);
    conclusion.exit_code()
}
