//! `cargo xtask image`: the kipvs container image as an OCI image layout
//! archive, built from this machine's files with no registry, no network and
//! no container engine.
//!
//! The archive (`<target>/kipvs-image-<version>.tar`) holds:
//! - `oci-layout`, `index.json` (one manifest, named
//!   `ghcr.io/kipvs/kipvs:<version>` by both `org.opencontainers.image.ref.name`
//!   and containerd's `io.containerd.image.name`) and `blobs/sha256/…`:
//!   what `podman load`, `skopeo copy oci-archive:…` and `ctr images import`
//!   read;
//! - `manifest.json`, docker's index of the same blobs, for `docker load`.
//!
//! Two gzip layers, so a new kipvs pushes one small layer:
//! 1. the runtime: the shared libraries and dynamic loader `ldd` names for
//!    every binary below, `nft` (kipvs writes its table's skeleton with
//!    `nft -f -`), `iptables-{legacy,nft}[-save|-restore]` (both families)
//!    and `ipset` with their extensions (`--cleanup-kube-proxy`), the host's
//!    CA certificates (kube's rustls client loads the system roots),
//!    `/etc/passwd`, `/etc/group` and `/etc/nsswitch.conf`; the host's merged
//!    `/usr` layout, so every path `ldd` prints resolves;
//! 2. `/usr/local/bin/kipvs`, the release binary without its debug line
//!    tables (`strip --strip-debug`).
//!
//! The image runs as root (uid 0): `deploy/README.md` says why a non-root
//! user cannot do kipvs's work with the DaemonSet's `CAP_NET_ADMIN`.
//!
//! Reproducible: entries sorted, owner 0:0, every mtime and the config's
//! `created` set to `SOURCE_DATE_EPOCH` or else the HEAD commit's time, gzip
//! with no name and mtime 0. The same commit on the same host gives the same
//! digest.

use crate::cpio::{Archive, Node};
use crate::lab::{add_libraries, shared_libraries, target_dir, which};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository the image is pushed to, and named after in the archive.
pub const REPOSITORY: &str = "ghcr.io/kipvs/kipvs";

/// The crate version: the image's tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const ENTRYPOINT: &str = "/usr/local/bin/kipvs";

/// kipvs's child processes, found on the host: `nft` for the agent, the
/// iptables backends and `ipset` for `--cleanup-kube-proxy`.
const TOOLS: &[&str] = &["nft", "ipset", "xtables-legacy-multi", "xtables-nft-multi"];

/// The names `--cleanup-kube-proxy` runs (`{tool}-save`, `{tool}-restore`),
/// as links to their multi-call binary.
const XTABLES_LINKS: &[(&str, &str)] = &[
    ("xtables-legacy-multi", "iptables-legacy"),
    ("xtables-legacy-multi", "ip6tables-legacy"),
    ("xtables-nft-multi", "iptables-nft"),
    ("xtables-nft-multi", "ip6tables-nft"),
];

/// Where iptables loads its match and target extensions from.
const XTABLES_EXTENSIONS: &str = "/usr/lib/x86_64-linux-gnu/xtables";

const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The path of the archive `cargo xtask image` writes.
pub fn archive_path(ws: &Path) -> PathBuf {
    target_dir(ws).join(format!("kipvs-image-{VERSION}.tar"))
}

/// What was built.
pub struct Built {
    pub path: PathBuf,
    pub size: u64,
    /// The manifest's digest (`sha256:…`): what a registry names the image by.
    pub digest: String,
}

