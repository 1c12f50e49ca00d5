//! kube-proxy's config reload: when the `--config` file's content changes
//! under a running agent (a ConfigMap update swaps the `..data` symbolic
//! link), the agent exits so the DaemonSet restarts it with the new file.
//! kube-proxy watches the file with fsnotify; kipvs re-reads it every few
//! seconds (following links, so a swapped link counts) and compares the
//! bytes with the ones it loaded: a touch, or a link swapped to the same
//! content, is no change.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the file is re-read.
pub const POLL: Duration = Duration::from_secs(2);

/// The file and the bytes the agent was configured from.
#[derive(Debug, Clone)]
pub struct ConfigWatch {
    path: PathBuf,
    loaded: Vec<u8>,
}

/// What a look at the file found.
#[derive(Debug)]
pub enum Look {
    /// The same bytes.
    Same,
    /// Other bytes.
    Changed,
    /// It cannot be read now (between a delete and a create, say).
    Unreadable(std::io::Error),
}

impl ConfigWatch {
    pub fn new(path: &Path, loaded: Vec<u8>) -> ConfigWatch {
        ConfigWatch {
            path: path.to_path_buf(),
            loaded,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file once and compares.
    pub fn look(&self) -> Look {
        match std::fs::read(&self.path) {
            Ok(now) if now == self.loaded => Look::Same,
            Ok(_) => Look::Changed,
            Err(e) => Look::Unreadable(e),
        }
    }

    /// Resolves once the file's content differs from what was loaded,
    /// looking every `every`. An unreadable file is logged once per spell
    /// and waited out, as kube-proxy does not exit on a removal either.
    pub async fn changed(&self, every: Duration) {
        let mut unreadable = false;
        loop {
            tokio::time::sleep(every).await;
            match self.look() {
                Look::Same => unreadable = false,
                Look::Changed => return,
                Look::Unreadable(e) => {
                    if !unreadable {
                        tracing::warn!(file = %self.path.display(), error = %e,
                            "cannot read the configuration file; still watching it");
                    }
                    unreadable = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A mounted ConfigMap: `config.conf -> ..data/config.conf`,
    /// `..data -> ..<version>`.
    struct Mount(PathBuf);

    impl Mount {
        fn new(name: &str, text: &str) -> Mount {
            let dir = std::env::temp_dir().join(format!("kipvs-cw-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let m = Mount(dir);
            m.version("..v1", text);
            symlink("..v1", m.0.join("..data")).unwrap();
            symlink("..data/config.conf", m.0.join("config.conf")).unwrap();
            m
        }
        fn version(&self, v: &str, text: &str) {
            std::fs::create_dir_all(self.0.join(v)).unwrap();
            std::fs::write(self.0.join(v).join("config.conf"), text).unwrap();
        }
        /// The kubelet's atomic swap: a new version dir, a new link, renamed
        /// over `..data`.
        fn swap(&self, v: &str, text: &str) {
            self.version(v, text);
            symlink(v, self.0.join("..data_tmp")).unwrap();
            std::fs::rename(self.0.join("..data_tmp"), self.0.join("..data")).unwrap();
        }
        fn file(&self) -> PathBuf {
            self.0.join("config.conf")
        }
    }

    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_swapped_link_with_new_content_is_a_change_a_touch_is_not() {
        let m = Mount::new("swap", "mode: ipvs\n");
        let w = ConfigWatch::new(&m.file(), std::fs::read(m.file()).unwrap());
        assert!(matches!(w.look(), Look::Same));
        // The same bytes rewritten (a touch) and a swap to equal content.
        std::fs::write(m.0.join("..v1/config.conf"), "mode: ipvs\n").unwrap();
        assert!(matches!(w.look(), Look::Same));
        m.swap("..v2", "mode: ipvs\n");
        assert!(matches!(w.look(), Look::Same));
        // A swap to new content.
        m.swap("..v3", "mode: ipvs\nclusterCIDR: 10.0.0.0/8\n");
        assert!(matches!(w.look(), Look::Changed));
    }

    #[test]
    fn an_edit_in_place_is_a_change_and_a_missing_file_is_not() {
        let m = Mount::new("edit", "a: 1\n");
        let w = ConfigWatch::new(&m.file(), b"a: 1\n".to_vec());
        std::fs::remove_file(m.0.join("..v1/config.conf")).unwrap();
        assert!(matches!(w.look(), Look::Unreadable(_)));
        std::fs::write(m.0.join("..v1/config.conf"), "a: 2\n").unwrap();
        assert!(matches!(w.look(), Look::Changed));
    }

    #[tokio::test]
    async fn changed_resolves_after_the_swap_only() {
        let m = Mount::new("async", "x\n");
        let w = ConfigWatch::new(&m.file(), b"x\n".to_vec());
        let every = Duration::from_millis(20);
        let early = tokio::time::timeout(Duration::from_millis(150), w.changed(every)).await;
        assert!(early.is_err(), "no change yet");
        m.swap("..v2", "y\n");
        tokio::time::timeout(Duration::from_secs(5), w.changed(every))
            .await
            .expect("the change is seen");
    }
}
