//! The SAN catalog: every certificate's SAN values, for substring queries (`?san=`) that
//! answer in serial order. A sorted main segment and a small unsorted tail of recent
//! issuances, merged into the main segment when the tail grows past
//! [`SanCatalog::TAIL_LIMIT`].
//!
//! The main segment keeps its offsets and one serial in 64 in memory (~9 MB at a million
//! certificates) and its serials and text — the bulk, ~32 and ~70 MB at a million
//! certificates with two names each — in files read with positioned reads. The kernel's page
//! cache holds those, not the daemon's heap: they are evicted under memory pressure (a search
//! then reads them from disk). A merge writes two new files, unlinked as soon as they are
//! created, so they disappear with the process.
//!
//! The catalog is derived data. When the store closes it is saved to one file (module
//! `saved`), which the next open reads back instead of rebuilding the catalog from every
//! `idx_expiry` entry (seconds, and ~150 MiB of heap left fragmented, at a million
//! certificates). The store decides whether the file can be trusted; a rebuild is always
//! possible.
//!
//! May import: the parent module (the `idx_expiry` value layout, errors), std, memchr,
//! crc32fast (in `saved`).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, RwLock, RwLockReadGuard};

use super::{backend, split_expiry_value, StoreError};

pub(super) use saved::{path as saved_path, Label};

mod saved;

/// Where a packed string ends, for each of a run of strings stored back to back.
#[derive(Debug, Default)]
struct Offsets(Vec<u32>);

impl Offsets {
    fn with_capacity(entries: usize) -> Self {
        Offsets(Vec::with_capacity(entries))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.0[i - 1] as usize
        }
    }

    fn end(&self, i: usize) -> usize {
        self.0[i] as usize
    }

    /// Bytes of all strings.
    fn total(&self) -> usize {
        self.0.last().map_or(0, |end| *end as usize)
    }

    /// Record a string of `len` bytes after the others; false if offsets overflow.
    fn push(&mut self, len: usize) -> bool {
        match u32::try_from(self.total() + len) {
            Ok(end) => {
                self.0.push(end);
                true
            }
            Err(_) => false,
        }
    }

    /// The string holding byte `offset` (`len()` past the end).
    fn entry_at(&self, offset: usize) -> usize {
        self.0.partition_point(|end| (*end as usize) <= offset)
    }
}

/// Strings packed in one, in memory.
#[derive(Debug, Default)]
struct Strings {
    bytes: String,
    ends: Offsets,
}

impl Strings {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> &str {
        &self.bytes[self.ends.start(i)..self.ends.end(i)]
    }

    /// False if offsets overflow.
    fn push(&mut self, s: &str) -> bool {
        if !self.ends.push(s.len()) {
            return false;
        }
        self.bytes.push_str(s);
        true
    }

    fn shrink(&mut self) {
        self.bytes.shrink_to_fit();
        self.ends.0.shrink_to_fit();
    }
}

/// The unsorted tail: entries (serial, text) in memory, in the order they came. An entry's
/// text is its values, each followed by a line feed, so that a needle without one matches
/// within a single value.
#[derive(Debug, Default)]
struct Tail {
    serials: Strings,
    text: Strings,
}

impl Tail {
    fn len(&self) -> usize {
        self.serials.len()
    }

    /// Append an entry whose `text` is already line-feed terminated; false on overflow.
    fn push(&mut self, serial: &str, text: &str) -> bool {
        self.serials.push(serial) && self.text.push(text)
    }

    /// Append an entry from its `\n`-joined SAN values; false on overflow.
    fn push_values(&mut self, serial: &str, values: &str) -> bool {
        let mut text = String::with_capacity(values.len() + 1);
        for value in values.split('\n') {
            text.push_str(value);
            text.push('\n');
        }
        self.push(serial, &text)
    }

    /// Entries whose text contains `needle`, in tail order.
    fn find(&self, needle: &memchr::memmem::Finder<'_>, out: &mut Vec<usize>) {
        find_entries(
            needle,
            self.text.bytes.as_bytes(),
            0,
            &self.text.ends,
            |entry| {
                out.push(entry);
                true
            },
        );
    }
}

