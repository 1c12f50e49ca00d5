//! Manifest mode's input: plain Kubernetes YAML (multi-document files, or
//! `kind: List`) of Services, EndpointSlices, Endpoints and Nodes.
//!
//! Endpoints are turned into EndpointSlices the way Kubernetes'
//! endpointslice-mirroring controller does, so the rest of the pipeline sees
//! exactly what it would see from an API server. Parsing is pure; reading a
//! directory is the one I/O function here.

use crate::labels;
use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The `managed-by` label value of mirrored slices.
pub const MIRRORING_CONTROLLER: &str = "endpointslice-mirroring-controller.k8s.io";
/// The mirroring controller takes at most this many addresses per subset.
pub const MAX_MIRRORED_PER_SUBSET: usize = 1000;

/// The objects read from manifests.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub endpoints: Vec<Endpoints>,
    pub nodes: Vec<Node>,
}

/// A document that could not be used, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct ManifestError {
    pub file: String,
    /// The first line of the offending document (1-based).
    pub line: usize,
    pub reason: String,
}

impl Manifests {
    /// Parses one file's text. Every usable document is kept; each unusable
    /// one is an error naming the file and the document's first line.
    pub fn parse(&mut self, file: &str, text: &str) -> Vec<ManifestError> {
        let mut errors = Vec::new();
        for (first_line, doc) in documents(text) {
            if let Err((line, reason)) = self.add_document(doc) {
                errors.push(ManifestError {
                    file: file.to_owned(),
                    line: first_line + line.saturating_sub(1),
                    reason,
                });
            }
        }
        errors
    }

    /// Adds one YAML document; an error carries the line within it.
    fn add_document(&mut self, doc: &str) -> Result<(), (usize, String)> {
        #[derive(serde::Deserialize)]
        struct Head {
            kind: Option<String>,
            metadata: Option<HeadMeta>,
        }
        #[derive(serde::Deserialize)]
        struct HeadMeta {
            name: Option<String>,
        }
        let head: Option<Head> =
            serde_saphyr::from_str(doc).map_err(|e| yaml_error(&e, "invalid YAML"))?;
        let Some(head) = head else { return Ok(()) }; // an empty document
        let kind = head.kind.unwrap_or_default();
        let name = head.metadata.and_then(|m| m.name).unwrap_or_default();
        let what = format!("{kind} {name:?}");
        let typed = |e: serde_saphyr::Error| yaml_error(&e, &what);
        match kind.as_str() {
            "Service" => self
                .services
                .push(serde_saphyr::from_str(doc).map_err(typed)?),
            "EndpointSlice" => self
                .endpoint_slices
                .push(serde_saphyr::from_str(doc).map_err(typed)?),
            "Endpoints" => self
                .endpoints
                .push(serde_saphyr::from_str(doc).map_err(typed)?),
            "Node" => self.nodes.push(serde_saphyr::from_str(doc).map_err(typed)?),
            "List" => {
                let list: serde_json::Value = serde_saphyr::from_str(doc).map_err(typed)?;
                for (i, item) in list["items"].as_array().into_iter().flatten().enumerate() {
                    self.add_value(item.clone())
                        .map_err(|e| (1, format!("List item {i}: {e}")))?;
                }
            }
            "" => return Err((1, "document has no `kind`".into())),
            // Pods, Deployments …: not a proxy's input, and not an error.
            _ => {}
        }
        Ok(())
    }

    fn add_value(&mut self, value: serde_json::Value) -> Result<(), String> {
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let bad = |e: serde_json::Error| format!("{kind} {name:?}: {e}");
        match kind.as_str() {
            "Service" => self
                .services
                .push(serde_json::from_value(value).map_err(bad)?),
            "EndpointSlice" => self
                .endpoint_slices
                .push(serde_json::from_value(value).map_err(bad)?),
            "Endpoints" => self
                .endpoints
                .push(serde_json::from_value(value).map_err(bad)?),
            "Node" => self.nodes.push(serde_json::from_value(value).map_err(bad)?),
            _ => {}
        }
        Ok(())
    }

    /// Fills in namespaces left out (as `kubectl apply` would, with
    /// `default`), so objects join up.
    pub fn default_namespaces(&mut self) {
        let fix = |m: &mut ObjectMeta| {
            if m.namespace.as_deref().unwrap_or("").is_empty() {
                m.namespace = Some("default".into());
            }
        };
        self.services.iter_mut().for_each(|s| fix(&mut s.metadata));
        self.endpoint_slices
            .iter_mut()
            .for_each(|s| fix(&mut s.metadata));
        self.endpoints.iter_mut().for_each(|s| fix(&mut s.metadata));
    }

