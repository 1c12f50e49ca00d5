//! The kernel lab: a Debian kernel with IPVS booted under QEMU (TCG), running
//! one command as root and handing back its output and exit status.
//!
//! Layout of the cache, `target/kernel-lab/`:
//! - `linux-image-<version>_*.deb` and `kernel/` (the unpacked package);
//! - `base.cpio` + `base.key`: the base initramfs (busybox, the modules the
//!   lab needs, the host tools with their libraries, `/init`), rebuilt when
//!   its inputs change.
//!
//! Each run appends a small second archive (the payload: `/payload/run` and
//! the caller's files) to the base one; the kernel unpacks both. The guest's
//! `/init` writes the command's stdout and stderr to the serial ports ttyS1
//! and ttyS2, which QEMU writes to files that are streamed while the VM runs,
//! and reports `booted` and then `exit=N` on ttyS3. The exit status comes
//! from there, never from a grep of the console (ttyS0), which is kept only
//! to explain a failed boot.

use crate::cpio::Archive;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The Debian kernel the lab boots: 6.1 LTS, with every IPVS scheduler but
/// `twos` (6.2+), dummy, veth and the netfilter modules.
pub const KERNEL_VERSION: &str = "6.1.0-56-cloud-amd64";

/// Host commands the lab needs and the Debian package that ships each.
const HOST_TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("depmod", "kmod"),
    ("ipvsadm", "ipvsadm"),
    ("xtables-legacy-multi", "iptables"),
    ("xtables-nft-multi", "iptables"),
    ("nft", "nftables"),
    ("ipset", "ipset"),
    ("conntrack", "conntrack"),
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("curl", "curl"),
    ("update-ca-certificates", "ca-certificates"),
    ("bash", "bash"),
    ("strip", "binutils"),
];

/// Host binaries copied into every guest, at their host paths.
const GUEST_TOOLS: &[&str] = &[
    "bash",
    "ipvsadm",
    "xtables-legacy-multi",
    "xtables-nft-multi",
    "nft",
    "ipset",
    "conntrack",
    "ip",
    "ss",
    "curl",
];

/// Module trees and files (relative to `/lib/modules/<version>/`) the guest
/// carries, with everything they depend on.
const MODULE_SOURCES: &[&str] = &[
    "kernel/net/netfilter/",
    "kernel/net/ipv4/netfilter/",
    "kernel/net/ipv6/netfilter/",
    "kernel/net/ipv4/ipip.ko",
    "kernel/net/ipv6/ip6_tunnel.ko",
    "kernel/net/sctp/",
    "kernel/drivers/net/dummy.ko",
    "kernel/drivers/net/veth.ko",
];

/// Bumped whenever the base initramfs's recipe changes.
const BASE_RECIPE: u32 = 2;

const INIT: &str = r#"#!/bin/sh
export PATH=/usr/local/bin:/usr/sbin:/usr/bin HOME=/root RUST_BACKTRACE=1 KIPVS_LAB=1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
chmod 1777 /tmp
mount -t tmpfs run /run
mkdir -p /dev/pts /run/netns /var
ln -s /run /var/run
mount -t devpts pts /dev/pts
for p in 1 2 3; do stty -F /dev/ttyS$p raw -echo; done
echo booted > /dev/ttyS3
# No module is preloaded: as on a node that never ran kube-proxy in IPVS
# mode, the kernel loads IPVS, schedulers, dummy, veth and netfilter modules
# on demand through /sbin/modprobe (busybox's, which resolves aliases such
# as net-pf-16-proto-16-family-IPVS). A test that needs a module loaded
# before it starts loads it itself.
ip link set lo up
echo started > /dev/ttyS3
cd /payload && /usr/bin/bash /payload/run < /dev/null > /dev/ttyS1 2> /dev/ttyS2
echo "exit=$?" > /dev/ttyS3
sync
poweroff -f
"#;

/// A prepared lab: the kernel and the base initramfs, ready to boot.
pub struct Lab {
    dir: PathBuf,
    kernel: PathBuf,
    base: PathBuf,
}

