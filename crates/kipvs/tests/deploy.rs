//! `deploy/`: every manifest parses into its Kubernetes type, the
//! ClusterRole grants exactly what the code's watchers need, the DaemonSet
//! follows kube-proxy's init-only pattern with least privilege, the
//! ConfigMap's KubeProxyConfiguration reads without a warning, and the
//! kustomization lists every manifest.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Every document of every `deploy/*.yaml` but the kustomization, as
/// (file, kind, text).
fn documents() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in text.split("\n---\n") {
            let v: serde_json::Value =
                serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let kind = v["kind"].as_str().unwrap_or_default().to_owned();
            out.push((
                f.file_name().unwrap().to_string_lossy().into_owned(),
                kind,
                doc.to_owned(),
            ));
        }
    }
    out
}

fn one<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let docs: Vec<_> = documents().into_iter().filter(|d| d.1 == kind).collect();
    assert_eq!(docs.len(), 1, "one {kind}");
    serde_saphyr::from_str(&docs[0].2).unwrap_or_else(|e| panic!("{}: {kind}: {e}", docs[0].0))
}

#[test]
fn every_manifest_parses_into_its_type() {
    let docs = documents();
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d.1.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "ServiceAccount"
        ]
        .into()
    );
    let _: ServiceAccount = one("ServiceAccount");
    let _: ClusterRole = one("ClusterRole");
    let _: ClusterRoleBinding = one("ClusterRoleBinding");
    let _: ConfigMap = one("ConfigMap");
    let _: DaemonSet = one("DaemonSet");
}

#[test]
fn the_cluster_role_grants_exactly_what_the_watchers_need() {
    use kipvs_proxy::source::{EVENTS, WATCHED};
    let role: ClusterRole = one("ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap_or_default() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    assert!(
                        granted.insert((group.clone(), resource.clone(), verb.clone())),
                        "{group}/{resource} {verb} granted twice"
                    );
                }
            }
        }
    }
    let needed: BTreeSet<(String, String, String)> = WATCHED
        .iter()
        .chain(EVENTS)
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect();
    assert_eq!(granted, needed);

    let binding: ClusterRoleBinding = one("ClusterRoleBinding");
    let sa: ServiceAccount = one("ServiceAccount");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(binding.role_ref.name), role.metadata.name);
    let subjects = binding.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(subjects[0].name.clone()), sa.metadata.name);
    assert_eq!(subjects[0].namespace, sa.metadata.namespace);
}

#[test]
fn the_daemon_set_runs_init_only_privileged_then_the_agent_with_net_admin_only() {
    let ds: DaemonSet = one("DaemonSet");
    let sa: ServiceAccount = one("ServiceAccount");
    let cm: ConfigMap = one("ConfigMap");
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(pod.service_account_name, sa.metadata.name);
    let tolerations = pod.tolerations.unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "tolerates everything"
    );

    let init = &pod.init_containers.unwrap()[0];
    let init_cmd = init.command.clone().unwrap();
    assert!(
        init_cmd.contains(&"--init-only".to_string()),
        "{init_cmd:?}"
    );
    assert_eq!(
        init.security_context.as_ref().unwrap().privileged,
        Some(true)
    );

    let agent = &pod.containers[0];
    let cmd = agent.command.clone().unwrap();
    assert!(!cmd.contains(&"--init-only".to_string()));
    assert!(cmd.iter().any(|a| a.starts_with("--config=")), "{cmd:?}");
    let sc = agent.security_context.as_ref().unwrap();
    assert_ne!(sc.privileged, Some(true));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.add, Some(vec!["NET_ADMIN".to_string()]));
    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));

    // No /lib/modules, no host path at all: the ConfigMap only.
    let volumes = pod.volumes.unwrap();
    assert!(volumes.iter().all(|v| v.host_path.is_none()), "{volumes:?}");
    assert_eq!(
        volumes[0].config_map.as_ref().map(|c| c.name.clone()),
        Some(cm.metadata.name.clone().unwrap())
    );
    // Both containers read the config file the ConfigMap provides, and the
    // flags they pass are kipvs proxy's.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_kipvs"))
        .args(["proxy", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for c in [init, agent] {
        let cmd = c.command.clone().unwrap();
        assert_eq!(cmd[..2], ["kipvs", "proxy"]);
        for flag in &cmd[2..] {
            let name = flag.split('=').next().unwrap();
            assert!(
                help.contains(&format!("{name} "))
                    || help.contains(&format!("{name}\n"))
                    || help.contains(&format!("{name}[=")),
                "{name}"
            );
        }
        let mount = &c.volume_mounts.as_ref().unwrap()[0];
        let config = cmd
            .iter()
            .find_map(|a| a.strip_prefix("--config="))
            .unwrap();
        assert_eq!(
            Path::new(config).parent().unwrap(),
            Path::new(&mount.mount_path)
        );
    }
}

#[test]
fn the_config_map_holds_a_configuration_kipvs_reads_without_warnings() {
    let cm: ConfigMap = one("ConfigMap");
    let text = &cm.data.unwrap()["config.conf"];
    let (cfg, warnings) = kipvs_proxy::config::parse("config.conf", text).unwrap();
    assert_eq!(warnings, Vec::<String>::new());
    let opts = kipvs_proxy::config::apply(
        &cfg,
        kipvs_proxy::options::ProxyOptions::new(
            kipvs_proxy::options::Source::Api { kubeconfig: None },
            "n".into(),
        ),
    )
    .unwrap();
    assert_eq!(
        opts.source,
        kipvs_proxy::options::Source::Api { kubeconfig: None }
    );
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let text = std::fs::read_to_string(deploy_dir().join("kustomization.yaml")).unwrap();
    let k: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let files: BTreeSet<String> = documents().into_iter().map(|d| d.0).collect();
    assert_eq!(listed, files);
}

#[test]
fn the_image_is_the_crate_version_under_runtime_default_seccomp_with_measured_memory() {
    let ds: DaemonSet = one("DaemonSet");
    let pod = ds.spec.unwrap().template.spec.unwrap();
    let image = format!("ghcr.io/kipvs/kipvs:{}", env!("CARGO_PKG_VERSION"));
    let init = &pod.init_containers.as_ref().unwrap()[0];
    let agent = &pod.containers[0];
    for c in [init, agent] {
        assert_eq!(c.image.as_deref(), Some(image.as_str()), "{}", c.name);
    }
    let text = std::fs::read_to_string(deploy_dir().join("kustomization.yaml")).unwrap();
    let k: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(k["images"][0]["name"], "ghcr.io/kipvs/kipvs");
    assert_eq!(k["images"][0]["newTag"], env!("CARGO_PKG_VERSION"));

    let seccomp = pod.security_context.unwrap().seccomp_profile.unwrap();
    assert_eq!(seccomp.type_, "RuntimeDefault");

    // benches/results/agent.md: 257 MiB resident at 10,000 Services; the
    // request covers it, the limit leaves room above it.
    let rss = 257.0;
    let agent_md =
        std::fs::read_to_string(deploy_dir().join("../benches/results/agent.md")).unwrap();
    assert!(
        agent_md.contains("| 257 MiB ["),
        "the measured figure moved"
    );
    let mib = |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| -> f64 {
        q.0.strip_suffix("Mi").unwrap().parse().unwrap()
    };
    let resources = agent.resources.as_ref().unwrap();
    let request = mib(&resources.requests.as_ref().unwrap()["memory"]);
    let limit = mib(&resources.limits.as_ref().unwrap()["memory"]);
    assert!(rss < request && request < limit, "{request} {limit}");
}
