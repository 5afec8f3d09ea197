//! Progress bars (indicatif) that stay quiet when stderr is not a terminal or with `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress bars may draw: set once from `--quiet` by the CLI.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// No bars at all.
    pub quiet: bool,
}

impl Progress {
    /// Whether bars would draw: not `--quiet` and stderr is a terminal (for libraries with their own bars,
    /// such as the tokenizers trainer, which would print empty lines into a log).
    pub fn visible(&self) -> bool {
        use std::io::IsTerminal;
        !self.quiet && std::io::stderr().is_terminal()
    }

    /// A bar counting bytes up to `total` (0 = unknown length: a spinner with a byte count).
    pub fn bytes(&self, total: u64, message: &str) -> ProgressBar {
        let bar = if total > 0 { ProgressBar::new(total) } else { ProgressBar::new_spinner() };
        let template = if total > 0 {
            "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
        } else {
            "{msg} [{elapsed_precise}] {bytes} {bytes_per_sec}"
        };
        self.style(bar, template, message)
    }

    /// A bar counting items up to `total`.
    pub fn items(&self, total: u64, message: &str) -> ProgressBar {
        self.style(ProgressBar::new(total), "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} eta {eta}", message)
    }

    fn style(&self, bar: ProgressBar, template: &str, message: &str) -> ProgressBar {
        // indicatif already hides bars when stderr is not a terminal; --quiet hides them everywhere.
        if self.quiet {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message(message.to_string());
        bar
    }
}
