//! Finding and loading the ONNX Runtime shared library (`ort` with `load-dynamic`).
//!
//! The library is loaded at run time, never linked or downloaded at build time. Search order:
//!
//! 1. `ORT_DYLIB_PATH`: a path to the library file. If it is set, it must exist — a typo is an error,
//!    not a silent fall-through to some other copy.
//! 2. r1-hybrid's cache, filled by `scripts/fetch-onnxruntime.sh` from PyPI's `onnxruntime` wheel:
//!    `$R1_CACHE_DIR/onnxruntime/<version>/libonnxruntime.so.<version>` (`R1_CACHE_DIR` defaults to
//!    `$HOME/.cache/r1-hybrid`); the highest version present wins.
//! 3. The system's dynamic loader path: `libonnxruntime.so.1`, then `libonnxruntime.so`.
//!
//! Environment variables are read once, by [`LibrarySearch::from_env`]; everything else takes the
//! search as a value so tests and embedders can point it anywhere.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Name of the environment variable that pins the library file (also honoured by `ort` itself).
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";
/// Name of the environment variable that overrides r1-hybrid's cache directory.
pub const R1_CACHE_DIR: &str = "R1_CACHE_DIR";
/// What an operator runs to fill the cache.
pub const FETCH_HINT: &str = "run `scripts/fetch-onnxruntime.sh` (it downloads PyPI's onnxruntime wheel once into the cache), \
     or set ORT_DYLIB_PATH=/path/to/libonnxruntime.so.1.x";

/// Sonames tried through the system loader, in order.
const SYSTEM_NAMES: [&str; 2] = ["libonnxruntime.so.1", "libonnxruntime.so"];

/// Where a library was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibrarySource {
    /// `ORT_DYLIB_PATH`.
    EnvVar,
    /// r1-hybrid's cache directory.
    Cache,
    /// The system's dynamic loader path.
    System,
}

impl fmt::Display for LibrarySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EnvVar => "ORT_DYLIB_PATH",
            Self::Cache => "cache",
            Self::System => "system",
        })
    }
}

/// A library candidate chosen by [`LibrarySearch::locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryLocation {
    /// The file path, or a bare soname for [`LibrarySource::System`].
    pub path: PathBuf,
    /// Which step of the search order produced it.
    pub source: LibrarySource,
}

/// The inputs of the search order, gathered once.
#[derive(Debug, Clone, Default)]
pub struct LibrarySearch {
    /// Value of `ORT_DYLIB_PATH`, if set and non-empty.
    pub dylib_path: Option<PathBuf>,
    /// r1-hybrid's cache directory (`$R1_CACHE_DIR`, else `$HOME/.cache/r1-hybrid`), if known.
    pub cache_dir: Option<PathBuf>,
    /// Whether to fall back to the system loader path.
    pub allow_system: bool,
}

/// Why ONNX Runtime could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// `ORT_DYLIB_PATH` names a file that does not exist.
    #[error("ORT_DYLIB_PATH is set to {0}, which does not exist; fix the path or unset it ({FETCH_HINT})")]
    EnvPathMissing(PathBuf),
    /// No step of the search order produced a library.
    #[error("ONNX Runtime shared library not found (looked in: {searched}); {FETCH_HINT}")]
    NotFound {
        /// Human-readable list of the places tried.
        searched: String,
    },
    /// The library was found but could not be loaded (wrong architecture, too old, missing symbols).
    #[error("could not load ONNX Runtime from {path} (found via {source_kind}): {reason}; {FETCH_HINT}")]
    Load {
        /// The candidate that failed.
        path: PathBuf,
        /// Which search step produced it.
        source_kind: LibrarySource,
        /// The loader's message.
        reason: String,
    },
    /// The library was loaded but the environment could not be created.
    #[error("ONNX Runtime environment: {0}")]
    Environment(String),
    /// A different library was already loaded into this process; ONNX Runtime cannot be loaded twice.
    #[error("ONNX Runtime was already loaded from {loaded}; cannot switch to {requested} in the same process")]
    AlreadyLoaded {
        /// The library this process already uses.
        loaded: PathBuf,
        /// The library asked for now.
        requested: PathBuf,
    },
}

