//! Manifest mode's input: plain Kubernetes YAML (multi-document files, or
//! `kind: List`) of Services, EndpointSlices, Endpoints and Nodes.
//!
//! Endpoints are turned into EndpointSlices the way Kubernetes'
//! endpointslice-mirroring controller does, so the rest of the pipeline sees
//! exactly what it would see from an API server. Parsing is pure; reading a
//! directory is the one I/O function here.

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kipvs_engine::labels;
use kipvs_engine::model::ObjectRef;
use kipvs_yaml as yaml;
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
        // The usual block-style document names its kind on a line of its
        // own: parse it once, straight into its type. Otherwise (or to name
        // the object in an error) read the head first.
        let head = || -> Result<Option<Head>, (usize, String)> {
            yaml::from_str(doc).map_err(|e| yaml_error(&e, "invalid YAML"))
        };
        let kind = match top_level_kind(doc) {
            Some(kind) => kind.to_owned(),
            None => match head()? {
                None => return Ok(()), // an empty document
                Some(h) => h.kind.unwrap_or_default(),
            },
        };
        // A typed parse failed: a syntax error is reported as such, a wrong
        // field with the object's kind and name.
        let typed = |e: serde_saphyr::Error| match head() {
            Err(syntax) => syntax,
            Ok(h) => {
                let name = h
                    .and_then(|h| h.metadata)
                    .and_then(|m| m.name)
                    .unwrap_or_default();
                yaml_error(&e, &format!("{kind} {name:?}"))
            }
        };
        match kind.as_str() {
            "Service" => self.services.push(yaml::from_str(doc).map_err(typed)?),
            "EndpointSlice" => self
                .endpoint_slices
                .push(yaml::from_str(doc).map_err(typed)?),
            "Endpoints" => self.endpoints.push(yaml::from_str(doc).map_err(typed)?),
            "Node" => self.nodes.push(yaml::from_str(doc).map_err(typed)?),
            "List" => {
                let list: serde_json::Value = yaml::from_str(doc).map_err(typed)?;
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

/// The value of a `kind: Word` line at column 0 of a block-style document
/// (such a line can only be a top-level key: nested keys and block scalar
/// text are indented).
fn top_level_kind(doc: &str) -> Option<&str> {
    if doc.trim_start().starts_with(['{', '[']) {
        return None;
    }
    doc.lines().find_map(|l| {
        let v = l.strip_prefix("kind:")?.trim();
        let v = v.split(" #").next()?.trim();
        (!v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(v)
    })
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
/// symbolic link is followed, as in a mounted ConfigMap; changed files are
/// parsed on several threads) and says which objects may have changed, so
/// one edited file among thousands costs one parse and a few events.
///
/// An object defined in two files is taken from the later file by name.
#[derive(Debug, Default)]
pub struct ManifestDir {
    files: BTreeMap<PathBuf, ParsedFile>,
}

#[derive(Debug)]
struct ParsedFile {
    stamp: (std::time::SystemTime, u64),
    objects: Objects,
    errors: Vec<ManifestError>,
}

/// One file's objects by name (namespaces defaulted).
#[derive(Debug, Default)]
struct Objects {
    services: BTreeMap<ObjectRef, Service>,
    slices: BTreeMap<ObjectRef, EndpointSlice>,
    endpoints: BTreeMap<ObjectRef, Endpoints>,
    nodes: BTreeMap<String, Node>,
}

impl Objects {
    fn from_manifests(mut m: Manifests) -> Objects {
        m.default_namespaces();
        let r = |meta: &ObjectMeta| {
            ObjectRef::new(namespace(meta), meta.name.clone().unwrap_or_default())
        };
        Objects {
            services: m
                .services
                .into_iter()
                .map(|s| (r(&s.metadata), s))
                .collect(),
            slices: m
                .endpoint_slices
                .into_iter()
                .map(|s| (r(&s.metadata), s))
                .collect(),
            endpoints: m
                .endpoints
                .into_iter()
                .map(|s| (r(&s.metadata), s))
                .collect(),
            nodes: m
                .nodes
                .into_iter()
                .map(|n| (n.metadata.name.clone().unwrap_or_default(), n))
                .collect(),
        }
    }
}

/// The objects a refresh may have changed (added, modified or removed),
/// and the errors of the files it parsed.
#[derive(Debug, Default, PartialEq)]
pub struct Touched {
    pub services: BTreeSet<ObjectRef>,
    pub slices: BTreeSet<ObjectRef>,
    pub endpoints: BTreeSet<ObjectRef>,
    pub nodes: BTreeSet<String>,
    pub errors: Vec<ManifestError>,
    /// A file was added, removed or modified.
    pub files_changed: bool,
}

impl Touched {
    /// Every object that differs between a file's old and new objects.
    fn add(&mut self, old: &Objects, new: &Objects) {
        fn differ<K: Ord + Clone, V: PartialEq>(
            out: &mut BTreeSet<K>,
            a: &BTreeMap<K, V>,
            b: &BTreeMap<K, V>,
        ) {
            for k in a.keys().chain(b.keys()) {
                if a.get(k) != b.get(k) {
                    out.insert(k.clone());
                }
            }
        }
        differ(&mut self.services, &old.services, &new.services);
        differ(&mut self.slices, &old.slices, &new.slices);
        differ(&mut self.endpoints, &old.endpoints, &new.endpoints);
        differ(&mut self.nodes, &old.nodes, &new.nodes);
    }
}

impl ManifestDir {
    /// Re-reads what changed in `dir`.
    pub fn refresh(&mut self, dir: &Path) -> std::io::Result<Touched> {
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
        let mut touched = Touched::default();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !seen.contains_key(*p))
            .cloned()
            .collect();
        for p in gone {
            if let Some(f) = self.files.remove(&p) {
                touched.add(&f.objects, &Objects::default());
                touched.files_changed = true;
            }
        }
        let changed: Vec<(PathBuf, (std::time::SystemTime, u64))> = seen
            .into_iter()
            .filter(|(p, stamp)| self.files.get(p).is_none_or(|f| f.stamp != *stamp))
            .collect();
        for (path, stamp, parsed) in parse_files(changed) {
            let (objects, errors) = parsed?;
            let empty = Objects::default();
            let old = self.files.get(&path).map_or(&empty, |f| &f.objects);
            touched.add(old, &objects);
            touched.errors.extend(errors.iter().cloned());
            touched.files_changed = true;
            self.files.insert(
                path,
                ParsedFile {
                    stamp,
                    objects,
                    errors,
                },
            );
        }
        Ok(touched)
    }

    fn last<'a, T>(&'a self, get: impl Fn(&'a Objects) -> Option<&'a T>) -> Option<&'a T> {
        self.files.values().rev().find_map(|f| get(&f.objects))
    }

    /// The Service of that name, if any file defines it.
    pub fn service(&self, r: &ObjectRef) -> Option<&Service> {
        self.last(|o| o.services.get(r))
    }

    /// The EndpointSlice of that name, if any file defines it.
    pub fn slice(&self, r: &ObjectRef) -> Option<&EndpointSlice> {
        self.last(|o| o.slices.get(r))
    }

    /// The Node of that name, if any file defines it.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.last(|o| o.nodes.get(name))
    }

    /// The slices mirrored from the Endpoints named `r`: none unless its
    /// Service exists and has no selector.
    pub fn mirrored_slices(&self, r: &ObjectRef) -> Vec<EndpointSlice> {
        let selectorless = self.service(r).is_some_and(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_none_or(|sel| sel.is_empty())
        });
        match self.last(|o| o.endpoints.get(r)) {
            Some(ep) if selectorless => mirror(ep),
            _ => Vec::new(),
        }
    }

    /// Every file's objects together (an object in several files once, from
    /// the last), and every file's errors.
    pub fn merged(&self) -> (Manifests, Vec<ManifestError>) {
        let mut services = BTreeMap::new();
        let mut slices = BTreeMap::new();
        let mut endpoints = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        let mut errors = Vec::new();
        for f in self.files.values() {
            services.extend(f.objects.services.iter());
            slices.extend(f.objects.slices.iter());
            endpoints.extend(f.objects.endpoints.iter());
            nodes.extend(f.objects.nodes.iter());
            errors.extend(f.errors.iter().cloned());
        }
        let m = Manifests {
            services: services.into_values().cloned().collect(),
            endpoint_slices: slices.into_values().cloned().collect(),
            endpoints: endpoints.into_values().cloned().collect(),
            nodes: nodes.into_values().cloned().collect(),
        };
        (m, errors)
    }
}