/// What to run in the guest.
pub struct Job {
    /// Host files copied into the guest: (guest path, host path). Their
    /// shared libraries come along.
    pub files: Vec<(PathBuf, PathBuf)>,
    /// A bash script, run as root from `/payload`.
    pub script: String,
    /// Wall-clock limit for the whole VM, boot included.
    pub timeout: Duration,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Extra kernel command-line arguments (e.g. `ipv6.disable=1`).
    pub kernel_args: String,
}

/// How a guest command ended.
#[derive(Debug)]
pub struct Outcome {
    pub exit_code: i32,
    /// From QEMU's start to the guest's `/init` running.
    pub boot: Duration,
    /// From QEMU's start to the command starting (modules loaded).
    pub ready: Duration,
    /// Everything the command wrote to stdout (also streamed to ours).
    pub stdout: String,
}

impl Lab {
    /// Installs missing host tools, downloads and unpacks the kernel, and
    /// builds the base initramfs, each only when not already cached.
    pub fn prepare(workspace: &Path) -> Result<Lab> {
        let dir = target_dir(workspace).join("kernel-lab");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        ensure_host_tools()?;
        let modules_root = ensure_kernel(&dir)?;
        let kernel = modules_root.join(format!("boot/vmlinuz-{KERNEL_VERSION}"));
        let base = ensure_base(&dir, &modules_root)?;
        Ok(Lab { dir, kernel, base })
    }

    /// Boots the VM, runs the job, streams the guest's stdout and stderr to
    /// ours, and returns its exit status.
    pub fn run(&self, job: &Job) -> Result<Outcome> {
        let work = self.dir.join(format!("run-{}", std::process::id()));
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work)?;
        let result = self.run_in(&work, job);
        let _ = fs::remove_dir_all(&work);
        result
    }

    fn run_in(&self, work: &Path, job: &Job) -> Result<Outcome> {
        let initrd = work.join("initrd.cpio");
        {
            let mut out = std::io::BufWriter::new(fs::File::create(&initrd)?);
            std::io::copy(&mut fs::File::open(&self.base)?, &mut out)?;
            let mut payload = Archive::new();
            payload.bytes("payload/run", job.script.clone(), 0o755);
            let mut libs = BTreeSet::new();
            for (guest, host) in &job.files {
                payload.file(guest, host)?;
                libs.extend(shared_libraries(host)?);
            }
            add_libraries(&mut payload, &libs)?;
            payload.write(&mut out)?;
            out.flush()?;
        }
        let [console, stdout, stderr, status] =
            ["console", "stdout", "stderr", "status"].map(|n| work.join(n));
        for f in [&console, &stdout, &stderr, &status] {
            fs::File::create(f)?;
        }
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args([
            "-accel",
            "tcg",
            "-smp",
            "2",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-m", &job.memory_mib.to_string()])
        .arg("-kernel")
        .arg(&self.kernel)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init {}",
            job.kernel_args
        ));
        for f in [&console, &stdout, &stderr, &status] {
            qemu.arg("-serial").arg(format!("file:{}", f.display()));
        }
        qemu.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = qemu.spawn().context("starting qemu-system-x86_64")?;
        let done = Arc::new(AtomicBool::new(false));
        let pumps = [
            follow(stdout.clone(), Box::new(std::io::stdout()), done.clone()),
            follow(stderr.clone(), Box::new(std::io::stderr()), done.clone()),
        ];
        let mut boot = None;
        let mut ready = None;
        let timed_out = loop {
            if let Some(_status) = child.try_wait()? {
                break false;
            }
            if boot.is_none() || ready.is_none() {
                let s = fs::read_to_string(&status).unwrap_or_default();
                if boot.is_none() && s.contains("booted") {
                    boot = Some(start.elapsed());
                }
                if ready.is_none() && s.contains("started") {
                    ready = Some(start.elapsed());
                }
            }
            if start.elapsed() > job.timeout {
                let _ = child.kill();
                let _ = child.wait();
                break true;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        done.store(true, Ordering::SeqCst);
        for p in pumps {
            let _ = p.join();
        }
        let mut qemu_output = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut qemu_output);
        }
        let status_text = fs::read_to_string(&status).unwrap_or_default();
        let tail = console_tail(&console, 40);
        if !status_text.contains("booted") {
            if timed_out {
                bail!(
                    "the VM did not boot within {:?} (no sign of /init). Console tail:\n{tail}",
                    job.timeout
                );
            }
            bail!(
                "the VM did not boot: qemu exited before /init ran.\nqemu said: {}\nConsole tail:\n{tail}",
                qemu_output.trim()
            );
        }
        let exit = status_text
            .lines()
            .find_map(|l| l.trim().strip_prefix("exit="))
            .map(|n| n.trim().parse::<i32>());
        match exit {
            Some(Ok(code)) => Ok(Outcome {
                exit_code: code,
                boot: boot.unwrap_or_default(),
                ready: ready.unwrap_or_default(),
                stdout: String::from_utf8_lossy(&fs::read(&stdout)?).into_owned(),
            }),
            _ if timed_out => Err(anyhow!(
                "the guest command timed out: it was still running after {:?} \
                 (the VM was stopped). Console tail:\n{tail}",
                job.timeout
            )),
            _ => Err(anyhow!(
                "the guest stopped before the command finished (kernel panic or poweroff?). \
                 Console tail:\n{tail}"
            )),
        }
    }
}

