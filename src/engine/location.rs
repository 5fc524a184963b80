//! Where a table or a source lives: a local directory or a prefix on an object store, as one
//! URL, and the object-store clients delta-rs and DataFusion use for it.
//!
//! Invariants:
//! - A [`Location`] is an absolute directory URL ending in `/`: `file:///…/` for a local
//!   directory, `s3://bucket/prefix/` (or another scheme of [`crate::objects`]) otherwise.
//!   Children are joined segment by segment from validated ids, so a table's location never
//!   leaves its warehouse.
//! - delta-rs reaches object stores through factories registered here once per process
//!   ([`register`]) that build their clients with [`crate::objects::open`]: the same
//!   credentials, endpoints and `[storage]` options as the state, and put-if-absent commits.
//!   The options live only in those clients; no URL or message carries them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use deltalake::{DeltaResult, DeltaTableError};
use url::Url;

use crate::error::{Diagnostic, Error, Result};
use crate::objects::StorageOptions;

/// An absolute directory URL (see the module invariants).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location(Url);

impl Location {
    /// The local directory `path` (absolute; `.` and `..` are resolved as written, without
    /// following links).
    pub fn local(path: &Path) -> Result<Location> {
        let mut clean = PathBuf::new();
        for c in path.components() {
            match c {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    clean.pop();
                }
                other => clean.push(other),
            }
        }
        Url::from_directory_path(&clean)
            .map(Location)
            .map_err(|()| Error::Bug(format!("not an absolute path: {}", path.display())))
    }

    /// A location as written for a source or a warehouse: a URL with a scheme, or a local path.
    pub fn parse(text: &str) -> Result<Location> {
        if !text.contains("://") {
            return Location::local(Path::new(text));
        }
        let mut url = Url::parse(text).map_err(|e| {
            Error::from(Diagnostic::error(format!("invalid location `{text}`")).caused_by(e))
        })?;
        if url.scheme() == "file" {
            let path = url.to_file_path().map_err(|()| {
                Error::from(Diagnostic::error(format!(
                    "`{text}` is not a local file URL"
                )))
            })?;
            return Location::local(&path);
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(Location(url))
    }

    /// The child directory at `parts` (each one a validated path segment).
    pub fn join<'a>(&self, parts: impl IntoIterator<Item = &'a str>) -> Location {
        let mut url = self.0.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            for p in parts {
                segments.push(p);
            }
            segments.push("");
        }
        Location(url)
    }

    /// The URL.
    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The directory, when the location is local.
    pub fn local_path(&self) -> Option<PathBuf> {
        if self.0.scheme() == "file" {
            self.0.to_file_path().ok()
        } else {
            None
        }
    }

    /// The file `rel` (a key relative to this location, as the Delta log holds it decoded) as a
    /// Spark engine takes a path: on a local disk its absolute filesystem path, on an object
    /// store its URL with the key as it is. Spark (Hadoop paths) reads either literally, so a
    /// key holding `%` (an hourly partition `…T05%3A00` written by delta-rs) is found; Sail
    /// decodes `%XX` in URLs, so it finds such keys on local disks but not on object stores.
    pub fn engine_path(&self, rel: &str) -> String {
        match self.local_path() {
            Some(dir) => dir.join(rel).to_string_lossy().into_owned(),
            None => format!("{}{rel}", self.0),
        }
    }

    /// A local directory holding no Delta log: surely no table there, known without opening
    /// it (opening creates the directory). `false` on an object store, where only opening
    /// tells.
    pub fn lacks_local_table(&self) -> bool {
        self.local_path()
            .is_some_and(|dir| !dir.join("_delta_log").exists())
    }

    /// The store's root URL (`s3://bucket/`), for registering its client with DataFusion.
    pub fn store_url(&self) -> Url {
        let mut root = self.0.clone();
        root.set_path("/");
        root
    }
}

impl std::fmt::Display for Location {
    /// A local directory as a path (as people wrote it), anything else as its URL.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.local_path() {
            Some(p) => write!(f, "{}", p.display()),
            None => write!(f, "{}", self.0),
        }
    }
}

/// The object-store schemes delta-rs learns from [`register`] (local files and `memory://` it
/// knows itself).
const SCHEMES: [&str; 7] = ["s3", "s3a", "az", "abfs", "abfss", "azure", "gs"];

/// Builds delta-rs's object-store clients and log stores with [`crate::objects::open`]: one
/// client per store (`scheme://bucket`), kept for the process, so every table of a warehouse
/// shares its connection pool.
#[derive(Default)]
struct Factory {
    options: RwLock<StorageOptions>,
    stores: Mutex<HashMap<String, Arc<dyn object_store::ObjectStore>>>,
}

