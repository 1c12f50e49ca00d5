//! The dummy-interface manager.
//!
//! IPVS only sees traffic to addresses the node treats as local, so every
//! virtual-server address is bound as a host address on a dummy interface,
//! `kube-ipvs0`. This crate ensures that interface exists, keeps its address
//! set equal to a desired set over rtnetlink, and applies the node sysctls
//! IPVS service proxying needs.
