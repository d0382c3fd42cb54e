//! Progress on stderr: a bar with bytes, rate and ETA on a terminal, JSON
//! lines for programs driving `pf` (`--progress=json`), or nothing.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pf_registry::{NoProgress, Progress, ProgressEvent};
use serde_json::json;

/// How `pf` reports transfer progress (`--progress`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal and neither --quiet nor --json is given.
    #[default]
    Auto,
    /// A bar whenever stderr is a terminal, even with --json.
    Bar,
    /// No progress output.
    None,
    /// One JSON object per event on stderr (a line each), for embedders.
    Json,
}

/// An indicatif bar driven by engine events.
pub struct Bar {
    bar: ProgressBar,
}

impl Progress for Bar {
    fn on_event(&self, event: &ProgressEvent) {
        match event {
            ProgressEvent::Plan { op, bytes, blobs } => {
                self.bar.set_length(*bytes);
                self.bar.set_position(0);
                self.bar.set_message(format!("{op}: {blobs} blobs"));
            }
            ProgressEvent::PlanGrew { bytes, .. } => self.bar.inc_length(*bytes),
            ProgressEvent::BlobDone { raw_bytes, .. } => self.bar.inc(*raw_bytes),
            ProgressEvent::Retry {
                what,
                attempt,
                delay,
                error,
            } => self.bar.println(crate::display::clean_display(format_args!(
                "retrying {what} (attempt {attempt} failed: {error}; next in {delay:?})"
            ))),
            _ => {}
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Running totals behind [`JsonLines`].
#[derive(Debug, Default)]
struct Totals {
    op: &'static str,
    blobs_total: u64,
    bytes_total: u64,
    blobs_done: u64,
    bytes_done: u64,
    wire_bytes_done: u64,
}

/// Writes one JSON object per event, a line each, to a writer (stderr).
///
/// Every object has `kind`, `op`, `blobs_done`, `blobs_total`, `bytes_done`
/// and `bytes_total` (raw bytes, cumulative); `blob_done` and `manifest` add
/// `digest`, `blob_done` adds the blob's `bytes` and `wire_bytes`, `retry`
/// adds `what`, `attempt`, `delay_ms` and the redacted `error`.
pub struct JsonLines<W: Write + Send> {
    inner: Mutex<(Totals, W)>,
}

impl<W: Write + Send> JsonLines<W> {
    /// Progress as JSON lines on `out`.
    pub fn new(out: W) -> Self {
        JsonLines {
            inner: Mutex::new((Totals::default(), out)),
        }
    }
}

impl<W: Write + Send> Progress for JsonLines<W> {
    fn on_event(&self, event: &ProgressEvent) {
        let Ok(mut guard) = self.inner.lock() else {
            return;
        };
        let (t, out) = &mut *guard;
        let mut v = match event {
            ProgressEvent::Plan { op, blobs, bytes } => {
                *t = Totals {
                    op,
                    blobs_total: *blobs,
                    bytes_total: *bytes,
                    ..Totals::default()
                };
                json!({"kind": "plan"})
            }
            ProgressEvent::PlanGrew { blobs, bytes } => {
                t.blobs_total += blobs;
                t.bytes_total += bytes;
                json!({"kind": "plan_grew", "blobs": blobs, "bytes": bytes})
            }
            ProgressEvent::BlobDone {
                digest,
                raw_bytes,
                wire_bytes,
            } => {
                t.blobs_done += 1;
                t.bytes_done += raw_bytes;
                t.wire_bytes_done += wire_bytes;
                json!({"kind": "blob_done", "digest": digest.to_string(),
                       "bytes": raw_bytes, "wire_bytes": wire_bytes})
            }
            ProgressEvent::Retry {
                what,
                attempt,
                delay,
                error,
            } => json!({"kind": "retry", "what": what, "attempt": attempt,
                        "delay_ms": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "error": error}),
            ProgressEvent::Manifest { digest } => {
                json!({"kind": "manifest", "digest": digest.to_string()})
            }
            _ => json!({"kind": "other"}),
        };
        v["op"] = json!(t.op);
        v["blobs_done"] = json!(t.blobs_done);
        v["blobs_total"] = json!(t.blobs_total);
        v["bytes_done"] = json!(t.bytes_done);
        v["bytes_total"] = json!(t.bytes_total);
        v["wire_bytes_done"] = json!(t.wire_bytes_done);
        // A closed stderr must not fail the transfer.
        let _ = writeln!(out, "{v}").and_then(|()| out.flush());
    }
}

/// The progress sink for `mode`; `human` is false under --quiet or --json.
pub fn for_mode(mode: ProgressMode, human: bool) -> Arc<dyn Progress> {
    match mode {
        ProgressMode::Json => Arc::new(JsonLines::new(std::io::stderr())),
        ProgressMode::None => Arc::new(NoProgress),
        ProgressMode::Auto if !human => Arc::new(NoProgress),
        ProgressMode::Auto | ProgressMode::Bar => for_terminal(),
    }
}

/// A bar when stderr is a terminal, else nothing.
fn for_terminal() -> Arc<dyn Progress> {
    if !std::io::stderr().is_terminal() {
        return Arc::new(NoProgress);
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    Arc::new(Bar { bar })
}
