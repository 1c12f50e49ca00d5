//! The container image runs (issue 17): the archive `cargo xtask image`
//! writes is unpacked as a container runtime would (index → manifest →
//! config, layers in order into one root file system), and its entrypoint
//! runs in that root with `chroot`, the image's environment and nothing of
//! the lab's: `--init-only` (the init container's part), then the agent
//! against the fake API server until a Service serves traffic. So the image
//! holds every library, the dynamic loader, `nft` (the agent writes its
//! table with it), the CA certificates kube's client loads, and the
//! `--cleanup-kube-proxy` tools.
//!
//! `cargo xtask vm test` copies the archive into the guest and names it in
//! `$KIPVS_IMAGE` when `cargo xtask image` wrote one (`cargo xtask ci`
//! always does); without one the test says so and passes. Ignored on the
//! host; `cargo xtask vm test image_` runs it.

use kipvs_testkit::fake_api::FakeApiServer;
use kipvs_testkit::lab::{netns, pod_netns, reset, sh, try_sh, wait_until};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ROOT: &str = "/tmp/image-root";

/// The image as a container runtime sees it: the root file system and the
/// config's entrypoint, command and environment.
struct Image {
    root: PathBuf,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<(String, String)>,
}

impl Image {
    /// Unpacks the OCI archive's one image into [`ROOT`].
    fn unpack(archive: &Path) -> Image {
        let oci = Path::new("/tmp/image-oci");
        sh(&format!(
            "rm -rf {ROOT} {oci}; mkdir -p {ROOT} {oci}",
            oci = oci.display()
        ));
        sh(&format!(
            "tar -xf {} -C {}",
            archive.display(),
            oci.display()
        ));
        let read = |p: &Path| -> Value {
            serde_json::from_slice(&std::fs::read(p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let blob = |d: &Value| {
            let d = d.as_str().unwrap().strip_prefix("sha256:").unwrap();
            let p = oci.join("blobs/sha256").join(d);
            let sum = sh(&format!("sha256sum {}", p.display()));
            assert!(
                sum.starts_with(d),
                "a blob's content matches its name: {sum}"
            );
            p
        };
        let index = read(&oci.join("index.json"));
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1, "{index:#}");
        assert_eq!(
            manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
            format!("ghcr.io/kipvs/kipvs:{}", env!("CARGO_PKG_VERSION")),
            "the tag is the crate version"
        );
        let manifest = read(&blob(&manifests[0]["digest"]));
        let config = read(&blob(&manifest["config"]["digest"]));
        assert_eq!(
            (&config["architecture"], &config["os"]),
            (&Value::from("amd64"), &Value::from("linux"))
        );
        let layers = manifest["layers"].as_array().unwrap();
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(layers.len(), diff_ids.len());
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            assert_eq!(
                layer["mediaType"],
                "application/vnd.oci.image.layer.v1.tar+gzip"
            );
            let p = blob(&layer["digest"]);
            let sum = sh(&format!("gzip -dc {} | sha256sum", p.display()));
            let diff_id = diff_id.as_str().unwrap().strip_prefix("sha256:").unwrap();
            assert!(sum.starts_with(diff_id), "diff_id {diff_id}: {sum}");
            sh(&format!("tar -xzf {} -C {ROOT}", p.display()));
        }
        let c = &config["config"];
        assert_eq!(c["User"], "0:0");
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        let env = strings(&c["Env"])
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        // What a runtime provides: /proc, /sys, /dev.
        for (fs, opts) in [
            ("proc", "-t proc proc"),
            ("sys", "-o bind /sys"),
            ("dev", "-o bind /dev"),
        ] {
            sh(&format!("mount {opts} {ROOT}/{fs}"));
        }
        Image {
            root: ROOT.into(),
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            env,
        }
    }

    /// `chroot ROOT ARGV` with the image's environment only.
    fn command(&self, argv: &[String]) -> Command {
        let mut c = Command::new("chroot");
        c.arg(&self.root)
            .args(argv)
            .env_clear()
            .envs(self.env.clone());
        c
    }

    /// The entrypoint with the config's command and `args` after it, as a
    /// runtime runs a container given only arguments.
    fn run(&self, args: &[&str]) -> Command {
        let mut argv = self.entrypoint.clone();
        argv.extend(self.cmd.iter().cloned());
        argv.extend(args.iter().map(|a| a.to_string()));
        self.command(&argv)
    }

    fn output(&self, mut c: Command) -> String {
        let out = c.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{c:?}: {}\n{text}", out.status);
        text
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = try_sh(&format!(
            "umount {ROOT}/dev {ROOT}/sys {ROOT}/proc; rm -rf {ROOT} /tmp/image-oci"
        ));
    }
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs the kernel lab"]
fn image_runs_init_only_then_the_agent_on_the_fake_api() {
    let Some(archive) = std::env::var_os("KIPVS_IMAGE")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    else {
        eprintln!(
            "skipped: no image archive in $KIPVS_IMAGE (`cargo xtask image` writes one, \
             `cargo xtask vm test` then copies it into the lab; `cargo xtask ci` does both)"
        );
        return;
    };
    reset();
    let image = Image::unpack(&archive);
    let version = image.output(
        image.command(
            &image
                .entrypoint
                .iter()
                .cloned()
                .chain(["--version".into()])
                .collect::<Vec<_>>(),
        ),
    );
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    eprintln!("image: {} ({})", archive.display(), version.trim());

    // The init container: sysctls through the chroot's /proc.
    sh("modprobe ip_vs && sysctl -qw net.ipv4.vs.expire_nodest_conn=0");
    let log = image.output(image.run(&["--init-only", "--hostname-override", "lab"]));
    assert_eq!(
        sh("sysctl -n net.ipv4.vs.expire_nodest_conn").trim(),
        "1",
        "{log}"
    );

    // The --cleanup-kube-proxy tools run in the image.
    for tool in [
        "iptables-legacy-save",
        "ip6tables-legacy-save",
        "iptables-nft-save",
        "ip6tables-nft-save",
    ] {
        image.output(image.command(&[tool.to_string()]));
    }
    image.output(image.command(&["ipset".into(), "list".into(), "-n".into()]));

    // The agent, on the fake API server, with the image's nft.
    let pod_dir = "/tmp/www-image-pod";
    pod_netns("image-pod", 1);
    sh(&format!(
        "mkdir -p {pod_dir} && echo image-pod > {pod_dir}/index.html && \
         ip netns exec image-pod busybox httpd -p 9376 -h {pod_dir}"
    ));
    netns("client", "10.244.9", "10.96.0.0/16");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(FakeApiServer::start()).unwrap();
    let _guard = rt.enter();
    std::fs::create_dir_all(format!("{ROOT}/etc/kipvs")).unwrap();
    std::fs::write(
        format!("{ROOT}/etc/kipvs/kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n",
            api.url()
        ),
    )
    .unwrap();
    let log_path = "/tmp/fw-image-agent.log";
    let mut agent = image.run(&[
        "--kubeconfig",
        "/etc/kipvs/kubeconfig",
        "--hostname-override",
        "lab",
    ]);
    agent
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log_path).unwrap());
    let _agent = Agent(agent.spawn().expect("chroot runs"));
    api.apply(&yaml::<k8s_openapi::api::core::v1::Service>(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
         spec:\n  clusterIP: 10.96.7.10\n  ports:\n\
         \x20 - {name: http, port: 80, targetPort: 9376, protocol: TCP}\n",
    ));
    api.apply(&yaml::<k8s_openapi::api::discovery::v1::EndpointSlice>(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports:\n  - {name: http, port: 9376, protocol: TCP}\n\
         endpoints:\n  - {addresses: [10.244.1.2], conditions: {ready: true}, nodeName: lab}\n",
    ));
    wait_until("the Service in IPVS", Duration::from_secs(60), || {
        try_sh("ipvsadm -Ln -t 10.96.7.10:80")
            .1
            .contains("10.244.1.2:9376")
    });
    let table = sh("nft list table inet kipvs");
    assert!(table.contains("10.96.7.10"), "{table}");
    let (ok, answer, err) = try_sh("ip netns exec client curl -sS --max-time 5 http://10.96.7.10/");
    assert!(
        ok,
        "{err}\n{}",
        std::fs::read_to_string(log_path).unwrap_or_default()
    );
    assert_eq!(answer.trim(), "image-pod");
    drop(_agent);
    drop(image);
    reset();
}

fn yaml<K: serde::de::DeserializeOwned>(text: &str) -> K {
    serde_saphyr::from_str(text).unwrap()
}
