//! The on-disk spool: records still unsent when the shipper stops are written to a
//! directory as JSON lines, and sent first by the next shipper on the same directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Error;

/// A directory of `*.jsonl` files, oldest first by name, at most `max_bytes` in all.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
}

impl Spool {
    /// The spool in `dir` (created if missing).
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Spool {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
        })
    }

    /// Its files, oldest first.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    fn used(&self) -> u64 {
        self.files()
            .iter()
            .filter_map(|path| std::fs::metadata(path).ok())
            .map(|meta| meta.len())
            .sum()
    }

    /// Writes `lines` (JSON lines, each ending in a newline) to a new file, keeping the
    /// newest that fit in the bound. Returns how many lines were written and how many not.
    pub(crate) fn write(&self, lines: &[u8]) -> (usize, usize) {
        let total = count_lines(lines);
        if total == 0 {
            return (0, 0);
        }
        let room =
            usize::try_from(self.max_bytes.saturating_sub(self.used())).unwrap_or(usize::MAX);
        // The newest lines that fit: cut the oldest at a line boundary.
        let mut start = lines.len().saturating_sub(room);
        if start > 0 {
            start = lines[start - 1..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(lines.len(), |at| start + at);
        }
        let kept = &lines[start..];
        let written = count_lines(kept);
        if written == 0 {
            return (0, total);
        }
        let path = self.dir.join(new_name());
        let result = std::fs::File::create_new(&path).and_then(|mut file| {
            file.write_all(kept)?;
            file.sync_all()
        });
        match result {
            Ok(()) => (written, total - written),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot write the log spool");
                let _ = std::fs::remove_file(&path);
                (0, total)
            }
        }
    }

    /// Replaces a file's contents by `rest` (what is still unsent), or removes it when empty.
    pub(crate) fn keep_rest(path: &Path, rest: &[u8]) {
        let result = if rest.is_empty() {
            std::fs::remove_file(path)
        } else {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, rest).and_then(|()| std::fs::rename(&tmp, path))
        };
        if let Err(err) = result {
            tracing::warn!(path = %path.display(), error = %err, "cannot update the log spool");
        }
    }
}

/// A name that sorts after every earlier one of this process and of earlier processes.
fn new_name() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{nanos:024}-{:08}-{}.jsonl",
        SEQ.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

/// Lines in `bytes` (each ending in a newline).
pub(crate) fn count_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// The first lines of `bytes` up to `max` bytes (at least one line): their count and length.
pub(crate) fn take_lines(bytes: &[u8], max: usize) -> (usize, usize) {
    let mut end = 0;
    let mut lines = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            if lines > 0 && i + 1 > max {
                break;
            }
            end = i + 1;
            lines += 1;
        }
    }
    (lines, end)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_lines_that_fit_are_kept_and_files_sort_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 12).unwrap();
        assert_eq!(spool.write(b"aaa\nbbb\n"), (2, 0));
        assert_eq!(spool.write(b"ccc\nddd\n"), (1, 1));
        assert_eq!(spool.write(b"eee\n"), (0, 1));
        let files = spool.files();
        assert_eq!(files.len(), 2);
        assert_eq!(std::fs::read(&files[0]).unwrap(), b"aaa\nbbb\n");
        assert_eq!(std::fs::read(&files[1]).unwrap(), b"ddd\n");
        Spool::keep_rest(&files[0], b"bbb\n");
        assert_eq!(std::fs::read(&files[0]).unwrap(), b"bbb\n");
        Spool::keep_rest(&files[0], b"");
        assert_eq!(spool.files().len(), 1);
    }

    #[test]
    fn lines_are_taken_up_to_a_size_but_at_least_one() {
        assert_eq!(take_lines(b"aa\nbb\ncc\n", 6), (2, 6));
        assert_eq!(take_lines(b"aaaaaa\nb\n", 3), (1, 7));
        assert_eq!(take_lines(b"", 3), (0, 0));
    }
}
