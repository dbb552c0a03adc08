//! Delivery targets: writing an issued certificate where the service that uses it reads it,
//! then telling that service to reload, and undoing the whole change when it will not.
//!
//! A filesystem target (`[delivery.targets.<name>]`, [`DeliveryTargetConfig`]) gets the leaf
//! certificate, the issuer chain, leaf + chain, and — when rampart holds the private key —
//! the key (PKCS#8 PEM, 0600) and optionally a PKCS#12 bundle (PBES2 with AES-256-CBC and
//! an HMAC-SHA256 MAC, as OpenSSL 3 writes by default; built by `p12-keystore`), encrypted
//! with a password taken from an environment variable. Before anything is written the
//! certificates must parse and the key must be the certificate's.
//!
//! [`deliver`] is a small transaction over one directory:
//! 1. every file is written to `.<file>.rampart-new` in the target directory (created
//!    exclusively, with its final mode from the start, then fsynced);
//! 2. for each file, the current one (if any) is hard-linked to `.<file>.rampart-old` (or
//!    renamed there where hard links are not possible) and the new one renamed over it, so
//!    the file name never disappears; then the directory is fsynced;
//! 3. the reload command runs (argv, no shell, stdin closed, with a timeout; the last 4 KiB of
//!    its stderr are kept; `RAMPART_DELIVERY_TARGET` and `RAMPART_DELIVERY_DIRECTORY` are
//!    set for it and the PKCS#12 password variable is removed from its environment);
//! 4. on success the backups are removed. When the command fails, times out or cannot start,
//!    or any file operation fails midway, every previous file is renamed back and files that
//!    did not exist before are removed, and the error says whether that worked.
//!
//! The directory must already exist (it is never created: its owner and mode are the
//! operator's to choose, for the service that reads it). Deliveries into the same directory
//! are serialised within the process. Keys and passwords never appear in logs or errors;
//! the buffers holding them are zeroised when dropped.
//!
//! Imports only `config` and `pkix`.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use der::Decode;
use p12_keystore::{KeyStore, KeyStoreEntry, PrivateKeyChain};
use rcgen::PublicKeyData;
use tokio::io::AsyncReadExt;
use zeroize::Zeroizing;

use crate::config::{DeliveryKind, DeliveryTargetConfig};
use crate::pkix::pem;

/// Mode of the files holding a private key (the key itself and the PKCS#12 bundle).
pub const SECRET_FILE_MODE: u32 = 0o600;

/// How much of the reload command's stderr is kept (its end).
pub const STDERR_TAIL_BYTES: usize = 4096;

/// Suffix of the temporary name a new file is written under.
const NEW_SUFFIX: &str = ".rampart-new";
/// Suffix of the backup name the previous file is kept under until the reload succeeded.
const OLD_SUFFIX: &str = ".rampart-old";
/// How long the stderr reader may go on after the command ended (a grandchild may hold
/// the pipe open).
const STDERR_GRACE: Duration = Duration::from_millis(250);

/// What is delivered: a certificate, its issuer chain and, when rampart holds it, the key.
#[derive(Clone)]
pub struct DeliveryMaterial {
    /// The leaf certificate (DER).
    pub certificate_der: Vec<u8>,
    /// Issuer certificates (DER), the leaf's issuer first; the root may be left out.
    pub chain_der: Vec<Vec<u8>>,
    /// The leaf's private key (PKCS#8 DER), when rampart generated and holds it.
    pub private_key_pkcs8: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for DeliveryMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryMaterial")
            .field(
                "certificate_der",
                &format_args!("{} bytes", self.certificate_der.len()),
            )
            .field(
                "chain_der",
                &format_args!("{} certificates", self.chain_der.len()),
            )
            .field(
                "private_key_pkcs8",
                &self.private_key_pkcs8.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// What a successful delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The target's name.
    pub target: String,
    /// Files now in place, in the order they were written.
    pub written: Vec<PathBuf>,
    /// Configured files that were not written because rampart does not hold the private key
    /// (the key file and the PKCS#12 bundle); whatever was there is left untouched.
    pub skipped: Vec<PathBuf>,
    /// Whether a reload command ran (and succeeded).
    pub reloaded: bool,
}

/// Why the reload command counts as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadFailure {
    /// It exited with a non-zero status.
    Exit {
        /// The exit status.
        code: i32,
    },
    /// It was ended by a signal.
    Signal {
        /// The signal number.
        signal: i32,
    },
    /// It ran longer than `reload_timeout_seconds` and was killed.
    Timeout {
        /// The timeout, in seconds.
        seconds: u64,
    },
    /// It could not be started, or waiting for it failed.
    Spawn {
        /// The program (first element of the command).
        program: String,
        /// The operating system's reason.
        reason: String,
    },
}

