//! kipvs's nftables table: the little packet filtering and masquerading
//! IPVS needs around it, in one table, `inet kipvs`, and nothing outside it.
//!
//! The table is two things:
//!
//! - a fixed **skeleton** ([`Skeleton`]): named sets and the chains whose
//!   rules look them up. It depends only on the proxy's configuration
//!   (`masqueradeAll`, `clusterCIDR`, the masquerade mark), never on a
//!   Service, and carries a fingerprint of itself in the table's comment so
//!   a restarted agent can tell whether the table it finds is its own;
//! - the sets' **elements** ([`Element`]): plain data derived from the
//!   desired state (one per VIP, virtual server, hairpin endpoint, source
//!   range, health-check port). A Service or endpoint change adds and
//!   deletes elements only ([`update_script`]), so the cost of a change is
//!   the size of the change.
//!
//! Scripts go to the `nft` binary on stdin ([`Nft::apply`]); one script is
//! one kernel transaction, all or nothing. The whole table is written only
//! when it is missing or not kipvs's current skeleton, and then atomically
//! ([`replace_script`]: create, delete, re-create in one transaction).
//! Element changes go straight to the kernel instead, as one nfnetlink batch
//! per change ([`netlink::ElementSocket`]; also one transaction): at 10k
//! Services the table holds ~130k elements, which `nft` parses slowly, and
//! an endpoint change should not start a process. Only the interval set
//! `lb-allowed` (whose elements nft splits into ranges) stays with `nft`.
//! Reading back: [`Nft::read_skeleton`] (`nft --terse`) for the skeleton, the
//! elements over netlink ([`netlink::ElementSocket::dump`]); [`Nft::read`]
//! parses all of `nft -j list table inet kipvs` for tests and tools.
//!
//! Which rule does what, and why, is documented on [`Skeleton::render`].
//!
//! Feature `kernel` (default): the `nft` runner and the nfnetlink socket.
//! Without it the crate is plain data and scripts, as the pure engine uses it.

pub mod element;
#[cfg(feature = "kernel")]
pub mod exec;
#[cfg(feature = "kernel")]
pub mod netlink;
mod skeleton;

pub use element::{Element, ParseError, Proto, SetName, Vs};
#[cfg(feature = "kernel")]
pub use exec::{Nft, NftError, Observed};
pub use skeleton::{DEFAULT_MASQUERADE_MARK, LocalTraffic, Skeleton, interface_name_ok};

use std::collections::{BTreeMap, BTreeSet};

/// The family of kipvs's table.
pub const FAMILY: &str = "inet";
/// The name of kipvs's table.
pub const TABLE: &str = "kipvs";

/// The elements to add and to delete to go from one element set to another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElementDiff {
    pub add: BTreeSet<Element>,
    pub delete: BTreeSet<Element>,
}

impl ElementDiff {
    /// What turns `have` into `want`.
    pub fn between(have: &BTreeSet<Element>, want: &BTreeSet<Element>) -> ElementDiff {
        ElementDiff {
            add: want.difference(have).cloned().collect(),
            delete: have.difference(want).cloned().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.delete.is_empty()
    }

    pub fn len(&self) -> usize {
        self.add.len() + self.delete.len()
    }

    /// `have` with this difference applied.
    pub fn apply_to(&self, have: &mut BTreeSet<Element>) {
        for e in &self.delete {
            have.remove(e);
        }
        have.extend(self.add.iter().cloned());
    }
}

/// Groups elements by set, each set's elements in one `{ … }` list.
fn by_set<'a>(
    elements: impl IntoIterator<Item = &'a Element>,
) -> BTreeMap<SetName, Vec<&'a Element>> {
    let mut out: BTreeMap<SetName, Vec<&Element>> = BTreeMap::new();
    for e in elements {
        out.entry(e.set()).or_default().push(e);
    }
    out
}

fn push_elements(out: &mut String, verb: &str, elements: &BTreeSet<Element>) {
    for (set, elems) in by_set(elements) {
        out.push_str(&format!("{verb} element {FAMILY} {TABLE} {set} {{ "));
        for (i, e) in elems.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&e.render());
        }
        out.push_str(" }\n");
    }
}

/// One transaction replacing whatever `inet kipvs` holds by `skeleton` with
/// `elements`: nothing is ever without rules in between.
pub fn replace_script(skeleton: &Skeleton, elements: &BTreeSet<Element>) -> String {
    let mut out = format!("add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n");
    out.push_str(&skeleton.render());
    push_elements(&mut out, "add", elements);
    out
}

/// One transaction of element deletions and additions; empty when there is
/// nothing to do.
pub fn update_script(diff: &ElementDiff) -> String {
    let mut out = String::new();
    push_elements(&mut out, "delete", &diff.delete);
    push_elements(&mut out, "add", &diff.add);
    out
}

#[cfg(test)]
mod tests;
