//! Errors and diagnostics: one message style for every command.
//!
//! Invariants:
//! - A problem caused by the user's input (a model file, the config, a flag) is a [`Diagnostic`]:
//!   it says what is wrong, where (`file:line:col` when a file is involved) and, where one helps,
//!   a `hint:`. Loading collects every diagnostic it can instead of stopping at the first.
//! - A problem that can only be a defect in tidemark is [`Error::Bug`] and says so.
//! - Rendering is plain text; colour is applied only by [`render`] when asked to, so the
//!   uncoloured form can be snapshot-tested.

use std::fmt;
use std::path::{Path, PathBuf};

/// How serious a diagnostic is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Severity {
    /// The command cannot go on.
    Error,
    /// Worth a look, but the command goes on.
    Warning,
}

/// A position in a file the user wrote. Lines and columns start at 1; columns count characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Location {
    /// The file, relative to the project root where possible.
    pub file: PathBuf,
    /// Line, from 1; 0 when only the file is known.
    pub line: u64,
    /// Column in characters, from 1; 0 when only the line is known.
    pub column: u64,
}

impl Location {
    /// A location that names a whole file.
    pub fn file(file: impl Into<PathBuf>) -> Self {
        Location {
            file: file.into(),
            line: 0,
            column: 0,
        }
    }

    /// A location at `line:column` of `file`.
    pub fn at(file: impl Into<PathBuf>, line: u64, column: u64) -> Self {
        Location {
            file: file.into(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Forward slashes on every platform, so messages and snapshots are stable.
        let file = self.file.to_string_lossy().replace('\\', "/");
        match (self.line, self.column) {
            (0, _) => write!(f, "{file}"),
            (l, 0) => write!(f, "{file}:{l}"),
            (l, c) => write!(f, "{file}:{l}:{c}"),
        }
    }
}

/// One user-facing problem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
    /// Where, when a file is involved.
    pub location: Option<Location>,
    /// Further facts (e.g. "first defined here: ...").
    pub notes: Box<[String]>,
    /// What to do about it.
    pub hint: Option<Box<str>>,
    /// The third-party error behind it (a parser's, a library's), shown on a `Caused by:`
    /// line and never in the headline.
    pub cause: Option<Box<str>>,
}

impl Diagnostic {
    /// A new error diagnostic.
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            location: None,
            notes: Box::default(),
            hint: None,
            cause: None,
        }
    }

    /// A new warning diagnostic.
    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message)
        }
    }

    /// The same finding as a warning.
    pub fn into_warning(self) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..self
        }
    }

    /// Attach a location.
    pub fn at(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }

    /// Attach a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into().into_boxed_str());
        self
    }

    /// Attach the third-party error behind this one (its first line of text).
    pub fn caused_by(mut self, cause: impl fmt::Display) -> Self {
        let text = cause.to_string();
        self.cause = Some(text.trim().into());
        self
    }

    /// Attach a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        let mut notes = std::mem::take(&mut self.notes).into_vec();
        notes.push(note.into());
        self.notes = notes.into_boxed_slice();
        self
    }

    /// The message and the first line of its cause, on one line (progress lines, events).
    pub fn summary(&self) -> String {
        match self.cause.as_deref().and_then(|c| c.lines().next()) {
            Some(c) => format!("{}: {c}", self.message),
            None => self.message.clone(),
        }
    }

    /// Is this an error (as opposed to a warning)?
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render(self, false))
    }
}

/// Render a diagnostic as the lines printed on stderr, optionally with ANSI colour.
///
/// ```text
/// error: unknown property `colour` in the MODEL header
///   --> models/sushi/orders.sql:4:3
///   = note: ...
/// Caused by: (the third-party error, when there is one)
/// hint: did you mean `column_descriptions`?
/// ```
pub fn render(d: &Diagnostic, color: bool) -> String {
    let paint = |code: &str, text: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let label = match d.severity {
        Severity::Error => paint("1;31", "error"),
        Severity::Warning => paint("1;33", "warning"),
    };
    let mut out = format!("{label}: {}\n", d.message);
    if let Some(loc) = &d.location {
        out.push_str(&format!("  {} {loc}\n", paint("34", "-->")));
    }
    for note in &d.notes {
        out.push_str(&format!("  = note: {note}\n"));
    }
    if let Some(cause) = &d.cause {
        for (i, line) in cause.lines().enumerate() {
            if i == 0 {
                out.push_str(&format!("Caused by: {line}\n"));
            } else {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    if let Some(hint) = &d.hint {
        out.push_str(&format!("{}: {hint}\n", paint("1;36", "hint")));
    }
    out
}

/// The error type of every fallible tidemark operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Problems with the user's input; all of them, in a stable order.
    #[error("{}", render_all(.0))]
    User(Vec<Diagnostic>),
    /// A failure that may pass when tried again (a commit conflict, a storage error): the
    /// scheduler retries it, and shows it like a user error when the retries run out.
    #[error("{}", render(.0, false))]
    Transient(Box<Diagnostic>),
    /// A defect in tidemark itself.
    #[error(
        "internal error: {0}\nhint: this is a bug in tidemark, not in your project; please report it with the command you ran"
    )]
    Bug(String),
}