/// Writes the archive around `kipvs`, a built binary: the release build
/// for `cargo xtask image`, the kernel tests' dev build in CI.
pub fn build(ws: &Path, kipvs: &Path) -> Result<Built> {
    if std::env::consts::ARCH != "x86_64" {
        bail!("the image is linux/amd64 and is built from this host's files: run it on x86_64");
    }
    // The runtime layer copies the host's nft, iptables, ipset and CA
    // certificates, installed here as for the lab.
    crate::lab::ensure_host_tools()?;
    let epoch = source_date_epoch(ws)?;
    let runtime = runtime_tree(kipvs)?;
    // Without the line tables (114 MB → 25 MB); the symbols stay, so a
    // backtrace still names functions.
    let stripped = target_dir(ws).join("kipvs-image-binary");
    let out = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(kipvs)
        .output()
        .context("running strip (binutils)")?;
    if !out.status.success() {
        bail!(
            "strip failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut app = Archive::new();
    app.file(ENTRYPOINT, &stripped)?;
    let layers = [
        Layer::new(
            &runtime,
            epoch,
            "runtime: libraries, nft, iptables, ipset, CA certificates, /etc",
        )?,
        Layer::new(&app, epoch, "kipvs")?,
    ];
    let archive = oci_archive(&layers, &config(&layers, epoch, &revision(ws)))?;
    let path = archive_path(ws);
    let tmp = path.with_extension("tar.tmp");
    std::fs::write(&tmp, &archive.bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)?;
    Ok(Built {
        size: archive.bytes.len() as u64,
        path,
        digest: archive.manifest_digest,
    })
}

/// The runtime layer's tree: every file kipvs and its tools need but kipvs.
fn runtime_tree(kipvs: &Path) -> Result<Archive> {
    let mut a = Archive::new();
    // Merged /usr, as on the build host (Debian 12): `ldd` names libraries
    // and the loader under /lib and /lib64.
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        a.symlink(link, target);
    }
    for d in ["proc", "sys", "dev", "run", "root", "usr/local/bin"] {
        a.dir(d);
    }
    a.bytes(
        "etc/passwd",
        "root:x:0:0:root:/root:/usr/sbin/nologin\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        0o644,
    );
    a.bytes("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644);
    // glibc ≥ 2.34 has the files and dns services built in: no libnss_*.
    a.bytes(
        "etc/nsswitch.conf",
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n\
         networks: files\nprotocols: files\nservices: files\n",
        0o644,
    );
    let cas = Path::new(CA_CERTIFICATES);
    if !cas.exists() {
        bail!("{CA_CERTIFICATES} is missing: install ca-certificates");
    }
    a.file(cas, cas)?;

    let mut libs = shared_libraries(kipvs)?;
    for tool in TOOLS {
        let host = which(tool).with_context(|| {
            format!("`{tool}` is not installed (apt-get install nftables iptables ipset)")
        })?;
        a.file(format!("usr/sbin/{tool}"), &host)?;
        libs.extend(shared_libraries(&host)?);
    }
    for (multi, base) in XTABLES_LINKS {
        for suffix in ["", "-save", "-restore"] {
            a.symlink(format!("usr/sbin/{base}{suffix}"), multi);
        }
    }
    let mut extensions: Vec<PathBuf> = std::fs::read_dir(XTABLES_EXTENSIONS)
        .with_context(|| format!("reading {XTABLES_EXTENSIONS}"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    extensions.sort();
    for ext in &extensions {
        a.file(ext, ext)?;
        libs.extend(shared_libraries(ext)?);
    }
    if !libs
        .iter()
        .any(|l| l.to_string_lossy().contains("ld-linux"))
    {
        bail!("ldd named no dynamic loader for {}", kipvs.display());
    }
    add_libraries(&mut a, &libs)?;
    Ok(a)
}

/// One layer: its gzip blob and the digests the manifest and config name.
struct Layer {
    gzip: Vec<u8>,
    /// sha256 of the gzip blob.
    digest: String,
    /// sha256 of the uncompressed tar (the config's `diff_ids`).
    diff_id: String,
    comment: &'static str,
}

impl Layer {
    fn new(tree: &Archive, mtime: u64, comment: &'static str) -> Result<Layer> {
        let tar = layer_tar(tree, mtime)?;
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar)?;
        let gzip = gz.finish()?;
        Ok(Layer {
            digest: sha256(&gzip),
            diff_id: sha256(&tar),
            gzip,
            comment,
        })
    }
}

/// A layer tar: the tree in path order, owner 0:0, one mtime.
fn layer_tar(tree: &Archive, mtime: u64) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, node) in tree.entries() {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        match node {
            Node::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty())?;
            }
            Node::File { data, mode } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())?;
            }
            Node::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target)?;
            }
        }
    }
    Ok(b.into_inner()?)
}

