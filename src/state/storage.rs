//! Where state documents are kept: a local directory or an object store, behind one small,
//! synchronous interface.
//!
//! Invariants:
//! - [`Storage::put_if_absent`] is atomic: of two writers of the same path exactly one succeeds,
//!   and a reader sees either nothing or the whole document. Locally this is a hard link of a
//!   fully written temporary file (which fails if the target exists); on object stores it is a
//!   conditional put (`PutMode::Create`).
//! - [`Storage::put`] replaces a document atomically (temporary file + rename locally); it is
//!   only used for hints that readers verify.
//! - Paths are `/`-separated and relative to the storage root; they never contain `..`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStoreExt;

use crate::error::{Diagnostic, Error, Result, io_error};

/// A flat namespace of immutable-once-written documents.
pub trait Storage: Send + Sync {
    /// The document at `path`, or `None`.
    fn get(&self, path: &str) -> Result<Option<Vec<u8>>>;
    /// Write `path` unless it exists; `false` if it existed.
    fn put_if_absent(&self, path: &str, bytes: &[u8]) -> Result<bool>;
    /// Write or replace `path`.
    fn put(&self, path: &str, bytes: &[u8]) -> Result<()>;
    /// Names of the documents and directories directly under `dir`, sorted.
    fn list(&self, dir: &str) -> Result<Vec<String>>;
    /// Where this is, for messages.
    fn describe(&self) -> String;
    /// Fail unless writes to this storage's warehouse are safe (see [`super::probe`]): called
    /// before the first write of an apply or a janitor run, which include the tables' writes.
    fn check_writable(&self) -> Result<()> {
        Ok(())
    }
}

/// A local directory.
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Storage rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> LocalStorage {
        LocalStorage { root: root.into() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        rel.split('/')
            .fold(self.root.clone(), |p, part| p.join(part))
    }
}

impl Storage for LocalStorage {
    fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let p = self.path(path);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read", &p, &e).into()),
        }
    }

    fn put_if_absent(&self, path: &str, bytes: &[u8]) -> Result<bool> {
        let target = self.path(path);
        let tmp = write_temp(&target, bytes)?;
        let linked = std::fs::hard_link(&tmp, &target);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(target.parent());
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_error("write", &target, &e).into()),
        }
    }

    fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.path(path), bytes)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let p = self.path(dir);
        let entries = match std::fs::read_dir(&p) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("read", &p, &e).into()),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::from(io_error("read", &p, &e)))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// Write `bytes` to a fresh temporary file next to `target`, synced to disk.
fn write_temp(target: &Path, bytes: &[u8]) -> Result<PathBuf> {
    use std::io::Write;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::from(io_error("create", dir, &e)))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::from(io_error("write", &tmp, &e)))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::from(io_error("write", &tmp, &e)))?;
    Ok(tmp)
}

/// Replace `target` with `bytes` atomically: readers see the old file or the new one, never
/// a part. The temporary file has a name of its own (pid and time), so no file of the user's
/// is ever overwritten on the way.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_temp(target, bytes)?;
    std::fs::rename(&tmp, target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::from(io_error("write", target, &e))
    })?;
    sync_dir(target.parent());
    Ok(())
}

/// Make a new directory entry durable (best effort; not every platform can sync a directory).
fn sync_dir(dir: Option<&Path>) {
    if let Some(d) = dir
        && let Ok(f) = std::fs::File::open(d)
    {
        let _ = f.sync_all();
    }
}

/// Any `object_store` backend (S3, GCS, Azure, in-memory ...), driven from synchronous code
/// through a private runtime. Call it from a blocking context, not from inside async code.
pub struct ObjectStorage {
    store: Arc<dyn object_store::ObjectStore>,
    prefix: String,
    runtime: tokio::runtime::Runtime,
}

impl ObjectStorage {
    /// Storage under `prefix` of `store`.
    pub fn new(store: Arc<dyn object_store::ObjectStore>, prefix: &str) -> Result<ObjectStorage> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Bug(format!("cannot start the I/O runtime: {e}")))?;
        Ok(ObjectStorage {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            runtime,
        })
    }

    fn path(&self, rel: &str) -> object_store::path::Path {
        if self.prefix.is_empty() {
            object_store::path::Path::from(rel)
        } else {
            object_store::path::Path::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn fail(&self, what: &str, path: &str, e: object_store::Error) -> Error {
        Error::from(
            Diagnostic::error(format!("cannot {what} `{path}` in {}", self.describe()))
                .caused_by(e)
                .hint("check the warehouse URL, credentials and network"),
        )
    }
}

impl Storage for ObjectStorage {
    fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let p = self.path(path);
        self.runtime.block_on(async {
            match self.store.get(&p).await {
                Ok(r) => match r.bytes().await {
                    Ok(b) => Ok(Some(b.to_vec())),
                    Err(e) => Err(self.fail("read", path, e)),
                },
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.fail("read", path, e)),
            }
        })
    }

    fn put_if_absent(&self, path: &str, bytes: &[u8]) -> Result<bool> {
        let p = self.path(path);
        let opts = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        self.runtime.block_on(async {
            match self.store.put_opts(&p, bytes.to_vec().into(), opts).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                Err(e) => Err(self.fail("write", path, e)),
            }
        })
    }

    fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
        let p = self.path(path);
        self.runtime.block_on(async {
            self.store
                .put(&p, bytes.to_vec().into())
                .await
                .map(|_| ())
                .map_err(|e| self.fail("write", path, e))
        })
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let p = self.path(dir);
        let mut names = self.runtime.block_on(async {
            self.store
                .list_with_delimiter(Some(&p))
                .await
                .map(|l| {
                    // Documents and "directories" (common prefixes), as a local listing has.
                    l.objects
                        .into_iter()
                        .map(|o| o.location)
                        .chain(l.common_prefixes)
                        .filter_map(|p| p.filename().map(str::to_string))
                        .filter(|name| !name.starts_with('.'))
                        .collect::<Vec<_>>()
                })
                .map_err(|e| self.fail("list", dir, e))
        })?;
        names.sort();
        Ok(names)
    }

    fn describe(&self) -> String {
        format!("object store {} (prefix `{}`)", self.store, self.prefix)
    }
}
