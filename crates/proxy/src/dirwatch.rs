//! Change notification for a manifest directory: Linux inotify on the
//! directory (the `inotify` crate), read as its event stream on tokio's
//! reactor. Only the fact that something changed is reported;
//! [`crate::manifest::ManifestDir::refresh`] finds what.
//!
//! Watched: files closed after writing, created, deleted, renamed in or out
//! (editors and `kubectl`-style writers rename a temporary file over the
//! old one; a mounted ConfigMap swaps its `..data` link), and attribute
//! changes (`touch`). Plain `IN_MODIFY` is not watched, so a file is not
//! re-read halfway through being written.

use futures::{FutureExt, StreamExt};
use inotify::{EventStream, Inotify, WatchMask};
use std::io;
use std::path::Path;

/// An inotify watch on one directory.
pub struct DirWatch {
    events: EventStream<[u8; 4096]>,
}

const MASK: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

impl DirWatch {
    /// Watches `dir`. Must be called within a tokio runtime.
    pub fn new(dir: &Path) -> io::Result<DirWatch> {
        // Non-blocking and close-on-exec.
        let inotify = Inotify::init()?;
        inotify.watches().add(dir, MASK)?;
        let events = inotify.into_event_stream([0u8; 4096])?;
        Ok(DirWatch { events })
    }

    /// Waits until at least one change happened, then consumes every event
    /// already queued (a burst is one wake-up). Cancel-safe: an event read
    /// but not yet consumed stays in the stream.
    pub async fn changed(&mut self) -> io::Result<()> {
        let mut got = false;
        loop {
            let next = if got {
                match self.events.next().now_or_never() {
                    Some(next) => next,
                    // Nothing more queued.
                    None => return Ok(()),
                }
            } else {
                self.events.next().await
            };
            match next {
                Some(Ok(_)) => got = true,
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Some(Err(e)) => return Err(e),
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_file_written_in_the_directory_wakes_the_watch() {
        let dir = std::env::temp_dir().join(format!("kipvs-dirwatch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = DirWatch::new(&dir).unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(50), w.changed()).await;
        assert!(quiet.is_err(), "no change yet");
        std::fs::write(dir.join("a.yaml"), "kind: List\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("woken by the write")
            .unwrap();
        // A burst (create, close-write, rename over, delete) is one wake-up.
        std::fs::write(dir.join("b.tmp"), "kind: List\n").unwrap();
        std::fs::rename(dir.join("b.tmp"), dir.join("a.yaml")).unwrap();
        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("woken by the burst")
            .unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(50), w.changed()).await;
        assert!(quiet.is_err(), "the burst was consumed at once");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_missing_directory_or_a_nul_in_the_path_is_an_error() {
        let missing =
            std::env::temp_dir().join(format!("kipvs-dirwatch-none-{}", std::process::id()));
        let e = DirWatch::new(&missing).err().expect("no such directory");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = DirWatch::new(Path::new("a\0b"))
            .err()
            .expect("NUL in the path");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