impl LibrarySearch {
    /// Reads `ORT_DYLIB_PATH`, `R1_CACHE_DIR` and `HOME`; the system loader is allowed.
    pub fn from_env() -> Self {
        let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let cache_dir =
            non_empty(R1_CACHE_DIR).or_else(|| non_empty("HOME").map(|home| home.join(".cache").join("r1-hybrid")));
        Self {
            dylib_path: non_empty(ORT_DYLIB_PATH),
            cache_dir,
            allow_system: true,
        }
    }

    /// Applies the search order and returns the first candidate, without loading it.
    ///
    /// A system candidate is returned as a bare soname whenever no earlier step matched: whether the
    /// dynamic loader can resolve it is only known when [`load`] tries.
    pub fn locate(&self) -> Result<LibraryLocation, RuntimeError> {
        if let Some(path) = &self.dylib_path {
            if !path.is_file() {
                return Err(RuntimeError::EnvPathMissing(path.clone()));
            }
            return Ok(LibraryLocation {
                path: path.clone(),
                source: LibrarySource::EnvVar,
            });
        }
        if let Some(path) = self.cache_dir.as_deref().and_then(newest_cached) {
            return Ok(LibraryLocation {
                path,
                source: LibrarySource::Cache,
            });
        }
        if self.allow_system {
            return Ok(LibraryLocation {
                path: PathBuf::from(SYSTEM_NAMES[0]),
                source: LibrarySource::System,
            });
        }
        Err(RuntimeError::NotFound {
            searched: self.describe(),
        })
    }

    fn describe(&self) -> String {
        let mut places = vec![format!("{ORT_DYLIB_PATH} (unset)")];
        match &self.cache_dir {
            Some(dir) => places.push(format!("cache {}", dir.join("onnxruntime").display())),
            None => places.push(format!("cache (neither {R1_CACHE_DIR} nor HOME is set)")),
        }
        if self.allow_system {
            places.push(format!("system loader path ({})", SYSTEM_NAMES.join(", ")));
        }
        places.join("; ")
    }
}

/// The newest `onnxruntime/<version>/libonnxruntime.so.<version>` under `cache_dir`.
fn newest_cached(cache_dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(cache_dir.join("onnxruntime")).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str().map(str::to_owned)?;
            let key = parse_version(&version)?;
            let lib = entry.path().join(format!("libonnxruntime.so.{version}"));
            lib.is_file().then_some((key, lib))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, lib)| lib)
}

/// `"1.32.0"` → `[1, 32, 0]`; anything else (temp dirs, stray files) → `None`.
fn parse_version(s: &str) -> Option<Vec<u32>> {
    s.split('.').map(|part| part.parse().ok()).collect()
}

