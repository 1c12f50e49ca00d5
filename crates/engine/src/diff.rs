//! The difference between what the kernel holds and what it should hold, as
//! a list of changes; graceful termination of removed real servers. Pure:
//! the kernel's state, the drain bookkeeping and the clock are inputs.
//!
//! Graceful termination (kube-proxy's rule, with a bound): a real server
//! that is no longer wanted gets weight 0, so it takes no new connections,
//! and is deleted once it has no active or inactive connections left, or
//! once it has drained for [`DiffConfig::drain_timeout_secs`]. UDP and SCTP
//! real servers are deleted at once (there is no connection to finish), and
//! so are those of schedulers for which weight 0 does not drain (`sh`/`mh`
//! without their fallback flag: see [`kipvs_sched`]). A draining real server
//! whose endpoint comes back returns to its weight.
//!
//! Connection counts are trusted only when fresh
//! ([`ObservedVirtualServer::counts_fresh`]): an incremental sync does not
//! read them, so a leaving real server first gets weight 0 (one message)
//! and the next drain check, which reads them, deletes it once idle.

use crate::model::*;
use kipvs_sched::{Drain, SchedulerConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// A real server as the kernel holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedRealServer {
    pub weight: u32,
    pub active_conns: u32,
    pub inactive_conns: u32,
}

/// A virtual server as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedVirtualServer {
    pub key: VirtualServerKey,
    /// `None` when the kernel's scheduler/flags are not a valid config
    /// (then the virtual server is edited to the desired one).
    pub scheduler: Option<SchedulerConfig>,
    pub persistence: Option<Persistence>,
    pub real_servers: BTreeMap<SocketAddr, ObservedRealServer>,
    /// The real servers' connection counts were read from the kernel just
    /// now. Counts carried over from an earlier read may be stale, and
    /// stale zeros never justify deleting a real server that could drain:
    /// it gets weight 0 instead, and a later fresh read decides.
    pub counts_fresh: bool,
}

/// One change to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    AddVirtualServer(VirtualServer),
    EditVirtualServer(VirtualServer),
    DeleteVirtualServer(VirtualServerKey),
    AddRealServer {
        vs: VirtualServerKey,
        addr: SocketAddr,
        weight: u32,
    },
    EditRealServer {
        vs: VirtualServerKey,
        addr: SocketAddr,
        weight: u32,
    },
    DeleteRealServer {
        vs: VirtualServerKey,
        addr: SocketAddr,
    },
}

/// When each draining real server started draining, in seconds of the
/// caller's monotonic clock.
pub type Draining = BTreeMap<(VirtualServerKey, SocketAddr), u64>;

/// Tunables of the diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffConfig {
    /// Delete a draining real server after this long even if connections
    /// remain (kube-proxy has no bound; kipvs defaults to 15 minutes).
    pub drain_timeout_secs: u64,
}

impl Default for DiffConfig {
    fn default() -> Self {
        Self {
            drain_timeout_secs: 15 * 60,
        }
    }
}

/// The changes that make `observed` equal `desired` over the virtual
/// servers either names, and the drain bookkeeping after them. Virtual
/// servers are added before their real servers and deleted after theirs.
pub fn diff(
    observed: &BTreeMap<VirtualServerKey, ObservedVirtualServer>,
    desired: &BTreeMap<VirtualServerKey, VirtualServer>,
    draining: &Draining,
    now_secs: u64,
    cfg: DiffConfig,
) -> (Vec<Change>, Draining) {
    let mut changes = Vec::new();
    let mut still_draining = Draining::new();
    let keys: BTreeSet<&VirtualServerKey> = observed.keys().chain(desired.keys()).collect();
    for key in keys {
        match (observed.get(key), desired.get(key)) {
            (None, Some(want)) => {
                changes.push(Change::AddVirtualServer(want.clone()));
                for (addr, rs) in &want.real_servers {
                    changes.push(Change::AddRealServer {
                        vs: *key,
                        addr: *addr,
                        weight: rs.weight,
                    });
                }
            }
            (Some(_), None) => changes.push(Change::DeleteVirtualServer(*key)),
            (Some(have), Some(want)) => {
                if have.scheduler.as_ref() != Some(&want.scheduler)
                    || have.persistence != want.persistence
                {
                    changes.push(Change::EditVirtualServer(want.clone()));
                }
                real_server_changes(
                    have,
                    want,
                    draining,
                    now_secs,
                    cfg,
                    &mut changes,
                    &mut still_draining,
                );
            }
            (None, None) => unreachable!("key comes from one of the maps"),
        }
    }
    (changes, still_draining)
}