impl fmt::Display for ReloadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exit { code } => write!(f, "exited with status {code}"),
            Self::Signal { signal } => write!(f, "was ended by signal {signal}"),
            Self::Timeout { seconds } => write!(f, "did not finish within {seconds} s"),
            Self::Spawn { program, reason } => write!(f, "`{program}` could not run: {reason}"),
        }
    }
}

/// A delivery that did not happen, or was undone.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The target directory does not exist or is not a directory; nothing was written.
    #[error("delivery target {target}: directory {} does not exist or is not a directory", directory.display())]
    Directory {
        /// The target's name.
        target: String,
        /// The configured directory.
        directory: PathBuf,
    },
    /// The PKCS#12 password variable is unset, empty or not UTF-8; nothing was written.
    #[error("delivery target {target}: environment variable {variable} (the PKCS#12 password) is not set")]
    Pkcs12Password {
        /// The target's name.
        target: String,
        /// The variable's name.
        variable: String,
    },
    /// The certificate, chain or key cannot be delivered as given (not DER, the key does
    /// not belong to the certificate, the PKCS#12 bundle cannot be built); nothing was
    /// written.
    #[error("delivery target {target}: {reason}")]
    Material {
        /// The target's name.
        target: String,
        /// What is wrong (never key material).
        reason: String,
    },
    /// A file operation failed.
    #[error(
        "delivery target {target}: cannot {operation} {}: {source}; {}",
        path.display(),
        restored_note(*rolled_back)
    )]
    Io {
        /// The target's name.
        target: String,
        /// What was being done (`write`, `replace`, …).
        operation: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
        /// Whether the directory holds exactly the previous files again (true as well when
        /// nothing had been replaced yet).
        rolled_back: bool,
    },
    /// The files were written but the reload command failed; they were put back.
    #[error(
        "delivery target {target}: reload command {failure}{}; {}",
        stderr_note(stderr_tail),
        restored_note(*rolled_back)
    )]
    ReloadFailed {
        /// The target's name.
        target: String,
        /// How the command failed.
        failure: ReloadFailure,
        /// The end of the command's stderr (at most [`STDERR_TAIL_BYTES`]), trimmed.
        stderr_tail: String,
        /// Whether every previous file was restored (and every new one removed).
        rolled_back: bool,
    },
    /// The blocking file task could not run to its end (the runtime is shutting down).
    #[error("delivery target {target}: the file task was interrupted: {reason}")]
    Interrupted {
        /// The target's name.
        target: String,
        /// Why.
        reason: String,
    },
}

impl DeliveryError {
    /// Whether the target's files are known to be as they were before this delivery.
    pub fn previous_files_in_place(&self) -> bool {
        match self {
            Self::Io { rolled_back, .. } | Self::ReloadFailed { rolled_back, .. } => *rolled_back,
            Self::Directory { .. } | Self::Pkcs12Password { .. } | Self::Material { .. } => true,
            Self::Interrupted { .. } => false,
        }
    }
}

fn restored_note(rolled_back: bool) -> &'static str {
    if rolled_back {
        "the previous files are in place"
    } else {
        "restoring the previous files FAILED (see the log)"
    }
}

fn stderr_note(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(" (stderr: {tail})")
    }
}

