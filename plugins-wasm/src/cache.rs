//! The compile cache: compiled components kept on disk between runs, so a
//! restart, `runner validate` or `runner replay` does not compile a plugin
//! again (seconds to minutes for a large JavaScript or Python component).
//!
//! An entry is found by a SHA-256 over the component's bytes, the wasmtime
//! version and the engine's compilation settings (wasmtime's own
//! compatibility hash), so a new plugin build, a runner upgrade or a
//! different CPU never picks up a stale entry.
//!
//! Loading an entry runs native code it contains (`Component::deserialize`
//! is `unsafe` for that reason), so an entry is used only if it is
//! authenticated: each carries an HMAC-SHA256 of its name and bytes under a
//! random key that only the runner's user can read (`key`, mode 0600, in a
//! directory only that user can write). A corrupted or tampered entry fails
//! the check, is logged, removed and compiled again. A directory that other
//! users can write is not used at all.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"ERWASMC1";
const KEY_FILE: &str = "key";
const KEY_LEN: usize = 32;
const MAC_LEN: usize = 32;

/// How a component was obtained, for logs, tests and `validate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// No cache configured (or it could not be used): compiled.
    Disabled,
    /// Loaded from the cache without compiling.
    Hit,
    /// Not in the cache: compiled and stored.
    Miss,
    /// An entry was present but failed its check (the reason): compiled and
    /// stored again.
    Rebuilt(String),
}

impl CacheOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheOutcome::Disabled => "off",
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Rebuilt(_) => "rebuilt",
        }
    }
}

