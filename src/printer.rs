//! The one writer of stderr: diagnostics, notes, warnings, progress lines and events.
//!
//! Invariants:
//! - Everything tidemark prints that is not the command's data goes through a [`Printer`];
//!   no other module writes to stderr (`eprintln!` is not used outside tests).
//! - Colour only when stderr is a terminal and `NO_COLOR` is unset or empty; the uncoloured
//!   form is what tests snapshot.
//! - A failed write to stderr is ignored: there is nowhere left to report it.

use std::io::{IsTerminal, Write};

use crate::error::{Diagnostic, Error, render};

/// Writes diagnostics and progress to stderr, coloured or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Printer {
    color: bool,
}

impl Printer {
    /// A printer for this process's stderr: coloured only on a terminal without `NO_COLOR`.
    pub fn for_stderr() -> Printer {
        let color = std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Printer { color }
    }

    /// A printer that never colours (events, tests).
    pub fn plain() -> Printer {
        Printer { color: false }
    }

    /// Write `text` as it is.
    pub fn raw(&self, text: &str) {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    /// Write `text` and a newline.
    pub fn raw_line(&self, text: &str) {
        self.raw(&format!("{text}\n"));
    }

    /// Diagnostics (errors or warnings), each in the one rendering.
    pub fn diagnostics(&self, diags: &[Diagnostic]) {
        let text: String = diags.iter().map(|d| render(d, self.color)).collect();
        self.raw(&text);
    }

    /// A `warning:` line.
    pub fn warning(&self, text: &str) {
        self.diagnostics(&[Diagnostic::warning(text)]);
    }

    /// A `note:` line.
    pub fn note(&self, text: &str) {
        let label = self.paint("1;32", "note");
        self.raw(&format!("{label}: {text}\n"));
    }

    /// A progress line (indented, so it stands apart from diagnostics).
    pub fn line(&self, text: &str) {
        self.raw(&format!("  {text}\n"));
    }

    /// The error a command ended with, followed by a count when there are several.
    pub fn error(&self, e: &Error) {
        match e {
            Error::Bug(_) => self.raw(&format!("{e}\n")),
            _ => {
                let diags = e.diagnostics();
                self.diagnostics(diags);
                let n = diags.iter().filter(|d| d.is_error()).count();
                if n > 1 {
                    self.raw(&format!("{n} errors\n"));
                }
            }
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// A duration for people, rounded to the second: `42 s`, `3 min 05 s`, `2 h 10 min`.
pub fn human_seconds(s: f64) -> String {
    let s = if s.is_finite() {
        s.max(0.0).round() as u64
    } else {
        0
    };
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// `n` and the noun, in the singular for one: `1 batch`, `3 batches`.
pub fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_seconds(0.42), "0 s");
        assert_eq!(human_seconds(42.0), "42 s");
        assert_eq!(human_seconds(185.0), "3 min 05 s");
        assert_eq!(human_seconds(7800.0), "2 h 10 min");
        assert_eq!(human_seconds(f64::NAN), "0 s");
    }

    #[test]
    fn plurals_and_bytes() {
        assert_eq!(plural(1u64, "batch", "batches"), "1 batch");
        assert_eq!(plural(0u64, "batch", "batches"), "0 batches");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