/// Write `material` to the target `name` and run its reload command, restoring the previous
/// files when the command fails (see the module documentation for the steps).
///
/// Run it to completion: a future dropped between the file swap and the end of the reload
/// command leaves the new files in place (and the backups beside them) and kills the
/// command.
pub async fn deliver(
    name: &str,
    target: &DeliveryTargetConfig,
    material: &DeliveryMaterial,
) -> Result<DeliveryReport, DeliveryError> {
    match target.kind {
        DeliveryKind::Filesystem => {}
    }
    let lock = directory_lock(&target.directory);
    let _serialised = lock.lock().await;

    let (task_name, task_target, task_material) =
        (name.to_string(), target.clone(), material.clone());
    let (transaction, mut report) = blocking(name, move || {
        write_files(&task_name, &task_target, &task_material)
    })
    .await?;

    if !target.reload_command.is_empty() {
        if let Err((failure, stderr_tail)) = run_reload(name, target).await {
            let rolled_back = blocking(name, move || Ok(transaction.rollback()))
                .await
                .unwrap_or(false);
            tracing::warn!(
                target_name = name,
                %failure,
                stderr = %stderr_tail,
                rolled_back,
                "delivery reload command failed"
            );
            return Err(DeliveryError::ReloadFailed {
                target: name.to_string(),
                failure,
                stderr_tail,
                rolled_back,
            });
        }
        report.reloaded = true;
    }
    // The delivery stands once the command succeeded; left-over backups are only untidy.
    if let Err(e) = blocking(name, move || {
        transaction.commit();
        Ok(())
    })
    .await
    {
        tracing::warn!(target_name = name, error = %e, "delivery: backups not removed");
    }
    tracing::info!(
        target_name = name,
        files = report.written.len(),
        reloaded = report.reloaded,
        "certificate delivered"
    );
    Ok(report)
}

/// Run blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> Result<T, DeliveryError> + Send + 'static,
) -> Result<T, DeliveryError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| DeliveryError::Interrupted {
            target: name.to_string(),
            reason: e.to_string(),
        })?
}

/// One lock per target directory, so two deliveries never interleave their renames.
fn directory_lock(directory: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    locks.entry(directory.to_path_buf()).or_default().clone()
}

/// A file to write: its name in the target directory, its contents and its mode.
struct PlannedFile {
    name: String,
    contents: Zeroizing<Vec<u8>>,
    mode: u32,
}

/// Render the files, stage them and swap them in; what is returned can still be undone.
fn write_files(
    name: &str,
    target: &DeliveryTargetConfig,
    material: &DeliveryMaterial,
) -> Result<(Transaction, DeliveryReport), DeliveryError> {
    let directory = &target.directory;
    if !fs::metadata(directory).is_ok_and(|m| m.is_dir()) {
        return Err(DeliveryError::Directory {
            target: name.to_string(),
            directory: directory.clone(),
        });
    }
    let (files, skipped) = render(name, target, material)?;
    let skipped = skipped.iter().map(|f| directory.join(f)).collect();
    let mut transaction = Transaction {
        target: name.to_string(),
        directory: directory.clone(),
        staged: Vec::new(),
        swapped: Vec::new(),
    };
    let io_error = |transaction: Transaction, (operation, path, source)| {
        let rolled_back = transaction.rollback();
        DeliveryError::Io {
            target: name.to_string(),
            operation,
            path,
            source,
            rolled_back,
        }
    };
    for file in &files {
        if let Err(e) = transaction.stage(file) {
            return Err(io_error(transaction, e));
        }
    }
    if let Err(e) = transaction.swap_all() {
        return Err(io_error(transaction, e));
    }
    let written = transaction.swapped.iter().map(|s| s.dest.clone()).collect();
    Ok((
        transaction,
        DeliveryReport {
            target: name.to_string(),
            written,
            skipped,
            reloaded: false,
        },
    ))
}