impl Factory {
    fn the() -> &'static Arc<Factory> {
        static FACTORY: std::sync::OnceLock<Arc<Factory>> = std::sync::OnceLock::new();
        FACTORY.get_or_init(|| {
            let factory = Arc::new(Factory::default());
            for scheme in SCHEMES {
                if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                    object_store_factories().insert(url.clone(), factory.clone());
                    logstore_factories().insert(url, factory.clone());
                }
            }
            factory
        })
    }

    /// The client of the store holding `url` (rooted at the store) and `url`'s path in it.
    fn open(
        &self,
        url: &Url,
    ) -> Result<(Arc<dyn object_store::ObjectStore>, object_store::path::Path)> {
        let poisoned = || Error::Bug("the object-store clients lock is poisoned".into());
        let key = format!("{}://{}", url.scheme(), url.authority());
        let prefix = object_store::path::Path::from(crate::objects::prefix(url));
        if let Some(store) = self.stores.lock().map_err(|_| poisoned())?.get(&key) {
            return Ok((store.clone(), prefix));
        }
        let options = self.options.read().map_err(|_| poisoned())?.clone();
        let (store, _) = crate::objects::open(url.as_str(), &options)?;
        self.stores
            .lock()
            .map_err(|_| poisoned())?
            .insert(key, store.clone());
        Ok((store, prefix))
    }
}

impl ObjectStoreFactory for Factory {
    fn parse_url_opts(
        &self,
        url: &Url,
        _config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, object_store::path::Path)> {
        self.open(url)
            .map_err(|e| DeltaTableError::Generic(e.to_string()))
    }
}

impl LogStoreFactory for Factory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        // The default log store commits with put-if-absent, which the warehouse's probe checked.
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Let delta-rs open tables on object stores with `options` (the project's `[storage]` table,
/// over the standard environment variables). A process serves one project, so the latest call
/// wins.
pub fn register(options: &StorageOptions) -> Result<()> {
    let factory = Factory::the();
    let poisoned = || Error::Bug("the storage options lock is poisoned".into());
    let mut kept = factory.options.write().map_err(|_| poisoned())?;
    if *kept != *options {
        *kept = options.clone();
        // Clients built with other options are not reused.
        factory.stores.lock().map_err(|_| poisoned())?.clear();
    }
    Ok(())
}

/// The client of the store holding `location`, rooted at the store's root (the file system's
/// root for a local location), and the location's path in it: for copies between tables and
/// for deleting a table, with the options [`register`] was given.
pub fn store_of(
    location: &Location,
) -> Result<(Arc<dyn object_store::ObjectStore>, object_store::path::Path)> {
    match location.local_path() {
        Some(_) => Ok((
            Arc::new(object_store::local::LocalFileSystem::new()),
            store_path(location)?,
        )),
        None => Factory::the().open(location.url()),
    }
}

/// The path of `location` inside its store's client (see [`store_of`]), without building one.
pub fn store_path(location: &Location) -> Result<object_store::path::Path> {
    match location.local_path() {
        Some(dir) => object_store::path::Path::from_absolute_path(&dir)
            .map_err(|e| Error::Bug(format!("not a usable local path {}: {e}", dir.display()))),
        None => Ok(object_store::path::Path::from(crate::objects::prefix(
            location.url(),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_directory_urls_and_children_stay_inside() {
        let s3 = Location::parse("s3://bucket/wh").unwrap();
        assert_eq!(s3.url().as_str(), "s3://bucket/wh/");
        let t = s3.join(["ledger", "daily__0a1b"]);
        assert_eq!(t.url().as_str(), "s3://bucket/wh/ledger/daily__0a1b/");
        assert_eq!(t.to_string(), "s3://bucket/wh/ledger/daily__0a1b/");
        assert_eq!(t.store_url().as_str(), "s3://bucket/");
        assert!(t.local_path().is_none());
        assert_eq!(
            Location::parse("/p/./x/../wh").unwrap().url().as_str(),
            "file:///p/wh/"
        );
        let local = Location::parse("/wh").unwrap();
        assert_eq!(local.url().as_str(), "file:///wh/");
        let t = local.join(["ledger", "x"]);
        assert_eq!(t.local_path().unwrap(), PathBuf::from("/wh/ledger/x/"));
        assert_eq!(t.to_string(), "/wh/ledger/x/");
        assert_eq!(
            Location::parse("file:///wh").unwrap().url().as_str(),
            "file:///wh/"
        );
        // A segment is one segment: separators are escaped, never followed.
        let odd = s3.join(["a/../b"]);
        assert_eq!(odd.url().as_str(), "s3://bucket/wh/a%2F..%2Fb/");
    }
}
