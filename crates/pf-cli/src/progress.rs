//! Progress bars on a terminal (stderr), silent otherwise.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pf_registry::{NoProgress, Progress, ProgressEvent};

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

/// A bar when stderr is a terminal and output is for humans, else nothing.
pub fn for_terminal(enabled: bool) -> Arc<dyn Progress> {
    if !enabled || !std::io::stderr().is_terminal() {
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
