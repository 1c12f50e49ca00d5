//! Errors, each naming the object it is about, and the pure mapping from a
//! kernel errno to an error for each kind of request.

use std::io;

use netlink_packet_core::DecodeError;

use crate::op::{Op, Read};
use crate::types::{DestinationKey, Service, ServiceKey};

/// Everything that can go wrong talking to IPVS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The generic-netlink controller does not know the `IPVS` family and the
    /// kernel could not load `ip_vs` on demand (no module, no `modprobe`, or
    /// a kernel built without IPVS).
    #[error("the IPVS netlink family is not registered and ip_vs could not be loaded")]
    IpvsUnavailable,
    /// The kernel refused the request: every IPVS command needs
    /// `CAP_NET_ADMIN` in the network namespace's user namespace.
    #[error("{op}: permission denied (IPVS needs CAP_NET_ADMIN)")]
    PermissionDenied {
        /// The request, e.g. `add service TCP 10.0.0.1:80`.
        op: String,
    },
    /// Adding a service that exists (`EEXIST`).
    #[error("service {0} already exists")]
    ServiceExists(ServiceKey),
    /// The service does not exist (`ESRCH`).
    #[error("no such service {0}")]
    NoSuchService(ServiceKey),
    /// Adding a destination that exists in the service (`EEXIST`).
    #[error("destination {destination} of service {service} already exists")]
    DestinationExists {
        /// The service.
        service: ServiceKey,
        /// The destination.
        destination: DestinationKey,
    },
    /// Editing or deleting a destination the service does not have
    /// (`ENOENT`).
    #[error("no such destination {destination} in service {service}")]
    NoSuchDestination {
        /// The service.
        service: ServiceKey,
        /// The destination.
        destination: DestinationKey,
    },
    /// The kernel could not find or load the scheduler (`ip_vs_<name>`) or
    /// persistence engine (`ip_vs_pe_<name>`) of a service (`ENOENT`).
    #[error(
        "service {service}: {module} could not be loaded (unknown scheduler or persistence engine?)"
    )]
    SchedulerUnavailable {
        /// The service.
        service: ServiceKey,
        /// The module(s) the kernel tried: `ip_vs_wlc`, or
        /// `ip_vs_sh or ip_vs_pe_sip` when an engine was asked for too.
        module: String,
    },
    /// The kernel found the request invalid (`EINVAL`, `EAFNOSUPPORT`…),
    /// e.g. a negative weight, an IPv6 prefix outside 1–128, a mixed-family
    /// destination that is not tunnelled, or a name too long.
    #[error("{op}: invalid request ({source})")]
    Invalid {
        /// The request that caused it.
        op: String,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
    /// The socket failed, the kernel did not answer, or its answer was
    /// lost (a receive-buffer overflow: the outcome is unknown).
    #[error("{op}: {source}")]
    Netlink {
        /// The request.
        op: String,
        /// The transport's failure.
        #[source]
        source: kipvs_netlink::Error,
    },
    /// Any other errno the kernel answered with.
    #[error("{op}: {source}")]
    Kernel {
        /// The request.
        op: String,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
    /// The kernel sent a message this crate cannot read; the message names
    /// the attribute.
    #[error("{op}: malformed kernel message: {source}")]
    Decode {
        /// The request whose reply was malformed.
        op: String,
        /// What was wrong, naming the attribute.
        #[source]
        source: DecodeError,
    },
}

impl Error {
    /// The kernel's errno behind this error, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        Some(match self {
            Error::IpvsUnavailable => libc::ENOENT,
            Error::PermissionDenied { .. } => libc::EPERM,
            Error::ServiceExists(_) | Error::DestinationExists { .. } => libc::EEXIST,
            Error::NoSuchService(_) => libc::ESRCH,
            Error::NoSuchDestination { .. } | Error::SchedulerUnavailable { .. } => libc::ENOENT,
            Error::Invalid { source, .. } | Error::Kernel { source, .. } => {
                return source.raw_os_error();
            }
            Error::Netlink { source, .. } => return source.errno(),
            Error::Decode { .. } => return None,
        })
    }
}

/// The module names the kernel tries for a service.
pub(crate) fn modules_of(s: &Service) -> String {
    match &s.persistence_engine {
        Some(pe) => format!("ip_vs_{} or ip_vs_pe_{pe}", s.scheduler),
        None => format!("ip_vs_{}", s.scheduler),
    }
}

fn common(op: String, errno: i32) -> Error {
    let source = io::Error::from_raw_os_error(errno);
    match errno {
        libc::EPERM | libc::EACCES => Error::PermissionDenied { op },
        libc::EINVAL | libc::EAFNOSUPPORT | libc::EOPNOTSUPP | libc::ERANGE => {
            Error::Invalid { op, source }
        }
        _ => Error::Kernel { op, source },
    }
}