    /// The EndpointSlices the API would hold: those given, plus those the
    /// mirroring controller makes from Endpoints of selector-less Services.
    pub fn all_slices(&self) -> Vec<EndpointSlice> {
        let selectorless: BTreeSet<(String, String)> = self
            .services
            .iter()
            .filter(|s| {
                s.spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .is_none_or(|sel| sel.is_empty())
            })
            .map(|s| {
                (
                    namespace(&s.metadata),
                    s.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect();
        let mut out = self.endpoint_slices.clone();
        for ep in &self.endpoints {
            let key = (
                namespace(&ep.metadata),
                ep.metadata.name.clone().unwrap_or_default(),
            );
            if selectorless.contains(&key) {
                out.extend(mirror(ep));
            }
        }
        out
    }
}

/// A YAML error as (line within the document, "what: message").
fn yaml_error(e: &serde_saphyr::Error, what: &str) -> (usize, String) {
    let line = e.location().map(|l| l.line() as usize).unwrap_or(1);
    let text = e.without_snippet().to_string();
    let text = text.trim_start_matches("error: ");
    // Drop the document-relative position; the caller gives the file's.
    let text = match text.split_once(": ") {
        Some((pos, rest)) if pos.starts_with("line ") => rest,
        _ => text,
    };
    let text = text.split(" at line ").next().unwrap_or(text);
    (line, format!("{what}: {text}"))
}

fn namespace(m: &ObjectMeta) -> String {
    m.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// Splits a multi-document YAML text at `---` lines: (first line, text).
fn documents(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") || t.starts_with("---\t") {
            out.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    out.push((start_line, &text[start..]));
    out.into_iter()
        .filter(|(_, d)| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// The slices the endpointslice-mirroring controller makes for one
/// Endpoints object: one per subset and address family, ready addresses
/// first, at most 1000 addresses a subset. `skip-mirror=true` opts out.
pub fn mirror(ep: &Endpoints) -> Vec<EndpointSlice> {
    let labels = ep.metadata.labels.as_ref();
    if labels
        .and_then(|l| l.get(labels::SKIP_MIRROR))
        .is_some_and(|v| v == "true")
    {
        return Vec::new();
    }
    let name = ep.metadata.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    for (si, subset) in ep.subsets.iter().flatten().enumerate() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: p.name.clone(),
                port: Some(p.port),
                protocol: p.protocol.clone().or_else(|| Some("TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| (a, false));
        let mut by_family: BTreeMap<&str, Vec<Endpoint>> = BTreeMap::new();
        for (addr, is_ready) in ready.chain(not_ready).take(MAX_MIRRORED_PER_SUBSET) {
            let Ok(ip) = addr.ip.parse::<IpAddr>() else {
                continue;
            };
            let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            by_family.entry(family).or_default().push(Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(is_ready),
                    serving: Some(is_ready),
                    terminating: None,
                }),
                hostname: addr.hostname.clone(),
                node_name: addr.node_name.clone(),
                target_ref: addr.target_ref.clone(),
                ..Default::default()
            });
        }
        for (family, endpoints) in by_family {
            let mut labels: BTreeMap<String, String> =
                ep.metadata.labels.clone().unwrap_or_default();
            labels.insert(labels::SERVICE_NAME.into(), name.clone());
            labels.insert(labels::MANAGED_BY.into(), MIRRORING_CONTROLLER.into());
            out.push(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-mirror-{si}-{}", family.to_lowercase())),
                    namespace: Some(namespace(&ep.metadata)),
                    labels: Some(labels),
                    ..Default::default()
                },
                address_type: family.into(),
                endpoints,
                ports: Some(ports.clone()),
            });
        }
    }
    out
}

/// Reads every `*.yaml`, `*.yml` and `*.json` file directly in `dir`, in
/// name order.
pub fn load_dir(dir: &Path) -> std::io::Result<(Manifests, Vec<ManifestError>)> {
    let mut cache = ManifestDir::default();
    cache.refresh(dir)?;
    Ok(cache.merged())
}

/// A manifest directory read incrementally: [`ManifestDir::refresh`]
/// re-parses only the files whose modification time or size changed (a
/// symbolic link is followed, as in a mounted ConfigMap), so one edited
/// file among thousands costs one parse.
#[derive(Debug, Default)]
pub struct ManifestDir {
    files: BTreeMap<PathBuf, ParsedFile>,
}

#[derive(Debug)]
struct ParsedFile {
    stamp: (std::time::SystemTime, u64),
    manifests: Manifests,
    errors: Vec<ManifestError>,
}

impl ManifestDir {
    /// Re-reads what changed in `dir`; returns whether anything did (a file
    /// added, removed or modified).
    pub fn refresh(&mut self, dir: &Path) -> std::io::Result<bool> {
        let mut seen = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let is_manifest = path
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json");
            // `fs::metadata` follows links; a dangling one is skipped.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if is_manifest && meta.is_file() {
                seen.insert(path, (meta.modified()?, meta.len()));
            }
        }
        let before = self.files.len();
        self.files.retain(|p, _| seen.contains_key(p));
        let mut changed = self.files.len() != before;
        for (path, stamp) in seen {
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            let mut manifests = Manifests::default();
            let errors = manifests.parse(&path.display().to_string(), &text);
            self.files.insert(
                path,
                ParsedFile {
                    stamp,
                    manifests,
                    errors,
                },
            );
            changed = true;
        }
        Ok(changed)
    }