/// ONNX Runtime, loaded: where the library came from and the process-wide environment that sessions
/// are built from (`ort::session::Session::builder(&runtime.environment)`).
pub struct Runtime {
    /// The library file (or soname) that was loaded.
    pub location: LibraryLocation,
    /// The `ort` environment; cheap to clone (an `Arc`).
    pub environment: ort::environment::Environment,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// ONNX Runtime is process-global: once loaded it stays, so the first successful [`load`] fixes it.
static LOADED: OnceLock<Runtime> = OnceLock::new();

/// Loads ONNX Runtime following `search` (once per process) and returns the runtime.
///
/// Calling it again is cheap and returns the same runtime; asking for a *different* explicit file
/// after one was loaded is an error rather than a silent mismatch.
pub fn load(search: &LibrarySearch) -> Result<&'static Runtime, RuntimeError> {
    if let Some(loaded) = LOADED.get() {
        if let Some(requested) = &search.dylib_path
            && requested != &loaded.location.path
        {
            return Err(RuntimeError::AlreadyLoaded {
                loaded: loaded.location.path.clone(),
                requested: requested.clone(),
            });
        }
        return Ok(loaded);
    }
    let location = search.locate()?;
    let candidates: Vec<PathBuf> = match location.source {
        LibrarySource::System => SYSTEM_NAMES.iter().map(PathBuf::from).collect(),
        _ => vec![location.path.clone()],
    };
    let mut last_error = None;
    for path in candidates {
        match ort::init_from(&path) {
            Ok(builder) => {
                let environment = builder
                    .with_name("r1-hybrid")
                    .build()
                    .map_err(|e| RuntimeError::Environment(e.to_string()))?;
                let found = LibraryLocation {
                    path,
                    source: location.source,
                };
                tracing::info!(path = %found.path.display(), source = %found.source, "loaded ONNX Runtime");
                return Ok(LOADED.get_or_init(|| Runtime {
                    location: found,
                    environment,
                }));
            }
            Err(e) => last_error = Some((path, e.to_string())),
        }
    }
    match (location.source, last_error) {
        (LibrarySource::System, _) => Err(RuntimeError::NotFound {
            searched: search.describe(),
        }),
        (source_kind, Some((path, reason))) => Err(RuntimeError::Load {
            path,
            source_kind,
            reason,
        }),
        (_, None) => Err(RuntimeError::NotFound {
            searched: search.describe(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("r1-runtime-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn env_var_wins_and_must_exist() {
        let dir = temp_dir("env");
        let lib = dir.join("libonnxruntime.so.1.99.0");
        std::fs::write(&lib, b"").unwrap();
        let search = LibrarySearch {
            dylib_path: Some(lib.clone()),
            cache_dir: Some(dir.clone()),
            allow_system: true,
        };
        assert_eq!(
            search.locate().unwrap(),
            LibraryLocation {
                path: lib,
                source: LibrarySource::EnvVar
            }
        );

        let missing = LibrarySearch {
            dylib_path: Some(dir.join("nope.so")),
            ..search
        };
        let err = missing.locate().unwrap_err();
        assert!(matches!(err, RuntimeError::EnvPathMissing(_)), "{err}");
        assert!(err.to_string().contains("scripts/fetch-onnxruntime.sh"), "{err}");
    }

    #[test]
    fn cache_picks_highest_complete_version() {
        let dir = temp_dir("cache");
        for (version, complete) in [
            ("1.9.0", true),
            ("1.32.0", true),
            ("1.40.0", false),
            ("1.32.0.tmp.1", true),
        ] {
            let sub = dir.join("onnxruntime").join(version);
            std::fs::create_dir_all(&sub).unwrap();
            if complete {
                std::fs::write(sub.join(format!("libonnxruntime.so.{version}")), b"").unwrap();
            }
        }
        let search = LibrarySearch {
            dylib_path: None,
            cache_dir: Some(dir.clone()),
            allow_system: false,
        };
        let found = search.locate().unwrap();
        assert_eq!(found.source, LibrarySource::Cache);
        assert_eq!(found.path, dir.join("onnxruntime/1.32.0/libonnxruntime.so.1.32.0"));
    }

    #[test]
    fn nothing_found_names_the_fix() {
        let dir = temp_dir("empty");
        let search = LibrarySearch {
            dylib_path: None,
            cache_dir: Some(dir),
            allow_system: false,
        };
        let err = search.locate().unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
        assert!(err.contains("scripts/fetch-onnxruntime.sh"), "{err}");
        assert!(err.contains("ORT_DYLIB_PATH"), "{err}");

        let system = LibrarySearch {
            allow_system: true,
            ..LibrarySearch::default()
        };
        assert_eq!(system.locate().unwrap().source, LibrarySource::System);
    }
}
