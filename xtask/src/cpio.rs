//! A writer for the `newc` cpio format, the format the Linux kernel unpacks
//! as its initramfs. Archives may be concatenated: the kernel unpacks each in
//! turn into the same root, later entries replacing earlier ones. The
//! in-memory tree is also what `cargo xtask image` writes its layers from.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// One entry's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink { target: String },
}

/// An in-memory archive: guest path → node. Parent directories are created
/// implicitly, so entries can be added in any order.
#[derive(Debug, Default)]
pub struct Archive {
    nodes: BTreeMap<PathBuf, Node>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (and its parents).
    pub fn dir(&mut self, path: impl AsRef<Path>) {
        let path = self.resolve(&normalize(path.as_ref()));
        self.parents(&path);
        self.nodes.entry(path).or_insert(Node::Dir);
    }

    /// Adds a regular file with the given content and permission bits.
    pub fn bytes(&mut self, path: impl AsRef<Path>, data: impl Into<Vec<u8>>, mode: u32) {
        let path = self.resolve(&normalize(path.as_ref()));
        self.parents(&path);
        self.nodes.insert(
            path,
            Node::File {
                data: data.into(),
                mode: mode & 0o7777,
            },
        );
    }

    /// Adds a host file at `guest` path, following symlinks on the host and
    /// keeping its permission bits.
    pub fn file(&mut self, guest: impl AsRef<Path>, host: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let data = std::fs::read(host)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", host.display())))?;
        let mode = std::fs::metadata(host)?.permissions().mode();
        self.bytes(guest, data, mode);
        Ok(())
    }

    /// Adds a symbolic link `path` → `target` unless something already
    /// stands at `path`.
    pub fn symlink(&mut self, path: impl AsRef<Path>, target: &str) {
        let path = self.resolve(&normalize(path.as_ref()));
        self.parents(&path);
        self.nodes.entry(path).or_insert(Node::Symlink {
            target: target.to_owned(),
        });
    }

    /// Whether anything stands at `path`.
    pub fn contains(&self, path: impl AsRef<Path>) -> bool {
        self.nodes
            .contains_key(&self.resolve(&normalize(path.as_ref())))
    }

    /// Rewrites `path` through the archive's directory symlinks (`lib` →
    /// `usr/lib`), so an entry is never placed "inside" a symlink, which the
    /// kernel's unpacker would not follow.
    fn resolve(&self, path: &Path) -> PathBuf {
        let mut out = PathBuf::new();
        let mut parts: Vec<_> = path.iter().map(PathBuf::from).collect();
        parts.reverse();
        let mut hops = 0;
        while let Some(part) = parts.pop() {
            let next = out.join(&part);
            match self.nodes.get(&next) {
                Some(Node::Symlink { target }) if !parts.is_empty() && hops < 16 => {
                    hops += 1;
                    let target = Path::new(target);
                    let base = if target.is_absolute() {
                        PathBuf::new()
                    } else {
                        out.clone()
                    };
                    let mut resolved: Vec<_> = normalize(&base.join(target))
                        .iter()
                        .map(PathBuf::from)
                        .collect();
                    resolved.reverse();
                    out = PathBuf::new();
                    parts.extend(resolved);
                }
                _ => out = next,
            }
        }
        out
    }

    fn parents(&mut self, path: &Path) {
        let mut parent = path.parent();
        while let Some(p) = parent {
            if p.as_os_str().is_empty() {
                break;
            }
            self.nodes.entry(p.to_path_buf()).or_insert(Node::Dir);
            parent = p.parent();
        }
    }

    /// Every entry, parents before what they hold (paths are relative to the
    /// root), for writers of other formats (the image's tar layers).
    pub fn entries(&self) -> impl Iterator<Item = (&Path, &Node)> {
        self.nodes.iter().map(|(p, n)| (p.as_path(), n))
    }

    /// Writes the archive. `BTreeMap` order puts every directory before the
    /// entries inside it, which is all the kernel's unpacker needs.
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let name = path.to_string_lossy();
            match node {
                Node::Dir => header(out, ino + 1, S_IFDIR | 0o755, 2, &name, &[])?,
                Node::File { data, mode } => header(out, ino + 1, S_IFREG | mode, 1, &name, data)?,
                Node::Symlink { target } => {
                    header(out, ino + 1, S_IFLNK | 0o777, 1, &name, target.as_bytes())?
                }
            }
        }
        header(out, 0, 0, 1, "TRAILER!!!", &[])
    }
}

/// Guest paths are stored relative to the root, without `.` or `..`.
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn header(
    out: &mut impl Write,
    ino: usize,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
) -> io::Result<()> {
    let namesize = name.len() + 1;
    let fields = [
        ino as u32,
        mode,
        0,
        0,
        nlink,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        namesize as u32,
        0,
    ];
    let mut head = String::with_capacity(110);
    head.push_str("070701");
    for f in fields {
        head.push_str(&format!("{f:08x}"));
    }
    out.write_all(head.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.write_all(&[0; 3][..pad4(110 + namesize)])?;
    out.write_all(data)?;
    out.write_all(&[0; 3][..pad4(data.len())])
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_parents_come_first() {
        let mut a = Archive::new();
        a.bytes("/usr/bin/hello", b"hi\n".to_vec(), 0o755);
        let mut buf = Vec::new();
        a.write(&mut buf).unwrap();
        assert_eq!(buf.len() % 4, 0);
        let text = String::from_utf8_lossy(&buf);
        let usr = text.find("usr\0").unwrap();
        let bin = text.find("usr/bin\0").unwrap();
        let hello = text.find("usr/bin/hello\0").unwrap();
        assert!(usr < bin && bin < hello);
        assert!(text.ends_with("TRAILER!!!\0\0\0\0"));
    }

    #[test]
    fn symlinks_have_link_mode_and_target_as_data() {
        let mut a = Archive::new();
        a.symlink("/bin", "usr/bin");
        let mut buf = Vec::new();
        a.write(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf);
        assert_eq!(&text[..6], "070701");
        assert_eq!(&text[14..22], "0000a1ff"); // mode 0120777
        assert_eq!(&text[54..62], "00000007"); // filesize = len("usr/bin")
        assert!(text.contains("bin\0\0\0usr/bin\0")); // name, NUL, pad to 4, data
    }

    #[test]
    fn entries_under_a_directory_symlink_land_in_its_target() {
        let mut a = Archive::new();
        a.symlink("lib", "usr/lib");
        a.bytes("lib/modules/x.ko", b"m".to_vec(), 0o644);
        a.bytes("/lib/x86_64-linux-gnu/libc.so.6", b"c".to_vec(), 0o755);
        assert!(a.contains("usr/lib/modules/x.ko"));
        assert!(a.contains("lib/x86_64-linux-gnu/libc.so.6"));
        assert!(!a.nodes.contains_key(Path::new("lib/modules")));
        assert_eq!(
            a.nodes.get(Path::new("lib")),
            Some(&Node::Symlink {
                target: "usr/lib".into()
            })
        );
    }

    #[test]
    fn cpio_lists_what_we_wrote() {
        // Cross-check with GNU cpio where it is installed.
        if std::process::Command::new("cpio")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: cpio is not installed");
            return;
        }
        let mut a = Archive::new();
        a.bytes("etc/passwd", b"root:x:0:0::/root:/bin/sh\n".to_vec(), 0o644);
        a.symlink("sbin", "usr/sbin");
        let mut buf = Vec::new();
        a.write(&mut buf).unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&buf).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "etc\netc/passwd\nsbin\n"
        );
    }
}