/// The files of `target` for `material`, and the names skipped for want of a key.
fn render(
    name: &str,
    target: &DeliveryTargetConfig,
    material: &DeliveryMaterial,
) -> Result<(Vec<PlannedFile>, Vec<String>), DeliveryError> {
    let invalid = |reason: String| DeliveryError::Material {
        target: name.to_string(),
        reason,
    };
    let leaf = x509_cert::Certificate::from_der(&material.certificate_der)
        .map_err(|e| invalid(format!("the certificate is not DER X.509: {e}")))?;
    for (i, der) in material.chain_der.iter().enumerate() {
        x509_cert::Certificate::from_der(der)
            .map_err(|e| invalid(format!("chain certificate {} is not DER X.509: {e}", i + 1)))?;
    }
    let public = |bytes: String| Zeroizing::new(bytes.into_bytes());
    let leaf_pem = pem::encode(pem::CERTIFICATE, &material.certificate_der);
    let chain_pem = pem::encode_certificates(material.chain_der.iter().map(Vec::as_slice));
    let mut files = vec![
        PlannedFile {
            name: target.cert_file.clone(),
            contents: public(leaf_pem.clone()),
            mode: target.file_mode,
        },
        PlannedFile {
            name: target.chain_file.clone(),
            contents: public(chain_pem.clone()),
            mode: target.file_mode,
        },
        PlannedFile {
            name: target.fullchain_file.clone(),
            contents: public(leaf_pem + &chain_pem),
            mode: target.file_mode,
        },
    ];
    let mut skipped = Vec::new();
    let Some(key) = &material.private_key_pkcs8 else {
        skipped.push(target.key_file.clone());
        skipped.extend(target.pkcs12_file.iter().cloned());
        return Ok((files, skipped));
    };

    // The key must be a PKCS#8 key of the certificate's public key: a mismatched pair
    // would take the service down as surely as a broken file.
    let key_pair = rcgen::KeyPair::try_from(key.as_slice())
        .map_err(|_| invalid("the private key is not a PKCS#8 key of a supported type".into()))?;
    let certified = leaf
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    if key_pair.der_bytes() != certified {
        return Err(invalid(
            "the private key does not belong to the certificate".into(),
        ));
    }
    drop(key_pair);
    let key_pem = Zeroizing::new(
        der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, key)
            .map_err(|e| invalid(format!("the private key cannot be PEM-encoded: {e}")))?,
    );
    files.push(PlannedFile {
        name: target.key_file.clone(),
        contents: Zeroizing::new(key_pem.as_bytes().to_vec()),
        mode: SECRET_FILE_MODE,
    });

    if let (Some(file), Some(variable)) = (&target.pkcs12_file, &target.pkcs12_password_env) {
        let password = Zeroizing::new(
            std::env::var(variable)
                .ok()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| DeliveryError::Pkcs12Password {
                    target: name.to_string(),
                    variable: variable.clone(),
                })?,
        );
        let bundle = pkcs12(name, material, key, &password).map_err(invalid)?;
        files.push(PlannedFile {
            name: file.clone(),
            contents: Zeroizing::new(bundle),
            mode: SECRET_FILE_MODE,
        });
    }
    Ok((files, skipped))
}

/// A PKCS#12 bundle of the key, the leaf and the chain, with the library's defaults:
/// PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) for the key and certificate bags and an
/// HMAC-SHA256 MAC, 10 000 iterations each.
fn pkcs12(
    name: &str,
    material: &DeliveryMaterial,
    key: &[u8],
    password: &str,
) -> Result<Vec<u8>, String> {
    let certificates = std::iter::once(&material.certificate_der)
        .chain(&material.chain_der)
        .map(|der| p12_keystore::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a certificate cannot go into PKCS#12: {e}"))?;
    let local_key_id =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &material.certificate_der);
    let mut store = KeyStore::new();
    store.add_entry(
        name,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(
            key,
            local_key_id.as_ref(),
            certificates,
        )),
    );
    store
        .writer(password)
        .write()
        .map_err(|e| format!("the PKCS#12 bundle cannot be built: {e}"))
}

