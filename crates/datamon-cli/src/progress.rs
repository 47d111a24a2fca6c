//! Progress bars on stderr, hidden when stderr is not a terminal or output is quiet or JSON.

use std::io::IsTerminal;
use std::sync::RwLock;
use std::time::Duration;

use datamon::{Progress, Unit};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Bar {
    enabled: bool,
    bar: RwLock<Option<ProgressBar>>,
}

impl Bar {
    pub fn new(enabled: bool) -> Bar {
        Bar {
            enabled: enabled && std::io::stderr().is_terminal(),
            bar: RwLock::new(None),
        }
    }
}

impl Progress for Bar {
    fn begin(&self, what: &str, total: u64, unit: Unit) {
        if !self.enabled {
            return;
        }
        let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(10));
        let template = match unit {
            Unit::Bytes => {
                "{msg:>9} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
            }
            Unit::Items => "{msg:>9} [{bar:30}] {pos}/{len} eta {eta}",
        };
        pb.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        pb.set_message(what.to_owned());
        pb.enable_steady_tick(Duration::from_millis(200));
        *self.bar.write().expect("not poisoned") = Some(pb);
    }

    fn advance(&self, n: u64) {
        if let Some(pb) = self.bar.read().expect("not poisoned").as_ref() {
            pb.inc(n);
        }
    }

    fn end(&self) {
        if let Some(pb) = self.bar.write().expect("not poisoned").take() {
            pb.finish_and_clear();
        }
    }
}