fn render_all(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| render(d, false))
        .collect::<Vec<_>>()
        .join("")
}

impl Error {
    /// A failure worth trying again.
    pub fn transient(d: Diagnostic) -> Error {
        Error::Transient(Box::new(d))
    }

    /// Whether trying again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient(_))
    }

    /// The diagnostics to show (none for a bug).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Error::User(d) => d,
            Error::Transient(d) => std::slice::from_ref(d),
            Error::Bug(_) => &[],
        }
    }

    /// The first diagnostic's message and cause on one line, or the bug: for progress lines
    /// and events.
    pub fn summary(&self) -> String {
        match self {
            Error::Bug(b) => format!("internal error: {b}"),
            other => other
                .diagnostics()
                .first()
                .map(Diagnostic::summary)
                .unwrap_or_default(),
        }
    }

    /// The same error with `f` applied to each of its diagnostics (a bug is left as it is).
    pub fn map_diagnostics(self, mut f: impl FnMut(Diagnostic) -> Diagnostic) -> Error {
        match self {
            Error::User(d) => Error::User(d.into_iter().map(f).collect()),
            Error::Transient(d) => Error::Transient(Box::new(f(*d))),
            bug => bug,
        }
    }
}

impl From<Diagnostic> for Error {
    fn from(d: Diagnostic) -> Self {
        Error::User(vec![d])
    }
}

/// How a command ended, as the process's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Done (exit 0).
    Success,
    /// A check found something: pending changes, differences, gaps (exit 1).
    Failure,
    /// An error (exit 2).
    Error,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Error => 2,
        }
    }

    /// [`ExitStatus::Failure`] when a check found something, else success.
    pub fn found(something: bool) -> ExitStatus {
        if something {
            ExitStatus::Failure
        } else {
            ExitStatus::Success
        }
    }
}

/// 1-based line and character column of byte offset `offset` in `src` (clamped to the text).
pub fn line_col(src: &str, offset: usize) -> (u64, u64) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() as u64 + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() as u64 + 1;
    (line, column)
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An I/O failure on a user path, as a diagnostic that names the path.
pub fn io_error(action: &str, path: &Path, err: &std::io::Error) -> Diagnostic {
    let hint = match err.kind() {
        std::io::ErrorKind::NotFound => {
            Some("check the path; relative paths start at the project root")
        }
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            if action != "read" =>
        {
            Some(
                "whoever runs tidemark needs write access there; nothing was changed (`query`, `env` and `progress` only read)",
            )
        }
        std::io::ErrorKind::PermissionDenied => Some("check the file permissions"),
        _ => None,
    };
    let d = Diagnostic::error(format!(
        "cannot {action} `{}`: {}",
        path.display(),
        io_reason(err)
    ));
    match hint {
        Some(h) => d.hint(h),
        None => d,
    }
}

/// The OS reason of an I/O error without Rust's "(os error N)" suffix.
fn io_reason(err: &std::io::Error) -> String {
    let s = err.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s.to_lowercase(),
    }
}

/// The closest candidates to `name` among `known`, for "did you mean" hints (at most three).
pub fn closest<'a, I>(name: &str, known: I) -> Vec<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut scored: Vec<(f64, &str)> = known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(s, _)| *s >= 0.75)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(3)
        .map(|(_, k)| k.to_string())
        .collect()
}

/// "did you mean `a`, `b`?" or `None` when nothing is close.
pub fn did_you_mean<'a, I>(name: &str, known: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let c = closest(name, known);
    if c.is_empty() {
        None
    } else {
        let list: Vec<String> = c.iter().map(|s| format!("`{s}`")).collect();
        Some(format!("did you mean {}?", list.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_hint_and_notes() {
        let d = Diagnostic::error("unknown property `colour` in the MODEL header")
            .at(Location::at("models/a.sql", 4, 3))
            .note("properties are case-insensitive")
            .hint("did you mean `column_descriptions`?");
        assert_eq!(
            d.to_string(),
            "error: unknown property `colour` in the MODEL header\n  --> models/a.sql:4:3\n  = note: properties are case-insensitive\nhint: did you mean `column_descriptions`?\n"
        );
    }

    #[test]
    fn line_and_column() {
        let src = "ab\ncé\nx";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 3), (2, 1));
        assert_eq!(line_col(src, 6), (2, 3));
        assert_eq!(line_col(src, 999), (3, 2));
    }

    #[test]
    fn closest_names() {
        let known = ["sushi.orders", "sushi.items", "raw.orders"];
        assert_eq!(
            closest("sushi.order", known),
            vec!["sushi.orders", "sushi.items"]
        );
        assert!(closest("zzz", known).is_empty());
    }
}
