//! The audit file, rotated by size: before a line that would take the live file past
//! `max_bytes`, `path.<keep-1>` … `path.1` move up one, the live file becomes `path.1`, the
//! oldest beyond `keep` is deleted, and a new live file starts. The chain is the writer's,
//! not the file's, so the first line of the new file carries the hash of the last line of
//! the old one, and `audit verify path.<n> … path.1 path` checks them as one chain.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::chain::Chain;
use super::config::FileOutput;

/// How much of an existing file's end is read to find its last line at start-up.
const TAIL_BYTES: u64 = 64 * 1024;

/// The live audit file.
pub(super) struct Rotating {
    settings: FileOutput,
    file: BufWriter<File>,
    written: u64,
}

impl Rotating {
    /// Opens (or creates) the live file for appending, and the chain that continues after
    /// its last line, or after the newest rotated file's (a fresh chain when neither has
    /// one).
    pub(super) fn open(settings: &FileOutput) -> io::Result<(Self, Chain)> {
        let chain = match last_line(&settings.path)? {
            Some(line) => Chain::after(&line),
            None => last_line(&rotated(&settings.path, 1))?.and_then(|l| Chain::after(&l)),
        }
        .unwrap_or_default();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&settings.path)?;
        let written = file.metadata()?.len();
        Ok((
            Self {
                settings: settings.clone(),
                file: BufWriter::new(file),
                written,
            },
            chain,
        ))
    }

    /// Appends `line` and a newline, rotating first when the file would outgrow
    /// `max_bytes`.
    pub(super) fn write(&mut self, line: &str) -> io::Result<()> {
        let size = line.len() as u64 + 1;
        if self.written > 0 && self.written + size > self.settings.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.written += size;
        Ok(())
    }

    /// Writes out what is buffered.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let path = &self.settings.path;
        let keep = self.settings.keep;
        if keep == 0 {
            std::fs::remove_file(path)?;
        } else {
            remove_if_present(&rotated(path, keep))?;
            for n in (1..keep).rev() {
                rename_if_present(&rotated(path, n), &rotated(path, n + 1))?;
            }
            std::fs::rename(path, rotated(path, 1))?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        self.file = BufWriter::new(file);
        self.written = 0;
        Ok(())
    }
}

/// `path.<n>`: the n-th newest rotated file.
pub(super) fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn rename_if_present(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The last complete line of `path`, if it exists and has one.
fn last_line(path: &Path) -> io::Result<Option<String>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
    let mut tail = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut tail)?;
    let text = String::from_utf8_lossy(&tail);
    Ok(text
        .lines()
        .rev()
        .find(|line| !line.is_empty())
        .map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::audit::event::Event;

    #[test]
    fn rotation_keeps_the_newest_files_and_the_chain_runs_on() {
        let dir = tempfile::tempdir().unwrap();
        let settings = FileOutput {
            path: dir.path().join("audit.log"),
            max_bytes: 300,
            keep: 2,
        };
        let (mut file, mut chain) = Rotating::open(&settings).unwrap();
        let event = Event::Eviction {
            merchant: "m".into(),
            evicted: false,
        };
        for _ in 0..12 {
            file.write(&chain.seal(&event, 0, SystemTime::UNIX_EPOCH))
                .unwrap();
        }
        file.flush().unwrap();
        assert!(rotated(&settings.path, 2).exists());
        assert!(!rotated(&settings.path, 3).exists());
        drop(file);
        let (_, reopened) = Rotating::open(&settings).unwrap();
        assert_eq!(reopened, chain);
    }
}