/// The image configuration (OCI image spec `config.json`).
fn config(layers: &[Layer], epoch: u64, revision: &str) -> Value {
    let created = rfc3339(epoch);
    json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": "0:0",
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": [ENTRYPOINT],
            "Cmd": ["proxy"],
            "WorkingDir": "/",
            "Labels": {
                "org.opencontainers.image.title": "kipvs",
                "org.opencontainers.image.description":
                    "IPVS-based Kubernetes service proxy, a replacement for kube-proxy's IPVS mode",
                "org.opencontainers.image.version": VERSION,
                "org.opencontainers.image.revision": revision,
                "org.opencontainers.image.source": "https://github.com/kipvs/kipvs",
                "org.opencontainers.image.licenses": "Apache-2.0",
            },
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
        "history": layers.iter().map(|l| json!({
            "created": created,
            "created_by": format!("cargo xtask image: {}", l.comment),
        })).collect::<Vec<_>>(),
    })
}

struct OciArchive {
    bytes: Vec<u8>,
    manifest_digest: String,
}

/// The OCI image layout as a tar, plus docker's `manifest.json`.
fn oci_archive(layers: &[Layer], config: &Value) -> Result<OciArchive> {
    let config = serde_json::to_vec(config)?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": l.digest,
            "size": l.gzip.len(),
        })).collect::<Vec<_>>(),
    }))?;
    let manifest_digest = sha256(&manifest);
    let name = format!("{REPOSITORY}:{VERSION}");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name,
            },
        }],
    }))?;
    let blob = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let docker = serde_json::to_vec(&json!([{
        "Config": blob(&config_digest),
        "RepoTags": [name],
        "Layers": layers.iter().map(|l| blob(&l.digest)).collect::<Vec<_>>(),
    }]))?;

    let mut tree = Archive::new();
    tree.bytes("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#, 0o644);
    tree.bytes("index.json", index, 0o644);
    tree.bytes("manifest.json", docker, 0o644);
    tree.bytes(blob(&manifest_digest), manifest, 0o644);
    tree.bytes(blob(&config_digest), config, 0o644);
    for l in layers {
        tree.bytes(blob(&l.digest), l.gzip.clone(), 0o644);
    }
    Ok(OciArchive {
        bytes: layer_tar(&tree, 0)?,
        manifest_digest,
    })
}

