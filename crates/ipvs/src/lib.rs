//! A client for the Linux kernel's IPVS generic-netlink family (`"IPVS"`,
//! `include/uapi/linux/ip_vs.h`).
//!
//! It reads and writes virtual services, their destinations (real servers),
//! statistics, timeouts and daemon-independent information, and pipelines
//! many changes over one socket. It knows nothing of Kubernetes.
