//! The per-shard write-ahead log.
//!
//! Every write is appended here and fsynced before it is acknowledged. A
//! record is `[len: u32 LE][crc32: u32 LE][payload]`, the payload being
//! `[seq_no: u64][version: u64][kind: u8][append: u64][id_len: u32][id][source_len: u32][source]`
//! (little-endian; `append` is the file offset where the append that wrote
//! the record began; the source only for index operations). Opening the
//! log replays every complete record; a torn tail (a crash in the middle of
//! an append) is detected by length or checksum, logged, and cut off. Only
//! the newest file holding records takes appends, and only its last append
//! can be torn: undecodable bytes in an older file, or in front of a record
//! whose append began after them, are damage to acknowledged writes and
//! fail the open instead.
//! A tantivy commit records the next sequence number it does not hold. It
//! rolls the log where it takes its snapshot (the current file becomes a
//! numbered generation, and a new current file takes the writes made while
//! the commit runs) and deletes the rolled generations once it is durable.
//! Opening replays the generations a crash left behind, then the current
//! file; the shard skips the records its last commit holds.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

const HEADER: usize = 8;
/// The largest encoding buffer an open translog keeps between appends.
const KEPT_BUFFER: usize = 4 << 20;
/// Upper bound of one record, to reject garbage lengths quickly.
const MAX_RECORD: usize = 1 << 30;

/// One logged write.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Op {
    /// Shard-local sequence number.
    pub seq_no: u64,
    /// Document id.
    pub id: String,
    /// Document version after this write.
    pub version: u64,
    /// What happened.
    pub kind: OpKind,
}

/// The kind of a logged write.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum OpKind {
    /// The document was indexed with this `_source`.
    Index {
        /// The original JSON source text.
        #[serde(with = "shared_text")]
        source: Arc<str>,
    },
    /// The document was deleted.
    Delete,
}

/// The file new records go to, in the shard's directory.
pub const CURRENT_FILE: &str = "translog.log";

/// An open translog: the file new records are appended to, and the
/// generations rolled off it that wait for the commit that holds their
/// writes.
#[derive(Debug)]
pub struct Translog {
    file: File,
    /// Where `file` is: the current file, unless a roll failed halfway.
    path: PathBuf,
    dir: PathBuf,
    len: u64,
    /// Rolled generations, oldest first.
    rolled: Vec<PathBuf>,
    /// Encoding buffer of [`Translog::append`].
    buf: Vec<u8>,
    next_generation: u64,
    /// A failed append could not be cut back: its bytes may sit before
    /// later appends, so the log takes none until it is reopened.
    broken: bool,
}

/// What opening a translog found.
#[derive(Debug)]
pub struct Replay {
    /// Complete records, in order.
    pub ops: Vec<Op>,
    /// Bytes of a torn or corrupt tail that were dropped.
    pub dropped_bytes: u64,
}

/// The generation number of a rolled file's name (`translog-N.log`).
fn generation(name: &str) -> Option<u64> {
    name.strip_prefix("translog-")?.strip_suffix(".log")?.parse().ok()
}

