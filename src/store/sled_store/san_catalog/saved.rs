//! The catalog's main segment saved to one file, `san-catalog` in the store's directory, and
//! read back. The file carries a random label, which the store records beside the state it
//! was saved for; a file is only read back under the label asked for, and only if its CRC-32
//! and its offsets check out, so a damaged or foreign file is refused, never half-used.
//!
//! Layout (integers little-endian): the magic line, the format version (u32), the label (16
//! bytes), the number of entries (u64), the bytes of serials and of text (u64 each), the
//! CRC-32 of everything after the header (u32); then every serial's end offset (u32 each),
//! every text's end offset (u32 each), the serials back to back, the texts back to back.
//!
//! May import: the parent module, std, crc32fast, uuid.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::{Main, MainFiles, Offsets, Region, Strings};

/// A saved file's label.
pub(in crate::store::sled_store) type Label = [u8; 16];

/// The file's name in the store's directory.
const FILE_NAME: &str = "san-catalog";
/// Written first, renamed to [`FILE_NAME`] once complete and synced.
const PARTIAL_NAME: &str = "san-catalog.partial";
const MAGIC: &[u8; 20] = b"rampart san catalog\n";
const VERSION: u32 = 1;
/// Magic, version, label, entries, serial bytes, text bytes, CRC.
const HEADER: usize = 20 + 4 + 16 + 8 + 8 + 8 + 4;
/// Bytes copied or checked at a time.
const CHUNK: usize = 1 << 20;

/// Where the catalog of the store in `dir` is saved.
pub(in crate::store::sled_store) fn path(dir: &Path) -> std::path::PathBuf {
    dir.join(FILE_NAME)
}

/// A fresh random label.
pub(super) fn new_label() -> Label {
    uuid::Uuid::new_v4().into_bytes()
}

/// Write `main` to the catalog file in `dir` under `label`, replacing any earlier one only
/// once the new one is complete and on disk.
pub(super) fn write(main: &Main, dir: &Path, label: &Label) -> std::io::Result<()> {
    let partial = dir.join(PARTIAL_NAME);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    let mut body = Body {
        out: BufWriter::with_capacity(CHUNK, &file),
        crc: crc32fast::Hasher::new(),
    };
    body.out.write_all(&[0; HEADER])?;
    for ends in [&main.serial_ends, &main.text_ends] {
        for end in &ends.0 {
            body.put(&end.to_le_bytes())?;
        }
    }
    if let Some(files) = &main.files {
        body.copy(&files.serials, main.serial_ends.total())?;
        body.copy(&files.text, main.text_ends.total())?;
    }
    body.out.flush()?;
    let crc = body.crc.finalize();
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(label);
    for n in [main.len(), main.serial_ends.total(), main.text_ends.total()] {
        header.extend_from_slice(&(n as u64).to_le_bytes());
    }
    header.extend_from_slice(&crc.to_le_bytes());
    file.write_all_at(&header, 0)?;
    file.sync_all()?;
    std::fs::rename(&partial, path(dir))?;
    File::open(dir)?.sync_all()
}

/// The file's body being written, and its CRC.
struct Body<'a> {
    out: BufWriter<&'a File>,
    crc: crc32fast::Hasher,
}

impl Body<'_> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc.update(bytes);
        self.out.write_all(bytes)
    }

    /// The first `len` bytes of `region`.
    fn copy(&mut self, region: &Region, len: usize) -> std::io::Result<()> {
        read_chunks(
            |buffer, at| region.read_exact_at(buffer, at),
            0,
            len as u64,
            |bytes| self.put(bytes),
        )
    }
}

/// `len` bytes from `offset` on through `read_at`, to `visit` a chunk at a time (every
/// chunk but the last [`CHUNK`] bytes).
fn read_chunks(
    read_at: impl Fn(&mut [u8], u64) -> std::io::Result<()>,
    offset: u64,
    len: u64,
    mut visit: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buffer = vec![0; (CHUNK as u64).min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = (CHUNK as u64).min(len - done) as usize;
        read_at(&mut buffer[..n], offset + done)?;
        visit(&buffer[..n])?;
        done += n as u64;
    }
    Ok(())
}

