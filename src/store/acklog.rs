//! The acknowledgement log: the file a webhook play is made durable in before its 200, so the
//! answer waits for one sequential append and one `fdatasync` per group instead of the
//! journal's whole redb transaction. The plays are journaled into redb right after (see
//! [`super::ingest`]); `meta["acklog.applied"]` says, in the same transactions, the last record
//! journaled, so a record is journaled exactly once however the daemon stops.
//!
//! Owns the file format. A record is `len: u32 | crc: u32 | seq: u64 | payload` (little endian;
//! the CRC32 covers seq and payload). Sequence numbers only grow; the file is read from the
//! start and a record counts only while the chain holds: a whole header, a payload that fits,
//! a matching CRC and `seq` one above the record before it. A torn append (power lost during
//! the write, never acknowledged) fails the CRC; records left behind from before a rewind have
//! smaller sequence numbers and end the chain. The file is rewound (written again from offset 0)
//! only when every record in it is journaled by a durable commit, so what a rewind leaves
//! behind is never needed again.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const HEADER: usize = 16;
/// No record is this large (a webhook body is bounded far below it); a header claiming more is
/// the end of the chain, not an allocation.
pub(super) const MAX_RECORD: usize = 1 << 20;
/// Rewind once everything is journaled and the file has grown past this.
pub(super) const REWIND_AT: u64 = 1 << 20;

/// The log file beside the store, `<store file>.acklog`.
pub(super) fn path_for(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push(".acklog");
    store.with_file_name(name)
}

/// One record read back: its sequence number and payload.
#[derive(Debug, PartialEq)]
pub(super) struct Read {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// The open log: where the next append goes and the sequence number it gets.
pub(super) struct LogFile {
    file: File,
    pos: u64,
    next_seq: u64,
    buf: Vec<u8>,
}

impl LogFile {
    /// Open (or create, mode 0600: it holds plays) the log and read every record in its chain.
    /// The next append goes after the last of them, numbered one above it.
    pub fn open(path: &Path) -> io::Result<(LogFile, Vec<Read>)> {
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(path)?;
        let (records, end) = scan(io::BufReader::new(&file));
        let next_seq = records.last().map_or(1, |r| r.seq + 1);
        let log = LogFile {
            file,
            pos: end as u64,
            next_seq,
            buf: Vec::new(),
        };
        Ok((log, records))
    }

    /// The sequence number the next record gets.
    #[cfg(test)]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Number the next records from above `seq` (the store may have journaled records of a log
    /// that was since lost or replaced: numbers are never reused).
    pub fn continue_after(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq + 1);
    }

    /// Bytes up to the end of the last record.
    pub fn len(&self) -> u64 {
        self.pos
    }

    /// Write the next records from offset 0. Only when every record in the file is journaled
    /// by a durable commit (see the module docs).
    pub fn rewind(&mut self) {
        self.pos = 0;
    }

    /// Append the payloads as the next records and make them durable; returns the first one's
    /// sequence number. On an error nothing counts: the next append writes over the same place
    /// with the same numbers.
    pub fn append<'a>(&mut self, payloads: impl Iterator<Item = &'a [u8]>) -> io::Result<u64> {
        let first = self.next_seq;
        let mut seq = first;
        self.buf.clear();
        for p in payloads {
            if p.len() > MAX_RECORD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "record larger than the log allows",
                ));
            }
            let mut crc = crc32fast::Hasher::new();
            crc.update(&seq.to_le_bytes());
            crc.update(p);
            self.buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(&crc.finalize().to_le_bytes());
            self.buf.extend_from_slice(&seq.to_le_bytes());
            self.buf.extend_from_slice(p);
            seq += 1;
        }
        self.file.write_all_at(&self.buf, self.pos)?;
        self.file.sync_data()?;
        self.pos += self.buf.len() as u64;
        self.next_seq = seq;
        // A burst's buffer is not kept for the quiet hours after it.
        if self.buf.capacity() > 256 * 1024 {
            self.buf = Vec::new();
        }
        Ok(first)
    }
}