/// The workspace's target directory (`CARGO_TARGET_DIR` or `target/`).
pub fn target_dir(workspace: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
}

/// Copies what is appended to `path` to `sink` until `done` is set, then
/// drains the rest.
fn follow(
    path: PathBuf,
    mut sink: Box<dyn Write + Send>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut file) = fs::File::open(&path) else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let finished = done.load(Ordering::SeqCst);
            loop {
                match file.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = sink.write_all(&buf[..n]);
                    }
                }
            }
            let _ = sink.flush();
            if finished {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    })
}

fn console_tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().filter(|l| !l.starts_with('\u{1b}')).collect();
    let from = all.len().saturating_sub(lines);
    if all.is_empty() {
        "  (the console is empty)".into()
    } else {
        all[from..].join("\n")
    }
}

/// Finds a command the way a root shell would.
pub fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

/// Installs the host tools the lab and the image need (apt), where missing.
pub(crate) fn ensure_host_tools() -> Result<()> {
    let missing: BTreeSet<&str> = HOST_TOOLS
        .iter()
        .filter(|(cmd, _)| which(cmd).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "lab: installing {}",
        missing.iter().copied().collect::<Vec<_>>().join(" ")
    );
    let apt = |args: &[&str]| -> Result<std::process::Output> {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .context("running apt-get (is this a Debian machine?)")
    };
    let update = apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(missing.iter().copied());
    let out = apt(&install)?;
    for (cmd, pkg) in HOST_TOOLS {
        if which(cmd).is_none() {
            let hint = if *cmd == "qemu-system-x86_64" {
                "qemu is missing and "
            } else {
                ""
            };
            bail!(
                "{hint}`{cmd}` is missing and `apt-get install {pkg}` did not provide it.\n\
                 apt-get update said: {}\napt-get install said: {}",
                String::from_utf8_lossy(&update.stderr).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Downloads and unpacks the kernel package; returns the unpacked root.
fn ensure_kernel(dir: &Path) -> Result<PathBuf> {
    let root = dir.join("kernel");
    let stamp = root.join(".unpacked");
    if stamp.exists() {
        return Ok(root);
    }
    let package = format!("linux-image-{KERNEL_VERSION}");
    let find_deb = || -> Option<PathBuf> {
        fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
                })
            })
    };
    if find_deb().is_none() {
        eprintln!("lab: downloading {package}");
        let download = || {
            Command::new("apt-get")
                .args(["download", &package])
                .current_dir(dir)
                .stdin(Stdio::null())
                .output()
        };
        let mut out = download().context("running apt-get download")?;
        if !out.status.success() {
            // A fresh machine may have no package lists yet.
            let _ = Command::new("apt-get")
                .args(["update", "-qq"])
                .stdin(Stdio::null())
                .status();
            out = download().context("running apt-get download")?;
        }
        if !out.status.success() {
            bail!(
                "the kernel package {package} could not be downloaded: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let deb = find_deb().ok_or_else(|| anyhow!("apt-get download left no {package}_*.deb"))?;
    let _ = fs::remove_dir_all(&root);
    run_ok(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "unpacking the kernel",
    )?;
    run_ok(
        Command::new("depmod")
            .arg("-b")
            .arg(&root)
            .arg(KERNEL_VERSION),
        "depmod",
    )?;
    fs::write(&stamp, "")?;
    Ok(root)
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The base initramfs, cached under a key of its recipe and inputs.
fn ensure_base(dir: &Path, kernel_root: &Path) -> Result<PathBuf> {
    let tools: Vec<PathBuf> = GUEST_TOOLS
        .iter()
        .map(|t| which(t).ok_or_else(|| anyhow!("`{t}` is not installed on the host")))
        .collect::<Result<_>>()?;
    let busybox = which("busybox").ok_or_else(|| anyhow!("busybox is not installed"))?;
    let mut hasher = DefaultHasher::new();
    BASE_RECIPE.hash(&mut hasher);
    INIT.hash(&mut hasher);
    // Any rebuilt xtask may have a new recipe: rebuilding the base costs a
    // few seconds, a stale one costs a confusing lab.
    let me = std::env::current_exe().ok();
    for p in tools.iter().chain([&busybox]).chain(me.as_ref()) {
        p.hash(&mut hasher);
        if let Ok(m) = fs::metadata(p) {
            m.len().hash(&mut hasher);
            m.modified().ok().hash(&mut hasher);
        }
    }
    let key = format!("{:016x}", hasher.finish());
    let base = dir.join("base.cpio");
    let key_file = dir.join("base.key");
    if base.exists() && fs::read_to_string(&key_file).is_ok_and(|k| k == key) {
        return Ok(base);
    }
    eprintln!("lab: building the base initramfs");
    let mut a = Archive::new();
    // Merged /usr, as on the host, so host binaries and their libraries
    // resolve at the same paths inside.
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        a.symlink(link, target);
    }
    for d in [
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "root",
        "etc",
        "usr/local/bin",
    ] {
        a.dir(d);
    }
    a.bytes("etc/passwd", "root:x:0:0:root:/root:/usr/bin/bash\n", 0o644);
    a.bytes("etc/group", "root:x:0:\n", 0o644);
    a.bytes("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n", 0o644);
    a.bytes("etc/nsswitch.conf", "hosts: files\n", 0o644);
    // A node has CA certificates; kube's TLS client refuses to start
    // without any, even for a plain-HTTP (test) API server.
    let cas = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if cas.exists() {
        a.file(cas, cas)?;
    }
    let modules = module_closure(kernel_root)?;
    a.bytes("init", INIT, 0o755);

    let mut libs = BTreeSet::new();
    for t in &tools {
        a.file(t, t)?;
        libs.extend(shared_libraries(t)?);
    }
    let xtables = Path::new("/usr/lib/x86_64-linux-gnu/xtables");
    if let Ok(entries) = fs::read_dir(xtables) {
        for e in entries.flatten() {
            let p = e.path();
            a.file(&p, &p)?;
            libs.extend(shared_libraries(&p)?);
        }
    }
    add_libraries(&mut a, &libs)?;
    for (multi, names) in [
        (
            "xtables-legacy-multi",
            &[
                "iptables-legacy",
                "iptables-legacy-save",
                "iptables-legacy-restore",
                "ip6tables-legacy",
                "ip6tables-legacy-save",
                "ip6tables-legacy-restore",
            ][..],
        ),
        (
            "xtables-nft-multi",
            &[
                "iptables-nft",
                "iptables-nft-save",
                "iptables-nft-restore",
                "ip6tables-nft",
                "ip6tables-nft-save",
                "ip6tables-nft-restore",
                "iptables",
                "iptables-save",
                "iptables-restore",
                "ip6tables",
                "ip6tables-save",
                "ip6tables-restore",
            ][..],
        ),
    ] {
        for n in names {
            a.symlink(format!("usr/sbin/{n}"), multi);
        }
    }
    a.file("usr/bin/busybox", &busybox)?;
    libs = shared_libraries(&busybox)?;
    add_libraries(&mut a, &libs)?;
    let applets = Command::new(&busybox).arg("--list-full").output()?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        let name = Path::new(applet)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let Some(name) = name else { continue };
        // Real tools win over applets of the same name.
        if a.contains(format!("usr/sbin/{name}")) || a.contains(format!("usr/bin/{name}")) {
            continue;
        }
        let dir = if applet.contains("sbin/") {
            "usr/sbin"
        } else {
            "usr/bin"
        };
        a.symlink(format!("{dir}/{name}"), "/usr/bin/busybox");
    }

    // Modules: the closure of what the lab needs, indexed for this tree.
    let staging = dir.join("modules-staging");
    let _ = fs::remove_dir_all(&staging);
    let src = kernel_root.join(format!("lib/modules/{KERNEL_VERSION}"));
    let dst = staging.join(format!("lib/modules/{KERNEL_VERSION}"));
    for m in &modules {
        let to = dst.join(m);
        fs::create_dir_all(to.parent().unwrap())?;
        fs::copy(src.join(m), &to).with_context(|| format!("copying module {m}"))?;
    }
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        fs::copy(src.join(f), dst.join(f))?;
    }
    run_ok(
        Command::new("depmod")
            .arg("-b")
            .arg(&staging)
            .arg(KERNEL_VERSION),
        "depmod",
    )?;
    for e in walk(&dst)? {
        let rel = e.strip_prefix(&staging).unwrap();
        a.file(rel, &e)?;
    }
    let _ = fs::remove_dir_all(&staging);

    let tmp = dir.join("base.cpio.tmp");
    let mut out = std::io::BufWriter::new(fs::File::create(&tmp)?);
    a.write(&mut out)?;
    out.flush()?;
    drop(out);
    fs::rename(&tmp, &base)?;
    fs::write(&key_file, key)?;
    Ok(base)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

/// The modules named by [`MODULE_SOURCES`] and all they depend on, as paths
/// relative to the module tree.
fn module_closure(kernel_root: &Path) -> Result<BTreeSet<String>> {
    let dep_file = kernel_root.join(format!("lib/modules/{KERNEL_VERSION}/modules.dep"));
    let text =
        fs::read_to_string(&dep_file).with_context(|| format!("reading {}", dep_file.display()))?;
    let deps: BTreeMap<&str, Vec<&str>> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m.trim(), d.split_whitespace().collect()))
        .collect();
    let mut todo: Vec<&str> = deps
        .keys()
        .copied()
        .filter(|m| {
            MODULE_SOURCES.iter().any(|s| {
                if s.ends_with('/') {
                    m.starts_with(s)
                } else {
                    m == s
                }
            })
        })
        .collect();
    let mut out = BTreeSet::new();
    while let Some(m) = todo.pop() {
        if out.insert(m.to_owned()) {
            todo.extend(deps.get(m).into_iter().flatten().copied());
        }
    }
    if out.is_empty() {
        bail!("no lab modules found in {}", dep_file.display());
    }
    Ok(out)
}

/// The shared libraries `ldd` lists for a binary (empty for static ones).
pub fn shared_libraries(binary: &Path) -> Result<BTreeSet<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from)
        .collect())
}

/// Adds libraries under their directory's canonical path (the guest has the
/// host's merged-/usr links) with the dereferenced file's content.
pub fn add_libraries(a: &mut Archive, libs: &BTreeSet<PathBuf>) -> Result<()> {
    for lib in libs {
        let dir = lib.parent().and_then(|d| fs::canonicalize(d).ok());
        let (Some(dir), Some(name)) = (dir, lib.file_name()) else {
            continue;
        };
        let guest = dir.join(name);
        if !a.contains(&guest) {
            a.file(&guest, lib)?;
        }
    }
    Ok(())
}
