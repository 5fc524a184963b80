//! The analysis cache: what loading each model file produced, stored by content, so that a
//! command does not parse a file it has parsed before.
//!
//! Parsing is most of a project load (sqlparser's tokenizer and parser take ~160 µs of CPU
//! per model); reading and hashing the files is a few percent of it. With the cache, a load
//! parses only the files that changed since the last command.
//!
//! Invariants:
//! - An entry's key is the blake3 hash of everything the analysis of a file reads: the cache
//!   format, the tidemark build (its version and the executable's size and modification time),
//!   the file's path and bytes, the project's dialect, the model defaults of `tidemark.toml`
//!   (variables, shared macros, defaults) and which custom gate files exist. The same key
//!   therefore always means the same result: nothing is invalidated in place, an edit, a config
//!   change or another tidemark build simply looks up another key.
//! - Only results that depend on nothing else are stored: a valid model that is not a seed
//!   (its CSV file is read), has no relative `start` (resolved against the clock), and whose
//!   canonical SQL parses back to the very query the file gave (so [`Model::query`](super::Model::query) of a
//!   cached model is that query); and a disabled file. A file with errors is parsed every time.
//! - Entries live in one pack file, read whole at the start of a load and rewritten (to a
//!   temporary file renamed into place) only when the load analysed a file it did not hold: a
//!   concurrent run sees a whole pack, old or new, never a partial one; when two runs write,
//!   the last one's pack stays and the other's new entries are parsed again next time. An
//!   entry that does not read back (truncated, foreign, another key inside) is a miss. The cache is never needed: when it cannot be read or written, loading
//!   parses as if it were empty, and says nothing.
//! - `TIDEMARK_ANALYSIS_CACHE=off` turns it off (the property test compares plans with and
//!   without it).
//!
//! The pack is `.tidemark/cache/analysis.pack` under the project root (hidden, so never read
//! as a model); it holds the current files' entries and at most as many others (other
//! branches, builds); deleting it is always safe.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::config::Config;
use super::model::{Kind, Loaded};

/// Bumped whenever what an entry holds changes meaning (also the pack's first line).
const FORMAT: &str = "tidemark.analysis-cache.v1";

/// The environment variable that turns the cache off (`off`, `0` or `false`).
pub const ENV: &str = "TIDEMARK_ANALYSIS_CACHE";

/// The pack of entries, relative to the project root.
pub const PACK: &str = ".tidemark/cache/analysis.pack";

/// Entries of other keys kept in the pack besides the current files' (other branches, other
/// builds), as a multiple of the current files: bounded, so the pack cannot grow forever.
const KEEP_OTHERS: usize = 1;

/// One stored analysis.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// The key the entry was stored under (checked on reading).
    key: String,
    loaded: Loaded,
}

/// [`Entry`] borrowed, for writing.
#[derive(Serialize)]
struct EntryRef<'a> {
    key: &'a str,
    loaded: &'a Loaded,
}

/// A project's analysis cache for one load: the pack as read, and what the load adds.
pub struct Cache {
    /// The pack file; `None`: turned off.
    path: Option<PathBuf>,
    /// Hash of everything but the file itself.
    context: [u8; 32],
    /// The pack's bytes and where each key's entry is in them.
    pack: Vec<u8>,
    index: HashMap<String, std::ops::Range<usize>>,
    /// Keys served from the pack in this load.
    used: Mutex<Vec<String>>,
    /// Entries analysed in this load: key, entry JSON.
    fresh: Mutex<Vec<(String, Vec<u8>)>>,
}