/// The records of the chain that starts at offset 0, and the offset just after the last one.
/// Reads only as far as the chain goes (a file rewound after a burst is mostly stale bytes).
pub(super) fn scan(mut r: impl io::Read) -> (Vec<Read>, usize) {
    let mut out: Vec<Read> = Vec::new();
    let mut at = 0usize;
    let mut h = [0u8; HEADER];
    while r.read_exact(&mut h).is_ok() {
        let (len, rest) = h.split_at(4);
        let (crc, seq_bytes) = rest.split_at(4);
        let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(crc.try_into().unwrap_or_default());
        let seq = u64::from_le_bytes(seq_bytes.try_into().unwrap_or_default());
        if len == 0 || len > MAX_RECORD || out.last().is_some_and(|prev| prev.seq + 1 != seq) {
            break;
        }
        let mut payload = vec![0u8; len];
        if r.read_exact(&mut payload).is_err() {
            break;
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(seq_bytes);
        hasher.update(&payload);
        if hasher.finalize() != crc {
            break;
        }
        out.push(Read { seq, payload });
        at += HEADER + len;
    }
    (out, at)
}

/// The last record number in the log at `path` (None: no file, or no record in it).
pub(super) fn last_seq(path: &Path) -> io::Result<Option<u64>> {
    match File::open(path) {
        Ok(f) => Ok(scan(io::BufReader::new(f)).0.last().map(|r| r.seq)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn append(log: &mut LogFile, v: &[&str]) -> u64 {
        let p = payloads(v);
        log.append(p.iter().map(Vec::as_slice)).unwrap()
    }

    fn seqs(r: &[Read]) -> Vec<(u64, String)> {
        r.iter()
            .map(|r| (r.seq, String::from_utf8(r.payload.clone()).unwrap()))
            .collect()
    }

    #[test]
    fn appended_records_read_back_in_order_and_numbering_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb.acklog");
        let (mut log, r) = LogFile::open(&p).unwrap();
        assert!(r.is_empty());
        assert_eq!(append(&mut log, &["a", "b"]), 1);
        assert_eq!(append(&mut log, &["c"]), 3);
        drop(log);
        let (log, r) = LogFile::open(&p).unwrap();
        assert_eq!(
            seqs(&r),
            [(1, "a".into()), (2, "b".into()), (3, "c".into())]
        );
        assert_eq!(log.next_seq(), 4);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    /// A torn last append (cut anywhere, or its bytes garbled) ends the chain before it; what
    /// came before stays readable.
    #[test]
    fn a_torn_tail_ends_the_chain_and_nothing_before_it_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let (mut log, _) = LogFile::open(&p).unwrap();
        append(&mut log, &["first", "second"]);
        let keep = log.len() as usize;
        append(&mut log, &["third record, torn"]);
        let full = std::fs::read(&p).unwrap();
        for cut in keep..full.len() {
            let (r, end) = scan(&full[..cut]);
            assert_eq!(r.len(), 2, "cut at {cut}");
            assert_eq!(end, keep);
        }
        for flip in keep..full.len() {
            let mut b = full.clone();
            b[flip] ^= 0x40;
            let (r, _) = scan(&b[..]);
            assert_eq!(r.len(), 2, "byte {flip} garbled");
        }
        assert_eq!(scan(&full[..]).0.len(), 3);
    }

    /// After a rewind, the records left behind (smaller numbers) end the chain; the new ones
    /// are read, numbered on from the old.
    #[test]
    fn after_a_rewind_stale_records_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let (mut log, _) = LogFile::open(&p).unwrap();
        append(&mut log, &["one", "two", "three", "four"]);
        log.rewind();
        append(&mut log, &["five"]);
        let (log2, r) = LogFile::open(&p).unwrap();
        assert_eq!(seqs(&r), [(5, "five".into())]);
        assert_eq!(log2.next_seq(), 6);
        // Rewound and nothing durable written yet: only stale records, all read (the store
        // skips them, having journaled them).
        drop(log2);
        let (mut log, _) = LogFile::open(&p).unwrap();
        log.rewind();
        log.continue_after(100);
        assert_eq!(append(&mut log, &["x"]), 101);
    }

    #[test]
    fn oversized_or_zero_length_headers_end_the_chain_without_allocating() {
        let mut b = Vec::new();
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        b.extend_from_slice(&[0; 12]);
        assert_eq!(scan(&b[..]).0.len(), 0);
        assert_eq!(scan(&[0u8; 64][..]).0.len(), 0);
        assert_eq!(scan(&[0u8; 0][..]).1, 0);
    }
}