/// A file operation that failed: what, on which path, why.
type IoFailure = (&'static str, PathBuf, io::Error);

fn failed(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> IoFailure {
    let path = path.to_path_buf();
    move |e| (operation, path, e)
}

/// A new file written under its temporary name.
struct Staged {
    temp: PathBuf,
    dest: PathBuf,
}

/// A file renamed into place, and where its predecessor was kept.
struct Swapped {
    dest: PathBuf,
    backup: Option<PathBuf>,
}

/// The files of one delivery, staged and then swapped in; undone by [`Self::rollback`],
/// made final by [`Self::commit`].
struct Transaction {
    target: String,
    directory: PathBuf,
    staged: Vec<Staged>,
    swapped: Vec<Swapped>,
}

impl Transaction {
    fn side_path(&self, file: &str, suffix: &str) -> PathBuf {
        self.directory.join(format!(".{file}{suffix}"))
    }

    /// Write `file` to its temporary name: created exclusively with its mode, fsynced.
    fn stage(&mut self, file: &PlannedFile) -> Result<(), IoFailure> {
        let temp = self.side_path(&file.name, NEW_SUFFIX);
        let dest = self.directory.join(&file.name);
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
            return Err((
                "replace",
                dest,
                io::Error::new(io::ErrorKind::IsADirectory, "it is a directory"),
            ));
        }
        // Left over from a delivery that was interrupted: never a file anyone reads.
        remove_if_present(&temp).map_err(failed("remove the stale", &temp))?;
        let mut handle = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(&temp)
            .map_err(failed("create", &temp))?;
        self.staged.push(Staged {
            temp: temp.clone(),
            dest,
        });
        handle
            .write_all(&file.contents)
            .map_err(failed("write", &temp))?;
        // The umask may have narrowed the mode at creation; the configured mode is the one.
        handle
            .set_permissions(fs::Permissions::from_mode(file.mode))
            .map_err(failed("set the mode of", &temp))?;
        handle.sync_all().map_err(failed("sync", &temp))?;
        Ok(())
    }

    /// Move every staged file into place, keeping each predecessor under its backup name.
    fn swap_all(&mut self) -> Result<(), IoFailure> {
        let mut pending = std::mem::take(&mut self.staged).into_iter();
        while let Some(Staged { temp, dest }) = pending.next() {
            match self.swap_one(&temp, &dest) {
                Ok(backup) => self.swapped.push(Swapped { dest, backup }),
                Err((failure, backup)) => {
                    // Rollback removes this and the remaining staged files and puts the
                    // predecessor back if it was moved aside.
                    if backup.is_some() {
                        self.swapped.push(Swapped {
                            dest: dest.clone(),
                            backup,
                        });
                    }
                    self.staged.push(Staged { temp, dest });
                    self.staged.extend(pending);
                    return Err(failure);
                }
            }
        }
        sync_directory(&self.directory).map_err(failed("sync", &self.directory))
    }

    /// Keep `dest`'s current file (if any) under its backup name, then rename `temp` over
    /// `dest`. Returns the backup; on failure also the backup made so far.
    fn swap_one(
        &self,
        temp: &Path,
        dest: &Path,
    ) -> Result<Option<PathBuf>, (IoFailure, Option<PathBuf>)> {
        let file = dest
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let backup_path = self.side_path(&file, OLD_SUFFIX);
        let backup = match fs::symlink_metadata(dest) {
            Ok(_) => {
                remove_if_present(&backup_path)
                    .map_err(|e| (failed("remove the stale", &backup_path)(e), None))?;
                // A hard link keeps the name in place until the rename replaces it; where
                // links are impossible the current file is moved aside instead.
                let linked = fs::hard_link(dest, &backup_path).is_ok();
                if !linked {
                    fs::rename(dest, &backup_path)
                        .map_err(|e| (failed("move aside", dest)(e), None))?;
                }
                Some((backup_path, linked))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err((failed("inspect", dest)(e), None)),
        };
        match fs::rename(temp, dest) {
            Ok(()) => Ok(backup.map(|(path, _)| path)),
            Err(e) => {
                let failure = failed("replace", dest)(e);
                match backup {
                    // `dest` is untouched: the extra link is all there is to undo.
                    Some((path, true)) => {
                        if let Err(e) = remove_if_present(&path) {
                            return Err((failed("remove the backup", &path)(e), None));
                        }
                        Err((failure, None))
                    }
                    // Moved aside: rollback renames it back.
                    Some((path, false)) => Err((failure, Some(path))),
                    None => Err((failure, None)),
                }
            }
        }
    }

    /// Undo everything: remove staged files, put every predecessor back, remove files that
    /// had none. Returns whether all of it worked (failures are logged).
    fn rollback(mut self) -> bool {
        let mut clean = true;
        let mut report = |what: &str, path: &Path, e: io::Error| {
            tracing::error!(
                target_name = %self.target,
                path = %path.display(),
                error = %e,
                "delivery rollback: cannot {what}"
            );
            clean = false;
        };
        for staged in self.staged.drain(..) {
            if let Err(e) = remove_if_present(&staged.temp) {
                report("remove", &staged.temp, e);
            }
        }
        for swapped in self.swapped.drain(..).rev() {
            let result = match &swapped.backup {
                // rename() between two links of one file does nothing: the backup link is
                // then removed explicitly.
                Some(backup) => {
                    fs::rename(backup, &swapped.dest).and_then(|()| remove_if_present(backup))
                }
                None => remove_if_present(&swapped.dest),
            };
            if let Err(e) = result {
                report("restore", &swapped.dest, e);
            }
        }
        if let Err(e) = sync_directory(&self.directory) {
            report("sync", &self.directory, e);
        }
        clean
    }

    /// Keep the new files: remove the backups (a backup that cannot be removed is logged).
    fn commit(mut self) {
        for swapped in self.swapped.drain(..) {
            if let Some(backup) = swapped.backup {
                if let Err(e) = remove_if_present(&backup) {
                    tracing::warn!(
                        target_name = %self.target,
                        path = %backup.display(),
                        error = %e,
                        "delivery: cannot remove the backup of a replaced file"
                    );
                }
            }
        }
        if let Err(e) = sync_directory(&self.directory) {
            tracing::warn!(target_name = %self.target, error = %e, "delivery: cannot sync the directory");
        }
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn sync_directory(directory: &Path) -> io::Result<()> {
    fs::File::open(directory)?.sync_all()
}

/// Run the target's reload command; on failure, how it failed and the end of its stderr.
async fn run_reload(
    name: &str,
    target: &DeliveryTargetConfig,
) -> Result<(), (ReloadFailure, String)> {
    let Some((program, args)) = target.reload_command.split_first() else {
        return Ok(());
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("RAMPART_DELIVERY_TARGET", name)
        .env("RAMPART_DELIVERY_DIRECTORY", &target.directory)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(variable) = &target.pkcs12_password_env {
        // The command has no use for the bundle's password.
        command.env_remove(variable);
    }
    let mut child = command.spawn().map_err(|e| {
        (
            ReloadFailure::Spawn {
                program: program.clone(),
                reason: e.to_string(),
            },
            String::new(),
        )
    })?;

    let tail = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut reader = {
        let tail = tail.clone();
        let stderr = child.stderr.take();
        tokio::spawn(async move {
            let Some(mut stderr) = stderr else { return };
            let mut buffer = [0u8; 1024];
            while let Ok(n @ 1..) = stderr.read(&mut buffer).await {
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                tail.extend_from_slice(&buffer[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
                tail.drain(..excess);
            }
        })
    };

    let seconds = target.reload_timeout_seconds;
    let outcome = match tokio::time::timeout(Duration::from_secs(seconds), child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(match (status.code(), status.signal()) {
            (Some(code), _) => ReloadFailure::Exit { code },
            (None, Some(signal)) => ReloadFailure::Signal { signal },
            (None, None) => ReloadFailure::Exit { code: -1 },
        }),
        Ok(Err(e)) => Err(ReloadFailure::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        }),
        Err(_) => {
            // kill() also reaps it; an error only means it ended meanwhile.
            let _ = child.kill().await;
            Err(ReloadFailure::Timeout { seconds })
        }
    };
    if tokio::time::timeout(STDERR_GRACE, &mut reader)
        .await
        .is_err()
    {
        reader.abort();
    }
    let stderr_tail = {
        let tail = tail.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&tail).trim().to_string()
    };
    outcome.map_err(|failure| (failure, stderr_tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(name: &str, contents: &str, mode: u32) -> PlannedFile {
        PlannedFile {
            name: name.into(),
            contents: Zeroizing::new(contents.as_bytes().to_vec()),
            mode,
        }
    }

    fn listing(dir: &Path) -> Vec<(String, String, u32)> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read_to_string(e.path()).unwrap(),
                    e.metadata().unwrap().permissions().mode() & 0o777,
                )
            })
            .collect();
        entries.sort();
        entries
    }

    #[test]
    fn an_io_failure_midway_through_the_swap_restores_every_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cert.pem"), "old cert").unwrap();
        fs::write(dir.path().join("key.pem"), "old key").unwrap();
        fs::set_permissions(
            dir.path().join("key.pem"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let before = listing(dir.path());
        let mut transaction = Transaction {
            target: "t".into(),
            directory: dir.path().to_path_buf(),
            staged: Vec::new(),
            swapped: Vec::new(),
        };
        for file in [
            planned("cert.pem", "new cert", 0o644),
            planned("chain.pem", "new chain", 0o644),
            planned("key.pem", "new key", 0o600),
        ] {
            transaction.stage(&file).unwrap();
        }
        // The last staged file vanishes: its rename fails after two others succeeded.
        fs::remove_file(dir.path().join(".key.pem.rampart-new")).unwrap();
        let (operation, path, _) = transaction.swap_all().unwrap_err();
        assert_eq!((operation, path), ("replace", dir.path().join("key.pem")));
        assert_eq!(transaction.swapped.len(), 2);
        assert!(transaction.rollback());
        assert_eq!(listing(dir.path()), before);
    }

    #[test]
    fn a_stale_temporary_or_backup_file_does_not_stop_a_delivery() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cert.pem"), "old").unwrap();
        fs::write(dir.path().join(".cert.pem.rampart-new"), "stale").unwrap();
        fs::write(dir.path().join(".cert.pem.rampart-old"), "stale").unwrap();
        let mut transaction = Transaction {
            target: "t".into(),
            directory: dir.path().to_path_buf(),
            staged: Vec::new(),
            swapped: Vec::new(),
        };
        transaction
            .stage(&planned("cert.pem", "new", 0o644))
            .unwrap();
        transaction.swap_all().unwrap();
        transaction.commit();
        assert_eq!(
            listing(dir.path()),
            [("cert.pem".into(), "new".into(), 0o644)]
        );
    }

    #[tokio::test]
    async fn only_the_end_of_stderr_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = DeliveryTargetConfig {
            kind: DeliveryKind::Filesystem,
            directory: dir.path().to_path_buf(),
            cert_file: "cert.pem".into(),
            chain_file: "chain.pem".into(),
            fullchain_file: "fullchain.pem".into(),
            key_file: "key.pem".into(),
            pkcs12_file: None,
            pkcs12_password_env: None,
            reload_command: [
                "sh",
                "-c",
                "head -c 20000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 1",
            ]
            .map(String::from)
            .to_vec(),
            reload_timeout_seconds: 10,
            file_mode: 0o644,
        };
        let (failure, tail) = run_reload("t", &target).await.unwrap_err();
        assert_eq!(failure, ReloadFailure::Exit { code: 1 });
        assert!(
            tail.len() <= STDERR_TAIL_BYTES && tail.len() > 4000,
            "{}",
            tail.len()
        );
        assert!(tail.ends_with("xxxEND"), "{tail}");
    }
}