/// The entries (by `ends`) whose text in `bytes` — the packed text from byte `base` on —
/// contains `needle`, in order, each once, to `found` until it returns false; false then.
fn find_entries(
    needle: &memchr::memmem::Finder<'_>,
    bytes: &[u8],
    base: usize,
    ends: &Offsets,
    mut found: impl FnMut(usize) -> bool,
) -> bool {
    let mut from = 0;
    while let Some(at) = needle.find(&bytes[from..]) {
        let entry = ends.entry_at(base + from + at);
        if !found(entry) {
            return false;
        }
        from = ends.end(entry) - base;
    }
    true
}

/// The sorted main segment: serials and text in files (`None` while empty), where each entry
/// ends in either in memory, and every [`Main::SAMPLE`]th serial in memory so that a search
/// by serial reads one block of serials.
#[derive(Debug, Default)]
struct Main {
    serial_ends: Offsets,
    text_ends: Offsets,
    samples: Strings,
    files: Option<MainFiles>,
    /// The label of the saved catalog file this segment was read from, while it has the
    /// same entries as that file.
    saved: Option<saved::Label>,
}

#[derive(Debug)]
struct MainFiles {
    serials: Region,
    text: Region,
}

/// Bytes of a file from `base` on.
#[derive(Debug)]
struct Region {
    file: File,
    base: u64,
}

impl Region {
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buffer, self.base + offset)
    }
}

impl Main {
    /// Bytes read from the text file at a time (ending on an entry boundary, or one entry
    /// when it is longer).
    const READ: usize = 1 << 20;
    /// One serial in this many is kept in memory.
    const SAMPLE: usize = 64;

    fn len(&self) -> usize {
        self.text_ends.len()
    }

    /// The serials of entries `first..end`, back to back.
    fn serial_bytes(&self, first: usize, end: usize) -> std::io::Result<Vec<u8>> {
        let Some(files) = &self.files else {
            return Ok(Vec::new());
        };
        let start = self.serial_ends.start(first);
        let mut bytes = vec![0; self.serial_ends.end(end - 1) - start];
        files.serials.read_exact_at(&mut bytes, start as u64)?;
        Ok(bytes)
    }