fn sha256(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// `SOURCE_DATE_EPOCH`, else the HEAD commit's time, else 0.
fn source_date_epoch(ws: &Path) -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v} is not a number of seconds"));
    }
    Ok(git(ws, &["log", "-1", "--format=%ct"])
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

/// HEAD's commit, with `-dirty` when the work tree has changes.
fn revision(ws: &Path) -> String {
    let Some(head) = git(ws, &["rev-parse", "HEAD"]) else {
        return "unknown".into();
    };
    match git(ws, &["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if s.is_empty() => head,
        _ => format!("{head}-dirty"),
    }
}

fn git(ws: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(ws)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Seconds since the epoch as `YYYY-MM-DDThh:mm:ssZ` (UTC).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The set of paths in a layer tar, for tests.
#[cfg(test)]
fn tar_paths(tar: &[u8]) -> std::collections::BTreeSet<String> {
    tar::Archive::new(tar)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_428_799), "2026-12-04T23:59:59Z");
    }

    #[test]
    fn layers_are_reproducible_and_digests_match() {
        let mut t = Archive::new();
        t.symlink("lib", "usr/lib");
        t.bytes("lib/x86_64-linux-gnu/libc.so.6", b"c".to_vec(), 0o755);
        t.bytes("etc/passwd", b"root:x:0:0::/:/x\n".to_vec(), 0o644);
        let a = Layer::new(&t, 7, "x").unwrap();
        let b = Layer::new(&t, 7, "x").unwrap();
        assert_eq!(a.gzip, b.gzip);
        assert_eq!(a.digest, sha256(&a.gzip));
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&a.gzip[..]), &mut tar)
            .unwrap();
        assert_eq!(a.diff_id, sha256(&tar));
        assert_eq!(
            tar_paths(&tar),
            [
                "etc",
                "etc/passwd",
                "lib",
                "usr",
                "usr/lib",
                "usr/lib/x86_64-linux-gnu",
                "usr/lib/x86_64-linux-gnu/libc.so.6"
            ]
            .map(String::from)
            .into()
        );
        for e in tar::Archive::new(&tar[..]).entries().unwrap() {
            let h = e.unwrap().header().clone();
            assert_eq!(
                (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
                (0, 0, 7)
            );
        }
    }

    #[test]
    fn the_archive_is_an_oci_layout_and_a_docker_archive() {
        let mut t = Archive::new();
        t.bytes("usr/local/bin/kipvs", b"\x7fELF".to_vec(), 0o755);
        let layers = [Layer::new(&t, 0, "kipvs").unwrap()];
        let cfg = config(&layers, 0, "abc");
        let out = oci_archive(&layers, &cfg).unwrap();
        let mut files = std::collections::BTreeMap::new();
        for e in tar::Archive::new(&out.bytes[..]).entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            files.insert(path, data);
        }
        let json = |p: &str| -> Value { serde_json::from_slice(&files[p]).unwrap() };
        let blob = |d: &Value| {
            let d = d.as_str().unwrap();
            let data = &files[&format!("blobs/sha256/{}", d.strip_prefix("sha256:").unwrap())];
            assert_eq!(sha256(data), d, "a blob's name is its digest");
            data.clone()
        };
        assert_eq!(json("oci-layout")["imageLayoutVersion"], "1.0.0");
        let index = json("index.json");
        let m = &index["manifests"][0];
        assert_eq!(m["digest"], out.manifest_digest.as_str());
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            format!("{REPOSITORY}:{VERSION}")
        );
        let manifest: Value = serde_json::from_slice(&blob(&m["digest"])).unwrap();
        assert_eq!(
            m["size"],
            files[&format!("blobs/sha256/{}", &out.manifest_digest[7..])].len()
        );
        let config: Value = serde_json::from_slice(&blob(&manifest["config"]["digest"])).unwrap();
        assert_eq!(config, cfg);
        assert_eq!(config["config"]["Entrypoint"][0], ENTRYPOINT);
        assert_eq!(config["config"]["Cmd"][0], "proxy");
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.version"],
            VERSION
        );
        assert_eq!(
            (&config["architecture"], &config["os"]),
            (&json!("amd64"), &json!("linux"))
        );
        let layer = blob(&manifest["layers"][0]["digest"]);
        assert_eq!(layer, layers[0].gzip);
        assert_eq!(config["rootfs"]["diff_ids"][0], layers[0].diff_id.as_str());
        let docker = json("manifest.json");
        assert_eq!(docker[0]["RepoTags"][0], format!("{REPOSITORY}:{VERSION}"));
        assert_eq!(
            files[docker[0]["Config"].as_str().unwrap()],
            blob(&manifest["config"]["digest"])
        );
        assert_eq!(files[docker[0]["Layers"][0].as_str().unwrap()], layer);
        assert!(files.contains_key("index.json") && files.contains_key("manifest.json"));
    }
}