impl Translog {
    /// Opens (or creates) the translog in `dir` and reads back its records:
    /// those of the rolled generations a crash left behind, oldest first,
    /// then those of the current file.
    pub fn open(dir: &Path) -> Result<(Translog, Replay)> {
        let mut rolled: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                Some((generation(path.file_name()?.to_str()?)?, path))
            })
            .collect();
        rolled.sort();
        let next_generation = rolled.last().map_or(1, |(n, _)| n + 1);
        let mut replay = Replay {
            ops: Vec::new(),
            dropped_bytes: 0,
        };
        let path = dir.join(CURRENT_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        File::open(dir)?.sync_all()?;
        // Appends go to the newest file holding records (the current one,
        // or the last generation when a roll could not create the current
        // file), so only its tail can be a torn append.
        let mut sizes = Vec::with_capacity(rolled.len() + 1);
        for p in rolled.iter().map(|(_, p)| p).chain([&path]) {
            sizes.push(std::fs::metadata(p)?.len());
        }
        let last_written = sizes.iter().rposition(|&size| size > 0).unwrap_or(0);
        for (n, (_, rolled_path)) in rolled.iter().enumerate() {
            let mut rolled_file = OpenOptions::new().read(true).write(true).open(rolled_path)?;
            read_records(rolled_path, &mut rolled_file, n == last_written, &mut replay)?;
        }
        let len = read_records(&path, &mut file, rolled.len() == last_written, &mut replay)?;
        let log = Translog {
            file,
            path,
            dir: dir.to_path_buf(),
            len,
            rolled: rolled.into_iter().map(|(_, path)| path).collect(),
            buf: Vec::new(),
            next_generation,
            broken: false,
        };
        Ok((log, replay))
    }

    /// Appends `ops` and fsyncs. On failure the log is cut back to where it was.
    pub fn append(&mut self, ops: &[Op]) -> Result<()> {
        // The buffer is kept from one append to the next, so that a bulk's
        // records are not encoded into freshly mapped memory each time.
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let result = self.append_with(ops, &mut buf);
        if buf.capacity() <= KEPT_BUFFER {
            self.buf = buf;
        }
        result
    }

    fn append_with(&mut self, ops: &[Op], buf: &mut Vec<u8>) -> Result<()> {
        self.check_usable()?;
        buf.reserve(ops.iter().map(encoded_len).sum());
        for op in ops {
            encode(op, self.len, buf)?;
        }
        let result = self.file.write_all(buf).and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(err) => {
                tracing::error!(path = %self.path.display(), %err, "translog append failed; rolling back");
                let cut = self.file.set_len(self.len);
                if let Err(cut_err) = cut.and_then(|()| self.file.seek(SeekFrom::Start(self.len))) {
                    tracing::error!(path = %self.path.display(), %cut_err, "translog cannot be rolled back; it takes no more writes until the shard is reopened");
                    self.broken = true;
                }
                Err(err.into())
            }
        }
    }

    /// Fails once an append could not be cut back (see `broken`).
    fn check_usable(&self) -> Result<()> {
        if self.broken {
            return Err(Error::Internal(format!(
                "translog {} holds a failed append it could not cut back; reopen the shard",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Starts a new generation: records appended from now on go to a new
    /// current file, and those appended so far wait in the rolled
    /// generations until [`Translog::drop_rolled`]. A commit rolls the log
    /// where it takes its snapshot, so that writes can go on while it runs.
    pub fn roll(&mut self) -> Result<()> {
        self.check_usable()?;
        if self.len == 0 {
            return Ok(());
        }
        let rolled = self.dir.join(format!("translog-{}.log", self.next_generation));
        self.next_generation += 1;
        std::fs::rename(&self.path, &rolled)?;
        let current = self.dir.join(CURRENT_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&current)
            .and_then(|file| File::open(&self.dir)?.sync_all().map(|()| file));
        match file {
            Ok(file) => {
                self.file = file;
                self.path = current;
                self.len = 0;
                self.rolled.push(rolled);
                Ok(())
            }
            Err(err) => {
                // Appends go on to the renamed file, which no commit deletes
                // (it is not among the rolled ones) and which a replay reads
                // before the current file.
                self.path = rolled;
                Err(err.into())
            }
        }
    }

    /// Deletes the rolled generations, once a commit holds their records.
    /// A file that cannot be deleted stays for the next try, and is
    /// harmless meanwhile: a replay skips the records a commit holds.
    pub fn drop_rolled(&mut self) {
        if self.rolled.is_empty() {
            return;
        }
        self.rolled.retain(|path| match std::fs::remove_file(path) {
            Ok(()) => false,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "cannot delete a committed translog generation");
                true
            }
        });
        if let Err(err) = File::open(&self.dir).and_then(|dir| dir.sync_all()) {
            tracing::warn!(dir = %self.dir.display(), %err, "cannot sync the translog directory");
        }
    }

    /// Calls `f` with every record the log holds, those of the rolled
    /// generations first (each write the shard has not committed is among
    /// them), reading one record at a time. A record that does not decode
    /// is an error, not the end: no append is in flight while the log is
    /// borrowed, so the records after it would be lost.
    pub fn for_each(&self, mut f: impl FnMut(Op) -> Result<()>) -> Result<()> {
        let mut record = Vec::new();
        for path in self.rolled.iter().chain([&self.path]) {
            let mut file = BufReader::new(File::open(path)?);
            let mut at = 0;
            let damaged = |e: std::io::Error, at: usize| match e.kind() {
                ErrorKind::UnexpectedEof | ErrorKind::InvalidData => corrupt_at(path, at),
                _ => e.into(),
            };
            while let Some(len) = read_record(&mut file, &mut record).map_err(|e| damaged(e, at))? {
                let (op, _, _) = decode(&record).ok_or_else(|| corrupt_at(path, at))?;
                at += len;
                f(op)?;
            }
        }
        Ok(())
    }

    /// Current size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Reads the complete records of one file into `replay` and leaves the
/// file positioned at their end, which it returns. Bytes past them are cut
/// off when the file `may_end_torn` (a torn append); anywhere else they are
/// damage to acknowledged writes, whose later records cannot be found, and
/// fail the read without cutting anything.
fn read_records(path: &Path, file: &mut File, may_end_torn: bool, replay: &mut Replay) -> Result<u64> {
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    let before = replay.ops.len();
    let end = decode_records(&data, &mut replay.ops);
    let dropped_bytes = (data.len() - end) as u64;
    if dropped_bytes > 0 {
        let last_seq = replay.ops.last().map(|op| op.seq_no);
        if !may_end_torn || appended_after(&data, end, last_seq) {
            return Err(corrupt_at(path, end));
        }
        tracing::warn!(
            path = %path.display(),
            dropped_bytes,
            kept_records = replay.ops.len() - before,
            "translog has a torn or corrupt tail; dropping it"
        );
        file.set_len(end as u64)?;
        file.sync_all()?;
        replay.dropped_bytes += dropped_bytes;
    }
    file.seek(SeekFrom::Start(end as u64))?;
    Ok(end as u64)
}

/// Whether an append began past `end`, where the records of `data` stop
/// decoding: a record found past it that says so, and that comes after the
/// last record decoded (`last_seq`). The records of a torn append all say
/// where it began, which is at or before `end` (the records in front of
/// `end` decoded); one whose append began past `end` was written by a later
/// append, so the bytes at `end` were synced and acknowledged. Only places
/// whose kind and append offset could be such a record's are decoded (a
/// record's append began at or before the record), so that the scan reads
/// each byte about once.
fn appended_after(data: &[u8], end: usize, last_seq: Option<u64>) -> bool {
    const KIND_AT: usize = HEADER + 16;
    (end + 1..data.len()).any(|at| {
        let Some(fixed) = data.get(at + KIND_AT..at + KIND_AT + 9) else {
            return false;
        };
        let append = u64::from_le_bytes(fixed[1..].try_into().expect("8 bytes"));
        let placed = matches!(fixed[0], KIND_INDEX | KIND_DELETE) && append > end as u64 && append <= at as u64;
        placed
            && matches!(decode(&data[at..]), Some((op, _, Some(_))) if last_seq.is_none_or(|last| op.seq_no > last))
    })
}

/// Reads the next record of `file` into `record` and returns its length;
/// `None` at the end of the file. A record cut short, or one longer than
/// any record is, is an error.
fn read_record(file: &mut impl Read, record: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    record.resize(HEADER, 0);
    let mut got = 0;
    while got < HEADER {
        match file.read(&mut record[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let len = u32::from_le_bytes(record[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_RECORD {
        return Err(ErrorKind::InvalidData.into());
    }
    record.resize(HEADER + len, 0);
    file.read_exact(&mut record[HEADER..])?;
    Ok(Some(HEADER + len))
}

/// The error of a record that does not decode before the end of its file.
fn corrupt_at(path: &Path, end: usize) -> Error {
    Error::Corrupt(format!(
        "translog {} is corrupt at byte {end}, before acknowledged writes logged after it; nothing was cut",
        path.display()
    ))
}

/// Decodes the complete records at the start of `data` into `ops`;
/// returns where they end.
fn decode_records(data: &[u8], ops: &mut Vec<Op>) -> usize {
    let mut pos = 0;
    while let Some((op, used, _)) = decode(&data[pos..]) {
        ops.push(op);
        pos += used;
    }
    pos
}

/// The bytes [`encode`] writes for `op`.
fn encoded_len(op: &Op) -> usize {
    let body = match &op.kind {
        OpKind::Index { source } => 4 + source.len(),
        OpKind::Delete => 0,
    };
    HEADER + 8 + 8 + 1 + 8 + 4 + op.id.len() + body
}

/// Encodes `op` as a record of the append that began at file offset `append`.
fn encode(op: &Op, append: u64, buf: &mut Vec<u8>) -> Result<()> {
    let too_large = || Error::illegal_argument("document too large for the translog");
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER]);
    buf.extend_from_slice(&op.seq_no.to_le_bytes());
    buf.extend_from_slice(&op.version.to_le_bytes());
    let id_len = u32::try_from(op.id.len()).map_err(|_| too_large())?;
    match &op.kind {
        OpKind::Index { source } => {
            buf.push(KIND_INDEX);
            buf.extend_from_slice(&append.to_le_bytes());
            buf.extend_from_slice(&id_len.to_le_bytes());
            buf.extend_from_slice(op.id.as_bytes());
            let len = u32::try_from(source.len()).map_err(|_| too_large())?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(source.as_bytes());
        }
        OpKind::Delete => {
            buf.push(KIND_DELETE);
            buf.extend_from_slice(&append.to_le_bytes());
            buf.extend_from_slice(&id_len.to_le_bytes());
            buf.extend_from_slice(op.id.as_bytes());
        }
    }
    let payload_len = buf.len() - start - HEADER;
    if payload_len > MAX_RECORD {
        buf.truncate(start);
        return Err(too_large());
    }
    let crc = crc32fast::hash(&buf[start + HEADER..]);
    buf[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Record kinds. Those of earlier builds, without the append's offset, are
/// still read.
const KIND_INDEX: u8 = 2;
const KIND_DELETE: u8 = 3;
const KIND_INDEX_UNPLACED: u8 = 0;
const KIND_DELETE_UNPLACED: u8 = 1;

/// The record at the start of `data`: the write, the bytes it takes, and
/// where its append began (unknown for the records of earlier builds).
fn decode(data: &[u8]) -> Option<(Op, usize, Option<u64>)> {
    let header = data.get(..HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = data.get(HEADER..HEADER + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let mut r = Reader(payload);
    let seq_no = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let version = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let kind = r.take(1)?[0];
    let append = match kind {
        KIND_INDEX | KIND_DELETE => Some(u64::from_le_bytes(r.take(8)?.try_into().ok()?)),
        _ => None,
    };
    let id = r.string()?;
    let kind = match kind {
        KIND_INDEX | KIND_INDEX_UNPLACED => OpKind::Index {
            source: Arc::from(r.string()?),
        },
        KIND_DELETE | KIND_DELETE_UNPLACED => OpKind::Delete,
        _ => return None,
    };
    if !r.0.is_empty() {
        return None;
    }
    Some((
        Op {
            seq_no,
            id,
            version,
            kind,
        },
        HEADER + len,
        append,
    ))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn string(&mut self) -> Option<String> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

/// Serde of a shared text (`Arc<str>`) as a string.
pub(crate) mod shared_text {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(text: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(d).map(Arc::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(seq_no: u64) -> Op {
        Op {
            seq_no,
            id: format!("doc-{seq_no}"),
            version: 1,
            kind: OpKind::Index {
                source: format!("{{\"n\":{seq_no}}}").into(),
            },
        }
    }

    #[test]
    fn encoded_len_is_what_encode_writes() -> anyhow::Result<()> {
        let delete = Op {
            seq_no: 9,
            id: "gone".into(),
            version: 4,
            kind: OpKind::Delete,
        };
        for op in [op(7), delete] {
            let mut buf = Vec::new();
            encode(&op, 0, &mut buf)?;
            assert_eq!(buf.len(), encoded_len(&op));
        }
        Ok(())
    }

    #[test]
    fn replays_what_was_appended() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (mut log, replay) = Translog::open(dir.path())?;
        assert!(replay.ops.is_empty());
        log.append(&[op(0), op(1)])?;
        let delete = Op {
            seq_no: 3,
            id: "doc-0".into(),
            version: 2,
            kind: OpKind::Delete,
        };
        log.append(&[op(2), delete.clone()])?;
        drop(log);
        let (_, replay) = Translog::open(dir.path())?;
        assert_eq!(replay.ops, vec![op(0), op(1), op(2), delete]);
        assert_eq!(replay.dropped_bytes, 0);
        Ok(())
    }

    #[test]
    fn torn_tail_is_dropped_and_log_stays_usable() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(CURRENT_FILE);
        let (mut log, _) = Translog::open(dir.path())?;
        log.append(&[op(0), op(1)])?;
        let full = log.len();
        drop(log);
        // Cut the last record in half, as a crash mid-append would.
        let f = OpenOptions::new().write(true).open(&path)?;
        f.set_len(full - 5)?;
        drop(f);
        let (mut log, replay) = Translog::open(dir.path())?;
        assert_eq!(replay.ops, vec![op(0)]);
        assert!(replay.dropped_bytes > 0);
        log.append(&[op(2)])?;
        drop(log);
        let (_, replay) = Translog::open(dir.path())?;
        assert_eq!(replay.ops, vec![op(0), op(2)]);
        Ok(())
    }

    #[test]
    fn corrupt_checksum_is_detected() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(CURRENT_FILE);
        let (mut log, _) = Translog::open(dir.path())?;
        log.append(&[op(0), op(1)])?;
        drop(log);
        let len = std::fs::metadata(&path)?.len();
        flip(&path, usize::try_from(len)? - 2)?;
        let (_, replay) = Translog::open(dir.path())?;
        assert_eq!(replay.ops, vec![op(0)]);
        Ok(())
    }

    /// Damages the byte at `at` of the file; returns the file's new bytes.
    fn flip(path: &Path, at: usize) -> anyhow::Result<Vec<u8>> {
        let mut data = std::fs::read(path)?;
        data[at] ^= 0xff;
        std::fs::write(path, &data)?;
        Ok(data)
    }

    /// Checks that opening the log of `dir` fails on damage at byte 0.
    fn refused_at_0(dir: &Path) {
        let err = Translog::open(dir)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("is corrupt at byte 0"), "{err}");
    }

    /// The one generation of `dir`.
    fn generation_file(dir: &Path) -> anyhow::Result<PathBuf> {
        let mut found = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .filter(|p| {
                p.as_ref()
                    .is_ok_and(|p| p.file_name() != Some(CURRENT_FILE.as_ref()))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        assert_eq!(found.len(), 1);
        Ok(found.remove(0))
    }

    /// A closed log whose generation holds `op(0)` and `op(1)` and whose
    /// current file holds `current`; returns the generation's path too.
    fn rolled_log(current: &[Op]) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
        let dir = tempfile::tempdir()?;
        let (mut log, _) = Translog::open(dir.path())?;
        log.append(&[op(0), op(1)])?;
        log.roll()?;
        log.append(current)?;
        drop(log);
        let rolled = generation_file(dir.path())?;
        Ok((dir, rolled))
    }

    /// A damaged record in a generation older than the newest file holding
    /// records is not a torn append: the open fails and changes no file.
    #[test]
    fn damage_before_later_records_fails_the_open() -> anyhow::Result<()> {
        let (dir, rolled) = rolled_log(&[op(2)])?;
        let data = flip(&rolled, HEADER + 2)?;
        let current = std::fs::read(dir.path().join(CURRENT_FILE))?;
        refused_at_0(dir.path());
        assert_eq!(std::fs::read(&rolled)?, data);
        assert_eq!(std::fs::read(dir.path().join(CURRENT_FILE))?, current);
        Ok(())
    }

    /// Damage in front of a later append's records is damage to synced,
    /// acknowledged writes even in the newest file: the open fails and
    /// changes nothing.
    #[test]
    fn damage_before_a_later_append_fails_the_open() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(CURRENT_FILE);
        let (mut log, _) = Translog::open(dir.path())?;
        log.append(&[op(0), op(1)])?;
        log.append(&[op(2)])?;
        drop(log);
        let data = flip(&path, HEADER + 2)?;
        refused_at_0(dir.path());
        assert_eq!(std::fs::read(&path)?, data);
        Ok(())
    }

    /// A crash may leave the later records of its last append on disk but
    /// not an earlier one: that append was never acknowledged, and is cut
    /// whole.
    #[test]
    fn a_torn_append_is_cut_whole() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(CURRENT_FILE);
        let (mut log, _) = Translog::open(dir.path())?;
        log.append(&[op(0)])?;
        let first = usize::try_from(log.len())?;
        log.append(&[op(1), op(2)])?;
        drop(log);
        flip(&path, first + HEADER + 2)?;
        let (_, replay) = Translog::open(dir.path())?;
        assert_eq!(replay.ops, vec![op(0)]);
        assert_eq!(std::fs::metadata(&path)?.len(), first as u64);
        Ok(())
    }

    /// Records of earlier builds, which do not say where their append
    /// began, are still replayed.
    #[test]
    fn records_of_earlier_builds_are_read() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut data = Vec::new();
        for (seq_no, kind, source) in [
            (0u64, KIND_INDEX_UNPLACED, Some("{\"n\":0}")),
            (1, KIND_DELETE_UNPLACED, None),
        ] {
            let mut payload = Vec::new();
            payload.extend_from_slice(&seq_no.to_le_bytes());
            payload.extend_from_slice(&1u64.to_le_bytes());
            payload.push(kind);
            payload.extend_from_slice(&5u32.to_le_bytes());
            payload.extend_from_slice(b"doc-0");
            if let Some(source) = source {
                payload.extend_from_slice(&u32::try_from(source.len())?.to_le_bytes());
                payload.extend_from_slice(source.as_bytes());
            }
            data.extend_from_slice(&u32::try_from(payload.len())?.to_le_bytes());
            data.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            data.extend_from_slice(&payload);
        }
        std::fs::write(dir.path().join(CURRENT_FILE), &data)?;
        let (_, replay) = Translog::open(dir.path())?;
        let delete = Op {
            seq_no: 1,
            id: "doc-0".into(),
            version: 1,
            kind: OpKind::Delete,
        };
        assert_eq!(replay.ops, vec![op(0), delete]);
        Ok(())
    }

    /// The records an open log holds.
    fn held(log: &Translog) -> Result<Vec<Op>> {
        let mut ops = Vec::new();
        log.for_each(|op| {
            ops.push(op);
            Ok(())
        })?;
        Ok(ops)
    }

    /// A record cut short is damage to what an open log holds, not its end.
    #[test]
    fn a_record_cut_short_fails_a_read() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (mut log, _) = Translog::open(dir.path())?;
        log.append(&[op(0), op(1)])?;
        assert_eq!(held(&log)?, vec![op(0), op(1)]);
        let current = dir.path().join(CURRENT_FILE);
        let len = std::fs::metadata(&current)?.len();
        OpenOptions::new().write(true).open(&current)?.set_len(len - 1)?;
        let err = held(&log).err().map(|e| e.to_string()).unwrap_or_default();
        let second = encoded_len(&op(0));
        assert!(err.contains(&format!("is corrupt at byte {second},")), "{err}");
        Ok(())
    }

    /// When the current file is empty, the last generation may have taken
    /// the last append (a roll that could not create the current file), so
    /// its torn tail is cut as the current file's would be.
    #[test]
    fn the_newest_generation_may_end_torn() -> anyhow::Result<()> {
        let (dir, rolled) = rolled_log(&[])?;
        let len = std::fs::metadata(&rolled)?.len();
        OpenOptions::new().write(true).open(&rolled)?.set_len(len - 5)?;
        let (_, replay) = Translog::open(dir.path())?;
        assert_eq!(replay.ops, vec![op(0)]);
        assert!(replay.dropped_bytes > 0);
        Ok(())
    }

    /// Writes made while a commit runs survive it; a crash before the
    /// commit deletes the rolled generation replays both, in order.
    #[test]
    fn rolled_generations_wait_for_the_commit() -> anyhow::Result<()> {
        let (dir, _) = rolled_log(&[op(2)])?;
        let (mut log, replay) = Translog::open(dir.path())?;
        assert_eq!(replay.ops, vec![op(0), op(1), op(2)]);
        log.append(&[op(3)])?;
        log.roll()?;
        log.append(&[op(4)])?;
        // What the open log holds: the rolled generations, then the current file.
        assert_eq!(held(&log)?, vec![op(0), op(1), op(2), op(3), op(4)]);
        log.drop_rolled();
        assert_eq!(held(&log)?, vec![op(4)]);
        drop(log);
        let (mut log, replay) = Translog::open(dir.path())?;
        assert_eq!(replay.ops, vec![op(4)]);
        // A roll with nothing appended since the last one starts no generation.
        log.roll()?;
        log.roll()?;
        let generations = std::fs::read_dir(dir.path())?
            .filter(|e| e.as_ref().is_ok_and(|e| e.file_name() != CURRENT_FILE))
            .count();
        assert_eq!(generations, 1);
        log.append(&[op(5)])?;
        log.drop_rolled();
        drop(log);
        let (_, replay) = Translog::open(dir.path())?;
        assert_eq!(replay.ops, vec![op(5)]);
        Ok(())
    }
}