    /// Entry `i`'s serial, out of the bytes of entries from `first` on.
    fn serial_in<'b>(&self, bytes: &'b [u8], first: usize, i: usize) -> std::io::Result<&'b str> {
        let base = self.serial_ends.start(first);
        let range = self.serial_ends.start(i) - base..self.serial_ends.end(i) - base;
        std::str::from_utf8(&bytes[range])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    fn serial(&self, i: usize) -> std::io::Result<String> {
        let bytes = self.serial_bytes(i, i + 1)?;
        Ok(self.serial_in(&bytes, i, i)?.to_string())
    }

    /// The first entry whose serial is not `before` (which holds for a prefix), with that
    /// serial (`None` past the end), from the samples and one block of serials.
    fn search(&self, before: impl Fn(&str) -> bool) -> std::io::Result<(usize, Option<String>)> {
        let block = partition(self.samples.len(), |b| before(self.samples.get(b)));
        // Sample `block` (entry `block * SAMPLE`), if any, is not before.
        let sample = (block < self.samples.len()).then(|| self.samples.get(block).to_string());
        if block == 0 {
            return Ok((0, sample));
        }
        // Sample `block - 1` is before: the answer is after it, at sample `block` the latest.
        let first = (block - 1) * Self::SAMPLE + 1;
        let end = (block * Self::SAMPLE).min(self.len());
        if first >= end {
            return Ok((end, sample));
        }
        let bytes = self.serial_bytes(first, end)?;
        let mut failed = None;
        let at = partition(end - first, |k| {
            match self.serial_in(&bytes, first, first + k) {
                Ok(serial) => before(serial),
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        if first + at == end {
            return Ok((end, sample));
        }
        let serial = self.serial_in(&bytes, first, first + at)?.to_string();
        Ok((first + at, Some(serial)))
    }

    fn contains(&self, serial: &str) -> std::io::Result<bool> {
        let (_, found) = self.search(|s| s < serial)?;
        Ok(found.as_deref() == Some(serial))
    }

    /// The text of entries `first..`, a block at a time: `visit(first entry of the block,
    /// the entry after it, its bytes)` until it returns false.
    fn blocks(
        &self,
        first: usize,
        mut visit: impl FnMut(usize, usize, &[u8]) -> bool,
    ) -> std::io::Result<()> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let mut buffer = Vec::new();
        let mut entry = first;
        while entry < self.len() {
            let start = self.text_ends.start(entry);
            let next = self
                .text_ends
                .entry_at(start + Self::READ)
                .clamp(entry + 1, self.len());
            buffer.resize(self.text_ends.end(next - 1) - start, 0);
            files.text.read_exact_at(&mut buffer, start as u64)?;
            if !visit(entry, next, &buffer) {
                break;
            }
            entry = next;
        }
        Ok(())
    }

    /// Entries from `first` on whose text contains `needle`, in order, until `max` are
    /// found.
    fn find(
        &self,
        needle: &memchr::memmem::Finder<'_>,
        first: usize,
        max: usize,
        out: &mut Vec<usize>,
    ) -> std::io::Result<()> {
        self.blocks(first, |block_first, _, bytes| {
            let base = self.text_ends.start(block_first);
            find_entries(needle, bytes, base, &self.text_ends, |entry| {
                out.push(entry);
                out.len() < max
            })
        })
    }

    /// Every entry (serial, text), in order.
    fn for_each(&self, mut visit: impl FnMut(&str, &str) -> bool) -> std::io::Result<()> {
        let mut failed = None;
        self.blocks(0, |block_first, next, bytes| {
            let serials = match self.serial_bytes(block_first, next) {
                Ok(serials) => serials,
                Err(e) => {
                    failed = Some(e);
                    return false;
                }
            };
            let text = match std::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => {
                    failed = Some(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                    return false;
                }
            };
            let base = self.text_ends.start(block_first);
            for entry in block_first..next {
                let serial = match self.serial_in(&serials, block_first, entry) {
                    Ok(serial) => serial,
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                };
                let range = self.text_ends.start(entry) - base..self.text_ends.end(entry) - base;
                if !visit(serial, &text[range]) {
                    return false;
                }
            }
            true
        })?;
        failed.map_or(Ok(()), Err)
    }
}

/// A main segment being written: offsets and samples in memory, serials and text to fresh
/// unlinked files.
struct MainWriter {
    main: Main,
    serials: std::io::BufWriter<File>,
    text: std::io::BufWriter<File>,
}

impl MainWriter {
    fn create(dir: &Path, entries: usize) -> std::io::Result<Self> {
        Ok(MainWriter {
            main: Main {
                serial_ends: Offsets::with_capacity(entries),
                text_ends: Offsets::with_capacity(entries),
                samples: Strings::default(),
                files: None,
                saved: None,
            },
            serials: std::io::BufWriter::with_capacity(1 << 16, unlinked_file(dir)?),
            text: std::io::BufWriter::with_capacity(Main::READ, unlinked_file(dir)?),
        })
    }

    fn push(&mut self, serial: &str, text: &str) -> std::io::Result<()> {
        let sampled = self.main.len().is_multiple_of(Main::SAMPLE);
        if !self.main.serial_ends.push(serial.len())
            || !self.main.text_ends.push(text.len())
            || (sampled && !self.main.samples.push(serial))
        {
            return Err(std::io::Error::other("more than 4 GiB of names"));
        }
        self.serials.write_all(serial.as_bytes())?;
        self.text.write_all(text.as_bytes())
    }

    fn finish(self) -> std::io::Result<Main> {
        let serials = self.serials.into_inner().map_err(|e| e.into_error())?;
        let text = self.text.into_inner().map_err(|e| e.into_error())?;
        let mut main = self.main;
        main.samples.shrink();
        main.files = Some(MainFiles {
            serials: Region {
                file: serials,
                base: 0,
            },
            text: Region {
                file: text,
                base: 0,
            },
        });
        Ok(main)
    }
}

/// A new file in `dir`, readable and writable by this process only, already unlinked.
fn unlinked_file(dir: &Path) -> std::io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        ".san-catalog-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// The catalog: a sorted main segment and an unsorted tail.
#[derive(Debug)]
pub(super) struct SanCatalog {
    main: Main,
    tail: Tail,
    /// Where the main segment's text files are made.
    dir: PathBuf,
    /// Set when the catalog could not be built or kept (more than 4 GiB of names, an I/O
    /// error): searches then fall back to scanning the certificates.
    unusable: bool,
}

impl SanCatalog {
    /// Entries kept unsorted before a merge into the main segment.
    const TAIL_LIMIT: usize = 32 * 1024;
    /// Entries read at open before each merge (bounds the memory a load takes).
    const LOAD_CHUNK: usize = 256 * 1024;

    pub(super) fn new(dir: &Path) -> Self {
        SanCatalog {
            main: Main::default(),
            tail: Tail::default(),
            dir: dir.to_path_buf(),
            unusable: false,
        }
    }

    /// Record a new certificate's SAN values (`\n`-joined), once: the background load at
    /// open may have read a certificate recorded while it ran.
    pub(super) fn insert(&mut self, serial: &str, values: &str) {
        if self.unusable {
            return;
        }
        match self.main.contains(serial) {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => return self.give_up(e),
        }
        if !self.tail.push_values(serial, values) {
            self.unusable = true;
            return;
        }
        if self.tail.len() >= Self::TAIL_LIMIT {
            self.merge_tail();
        }
    }

    /// Rebuild the main segment with the tail's entries in place.
    pub(super) fn merge_tail(&mut self) {
        if self.unusable || self.tail.len() == 0 {
            return;
        }
        match self.merged() {
            Ok(main) => {
                self.main = main;
                self.tail = Tail::default();
            }
            Err(e) => self.give_up(e),
        }
    }

    /// After an I/O error on the catalog's files: searches scan the certificates instead.
    fn give_up(&mut self, error: std::io::Error) {
        tracing::warn!(%error, "SAN catalog unusable: SAN queries scan the certificates");
        self.unusable = true;
    }

    fn merged(&self) -> std::io::Result<Main> {
        let tail = &self.tail;
        let mut order: Vec<usize> = (0..tail.len()).collect();
        order.sort_by(|a, b| tail.serials.get(*a).cmp(tail.serials.get(*b)));
        let mut writer = MainWriter::create(&self.dir, self.main.len() + tail.len())?;
        let mut next = order.iter().peekable();
        let mut written = Ok(());
        self.main.for_each(|serial, text| {
            while let Some(&&j) = next.peek() {
                if tail.serials.get(j) >= serial {
                    break;
                }
                next.next();
                written = writer.push(tail.serials.get(j), tail.text.get(j));
                if written.is_err() {
                    return false;
                }
            }
            written = writer.push(serial, text);
            written.is_ok()
        })?;
        written?;
        for &j in next {
            writer.push(tail.serials.get(j), tail.text.get(j))?;
        }
        writer.finish()
    }

    /// Save the catalog to its file in the store's directory (merging the tail first), and
    /// return the file's label. A catalog read from that file and unchanged since is not
    /// written again.
    pub(super) fn save(&mut self) -> std::io::Result<Label> {
        if self.tail.len() == 0 {
            if let Some(label) = self.main.saved {
                return Ok(label);
            }
        }
        self.merge_tail();
        if self.unusable {
            return Err(std::io::Error::other(
                "the catalog is unusable (more than 4 GiB of names, or an I/O error)",
            ));
        }
        let label = saved::new_label();
        saved::write(&self.main, &self.dir, &label)?;
        self.main.saved = Some(label);
        Ok(label)
    }

    /// The catalog saved in `dir` with `label` by [`save`](SanCatalog::save); an error if
    /// the file is missing, has another label, or does not read back intact.
    pub(super) fn open_saved(dir: &Path, label: &Label) -> std::io::Result<SanCatalog> {
        Ok(SanCatalog {
            main: saved::read(dir, label)?,
            tail: Tail::default(),
            dir: dir.to_path_buf(),
            unusable: false,
        })
    }

    /// Whether searches can use the catalog (it was built, and no I/O error since).
    pub(super) fn is_usable(&self) -> bool {
        !self.unusable
    }

    /// Whether the catalog can search for `needle`: values are separated by line feeds (no
    /// SAN holds one).
    pub(super) fn answers(&self, needle: &str) -> bool {
        !self.unusable && !needle.contains('\n')
    }

    /// Up to `max` serials, ascending and after `after`, of certificates with a SAN value
    /// containing `needle` (which the catalog [answers](SanCatalog::answers)).
    fn matches_after(
        &self,
        needle: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<String>, StoreError> {
        let failed = |e: std::io::Error| StoreError::Backend(format!("SAN catalog: {e}"));
        let finder = memchr::memmem::Finder::new(needle.as_bytes());
        let first = match after {
            Some(after) => {
                self.main
                    .search(|serial| serial <= after)
                    .map_err(failed)?
                    .0
            }
            None => 0,
        };
        let mut found = Vec::new();
        self.main
            .find(&finder, first, max, &mut found)
            .map_err(failed)?;
        let mut serials = found
            .iter()
            .map(|i| self.main.serial(*i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        let mut recent = Vec::new();
        self.tail.find(&finder, &mut recent);
        serials.extend(
            recent
                .iter()
                .map(|i| self.tail.serials.get(*i))
                .filter(|serial| after.is_none_or(|after| *serial > after))
                .map(str::to_string),
        );
        serials.sort_unstable();
        serials.truncate(max);
        Ok(serials)
    }

    /// Entries in the main segment.
    #[cfg(test)]
    pub(super) fn main_len(&self) -> usize {
        self.main.len()
    }

    /// Every certificate's names from `idx_expiry` (in expiry-day order), sorted by serial;
    /// stops early, with an error, once `closing` is set.
    pub(super) fn load(
        idx_expiry: &sled::Tree,
        closing: &AtomicBool,
        dir: &Path,
    ) -> Result<SanCatalog, StoreError> {
        let mut catalog = SanCatalog::new(dir);
        for (n, item) in idx_expiry.iter().enumerate() {
            if n % 4096 == 0 && closing.load(Ordering::SeqCst) {
                return Err(StoreError::Backend("the store closed".into()));
            }
            let (key, value) = item.map_err(backend)?;
            let (_, values) = split_expiry_value(&value)?;
            let serial = String::from_utf8_lossy(key.get(4..).unwrap_or_default());
            if !catalog
                .tail
                .push_values(&serial, &String::from_utf8_lossy(values))
            {
                catalog.unusable = true;
            }
            if catalog.tail.len() >= Self::LOAD_CHUNK {
                catalog.merge_tail();
            }
        }
        catalog.merge_tail();
        if catalog.unusable {
            return Err(StoreError::Backend(
                "SAN catalog: more than 4 GiB of names, or its file could not be written".into(),
            ));
        }
        Ok(catalog)
    }
}

/// Where a store's catalog came from at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CatalogOrigin {
    /// The file saved at the last close, with the certificates issued since added.
    Saved { caught_up: usize },
    /// Every `idx_expiry` entry.
    Rebuilt,
}

/// The SAN catalog of a store, loaded in the background at open.
#[derive(Debug)]
pub(super) struct SanIndex {
    pub(super) catalog: RwLock<SanCatalog>,
    /// Set by the load.
    pub(super) origin: std::sync::OnceLock<CatalogOrigin>,
    /// Whether loading has finished (the catalog is unusable if it failed).
    loaded: Mutex<bool>,
    loaded_signal: Condvar,
    /// Set when the store closes: the loader stops.
    pub(super) closing: AtomicBool,
}

impl SanIndex {
    /// An index whose catalog's files are made in `dir`, not loaded yet.
    pub(super) fn new(dir: &Path) -> Self {
        SanIndex {
            catalog: RwLock::new(SanCatalog::new(dir)),
            origin: std::sync::OnceLock::new(),
            loaded: Mutex::new(false),
            loaded_signal: Condvar::new(),
            closing: AtomicBool::new(false),
        }
    }

    /// Whether loading has finished (successfully or not).
    pub(super) fn is_loaded(&self) -> bool {
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The catalog, once loaded.
    pub(super) fn loaded_catalog(&self) -> RwLockReadGuard<'_, SanCatalog> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        while !*loaded {
            loaded = self
                .loaded_signal
                .wait(loaded)
                .unwrap_or_else(|e| e.into_inner());
        }
        drop(loaded);
        self.catalog.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a new certificate's SAN values (`\n`-joined).
    pub(super) fn insert(&self, serial: &str, values: &str) {
        self.catalog
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(serial, values);
    }

    /// Install the loaded catalog, keeping the certificates recorded meanwhile that the
    /// load did not see, and wake the waiting queries.
    pub(super) fn finish(&self, loaded: Result<SanCatalog, StoreError>) {
        let mut catalog = self.catalog.write().unwrap_or_else(|e| e.into_inner());
        match loaded {
            Ok(loaded) => {
                // Only certificates recorded during the load are in the catalog yet (in
                // its tail, or merged into its main segment if many).
                let early = std::mem::replace(&mut *catalog, loaded);
                let mut keep = |serial: &str, text: &str| {
                    match catalog.main.contains(serial) {
                        Ok(true) => {}
                        Ok(false) => {
                            if !catalog.tail.push(serial, text) {
                                catalog.unusable = true;
                            }
                        }
                        Err(e) => catalog.give_up(e),
                    }
                    true
                };
                let read = early.main.for_each(&mut keep);
                for i in 0..early.tail.len() {
                    keep(early.tail.serials.get(i), early.tail.text.get(i));
                }
                if read.is_err() {
                    catalog.unusable = true;
                }
                if catalog.tail.len() >= SanCatalog::TAIL_LIMIT {
                    catalog.merge_tail();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "SAN catalog not loaded: SAN queries scan the certificates");
                catalog.unusable = true;
            }
        }
        drop(catalog);
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.loaded_signal.notify_all();
    }
}

/// Serials whose SAN text contains the needle, from the catalog a batch at a time (the
/// catalog is not locked while the caller reads certificates).
pub(super) struct SanCandidates<'a> {
    catalog: &'a RwLock<SanCatalog>,
    needle: String,
    after: Option<String>,
    batch: std::collections::VecDeque<String>,
    exhausted: bool,
}

impl<'a> SanCandidates<'a> {
    /// Candidates for `needle` (which the catalog answers) after serial `after`.
    pub(super) fn new(index: &'a SanIndex, needle: String, after: Option<String>) -> Self {
        SanCandidates {
            catalog: &index.catalog,
            needle,
            after,
            batch: std::collections::VecDeque::new(),
            exhausted: false,
        }
    }
}

impl Iterator for SanCandidates<'_> {
    type Item = Result<String, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        const BATCH: usize = 64;
        if self.batch.is_empty() && !self.exhausted {
            let found = self
                .catalog
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .matches_after(&self.needle, self.after.as_deref(), BATCH);
            let found = match found {
                Ok(found) => found,
                Err(e) => {
                    self.exhausted = true;
                    return Some(Err(e));
                }
            };
            self.exhausted = found.len() < BATCH;
            self.after = found.last().cloned();
            self.batch.extend(found);
        }
        self.batch.pop_front().map(Ok)
    }
}