type Parsed = std::io::Result<(Objects, Vec<ManifestError>)>;

/// Parses files on up to one thread per core.
fn parse_files(
    files: Vec<(PathBuf, (std::time::SystemTime, u64))>,
) -> Vec<(PathBuf, (std::time::SystemTime, u64), Parsed)> {
    let parse = |path: &Path| -> Parsed {
        let text = std::fs::read_to_string(path)?;
        let mut m = Manifests::default();
        let errors = m.parse(&path.display().to_string(), &text);
        Ok((Objects::from_manifests(m), errors))
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if files.len() < 2 || threads < 2 {
        return files
            .into_iter()
            .map(|(p, s)| {
                let r = parse(&p);
                (p, s, r)
            })
            .collect();
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(p, s)| (p.clone(), *s, parse(p)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("parsing does not panic"))
            .collect()
    })
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
        let refs =
            |t: &Touched| -> Vec<String> { t.services.iter().map(|r| r.name.clone()).collect() };
        assert_eq!(refs(&m.refresh(&dir).unwrap()), ["a", "b"]);
        let names = |m: &ManifestDir| -> Vec<String> {
            let (all, errors) = m.merged();
            assert_eq!(errors, vec![]);
            all.services
                .iter()
                .map(|s| s.metadata.name.clone().unwrap())
                .collect()
        };
        assert_eq!(names(&m), ["a", "b"]);
        assert_eq!(
            m.refresh(&dir).unwrap(),
            Touched::default(),
            "nothing changed"
        );
        // The link's target changes (a ConfigMap update): seen through it.
        std::fs::write(dir.join("..data/b.yaml"), svc("b2") + "# longer\n").unwrap();
        assert_eq!(refs(&m.refresh(&dir).unwrap()), ["b", "b2"]);
        assert_eq!(names(&m), ["a", "b2"]);
        assert!(m.service(&ObjectRef::new("default", "b")).is_none());
        // Rewritten with one object changed: only that one is touched.
        std::fs::write(dir.join("a.yaml"), svc("a") + "# same objects\n").unwrap();
        let t = m.refresh(&dir).unwrap();
        assert!(t.files_changed && t.services.is_empty());
        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        assert_eq!(refs(&m.refresh(&dir).unwrap()), ["a"]);
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
