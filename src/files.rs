//! Files rampart writes into its data directory: private directories (0700), secret files
//! (0600) and public files (0644), each written to a temporary name and renamed, so a crash
//! never leaves a half-written key or certificate; and the start-up check that a secret
//! file (CA, RA, listener or escrow key) is its owner's alone. A leaf module.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Permission bits a secret file must not have: any access by group or others.
const NOT_OWNER_BITS: u32 = 0o077;

/// A secret file that cannot be used as it is.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// Group or others may access the file.
    #[error(
        "{} is accessible by group or others (mode {mode:04o}); a private key must be readable by its owner only: run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file's metadata cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Refuse a secret file (a private key) that group or others may read or write: the one
/// check every key rampart loads at start goes through. Symbolic links are followed (the
/// file they name is what gets read).
pub fn check_secret_permissions(path: &Path) -> Result<(), SecretFileError> {
    let metadata = fs::metadata(path).map_err(|source| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & NOT_OWNER_BITS != 0 {
        return Err(SecretFileError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// [`check_secret_permissions`] for a file that may not exist (yet): a missing file passes.
pub fn check_secret_permissions_if_present(path: &Path) -> Result<(), SecretFileError> {
    match check_secret_permissions(path) {
        Err(SecretFileError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        other => other,
    }
}

/// A secret the configuration points at — a file only its owner may read, or an environment
/// variable — never the secret itself. A trailing line ending is dropped. The error names
/// the source, never the value.
pub fn read_configured_secret(file: Option<&Path>, env: Option<&str>) -> Result<String, String> {
    match (file, env) {
        (Some(path), _) => {
            check_secret_permissions(path).map_err(|e| e.to_string())?;
            fs::read_to_string(path)
                .map(|text| text.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        (None, Some(var)) => std::env::var(var)
            .map(|text| text.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|_| format!("environment variable `{var}` is not set")),
        (None, None) => Err("neither a secret file nor an environment variable is set".into()),
    }
}

/// Create `dir` (and parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Write a secret (private key) with mode 0600.
pub fn write_secret(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_with_mode(path, contents, 0o600)
}

/// Write a public file (certificate, CA bundle) with mode 0644.
pub fn write_public(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_with_mode(path, contents, 0o644)
}

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// (allocated bytes, apparent bytes) of the files below `dir`.
pub fn disk_usage(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let (mut allocated, mut apparent) = (0, 0);
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        if metadata.is_dir() {
            let (a, b) = disk_usage(&entry.path())?;
            allocated += a;
            apparent += b;
        } else {
            allocated += metadata.blocks() * 512;
            apparent += metadata.len();
        }
    }
    Ok((allocated, apparent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_0600_and_dirs_0700() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_private_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let key = dir.join("k.pem");
        write_secret(&key, b"secret").unwrap();
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_secret(&key, b"again").unwrap();
        assert_eq!(fs::read(&key).unwrap(), b"again");
    }

    #[test]
    fn exposed_secrets_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        write_secret(&key, b"secret").unwrap();
        check_secret_permissions(&key).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o660] {
            fs::set_permissions(&key, fs::Permissions::from_mode(mode)).unwrap();
            let error = check_secret_permissions(&key).unwrap_err();
            let text = error.to_string();
            assert!(matches!(error, SecretFileError::Exposed { .. }), "{mode:o}");
            assert!(
                text.contains(&format!("chmod 600 {}", key.display())),
                "{text}"
            );
            assert!(text.contains(&format!("{mode:04o}")), "{text}");
        }
        fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).unwrap();
        check_secret_permissions(&key).unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            check_secret_permissions(&missing),
            Err(SecretFileError::Io { .. })
        ));
        check_secret_permissions_if_present(&missing).unwrap();
    }
}