fn real_server_changes(
    have: &ObservedVirtualServer,
    want: &VirtualServer,
    draining: &Draining,
    now: u64,
    cfg: DiffConfig,
    changes: &mut Vec<Change>,
    still_draining: &mut Draining,
) {
    let vs = want.key;
    for (addr, rs) in &want.real_servers {
        match have.real_servers.get(addr) {
            None => changes.push(Change::AddRealServer {
                vs,
                addr: *addr,
                weight: rs.weight,
            }),
            Some(cur) if cur.weight != rs.weight => changes.push(Change::EditRealServer {
                vs,
                addr: *addr,
                weight: rs.weight,
            }),
            Some(_) => {}
        }
    }
    let drains = want.key.protocol == Protocol::Tcp && want.scheduler.drain() == Drain::ZeroWeight;
    for (addr, cur) in &have.real_servers {
        if want.real_servers.contains_key(addr) {
            continue;
        }
        let idle = have.counts_fresh && cur.active_conns == 0 && cur.inactive_conns == 0;
        let since = draining.get(&(vs, *addr)).copied().unwrap_or(now);
        let expired = now.saturating_sub(since) >= cfg.drain_timeout_secs;
        if !drains || idle || expired {
            changes.push(Change::DeleteRealServer { vs, addr: *addr });
            continue;
        }
        if cur.weight != 0 {
            changes.push(Change::EditRealServer {
                vs,
                addr: *addr,
                weight: 0,
            });
        }
        still_draining.insert((vs, *addr), since);
    }
}

/// Applies changes to a model of the kernel, as the kernel would (used by
/// tests and by the controller to keep its mirror of the kernel current
/// after a successful apply).
pub fn apply_to_model(
    model: &mut BTreeMap<VirtualServerKey, ObservedVirtualServer>,
    changes: &[Change],
) {
    for c in changes {
        apply_one(model, c);
    }
}