impl Cache {
    /// The cache of the project configured by `config`, for this build of tidemark (off when
    /// [`ENV`] says so).
    pub fn open(config: &Config) -> Cache {
        let off = std::env::var(ENV)
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "off" | "0" | "false"));
        if off {
            return Cache::off();
        }
        match build_id() {
            Some(build) => Cache::with_build(config.root.join(PACK), config, build),
            // Without an executable to identify this build, entries could not be told apart.
            None => Cache::off(),
        }
    }

    /// No cache: every file is parsed.
    pub fn off() -> Cache {
        Cache {
            path: None,
            context: [0; 32],
            pack: Vec::new(),
            index: HashMap::new(),
            used: Mutex::default(),
            fresh: Mutex::default(),
        }
    }

    /// The cache in the pack file `path` for the build identified by `build` (tests stand in
    /// other builds).
    pub fn with_build(path: PathBuf, config: &Config, build: &str) -> Cache {
        let mut h = Fields::new();
        h.field("format", FORMAT.as_bytes());
        h.field("build", build.as_bytes());
        h.field("dialect", format!("{:?}", config.dialect()).as_bytes());
        // The defaults as the models see them; `now` only matters to relative starts, which
        // are never stored.
        let mut defaults = config.model_defaults.clone();
        defaults.now = None;
        h.field("defaults", format!("{defaults:?}").as_bytes());
        for gate in custom_gates(&config.root) {
            h.field("gate", gate.as_bytes());
        }
        let pack = std::fs::read(&path).unwrap_or_default();
        let index = index(&pack);
        Cache {
            path: Some(path),
            context: *h.0.finalize().as_bytes(),
            pack,
            index,
            used: Mutex::default(),
            fresh: Mutex::default(),
        }
    }

    /// The key of the file `rel` with content `bytes`.
    pub fn key(&self, rel: &Path, bytes: &[u8]) -> String {
        let mut h = Fields::new();
        h.field("context", &self.context);
        h.field("path", rel.to_string_lossy().as_bytes());
        h.field("bytes", bytes);
        h.0.finalize().to_hex().to_string()
    }

    /// The stored analysis of `key`, if any (a broken entry is a miss).
    pub fn get(&self, key: &str) -> Option<Loaded> {
        let range = self.index.get(key)?;
        let entry: Entry = serde_json::from_slice(self.pack.get(range.clone())?).ok()?;
        (entry.key == key).then_some(entry.loaded)
    }

    /// Keep `loaded` for the pack when it depends on nothing but `key` (see the module).
    pub fn put(&self, key: &str, loaded: &Loaded) {
        if self.path.is_none() || !cacheable(loaded) {
            return;
        }
        if let Ok(json) = serde_json::to_vec(&EntryRef { key, loaded })
            && let Ok(mut fresh) = self.fresh.lock()
        {
            fresh.push((key.to_string(), json));
        }
    }

    /// Load one file through the cache: the stored analysis, else `analyse()`, kept.
    pub fn load(&self, rel: &Path, bytes: &[u8], analyse: impl FnOnce() -> Loaded) -> Loaded {
        if self.path.is_none() {
            return analyse();
        }
        let key = self.key(rel, bytes);
        if let Some(hit) = self.get(&key) {
            if let Ok(mut used) = self.used.lock() {
                used.push(key);
            }
            return hit;
        }
        let loaded = analyse();
        self.put(&key, &loaded);
        loaded
    }

    /// Write the pack when this load analysed something new: the new entries, the ones it
    /// used, and up to as many others as there are of those. Written to a temporary file and
    /// renamed into place; failures are ignored (the next load parses again).
    pub fn finish(self) {
        let Some(path) = self.path else { return };
        let fresh = self.fresh.into_inner().unwrap_or_default();
        if fresh.is_empty() {
            return;
        }
        let used = self.used.into_inner().unwrap_or_default();
        let mut out = Vec::with_capacity(
            self.pack.len() + fresh.iter().map(|(_, j)| j.len() + 80).sum::<usize>(),
        );
        out.extend_from_slice(FORMAT.as_bytes());
        out.push(b'\n');
        // New entries first, then the used ones, then others (in the old pack's order, which
        // is newest first), each key once.
        let mut chosen: Vec<(&str, &[u8])> = fresh
            .iter()
            .map(|(k, j)| (k.as_str(), j.as_slice()))
            .collect();
        for key in &used {
            if let Some(r) = self.index.get(key) {
                chosen.push((key, &self.pack[r.clone()]));
            }
        }
        let current = chosen.len();
        let mut others: Vec<(&String, &std::ops::Range<usize>)> = self.index.iter().collect();
        others.sort_by_key(|(_, r)| r.start);
        chosen.extend(
            others
                .into_iter()
                .map(|(k, r)| (k.as_str(), &self.pack[r.clone()])),
        );
        let mut written = std::collections::HashSet::new();
        for (key, json) in chosen {
            if written.len() >= current * (1 + KEEP_OTHERS) {
                break;
            }
            if written.insert(key) {
                out.extend_from_slice(format!("{key} {}\n", json.len()).as_bytes());
                out.extend_from_slice(json);
                out.push(b'\n');
            }
        }
        let Some(dir) = path.parent() else { return };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = dir.join(format!(
            ".analysis.{}.{}.tmp",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        if std::fs::write(&tmp, &out).is_err() || std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// Where each key's entry is in a pack: records `<key> <length>\n<entry>\n` after the format
/// line. A pack of another format, or the rest of a damaged one, is left out.
fn index(pack: &[u8]) -> HashMap<String, std::ops::Range<usize>> {
    let mut out = HashMap::new();
    let Some(rest) = pack
        .strip_prefix(FORMAT.as_bytes())
        .and_then(|r| r.strip_prefix(b"\n"))
    else {
        return out;
    };
    let mut at = pack.len() - rest.len();
    while at < pack.len() {
        let Some(nl) = pack[at..].iter().position(|b| *b == b'\n') else {
            break;
        };
        let Some((key, len)) = std::str::from_utf8(&pack[at..at + nl])
            .ok()
            .and_then(|line| line.split_once(' '))
            .and_then(|(k, l)| Some((k.to_string(), l.parse::<usize>().ok()?)))
        else {
            break;
        };
        let start = at + nl + 1;
        let end = start + len;
        if end >= pack.len() || pack[end] != b'\n' {
            break;
        }
        out.insert(key, start..end);
        at = end + 1;
    }
    out
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;

/// Does `loaded` depend on nothing but its key?
fn cacheable(loaded: &Loaded) -> bool {
    match loaded {
        Loaded::Disabled(_) => true,
        Loaded::Failed(_) => false,
        Loaded::Model(m, _) => {
            !matches!(m.kind, Kind::Seed { .. })
                && m.start_text.is_none()
                && m.reparses_identically()
        }
    }
}

/// The custom gate files of the project (`gates/*.sql`), sorted: a model naming a gate is
/// valid only while its file exists.
fn custom_gates(root: &Path) -> Vec<String> {
    let dir = root.join(super::model::gates_custom_path("x"));
    let Some(dir) = dir.parent() else {
        return Vec::new();
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// This build of tidemark: its version and its executable's size and modification time (a
/// rebuild changes them), so that another build never reads this one's entries.
fn build_id() -> Option<&'static str> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| {
        let exe = std::fs::metadata(std::env::current_exe().ok()?).ok()?;
        let modified = exe
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_nanos();
        Some(format!(
            "{}+{}:{modified}",
            env!("CARGO_PKG_VERSION"),
            exe.len()
        ))
    })
    .as_deref()
}

/// Tagged, length-prefixed fields into blake3.
struct Fields(blake3::Hasher);

impl Fields {
    fn new() -> Fields {
        Fields(blake3::Hasher::new())
    }

    fn field(&mut self, tag: &str, value: &[u8]) {
        self.0.update(&(tag.len() as u64).to_le_bytes());
        self.0.update(tag.as_bytes());
        self.0.update(&(value.len() as u64).to_le_bytes());
        self.0.update(value);
    }
}
