//! A client for the Linux kernel's IPVS generic-netlink family (`"IPVS"`,
//! `include/uapi/linux/ip_vs.h`): complete, fast and exact. It knows nothing
//! of Kubernetes.
//!
//! # What it does
//!
//! - Reads and writes virtual services ([`Service`]: TCP/UDP/SCTP address
//!   and port, or firewall mark; scheduler, flags, persistence timeout,
//!   netmask, persistence engine) and their destinations ([`Destination`]:
//!   forwarding method, weight, thresholds, tunnel settings), with their
//!   counters ([`Stats`], 64-bit where the kernel has them), the timeouts
//!   ([`Timeouts`]) and the module information ([`Info`]). IPv4 and IPv6
//!   throughout.
//! - Pipelines many changes over one socket ([`Client::apply`]) with a
//!   result per change, and reads the whole table fast
//!   ([`Client::dump_all`]).
//! - Names the object in every error ([`Error`]): `ServiceExists`,
//!   `NoSuchDestination`, `SchedulerUnavailable` (with the module the kernel
//!   tried to load) …
//!
//! It speaks netlink only: `ipvsadm`'s text formats (`-S`, `-L`, `-R`
//! input, `-Lcn`) over these types are the `kipvs-ipvsadm` crate's.
//!
//! # Design
//!
//! - **Plain data, pure decisions, I/O at the edges.** [`types`] are plain
//!   structs and enums. [`message`] holds the byte-exact codec in the
//!   rust-netlink style (`Emitable` / `Parseable` over `netlink-packet-core`
//!   and `netlink-packet-generic`, one module per attribute family); decoding
//!   never panics and a malformed attribute is an error naming it. [`Op`]
//!   turns a change into a message and the error mapping turns an errno into
//!   an [`Error`] for that change, both pure functions. Only [`Client`]
//!   touches a socket.
//! - **The shared transport.** Requests go over `kipvs-netlink`'s socket,
//!   as link's, nft's and conntrack's do: each carries a sequence number,
//!   replies are matched by it, multi-part dumps are read to `NLMSG_DONE`,
//!   and a reply that fails to decode does not leave the socket out of step
//!   (the request is always read to its end).
//! - **Pipelining.** [`Client::apply`] writes a window of requests, each
//!   with `NLM_F_ACK`, in one `sendmsg`; the kernel runs them in order and
//!   acknowledges each. The window is bounded by the socket receive buffer
//!   (raised to 4 MiB with `SO_RCVBUFFORCE` when allowed; error
//!   acknowledgements are capped with `NETLINK_CAP_ACK`), because the kernel
//!   drops acknowledgements that do not fit. One failing request (say
//!   `EEXIST`) neither stops nor hides the others.
//! - **Whole-table reads.** The kernel has no dump of all destinations and a
//!   netlink socket runs one dump at a time, so reading the table is one
//!   service dump plus one destination dump per service. [`Client::dump_all`]
//!   runs the destination dumps on several sockets on scoped threads.
//! - **Blocking, on purpose.** Every IPVS request is a short, CPU-bound trip
//!   into the kernel with no waiting on the network; a blocking socket with
//!   a pipelined window is the simplest and fastest way to drive it, and
//!   needs no runtime. [`Client`] is `Send`: async callers move it into
//!   `tokio::task::spawn_blocking` (or keep it on a dedicated thread fed by
//!   a channel) so that no async worker thread blocks on the socket.
//! - **Permissions.** Every IPVS command, reads included, needs
//!   `CAP_NET_ADMIN`; resolving the family does not, and makes the kernel
//!   load `ip_vs` (it loads `ip_vs_<scheduler>` itself when a service asks
//!   for it).
//!
//! # Performance
//!
//! Measured by `cargo xtask bench ipvs` in the kernel lab (Debian 6.1 under
//! QEMU TCG, 2 vCPUs on a 2-core AMD EPYC host; a fresh VM per measurement,
//! median of 3): an empty table loaded with N services × 10 destinations,
//! and read back. Absolute times are TCG times, several times native; the
//! ratios are measured side by side. Full table: `benches/results/ipvs-load.md`.
//!
//! | N × 10 | [`Client::apply`] (pipelined) | one request per round trip | `ipvsadm -R` | pipelined / `ipvsadm -R` | [`Client::dump_all`], 1 socket | 4 sockets |
//! |---|---|---|---|---|---|---|
//! | 1,000 | 0.36 s | 0.64 s | 4.33 s | 0.08× | 0.37 s | 0.24 s |
//! | 5,000 | 2.10 s | 3.28 s | 23.1 s | 0.09× | 2.04 s | 1.57 s |
//! | 10,000 | 4.64 s | 6.83 s | 45.4 s | 0.10× | 4.29 s | 2.54 s |
//!
//! Pipelining is 1.5× faster than one request per round trip; most of the
//! distance to `ipvsadm -R` is ipvsadm's own cost per rule line, not the
//! kernel's. Reading 10k services back (1 + 10k dumps) takes 2.5 s on four
//! sockets: that is the cost of the controller's periodic resync.
//!
//! # Example
//!
//! ```no_run
//! use std::net::Ipv4Addr;
//! use kipvs_ipvs::{Client, Destination, Error, Forward, Op, Service, ServiceKey};
//!
//! # fn main() -> Result<(), Error> {
//! let mut ipvs = Client::new()?; // Error::IpvsUnavailable without ip_vs
//! let vip = ServiceKey::tcp(Ipv4Addr::new(10, 96, 0, 10), 80);
//! let results = ipvs.apply(&[
//!     Op::AddService(Service::new(vip, "rr")),
//!     Op::AddDestination {
//!         service: vip,
//!         destination: Destination::new(Ipv4Addr::new(10, 244, 1, 5), 8080),
//!     },
//!     Op::AddDestination {
//!         service: vip,
//!         destination: Destination::new(Ipv4Addr::new(10, 244, 2, 7), 8080)
//!             .with_forward(Forward::Masquerade)
//!             .with_weight(2),
//!     },
//! ]);
//! for r in results {
//!     match r {
//!         Ok(()) | Err(Error::ServiceExists(_)) => {}
//!         Err(e) => eprintln!("{e}"),
//!     }
//! }
//! for entry in ipvs.dump_all()? {
//!     println!("{} {} destinations", entry.service.service.key, entry.destinations.len());
//! }
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod client;
pub mod error;
pub mod message;
mod op;
pub mod types;

pub use client::{Client, dedupe_services};
pub use error::Error;
pub use op::{Op, Read};
pub use types::{
    AddressFamily, Destination, DestinationEntry, DestinationKey, Forward, Info, Netmask, Protocol,
    Service, ServiceEntry, ServiceFlags, ServiceKey, Stats, TableEntry, Timeouts, TunnelFlags,
    TunnelType,
};