/// An opened cache directory with its key.
pub struct CompileCache {
    dir: PathBuf,
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Refuses a path another user could have written.
fn check_private(path: &Path, meta: &fs::Metadata, what: &str) -> Result<(), String> {
    if meta.uid() != euid() {
        return Err(format!(
            "{what} {} belongs to uid {}, not to the runner's uid {}",
            path.display(),
            meta.uid(),
            euid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{what} {} is writable by other users (mode {:o}); make it 0700",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

impl CompileCache {
    /// Opens (creating it if needed) the cache in `dir`. An error says why
    /// the cache cannot be used; the caller then compiles without it.
    pub fn open(dir: &Path) -> Result<CompileCache, String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let meta =
            fs::symlink_metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        check_private(dir, &meta, "cache directory")?;
        let key = Self::key(&dir.join(KEY_FILE))?;
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            key,
        })
    }

    fn key(path: &Path) -> Result<[u8; KEY_LEN], String> {
        let mut fresh = [0u8; KEY_LEN];
        rand::fill(&mut fresh);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut f) => {
                f.write_all(&fresh)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                return Ok(fresh);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
        }
        let meta = fs::symlink_metadata(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        check_private(path, &meta, "cache key")?;
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "cache key {} is readable by other users (mode {:o}); make it 0600",
                path.display(),
                meta.mode() & 0o777
            ));
        }
        let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "cache key {} has {} bytes, not {KEY_LEN} (delete it to start a new cache)",
                path.display(),
                b.len()
            )
        })
    }

    /// The directory entries live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file an entry for `component` (the `.wasm` bytes) would use.
    pub fn entry_path(&self, component: &[u8]) -> PathBuf {
        self.dir
            .join(format!("{}.cwasm", entry_name(crate::engine(), component)))
    }

    /// The compiled component, from the cache when a valid entry exists,
    /// otherwise compiled with `compile` and stored.
    pub fn load_or_compile(
        &self,
        engine: &wasmtime::Engine,
        component: &[u8],
        compile: impl FnOnce() -> Result<Component, String>,
    ) -> Result<(Component, CacheOutcome), String> {
        let name = entry_name(engine, component);
        let path = self.dir.join(format!("{name}.cwasm"));
        let outcome = match fs::read(&path) {
            Ok(stored) => match self.open_entry(&name, &stored) {
                Ok(payload) => {
                    // SAFETY: `payload` was authenticated above: it is the
                    // output of `Component::serialize` that this runner's
                    // user stored under this name with the private key, for
                    // this wasmtime version and engine settings (part of the
                    // name); deserialize checks the settings again.
                    match unsafe { Component::deserialize(engine, payload) } {
                        Ok(c) => return Ok((c, CacheOutcome::Hit)),
                        Err(e) => CacheOutcome::Rebuilt(format!("incompatible entry: {e}")),
                    }
                }
                Err(why) => CacheOutcome::Rebuilt(why),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CacheOutcome::Miss,
            Err(e) => CacheOutcome::Rebuilt(format!("unreadable entry: {e}")),
        };
        if let CacheOutcome::Rebuilt(why) = &outcome {
            tracing::warn!(entry = %path.display(), reason = %why, "WASM compile cache entry rejected; compiling again");
            let _ = fs::remove_file(&path);
        }
        let compiled = compile()?;
        if let Err(e) = self.store(&name, &path, &compiled) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot store the compiled plugin in the WASM compile cache");
        }
        Ok((compiled, outcome))
    }

    /// Checks an entry's header and MAC; returns the serialized component.
    fn open_entry<'a>(&self, name: &str, stored: &'a [u8]) -> Result<&'a [u8], String> {
        let header = MAGIC.len() + MAC_LEN;
        if stored.len() < header || &stored[..MAGIC.len()] != MAGIC {
            return Err("not a cache entry (bad header)".into());
        }
        let (mac, payload) = stored[MAGIC.len()..].split_at(MAC_LEN);
        let expected = hmac_sha256(&self.key, &[name.as_bytes(), payload]);
        if !constant_time_eq(mac, &expected) {
            return Err("authentication failed (corrupted or modified)".into());
        }
        Ok(payload)
    }

    fn store(&self, name: &str, path: &Path, component: &Component) -> Result<(), String> {
        let payload = component.serialize().map_err(|e| e.to_string())?;
        let mac = hmac_sha256(&self.key, &[name.as_bytes(), &payload]);
        // Written aside and renamed: a reader never sees half an entry (and
        // would reject one anyway).
        let tmp = self.dir.join(format!(
            ".{name}.{}.{:x}.tmp",
            std::process::id(),
            rand::random::<u64>()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&mac)?;
            f.write_all(&payload)?;
            fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            e.to_string()
        })?;
        // Best effort: the key's directory is private, entries need not be
        // readable by others either.
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
        Ok(())
    }
}

/// Feeds an `impl Hash` (wasmtime's compatibility hash) into SHA-256, so the
/// key is stable across processes (std's hashers are not).
struct ShaHasher<'a>(&'a mut Sha256);

impl std::hash::Hasher for ShaHasher<'_> {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

fn entry_name(engine: &wasmtime::Engine, component: &[u8]) -> String {
    use std::hash::Hash;
    let mut h = Sha256::new();
    h.update(b"event-runner wasm compile cache v1\0");
    h.update(crate::WASMTIME_VERSION.as_bytes());
    h.update([0]);
    engine
        .precompile_compatibility_hash()
        .hash(&mut ShaHasher(&mut h));
    h.update(Sha256::digest(component));
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 (RFC 2104) for a key of at most one block.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    assert!(key.len() <= BLOCK, "keys are 32 bytes");
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let mut inner = Sha256::new();
    inner.update(ipad);
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(opad);
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cache");
        CompileCache::open(&dir).expect("a fresh private directory opens");
        let key = fs::metadata(dir.join(KEY_FILE)).unwrap();
        assert_eq!(key.mode() & 0o777, 0o600);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let e = CompileCache::open(&dir).unwrap_err();
        assert!(e.contains("writable by other users"), "{e}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(dir.join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        let e = CompileCache::open(&dir).unwrap_err();
        assert!(e.contains("readable by other users"), "{e}");
    }
}