/// Applies one change to the model.
pub fn apply_one(model: &mut BTreeMap<VirtualServerKey, ObservedVirtualServer>, change: &Change) {
    let rs = |weight| ObservedRealServer {
        weight,
        active_conns: 0,
        inactive_conns: 0,
    };
    match change {
        Change::AddVirtualServer(vs) | Change::EditVirtualServer(vs) => {
            let entry = model
                .entry(vs.key)
                .or_insert_with(|| ObservedVirtualServer {
                    key: vs.key,
                    scheduler: None,
                    persistence: None,
                    real_servers: BTreeMap::new(),
                    counts_fresh: true,
                });
            entry.scheduler = Some(vs.scheduler.clone());
            entry.persistence = vs.persistence;
        }
        Change::DeleteVirtualServer(key) => {
            model.remove(key);
        }
        Change::AddRealServer { vs, addr, weight } => {
            if let Some(v) = model.get_mut(vs) {
                v.real_servers.insert(*addr, rs(*weight));
            }
        }
        Change::EditRealServer { vs, addr, weight } => {
            if let Some(r) = model.get_mut(vs).and_then(|v| v.real_servers.get_mut(addr)) {
                r.weight = *weight;
            }
        }
        Change::DeleteRealServer { vs, addr } => {
            if let Some(v) = model.get_mut(vs) {
                v.real_servers.remove(addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn key(proto: Protocol, last: u8) -> VirtualServerKey {
        VirtualServerKey {
            protocol: proto,
            address: IpAddr::from([10, 96, 0, last]),
            port: 80,
        }
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 244, 0, last], 8080))
    }

    fn vs(k: VirtualServerKey, sched: &str, rs: &[u8]) -> VirtualServer {
        VirtualServer {
            key: k,
            scheduler: sched.parse().unwrap(),
            persistence: None,
            real_servers: rs
                .iter()
                .map(|l| (addr(*l), RealServer { weight: 1 }))
                .collect(),
        }
    }

    fn observed(v: &VirtualServer, conns: &[(u8, u32, u32)]) -> ObservedVirtualServer {
        ObservedVirtualServer {
            key: v.key,
            scheduler: Some(v.scheduler.clone()),
            persistence: v.persistence,
            real_servers: v
                .real_servers
                .iter()
                .map(|(a, r)| {
                    let c = conns
                        .iter()
                        .find(|(l, _, _)| addr(*l) == *a)
                        .map(|(_, a, i)| (*a, *i))
                        .unwrap_or((0, 0));
                    (
                        *a,
                        ObservedRealServer {
                            weight: r.weight,
                            active_conns: c.0,
                            inactive_conns: c.1,
                        },
                    )
                })
                .collect(),
            counts_fresh: true,
        }
    }

    fn one(v: VirtualServer) -> BTreeMap<VirtualServerKey, VirtualServer> {
        BTreeMap::from([(v.key, v)])
    }

    fn one_obs(v: ObservedVirtualServer) -> BTreeMap<VirtualServerKey, ObservedVirtualServer> {
        BTreeMap::from([(v.key, v)])
    }

    const CFG: DiffConfig = DiffConfig {
        drain_timeout_secs: 900,
    };

    #[test]
    fn a_new_service_is_added_before_its_real_servers() {
        let k = key(Protocol::Tcp, 1);
        let (c, d) = diff(
            &BTreeMap::new(),
            &one(vs(k, "rr", &[5, 6])),
            &Draining::new(),
            0,
            CFG,
        );
        assert!(matches!(c[0], Change::AddVirtualServer(_)));
        assert_eq!(
            c[1..],
            [
                Change::AddRealServer {
                    vs: k,
                    addr: addr(5),
                    weight: 1
                },
                Change::AddRealServer {
                    vs: k,
                    addr: addr(6),
                    weight: 1
                },
            ]
        );
        assert!(d.is_empty());
    }

    #[test]
    fn stale_zero_counts_drain_instead_of_deleting() {
        let k = key(Protocol::Tcp, 1);
        let mut have = observed(&vs(k, "rr", &[5, 6]), &[]);
        have.counts_fresh = false;
        let (c, d) = diff(
            &one_obs(have),
            &one(vs(k, "rr", &[5])),
            &Draining::new(),
            7,
            CFG,
        );
        assert_eq!(
            c,
            [Change::EditRealServer {
                vs: k,
                addr: addr(6),
                weight: 0
            }]
        );
        assert_eq!(d.get(&(k, addr(6))), Some(&7));
    }

    #[test]
    fn a_removed_tcp_endpoint_with_connections_drains_then_goes_when_idle() {
        let k = key(Protocol::Tcp, 1);
        let before = vs(k, "rr", &[5, 6]);
        let after = vs(k, "rr", &[5]);
        let have = one_obs(observed(&before, &[(6, 2, 1)]));
        let (c, d) = diff(&have, &one(after.clone()), &Draining::new(), 100, CFG);
        assert_eq!(
            c,
            [Change::EditRealServer {
                vs: k,
                addr: addr(6),
                weight: 0
            }]
        );
        assert_eq!(d.get(&(k, addr(6))), Some(&100));

        // Still busy a minute later: nothing to do, still draining since 100.
        let mut model = have.clone();
        apply_to_model(&mut model, &c);
        model
            .get_mut(&k)
            .unwrap()
            .real_servers
            .get_mut(&addr(6))
            .unwrap()
            .active_conns = 1;
        let (c, d) = diff(&model, &one(after.clone()), &d, 160, CFG);
        assert!(c.is_empty());
        assert_eq!(d.get(&(k, addr(6))), Some(&100));

        // Idle: deleted.
        let rs = model
            .get_mut(&k)
            .unwrap()
            .real_servers
            .get_mut(&addr(6))
            .unwrap();
        rs.active_conns = 0;
        rs.inactive_conns = 0;
        let (c, d) = diff(&model, &one(after), &d, 200, CFG);
        assert_eq!(
            c,
            [Change::DeleteRealServer {
                vs: k,
                addr: addr(6)
            }]
        );
        assert!(d.is_empty());
    }

    #[test]
    fn draining_is_bounded_by_the_timeout() {
        let k = key(Protocol::Tcp, 1);
        let mut have = one_obs(observed(&vs(k, "rr", &[5, 6]), &[(6, 9, 0)]));
        have.get_mut(&k)
            .unwrap()
            .real_servers
            .get_mut(&addr(6))
            .unwrap()
            .weight = 0;
        let draining = Draining::from([((k, addr(6)), 100)]);
        let (c, _) = diff(&have, &one(vs(k, "rr", &[5])), &draining, 100 + 899, CFG);
        assert!(c.is_empty());
        let (c, d) = diff(&have, &one(vs(k, "rr", &[5])), &draining, 100 + 900, CFG);
        assert_eq!(
            c,
            [Change::DeleteRealServer {
                vs: k,
                addr: addr(6)
            }]
        );
        assert!(d.is_empty());
    }

    #[test]
    fn udp_and_non_draining_schedulers_delete_at_once() {
        for (proto, sched) in [
            (Protocol::Udp, "rr"),
            (Protocol::Sctp, "rr"),
            (Protocol::Tcp, "sh"),
            (Protocol::Tcp, "mh"),
        ] {
            let k = key(proto, 1);
            let have = one_obs(observed(&vs(k, sched, &[5, 6]), &[(6, 3, 3)]));
            let (c, d) = diff(&have, &one(vs(k, sched, &[5])), &Draining::new(), 0, CFG);
            assert_eq!(
                c,
                [Change::DeleteRealServer {
                    vs: k,
                    addr: addr(6)
                }],
                "{proto} {sched}"
            );
            assert!(d.is_empty());
        }
        // sh with its fallback flag drains like rr.
        let k = key(Protocol::Tcp, 1);
        let sched = "sh";
        let mut want = vs(k, sched, &[5]);
        want.scheduler =
            kipvs_sched::SchedulerConfig::from_annotations("sh", Some("sh-fallback")).unwrap();
        let mut have = observed(&vs(k, sched, &[5, 6]), &[(6, 3, 3)]);
        have.scheduler = Some(want.scheduler.clone());
        let (c, _) = diff(&one_obs(have), &one(want), &Draining::new(), 0, CFG);
        assert_eq!(
            c,
            [Change::EditRealServer {
                vs: k,
                addr: addr(6),
                weight: 0
            }]
        );
    }

    #[test]
    fn a_draining_endpoint_that_returns_gets_its_weight_back() {
        let k = key(Protocol::Tcp, 1);
        let mut have = one_obs(observed(&vs(k, "rr", &[5, 6]), &[(6, 4, 0)]));
        have.get_mut(&k)
            .unwrap()
            .real_servers
            .get_mut(&addr(6))
            .unwrap()
            .weight = 0;
        let draining = Draining::from([((k, addr(6)), 50)]);
        let (c, d) = diff(&have, &one(vs(k, "rr", &[5, 6])), &draining, 60, CFG);
        assert_eq!(
            c,
            [Change::EditRealServer {
                vs: k,
                addr: addr(6),
                weight: 1
            }]
        );
        assert!(d.is_empty());
    }

    #[test]
    fn scheduler_or_persistence_changes_edit_the_virtual_server() {
        let k = key(Protocol::Tcp, 1);
        let have = one_obs(observed(&vs(k, "rr", &[5]), &[]));
        let (c, _) = diff(&have, &one(vs(k, "wrr", &[5])), &Draining::new(), 0, CFG);
        assert_eq!(c, [Change::EditVirtualServer(vs(k, "wrr", &[5]))]);
        let mut sticky = vs(k, "rr", &[5]);
        sticky.persistence = Some(Persistence {
            timeout_secs: 10800,
        });
        let (c, _) = diff(&have, &one(sticky.clone()), &Draining::new(), 0, CFG);
        assert_eq!(c, [Change::EditVirtualServer(sticky)]);
    }

    #[test]
    fn an_unwanted_virtual_server_is_deleted() {
        let k = key(Protocol::Tcp, 1);
        let have = one_obs(observed(&vs(k, "rr", &[5]), &[(5, 1, 0)]));
        let (c, _) = diff(&have, &BTreeMap::new(), &Draining::new(), 0, CFG);
        assert_eq!(c, [Change::DeleteVirtualServer(k)]);
    }

    fn arb_state() -> impl Strategy<Value = BTreeMap<VirtualServerKey, VirtualServer>> {
        let vs = (
            prop_oneof![
                Just(Protocol::Tcp),
                Just(Protocol::Udp),
                Just(Protocol::Sctp)
            ],
            0u8..6,
            prop_oneof![Just("rr"), Just("wrr"), Just("lc")],
            proptest::option::of(1u32..86400),
            proptest::collection::btree_map(0u8..8, 0u32..4, 0..5),
        )
            .prop_map(|(p, l, s, persist, rs)| {
                let mut v = vs(key(p, l), s, &[]);
                v.persistence = persist.map(|timeout_secs| Persistence { timeout_secs });
                v.real_servers = rs
                    .into_iter()
                    .map(|(a, w)| (addr(a), RealServer { weight: w }))
                    .collect();
                v
            });
        proptest::collection::vec(vs, 0..8)
            .prop_map(|v| v.into_iter().map(|v| (v.key, v)).collect())
    }

    fn as_observed(
        state: &BTreeMap<VirtualServerKey, VirtualServer>,
    ) -> BTreeMap<VirtualServerKey, ObservedVirtualServer> {
        state.values().map(|v| (v.key, observed(v, &[]))).collect()
    }

    proptest! {
        /// diff(A → B) applied to a model of A yields exactly B (no
        /// connections, so nothing is left draining), and diff(B, B) is empty.
        #[test]
        fn diff_applied_to_a_yields_b(a in arb_state(), b in arb_state()) {
            let mut model = BTreeMap::new();
            let (to_a, _) = diff(&model, &a, &Draining::new(), 0, CFG);
            apply_to_model(&mut model, &to_a);
            prop_assert_eq!(&model, &as_observed(&a));

            let (to_b, draining) = diff(&model, &b, &Draining::new(), 0, CFG);
            apply_to_model(&mut model, &to_b);
            prop_assert_eq!(&model, &as_observed(&b));
            prop_assert!(draining.is_empty());

            let (again, _) = diff(&model, &b, &Draining::new(), 0, CFG);
            prop_assert!(again.is_empty(), "{:?}", again);
        }
    }
}