/// The main segment saved in `dir` under `label`, its serials and text left in the file.
pub(super) fn read(dir: &Path, label: &Label) -> std::io::Result<Main> {
    let invalid = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{FILE_NAME}: {what}"),
        )
    };
    let file = File::open(path(dir))?;
    let mut header = [0; HEADER];
    file.read_exact_at(&mut header, 0)
        .map_err(|_| invalid("shorter than its header"))?;
    let (magic, rest) = header.split_at(MAGIC.len());
    let (version, rest) = rest.split_at(4);
    let (found_label, rest) = rest.split_at(16);
    let number = |at: usize| u64::from_le_bytes(rest[at..at + 8].try_into().unwrap_or_default());
    let (entries, serial_bytes, text_bytes) = (number(0), number(8), number(16));
    let crc = u32::from_le_bytes(rest[24..28].try_into().unwrap_or_default());
    if magic != MAGIC || version != VERSION.to_le_bytes() {
        return Err(invalid("not a SAN catalog of this version"));
    }
    if found_label != label {
        return Err(invalid("another label than the store recorded"));
    }
    // The lengths must add up to the file's, which also bounds what is allocated below.
    let expected = entries
        .checked_mul(8)
        .and_then(|n| n.checked_add(serial_bytes))
        .and_then(|n| n.checked_add(text_bytes))
        .and_then(|n| n.checked_add(HEADER as u64));
    if expected != Some(file.metadata()?.len()) {
        return Err(invalid("its length does not match its header"));
    }
    let entries = usize::try_from(entries).map_err(|_| invalid("too many entries"))?;
    let read_at = |buffer: &mut [u8], at: u64| file.read_exact_at(buffer, at);
    let mut computed = crc32fast::Hasher::new();
    let mut ends = Vec::with_capacity(2 * entries);
    let ends_bytes = 4 * 2 * entries as u64;
    // Chunks of CHUNK bytes split no offset.
    read_chunks(read_at, HEADER as u64, ends_bytes, |bytes| {
        computed.update(bytes);
        ends.extend(
            bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        Ok(())
    })?;
    let text_ends = Offsets(ends.split_off(entries));
    ends.shrink_to_fit();
    let serial_ends = Offsets(ends);
    for (ends, total) in [(&serial_ends, serial_bytes), (&text_ends, text_bytes)] {
        if !ends.0.windows(2).all(|w| w[0] <= w[1]) || ends.total() as u64 != total {
            return Err(invalid("its offsets are not in order"));
        }
    }
    let serials_at = HEADER as u64 + ends_bytes;
    read_chunks(read_at, serials_at, serial_bytes + text_bytes, |bytes| {
        computed.update(bytes);
        Ok(())
    })?;
    if computed.finalize() != crc {
        return Err(invalid("its checksum does not match"));
    }
    let serials = Region {
        file: file.try_clone()?,
        base: serials_at,
    };
    let mut samples = Strings::default();
    for i in (0..entries).step_by(Main::SAMPLE) {
        let mut serial = vec![0; serial_ends.end(i) - serial_ends.start(i)];
        serials.read_exact_at(&mut serial, serial_ends.start(i) as u64)?;
        let serial = String::from_utf8(serial).map_err(|_| invalid("a serial is not text"))?;
        if !samples.push(&serial) {
            return Err(invalid("too many serials"));
        }
    }
    samples.shrink();
    let files = (entries > 0).then(|| MainFiles {
        serials,
        text: Region {
            file,
            base: serials_at + serial_bytes,
        },
    });
    Ok(Main {
        serial_ends,
        text_ends,
        samples,
        files,
        saved: Some(*label),
    })
}

#[cfg(test)]
mod tests {
    use super::super::MainWriter;
    use super::*;

    fn segment(dir: &Path, n: usize) -> Main {
        let mut writer = MainWriter::create(dir, n).unwrap();
        for i in 0..n {
            writer
                .push(
                    &format!("{:08x}", 2 * i),
                    &format!("h{i}.test\nalt{i}.test\n"),
                )
                .unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn a_saved_segment_reads_back_with_its_label_only() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0, 1, 64, 65, 200] {
            let label = new_label();
            write(&segment(dir.path(), n), dir.path(), &label).unwrap();
            let main = read(dir.path(), &label).unwrap();
            assert_eq!(main.saved, Some(label));
            assert_eq!(main.len(), n);
            let mut seen = 0;
            main.for_each(|serial, text| {
                assert_eq!(serial, format!("{:08x}", 2 * seen));
                assert_eq!(text, format!("h{seen}.test\nalt{seen}.test\n"));
                seen += 1;
                true
            })
            .unwrap();
            assert_eq!(seen, n);
            for j in 0..2 * n + 1 {
                let probe = format!("{j:08x}");
                assert_eq!(main.contains(&probe).unwrap(), j % 2 == 0 && j / 2 < n);
            }
            let error = read(dir.path(), &new_label()).unwrap_err();
            assert!(error.to_string().contains("another label"), "{error}");
        }
        // Complete files only: the partial one was renamed.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(FILE_NAME))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let label = new_label();
        write(&segment(dir.path(), 100), dir.path(), &label).unwrap();
        let path = dir.path().join(FILE_NAME);
        let intact = std::fs::read(&path).unwrap();
        // A byte changed anywhere after the header (offsets, serials, text), the header's
        // lengths, the file cut short or grown.
        let mut damaged = Vec::new();
        for at in [HEADER, HEADER + 4 * 100 + 3, intact.len() - 1, HEADER - 10] {
            let mut bytes = intact.clone();
            bytes[at] ^= 0x20;
            damaged.push(bytes);
        }
        damaged.push(intact[..intact.len() - 1].to_vec());
        damaged.push([intact.as_slice(), b"x"].concat());
        damaged.push(intact[..HEADER - 1].to_vec());
        for bytes in damaged {
            std::fs::write(&path, &bytes).unwrap();
            assert!(read(dir.path(), &label).is_err());
        }
        std::fs::write(&path, &intact).unwrap();
        assert_eq!(read(dir.path(), &label).unwrap().len(), 100);
        std::fs::remove_file(&path).unwrap();
        assert!(read(dir.path(), &label).is_err());
    }
}