/// The error of a write operation the kernel answered with `errno`
/// (positive).
pub fn op_error(op: &Op, errno: i32) -> Error {
    use libc::{EEXIST, ENOENT, ESRCH};
    match (op, errno) {
        (Op::AddService(s), EEXIST) => Error::ServiceExists(s.key),
        (Op::AddService(s) | Op::EditService(s), ENOENT) => Error::SchedulerUnavailable {
            service: s.key,
            module: modules_of(s),
        },
        (Op::EditService(s), ESRCH) => Error::NoSuchService(s.key),
        (Op::DeleteService(k) | Op::Zero(Some(k)), ESRCH) => Error::NoSuchService(*k),
        (
            Op::AddDestination { service, .. }
            | Op::EditDestination { service, .. }
            | Op::DeleteDestination { service, .. },
            ESRCH,
        ) => Error::NoSuchService(*service),
        (
            Op::AddDestination {
                service,
                destination,
            },
            EEXIST,
        ) => Error::DestinationExists {
            service: *service,
            destination: destination.key(),
        },
        (
            Op::EditDestination {
                service,
                destination,
            },
            ENOENT,
        ) => Error::NoSuchDestination {
            service: *service,
            destination: destination.key(),
        },
        (
            Op::DeleteDestination {
                service,
                destination,
            },
            ENOENT,
        ) => Error::NoSuchDestination {
            service: *service,
            destination: *destination,
        },
        _ => common(op.to_string(), errno),
    }
}

/// The error of a read the kernel answered with `errno` (positive).
pub fn read_error(read: &Read, errno: i32) -> Error {
    match (read, errno) {
        (Read::Service(k), libc::ESRCH) => Error::NoSuchService(*k),
        _ => common(read.to_string(), errno),
    }
}

/// The error of family resolution answered with `errno` (positive).
pub fn resolve_error(errno: i32) -> Error {
    match errno {
        libc::ENOENT => Error::IpvsUnavailable,
        _ => common("resolve the IPVS generic-netlink family".into(), errno),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Destination, DestinationKey, Service, ServiceKey, Timeouts};
    use std::net::Ipv4Addr;

    fn key() -> ServiceKey {
        ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 80)
    }

    #[test]
    fn errno_maps_per_operation() {
        let svc = Service::new(key(), "wlc");
        let dest = Destination::new(Ipv4Addr::new(10, 1, 0, 1), 8080);
        let dk = dest.key();
        let add = Op::AddService(svc.clone());
        assert!(matches!(op_error(&add, libc::EEXIST), Error::ServiceExists(k) if k == key()));
        let e = op_error(&add, libc::ENOENT);
        assert_eq!(
            e.to_string(),
            "service TCP 10.0.0.1:80: ip_vs_wlc could not be loaded (unknown scheduler or persistence engine?)"
        );
        assert!(matches!(
            op_error(&Op::EditService(svc.clone()), libc::ESRCH),
            Error::NoSuchService(_)
        ));
        assert!(matches!(
            op_error(&Op::DeleteService(key()), libc::ESRCH),
            Error::NoSuchService(_)
        ));
        let add_dest = Op::AddDestination {
            service: key(),
            destination: dest.clone(),
        };
        assert!(matches!(
            op_error(&add_dest, libc::ESRCH),
            Error::NoSuchService(_)
        ));
        let e = op_error(&add_dest, libc::EEXIST);
        assert_eq!(
            e.to_string(),
            "destination 10.1.0.1:8080 of service TCP 10.0.0.1:80 already exists"
        );
        let edit_dest = Op::EditDestination {
            service: key(),
            destination: dest.clone(),
        };
        assert!(matches!(
            op_error(&edit_dest, libc::ENOENT),
            Error::NoSuchDestination { destination, .. } if destination == dk
        ));
        let del_dest = Op::DeleteDestination {
            service: key(),
            destination: DestinationKey::new(Ipv4Addr::new(10, 1, 0, 1), 8080),
        };
        assert_eq!(
            op_error(&del_dest, libc::ENOENT).to_string(),
            "no such destination 10.1.0.1:8080 in service TCP 10.0.0.1:80"
        );
        let e = op_error(&del_dest, libc::EINVAL);
        assert!(matches!(e, Error::Invalid { .. }));
        assert!(
            e.to_string().starts_with(
                "delete destination 10.1.0.1:8080 of service TCP 10.0.0.1:80: invalid request"
            ),
            "{e}"
        );
        assert!(matches!(
            op_error(&add, libc::EPERM),
            Error::PermissionDenied { .. }
        ));
        assert!(matches!(
            op_error(&Op::SetTimeouts(Timeouts::default()), libc::ENOMEM),
            Error::Kernel { .. }
        ));
        assert_eq!(
            op_error(&add, libc::EEXIST).raw_os_error(),
            Some(libc::EEXIST)
        );
    }

    #[test]
    fn persistence_engine_is_named() {
        let mut svc = Service::new(key(), "sh");
        svc.persistence_engine = Some("sip".into());
        assert!(
            op_error(&Op::AddService(svc), libc::ENOENT)
                .to_string()
                .contains("ip_vs_sh or ip_vs_pe_sip")
        );
    }

    #[test]
    fn reads_and_resolution() {
        assert!(matches!(
            read_error(&Read::Service(key()), libc::ESRCH),
            Error::NoSuchService(_)
        ));
        assert!(matches!(
            resolve_error(libc::ENOENT),
            Error::IpvsUnavailable
        ));
        assert_eq!(
            resolve_error(libc::ENOENT).to_string(),
            "the IPVS netlink family is not registered and ip_vs could not be loaded"
        );
        assert!(matches!(
            resolve_error(libc::EPERM),
            Error::PermissionDenied { .. }
        ));
    }
}
