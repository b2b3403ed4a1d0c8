//! A persistent cursor: the `local_seq` of the last message handed over (printed by `receive`,
//! acknowledged to the daemon), in a small file of the data directory.
//!
//! It is written only after the output it covers, and atomically (temp file, fsync, rename),
//! so a crash repeats messages at worst and never skips one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The cursor file of `hush receive`.
pub const RECEIVE_CURSOR: &str = "cli-receive.cursor";
/// The cursor file of `hush daemon` (acknowledged events).
pub const DAEMON_CURSOR: &str = "cli-daemon.cursor";

/// A cursor file and its current value.
#[derive(Debug)]
pub struct Cursor {
    path: PathBuf,
    value: u64,
}

impl Cursor {
    /// Loads the cursor `name` in `data_dir` (0 if the file does not exist yet).
    pub fn load(data_dir: &Path, name: &str) -> anyhow::Result<Cursor> {
        let path = data_dir.join(name);
        let value = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse()
                .with_context(|| format!("{} does not hold a number; delete it to start over", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Cursor { path, value })
    }

    /// The stored position.
    pub fn get(&self) -> u64 {
        self.value
    }

    /// Moves the cursor forward to `value` (never back) and makes it durable.
    pub fn advance(&mut self, value: u64) -> anyhow::Result<()> {
        if value <= self.value {
            return Ok(());
        }
        let tmp = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{value}")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent().and_then(|d| std::fs::File::open(d).ok()) {
                let _ = dir.sync_all();
            }
            Ok(())
        };
        write().with_context(|| format!("cannot write {}", self.path.display()))?;
        self.value = value;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_a_reload_and_never_moves_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Cursor::load(dir.path(), "x.cursor").expect("load");
        assert_eq!(c.get(), 0);
        c.advance(7).expect("advance");
        c.advance(3).expect("advance");
        assert_eq!(Cursor::load(dir.path(), "x.cursor").expect("reload").get(), 7);
    }

    #[test]
    fn a_damaged_cursor_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("x.cursor"), "garbage").expect("write");
        assert!(Cursor::load(dir.path(), "x.cursor").is_err());
    }
}
