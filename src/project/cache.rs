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
//! - Entries live in one pack file: a format line, the length of the index, the index (each
//!   entry's key, offset and length) and the entries. A load reads the index and then only the
//!   entries of the files it loads, each at its offset (never the whole pack: after an upgrade
//!   or on another branch half of it is other keys). The pack is rewritten (to a temporary
//!   file renamed into place) only when the load analysed a file it did not hold, its old
//!   entries read from the file the load opened: a concurrent run sees a whole pack, old or
//!   new, never a partial one; when two runs write, the last one's pack stays and the other's
//!   new entries are parsed again next time. An entry that does not read back (truncated,
//!   foreign, another key inside) is a miss. The cache is never needed: when it cannot be read
//!   or written, loading parses as if it were empty, and says nothing.
//! - `TIDEMARK_ANALYSIS_CACHE=off` turns it off (the property test compares plans with and
//!   without it).
//!
//! The pack is `.tidemark/cache/analysis.pack` under the project root (hidden, so never read
//! as a model); it holds the current files' entries and at most as many others (other
//! branches, builds); deleting it is always safe.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::config::Config;
use super::model::{Kind, Loaded};

/// Bumped whenever what an entry holds changes meaning (also the pack's first line).
const FORMAT: &str = "tidemark.analysis-cache.v2";

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
    /// The pack as opened, and where each key's entry is in it (offsets in the file).
    pack: Option<std::fs::File>,
    index: HashMap<String, Range<u64>>,
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
            pack: None,
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
        let (pack, index) = match std::fs::File::open(&path) {
            Ok(file) => {
                let index = read_index(&file).unwrap_or_default();
                (Some(file), index)
            }
            Err(_) => (None, HashMap::new()),
        };
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
        let json = self.entry(key)?;
        let entry: Entry = serde_json::from_slice(&json).ok()?;
        (entry.key == key).then_some(entry.loaded)
    }

    /// The stored bytes of `key`'s entry, read from the pack at its offset.
    fn entry(&self, key: &str) -> Option<Vec<u8>> {
        let range = self.index.get(key)?;
        let mut buf = vec![0; usize::try_from(range.end - range.start).ok()?];
        read_at(self.pack.as_ref()?, &mut buf, range.start).ok()?;
        Some(buf)
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
        let Some(path) = self.path.as_ref() else {
            return;
        };
        let fresh = match self.fresh.lock() {
            Ok(mut f) => std::mem::take(&mut *f),
            Err(_) => return,
        };
        if fresh.is_empty() {
            return;
        }
        let used = self
            .used
            .lock()
            .map(|mut u| std::mem::take(&mut *u))
            .unwrap_or_default();
        // New entries first, then the used ones, then others (in the old pack's order, which
        // is newest first), each key once; old entries that no longer read are left out.
        let current = fresh.len() + used.len();
        let mut others: Vec<(&String, &Range<u64>)> = self.index.iter().collect();
        others.sort_by_key(|(_, r)| r.start);
        let old = used
            .iter()
            .chain(others.into_iter().map(|(k, _)| k))
            .filter_map(|k| Some((k.clone(), self.entry(k)?)));
        let mut written = std::collections::HashSet::new();
        let mut index = String::new();
        let mut data: Vec<u8> = Vec::new();
        for (key, json) in fresh.into_iter().chain(old) {
            if written.len() >= current * (1 + KEEP_OTHERS) {
                break;
            }
            if written.insert(key.clone()) {
                index.push_str(&format!("{key} {} {}\n", data.len(), json.len()));
                data.extend_from_slice(&json);
                data.push(b'\n');
            }
        }
        let mut out = Vec::with_capacity(FORMAT.len() + index.len() + data.len() + 24);
        out.extend_from_slice(format!("{FORMAT}\n{}\n", index.len()).as_bytes());
        out.extend_from_slice(index.as_bytes());
        out.extend_from_slice(&data);
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
        if std::fs::write(&tmp, &out).is_err() || std::fs::rename(&tmp, path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// Where each key's entry is in the pack `file` (offsets in the file): its index, after the
/// format line and the index's length. A pack of another format, or a damaged index (one that
/// does not parse, or points past the end of the file), is `None`.
fn read_index(file: &std::fs::File) -> Option<HashMap<String, Range<u64>>> {
    use std::io::{BufRead, Read};
    let file_len = file.metadata().ok()?.len();
    let mut r = std::io::BufReader::new(file);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    if line.strip_suffix('\n')? != FORMAT {
        return None;
    }
    line.clear();
    r.read_line(&mut line).ok()?;
    let len: usize = line.strip_suffix('\n')?.parse().ok()?;
    let data_start = u64::try_from(FORMAT.len() + 1 + line.len())
        .ok()?
        .checked_add(u64::try_from(len).ok()?)?;
    let mut text = String::new();
    r.take(len as u64).read_to_string(&mut text).ok()?;
    if text.len() != len {
        return None;
    }
    let mut out = HashMap::new();
    for record in text.lines() {
        let mut parts = record.split(' ');
        let (key, at, n) = (parts.next()?, parts.next()?, parts.next()?);
        let start = data_start.checked_add(at.parse().ok()?)?;
        let end = start.checked_add(n.parse().ok()?)?;
        if end > file_len {
            return None;
        }
        out.insert(key.to_string(), start..end);
    }
    Some(out)
}

/// Fill `buf` from `file` at `offset`.
#[cfg(unix)]
fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Fill `buf` from `file` at `offset`.
#[cfg(windows)]
fn read_at(file: &std::fs::File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut std::mem::take(&mut buf)[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
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
