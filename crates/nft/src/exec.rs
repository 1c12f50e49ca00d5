//! Running the `nft` binary: a script on stdin is one transaction; the
//! table is read back as JSON.

use crate::element::{Element, ParseError, SetName};
use crate::{FAMILY, TABLE};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Why talking to nft failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running {path}: {source}")]
    Spawn {
        path: String,
        source: std::io::Error,
    },
    /// nft refused the script (nothing of it was applied).
    #[error("nft refused the transaction ({status}): {stderr}")]
    Refused { status: String, stderr: String },
    #[error("reading nft's JSON: {0}")]
    Json(String),
    #[error(transparent)]
    Element(#[from] ParseError),
}

/// What kipvs's table holds, as read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The table's comment, or else the first set comment (kipvs writes its
    /// skeleton's fingerprint in both).
    pub comment: Option<String>,
    /// The sets' elements.
    pub elements: BTreeSet<Element>,
    /// Sets kipvs does not know (the table is not kipvs's current one).
    pub unknown_sets: Vec<String>,
    /// The sets of kipvs's that the table has.
    pub sets: BTreeSet<SetName>,
}

/// The `nft` binary.
#[derive(Debug, Clone)]
pub struct Nft {
    pub path: PathBuf,
    /// Transactions applied so far.
    pub transactions: u64,
}

impl Default for Nft {
    fn default() -> Self {
        Nft::new("nft")
    }
}

impl Nft {
    pub fn new(path: impl Into<PathBuf>) -> Nft {
        Nft {
            path: path.into(),
            transactions: 0,
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        let spawn = |source| NftError::Spawn {
            path: self.path.display().to_string(),
            source,
        };
        let mut child = Command::new(&self.path)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).map_err(spawn)?;
        }
        let out = child.wait_with_output().map_err(spawn)?;
        if !out.status.success() {
            return Err(NftError::Refused {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Applies a script as one transaction (an empty script does nothing).
    pub fn apply(&mut self, script: &str) -> Result<(), NftError> {
        if script.trim().is_empty() {
            return Ok(());
        }
        self.run(&["-f", "-"], Some(script))?;
        self.transactions += 1;
        Ok(())
    }

    /// kipvs's table, or `None` when there is none.
    pub fn read(&self) -> Result<Option<Observed>, NftError> {
        match self.run(&["-j", "list", "table", FAMILY, TABLE], None) {
            Ok(json) => parse_table(&json),
            // nft says "No such file or directory" for a missing table.
            Err(NftError::Refused { stderr, .. }) if stderr.contains("No such file") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// kipvs's table without its sets' elements (`nft --terse`), or `None`
    /// when there is none: the skeleton to check, cheap at any size (the
    /// elements of 10k Services take nft seconds to list; they are read
    /// over netlink, [`crate::netlink::ElementSocket::dump`]).
    pub fn read_skeleton(&self) -> Result<Option<Observed>, NftError> {
        match self.run(&["-t", "-j", "list", "table", FAMILY, TABLE], None) {
            Ok(json) => parse_table(&json),
            Err(NftError::Refused { stderr, .. }) if stderr.contains("No such file") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The elements of one of kipvs's sets.
    pub fn read_set(&self, set: SetName) -> Result<BTreeSet<Element>, NftError> {
        let json = self.run(
            &["-j", "list", "set", FAMILY, TABLE, &set.to_string()],
            None,
        )?;
        Ok(parse_items(&json)?.1.elements)
    }

    /// Deletes kipvs's table if it exists (`kipvs proxy --cleanup`).
    pub fn delete_table(&mut self) -> Result<(), NftError> {
        self.apply(&format!(
            "add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"
        ))
    }
}

/// Parses `nft -j list table inet kipvs`.
pub fn parse_table(json: &str) -> Result<Option<Observed>, NftError> {
    let (found, out) = parse_items(json)?;
    Ok(found.then_some(out))
}

/// The table (whether it was in the listing) and its sets.
fn parse_items(json: &str) -> Result<(bool, Observed), NftError> {
    let v: Value = serde_json::from_str(json).map_err(|e| NftError::Json(e.to_string()))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| NftError::Json("no \"nftables\" array".into()))?;
    let mut out = Observed::default();
    let mut found = false;
    for item in items {
        if let Some(t) = item.get("table") {
            if t.get("name").and_then(Value::as_str) == Some(TABLE)
                && t.get("family").and_then(Value::as_str) == Some(FAMILY)
            {
                found = true;
                out.comment = t.get("comment").and_then(Value::as_str).map(str::to_owned);
            }
        } else if let Some(s) = item.get("set") {
            let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
            if out.comment.is_none() {
                out.comment = s.get("comment").and_then(Value::as_str).map(str::to_owned);
            }
            let Some(set) = SetName::parse(name) else {
                out.unknown_sets.push(name.to_owned());
                continue;
            };
            out.sets.insert(set);
            for e in s
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.elements.insert(Element::from_json(set, e)?);
            }
        }
    }
    Ok((found, out))
}
