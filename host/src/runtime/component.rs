//! Loading components: find, read, check against the contract, compile (or load
//! compiled code from the cache), and prepare for instantiation.
//!
//! Each distinct component (by content) is compiled once per process; compiled code
//! is cached on disk under a key made of the content's SHA-256 and the engine's
//! compatibility hash (wasmtime version and compiler settings), so a restart or a
//! second process skips compilation.

use super::bindings::TransformPre;
use super::stage::StoreState;
use super::{LoadError, Runtime};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use wasmtime::component::Component;

/// The only import a transform may have.
pub const LOG_IMPORT: &str = "boulder:transform/log@0.1.0";
/// The export every transform must have.
pub const STAGE_EXPORT: &str = "boulder:transform/stage@0.1.0";
const STAGE_EXPORT_PREFIX: &str = "boulder:transform/stage@";

/// A component ready to instantiate.
pub struct LoadedComponent {
    /// The name the config used.
    pub name: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    pub(crate) pre: TransformPre<StoreState>,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// Components loaded in this process and still in use, by content hash: a version
/// swapped out (see `reload`) is freed with the last stage that ran it.
#[derive(Default)]
pub(crate) struct Loaded(Mutex<HashMap<String, Weak<LoadedComponent>>>);

impl Runtime {
    /// Where the component named `name` in the config lives: a path (relative to
    /// `base_dir`) when it ends in `.wasm` or contains a `/`, else a built-in name
    /// looked up in the components folders.
    pub fn resolve(&self, name: &str, base_dir: &Path) -> Result<PathBuf, LoadError> {
        if name.ends_with(".wasm") || name.contains('/') {
            return Ok(base_dir.join(name));
        }
        let dirs = &self.settings.components_dirs;
        dirs.iter()
            .map(|dir| dir.join(format!("{name}.wasm")))
            .find(|path| path.is_file())
            .ok_or_else(|| LoadError::NotFound {
                name: name.to_owned(),
                searched: dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Loads the component the config calls `name`, compiling it at most once per
    /// process, and checks it against the contract.
    pub fn load(&self, name: &str, base_dir: &Path) -> Result<Arc<LoadedComponent>, LoadError> {
        let path = self.resolve(name, base_dir)?;
        let bytes = std::fs::read(&path).map_err(|source| LoadError::Read {
            name: name.to_owned(),
            path: path.clone(),
            source,
        })?;
        let sha256 = content_hash(&bytes);
        let in_use = self
            .loaded
            .0
            .lock()
            .expect("poisoned")
            .get(&sha256)
            .and_then(Weak::upgrade);
        if let Some(loaded) = in_use {
            return Ok(loaded);
        }
        let invalid = |reason: String| LoadError::Invalid {
            name: name.to_owned(),
            path: path.clone(),
            reason,
        };
        let component = self
            .compile(&bytes, &sha256)
            .map_err(|e| invalid(format!("{e:#}")))?;
        self.check_contract(name, &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(TransformPre::new)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let loaded = Arc::new(LoadedComponent {
            name: name.to_owned(),
            path,
            sha256: sha256.clone(),
            pre,
        });
        let mut in_use = self.loaded.0.lock().expect("poisoned");
        in_use.retain(|_, c| c.strong_count() > 0);
        in_use.insert(sha256, Arc::downgrade(&loaded));
        Ok(loaded)
    }

    /// Refuses a component whose imports are not exactly the contract's, or that
    /// exports another version of the contract.
    fn check_contract(&self, name: &str, component: &Component) -> Result<(), LoadError> {
        let ty = component.component_type();
        let imports: Vec<&str> = ty.imports(&self.engine).map(|(n, _)| n).collect();
        if imports.iter().any(|i| *i != LOG_IMPORT) {
            return Err(LoadError::ForbiddenImports {
                name: name.to_owned(),
                imports: imports.join(", "),
                allowed: LOG_IMPORT.to_owned(),
            });
        }
        let exports: Vec<&str> = ty.exports(&self.engine).map(|(n, _)| n).collect();
        if exports.contains(&STAGE_EXPORT) {
            return Ok(());
        }
        match exports.iter().find(|e| e.starts_with(STAGE_EXPORT_PREFIX)) {
            Some(other) => Err(LoadError::WrongVersion {
                name: name.to_owned(),
                found: other.replace("/stage", ""),
                expected: STAGE_EXPORT.replace("/stage", ""),
            }),
            None => Err(LoadError::MissingExport {
                name: name.to_owned(),
                exports: if exports.is_empty() {
                    "nothing".to_owned()
                } else {
                    exports.join(", ")
                },
                expected: STAGE_EXPORT.to_owned(),
            }),
        }
    }

    /// Compiles `bytes`, or loads the compiled code from the cache.
    fn compile(&self, bytes: &[u8], sha256: &str) -> wasmtime::Result<Component> {
        let Some(dir) = &self.settings.cache_dir else {
            return Component::new(&self.engine, bytes);
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let file = dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish()));
        if file.is_file() {
            // SAFETY: deserializing runs the file's native code, so it must be code
            // that `Component::serialize` below wrote. The folder is this user's and
            // no one else can write to it (`check_cache_dir`, when the runtime was
            // built; created 0700 otherwise), so only this user's processes wrote
            // the file, by write-then-rename (never half a file); wasmtime checks
            // that it was compiled by a compatible engine and refuses it otherwise.
            match unsafe { Component::deserialize_file(&self.engine, &file) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "ignoring unusable cached component")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        if let Err(e) = write_cache(dir, &file, &component) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot cache compiled component");
        }
        Ok(component)
    }
}

fn write_cache(dir: &Path, file: &Path, component: &Component) -> anyhow::Result<()> {
    create_private_dir(dir)?;
    let serialized = component.serialize()?;
    // Write then rename, so a concurrent reader never sees half a file.
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serialized)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// Refuses a cache folder that is not this user's, or that its group or others
/// can write (a folder that does not exist yet is created private to the user).
pub(crate) fn check_cache_dir(dir: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::MetadataExt;
    let metadata = match std::fs::metadata(dir) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(LoadError::UnsafeCache {
                dir: dir.to_owned(),
                problem: format!("cannot be read ({e})"),
            })
        }
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let user = unsafe { libc::geteuid() };
    let problem = if !metadata.is_dir() {
        Some("is not a folder".to_owned())
    } else if metadata.uid() != user {
        Some(format!(
            "belongs to user {}, not to this user ({user})",
            metadata.uid()
        ))
    } else if metadata.mode() & 0o022 != 0 {
        Some(format!(
            "can be written by its group or by others (mode {:o})",
            metadata.mode() & 0o7777
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(LoadError::UnsafeCache {
            dir: dir.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The key a component is known by: SHA-256 of its bytes, hex.
pub fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn folder(name: &str, mode: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("boulder-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    fn problem(dir: &Path) -> Option<String> {
        match check_cache_dir(dir) {
            Err(LoadError::UnsafeCache { problem, .. }) => Some(problem),
            Err(other) => panic!("{other}"),
            Ok(()) => None,
        }
    }

    #[test]
    fn a_cache_folder_must_be_the_users_and_closed_to_others() {
        assert_eq!(problem(&folder("private", 0o700)), None);
        assert_eq!(problem(&folder("readable", 0o755)), None);
        assert_eq!(
            problem(&std::env::temp_dir().join("boulder-no-such-folder")),
            None
        );
        assert_eq!(
            problem(&folder("open", 0o777)).as_deref(),
            Some("can be written by its group or by others (mode 777)")
        );
        assert_eq!(
            problem(&folder("group", 0o770)).as_deref(),
            Some("can be written by its group or by others (mode 770)")
        );
        let file = std::env::temp_dir().join(format!("boulder-file-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(problem(&file).as_deref(), Some("is not a folder"));
        // Another user's folder: only root can make one to try.
        let theirs = folder("theirs", 0o700);
        let path = std::ffi::CString::new(theirs.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid, NUL-terminated path; chown does not keep it.
        if unsafe { libc::chown(path.as_ptr(), 65534, 65534) } == 0 {
            let problem = problem(&theirs).unwrap();
            assert!(problem.starts_with("belongs to user 65534"), "{problem}");
        }
    }
}
