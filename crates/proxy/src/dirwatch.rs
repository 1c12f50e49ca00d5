//! Change notification for a manifest directory: Linux inotify on the
//! directory, read through tokio's reactor. Only the fact that something
//! changed is reported; [`crate::manifest::ManifestDir::refresh`] finds what.
//!
//! Watched: files closed after writing, created, deleted, renamed in or out
//! (editors and `kubectl`-style writers rename a temporary file over the
//! old one; a mounted ConfigMap swaps its `..data` link), and attribute
//! changes (`touch`). Plain `IN_MODIFY` is not watched, so a file is not
//! re-read halfway through being written.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use tokio::io::unix::AsyncFd;

/// An inotify watch on one directory.
pub struct DirWatch {
    fd: AsyncFd<OwnedFd>,
}

const MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

impl DirWatch {
    /// Watches `dir`. Must be called within a tokio runtime.
    pub fn new(dir: &Path) -> io::Result<DirWatch> {
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in the path"))?;
        // SAFETY: inotify_init1 takes flags only; a non-negative result is
        // a new descriptor that we own from here on.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `fd` is an inotify descriptor and `path` a NUL-terminated
        // string that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is an open descriptor that the AsyncFd owns and
        // closes; `OwnedFd::as_raw_fd` always returns that same descriptor.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(DirWatch { fd })
    }

    /// Waits until at least one change happened, then consumes every event
    /// already queued (a burst is one wake-up).
    pub async fn changed(&self) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        let mut got = false;
        loop {
            let mut guard = self.fd.readable().await?;
            loop {
                // SAFETY: reads at most `buf.len()` bytes into `buf`.
                let n = unsafe {
                    libc::read(
                        self.fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                if n > 0 {
                    got = true;
                    continue;
                }
                let err = io::Error::last_os_error();
                if n < 0 && err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if n < 0 && err.kind() != io::ErrorKind::WouldBlock {
                    return Err(err);
                }
                guard.clear_ready();
                break;
            }
            if got {
                return Ok(());
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
        let w = DirWatch::new(&dir).unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(50), w.changed()).await;
        assert!(quiet.is_err(), "no change yet");
        std::fs::write(dir.join("a.yaml"), "kind: List\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("woken by the write")
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