/// The first index in `0..len` for which `before` is false (`before` is true on a prefix).
fn partition(len: usize, mut before: impl FnMut(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, len);
    while low < high {
        let middle = low + (high - low) / 2;
        if before(middle) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(catalog: &SanCatalog) -> Vec<(String, String)> {
        let mut out = Vec::new();
        catalog
            .main
            .for_each(|serial, text| {
                out.push((serial.to_string(), text.to_string()));
                true
            })
            .unwrap();
        out
    }

    #[test]
    fn merges_keep_serial_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut catalog = SanCatalog::new(dir.path());
        for serial in ["c", "a", "e"] {
            catalog.insert(serial, &format!("{serial}.test\nwww.{serial}.test"));
        }
        catalog.merge_tail();
        for serial in ["d", "b", "f"] {
            catalog.insert(serial, &format!("{serial}.test"));
        }
        // Already in the main segment (read by the load at open): kept once.
        catalog.insert("c", "c.test\nwww.c.test");
        assert_eq!(
            catalog.matches_after(".test", None, 10).unwrap(),
            ["a", "b", "c", "d", "e", "f"]
        );
        assert_eq!(
            catalog.matches_after(".test", Some("b"), 2).unwrap(),
            ["c", "d"]
        );
        assert_eq!(
            catalog.matches_after("www.", None, 10).unwrap(),
            ["a", "c", "e"]
        );
        // A needle never spans two values.
        assert!(!catalog.answers("test\nwww"));
        assert_eq!(
            catalog.matches_after("testwww", None, 10).unwrap(),
            Vec::<String>::new()
        );
        catalog.merge_tail();
        assert_eq!(catalog.main_len(), 6);
        assert_eq!(entries(&catalog)[1], ("b".into(), "b.test\n".into()));
        // The text lives in unlinked files: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn searches_span_many_read_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mut catalog = SanCatalog::new(dir.path());
        // ~3 MiB of names: several blocks of Main::READ, one entry longer than a block.
        let long = format!("{}.long.test", "x".repeat(Main::READ + 10));
        for i in 0..60_000u32 {
            let name = if i == 31_000 {
                long.clone()
            } else {
                format!("host-{i:05}.example.test\nalt-{i:05}.example.test")
            };
            catalog.insert(&format!("{i:08x}"), &name);
        }
        catalog.merge_tail();
        assert_eq!(catalog.main_len(), 60_000);
        assert_eq!(
            catalog.matches_after("host-59999.", None, 10).unwrap(),
            [format!("{:08x}", 59_999)]
        );
        assert_eq!(
            catalog.matches_after(".long.", None, 10).unwrap(),
            [format!("{:08x}", 31_000)]
        );
        let all = catalog.matches_after("alt-", None, 100_000).unwrap();
        assert_eq!(all.len(), 59_999);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        let page = catalog
            .matches_after("alt-", Some(&format!("{:08x}", 40_000)), 3)
            .unwrap();
        assert_eq!(page, [40_001, 40_002, 40_003].map(|i| format!("{i:08x}")));
        assert!(catalog
            .matches_after("no-such-name", None, 10)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn searches_by_serial_read_one_block_past_the_samples() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0, 1, 63, 64, 65, 129, 200] {
            let mut writer = MainWriter::create(dir.path(), n).unwrap();
            // Serials of the even numbers below 2n.
            for i in 0..n {
                writer
                    .push(&format!("{:08x}", 2 * i), &format!("h{i}.test\n"))
                    .unwrap();
            }
            let main = writer.finish().unwrap();
            assert_eq!(main.len(), n);
            for j in 0..2 * n + 2 {
                let probe = format!("{j:08x}");
                assert_eq!(
                    main.search(|serial| serial < probe.as_str()).unwrap().0,
                    j.div_ceil(2).min(n),
                    "n = {n}, first not below {j}"
                );
                assert_eq!(
                    main.search(|serial| serial <= probe.as_str()).unwrap().0,
                    (j / 2 + 1).min(n),
                    "n = {n}, first after {j}"
                );
                assert_eq!(main.contains(&probe).unwrap(), j % 2 == 0 && j / 2 < n);
            }
            for i in 0..n {
                assert_eq!(main.serial(i).unwrap(), format!("{:08x}", 2 * i));
            }
        }
    }
}