    /// Every file's objects together (files in name order, namespaces
    /// defaulted) and every file's errors.
    pub fn merged(&self) -> (Manifests, Vec<ManifestError>) {
        let mut m = Manifests::default();
        let mut errors = Vec::new();
        for f in self.files.values() {
            m.services.extend(f.manifests.services.iter().cloned());
            m.endpoint_slices
                .extend(f.manifests.endpoint_slices.iter().cloned());
            m.endpoints.extend(f.manifests.endpoints.iter().cloned());
            m.nodes.extend(f.manifests.nodes.iter().cloned());
            errors.extend(f.errors.iter().cloned());
        }
        m.default_namespaces();
        (m, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_separator_lines_with_their_first_line() {
        let text = "a: 1\n---\n# only a comment\n---\nb: 2\nc: 3\n--- \nd: 4\n";
        let docs = documents(text);
        assert_eq!(
            docs,
            vec![(1, "a: 1\n"), (5, "b: 2\nc: 3\n"), (8, "d: 4\n")]
        );
    }

    #[test]
    fn a_manifest_dir_rereads_only_what_changed_and_follows_links() {
        let dir = std::env::temp_dir().join(format!("kipvs-manifest-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("..data")).unwrap();
        let svc = |name: &str| {
            format!(
                "kind: Service\napiVersion: v1\nmetadata: {{name: {name}}}\nspec: {{clusterIP: 10.96.0.1, ports: [{{port: 80}}]}}\n"
            )
        };
        std::fs::write(dir.join("a.yaml"), svc("a")).unwrap();
        std::fs::write(dir.join("..data/b.yaml"), svc("b")).unwrap();
        std::os::unix::fs::symlink("..data/b.yaml", dir.join("b.yaml")).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
        let mut m = ManifestDir::default();
        assert!(m.refresh(&dir).unwrap());
        let names = |m: &ManifestDir| -> Vec<String> {
            let (all, errors) = m.merged();
            assert_eq!(errors, vec![]);
            all.services
                .iter()
                .map(|s| s.metadata.name.clone().unwrap())
                .collect()
        };
        assert_eq!(names(&m), ["a", "b"]);
        assert!(!m.refresh(&dir).unwrap(), "nothing changed");
        // The link's target changes (a ConfigMap update): seen through it.
        std::fs::write(dir.join("..data/b.yaml"), svc("b2") + "# longer\n").unwrap();
        assert!(m.refresh(&dir).unwrap());
        assert_eq!(names(&m), ["a", "b2"]);
        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        assert!(m.refresh(&dir).unwrap());
        assert_eq!(names(&m), ["b2"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_the_hostnames_example() {
        let text = include_str!("../../../deploy/examples/hostnames.yaml");
        let mut m = Manifests::default();
        assert_eq!(m.parse("hostnames.yaml", text), vec![]);
        assert_eq!(m.services.len(), 1);
        assert_eq!(m.endpoint_slices.len(), 1);
        assert_eq!(m.endpoint_slices[0].endpoints.len(), 3);
    }

    #[test]
    fn a_bad_document_names_file_and_line_and_the_rest_are_kept() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\nkind: Service\nmetadata: [oops\n---\nkind: Service\nmetadata: {name: b}\nspec:\n  ports: 7\n---\nkind: Node\nmetadata: {name: node-1}\n";
        let mut m = Manifests::default();
        let errors = m.parse("x.yaml", text);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(
            (errors[0].file.as_str(), errors[0].line),
            ("x.yaml", 6),
            "{}",
            errors[0]
        );
        assert!(
            errors[0].reason.starts_with("invalid YAML: "),
            "{}",
            errors[0]
        );
        assert_eq!(errors[1].line, 11, "{}", errors[1]);
        assert!(
            errors[1].reason.starts_with("Service \"b\": "),
            "{}",
            errors[1]
        );
        assert_eq!(
            errors[0].to_string(),
            "x.yaml:6: invalid YAML: expected mapping start"
        );
        assert_eq!(
            errors[1].to_string(),
            "x.yaml:11: Service \"b\": expected sequence start"
        );
        assert_eq!(m.services.len(), 1);
        assert_eq!(m.nodes.len(), 1);
    }

    #[test]
    fn lists_are_unpacked_and_other_kinds_ignored() {
        let text = "kind: List\nitems:\n- kind: Service\n  metadata: {name: a}\n- kind: Pod\n  metadata: {name: p}\n";
        let mut m = Manifests::default();
        assert!(m.parse("l.yaml", text).is_empty());
        assert_eq!(m.services.len(), 1);
    }

    const SELECTORLESS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: ext}
subsets:
- addresses: [{ip: 10.0.0.1}, {ip: "fd00::1"}]
  notReadyAddresses: [{ip: 10.0.0.2, nodeName: n1}]
  ports: [{name: http, port: 8080}]
"#;

    #[test]
    fn endpoints_of_selectorless_services_are_mirrored_per_family() {
        let mut m = Manifests::default();
        assert!(m.parse("s.yaml", SELECTORLESS).is_empty());
        m.default_namespaces();
        let slices = m.all_slices();
        assert_eq!(slices.len(), 2);
        let v4 = slices.iter().find(|s| s.address_type == "IPv4").unwrap();
        assert_eq!(v4.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            v4.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"],
            "ext"
        );
        let ready: Vec<_> = v4
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses[0].as_str(),
                    e.conditions.as_ref().unwrap().ready,
                )
            })
            .collect();
        assert_eq!(
            ready,
            vec![("10.0.0.1", Some(true)), ("10.0.0.2", Some(false))]
        );
        assert_eq!(v4.endpoints[1].node_name.as_deref(), Some("n1"));
        let port = &v4.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("http"), Some(8080), Some("TCP"))
        );
    }

    #[test]
    fn endpoints_are_not_mirrored_for_selector_services_or_skip_mirror() {
        let with_selector = SELECTORLESS.replace(
            "clusterIP: 10.96.0.20",
            "clusterIP: 10.96.0.20\n  selector: {app: x}",
        );
        let mut m = Manifests::default();
        assert!(m.parse("s.yaml", &with_selector).is_empty());
        assert!(m.all_slices().is_empty());

        let skip = SELECTORLESS.replace(
            "kind: Endpoints\nmetadata: {name: ext}",
            "kind: Endpoints\nmetadata: {name: ext, labels: {endpointslice.kubernetes.io/skip-mirror: \"true\"}}",
        );
        let mut m = Manifests::default();
        assert!(m.parse("s.yaml", &skip).is_empty());
        assert!(m.all_slices().is_empty());
    }

    #[test]
    fn at_most_1000_addresses_a_subset_are_mirrored() {
        let addrs: Vec<String> = (0..1200)
            .map(|i| format!("{{ip: 10.1.{}.{}}}", i / 250, i % 250 + 1))
            .collect();
        let text = format!(
            "kind: Service\nmetadata: {{name: big}}\nspec: {{clusterIP: 10.96.0.30, ports: [{{port: 80}}]}}\n---\nkind: Endpoints\nmetadata: {{name: big}}\nsubsets:\n- addresses: [{}]\n  ports: [{{port: 80}}]\n",
            addrs.join(", ")
        );
        let mut m = Manifests::default();
        assert!(m.parse("big.yaml", &text).is_empty());
        let slices = m.all_slices();
        assert_eq!(
            slices.iter().map(|s| s.endpoints.len()).sum::<usize>(),
            MAX_MIRRORED_PER_SUBSET
        );
    }
}
