//! Requests as plain data, and the pure function from a request to its
//! message.

use std::fmt;

use crate::message::{IpvsAttr, IpvsCmd, IpvsMessage, config, dest, service};
use crate::types::{Destination, DestinationKey, Service, ServiceKey, Timeouts};

/// A change to the IPVS table: what [`Client::apply`](crate::Client::apply)
/// pipelines, and what every write method of the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Add a service (`ipvsadm -A`).
    AddService(Service),
    /// Edit a service (`ipvsadm -E`); every setting is written.
    EditService(Service),
    /// Delete a service and its destinations (`ipvsadm -D`).
    DeleteService(ServiceKey),
    /// Add a destination (`ipvsadm -a`).
    AddDestination {
        /// The service.
        service: ServiceKey,
        /// The destination.
        destination: Destination,
    },
    /// Edit a destination (`ipvsadm -e`); every setting is written.
    EditDestination {
        /// The service.
        service: ServiceKey,
        /// The destination.
        destination: Destination,
    },
    /// Delete a destination (`ipvsadm -d`).
    DeleteDestination {
        /// The service.
        service: ServiceKey,
        /// The destination.
        destination: DestinationKey,
    },
    /// Zero the counters of one service (`ipvsadm -Z -t …`) or of all
    /// (`ipvsadm -Z`).
    Zero(Option<ServiceKey>),
    /// Delete every service (`ipvsadm -C`).
    Flush,
    /// Set timeouts (`ipvsadm --set`); zero values are left unchanged.
    SetTimeouts(Timeouts),
}

impl Op {
    /// The request message of this operation.
    pub fn message(&self) -> IpvsMessage {
        let svc = |k: &ServiceKey| IpvsAttr::Service(service::key_attrs(k));
        match self {
            Op::AddService(s) => IpvsMessage::new(
                IpvsCmd::NewService,
                vec![IpvsAttr::Service(service::service_attrs(s))],
            ),
            Op::EditService(s) => IpvsMessage::new(
                IpvsCmd::SetService,
                vec![IpvsAttr::Service(service::service_attrs(s))],
            ),
            Op::DeleteService(k) => IpvsMessage::new(IpvsCmd::DelService, vec![svc(k)]),
            Op::AddDestination {
                service,
                destination,
            } => IpvsMessage::new(
                IpvsCmd::NewDest,
                vec![svc(service), IpvsAttr::Dest(dest::dest_attrs(destination))],
            ),
            Op::EditDestination {
                service,
                destination,
            } => IpvsMessage::new(
                IpvsCmd::SetDest,
                vec![svc(service), IpvsAttr::Dest(dest::dest_attrs(destination))],
            ),
            Op::DeleteDestination {
                service,
                destination,
            } => IpvsMessage::new(
                IpvsCmd::DelDest,
                vec![svc(service), IpvsAttr::Dest(dest::key_attrs(destination))],
            ),
            Op::Zero(None) => IpvsMessage::new(IpvsCmd::Zero, vec![]),
            Op::Zero(Some(k)) => IpvsMessage::new(IpvsCmd::Zero, vec![svc(k)]),
            Op::Flush => IpvsMessage::new(IpvsCmd::Flush, vec![]),
            Op::SetTimeouts(t) => config::set_timeouts(t),
        }
    }
}

/// `add service TCP 10.0.0.1:80 (scheduler wlc)`, `delete destination
/// 10.1.0.1:8080 of service TCP 10.0.0.1:80` …: how errors name a request.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddService(s) => write!(f, "add service {} (scheduler {})", s.key, s.scheduler),
            Op::EditService(s) => write!(f, "edit service {} (scheduler {})", s.key, s.scheduler),
            Op::DeleteService(k) => write!(f, "delete service {k}"),
            Op::AddDestination {
                service,
                destination,
            } => write!(
                f,
                "add destination {} to service {service}",
                destination.key()
            ),
            Op::EditDestination {
                service,
                destination,
            } => write!(
                f,
                "edit destination {} of service {service}",
                destination.key()
            ),
            Op::DeleteDestination {
                service,
                destination,
            } => write!(f, "delete destination {destination} of service {service}"),
            Op::Zero(None) => f.write_str("zero all counters"),
            Op::Zero(Some(k)) => write!(f, "zero the counters of service {k}"),
            Op::Flush => f.write_str("flush all services"),
            Op::SetTimeouts(t) => write!(
                f,
                "set timeouts tcp {} tcpfin {} udp {}",
                t.tcp, t.tcp_fin, t.udp
            ),
        }
    }
}

/// A read request (for naming it in errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Dump every service.
    Services,
    /// Get one service.
    Service(ServiceKey),
    /// Dump the destinations of a service.
    Destinations(ServiceKey),
    /// Get the timeouts.
    Timeouts,
    /// Get the module information.
    Info,
}

impl Read {
    /// The request message.
    pub fn message(&self) -> IpvsMessage {
        match self {
            Read::Services => IpvsMessage::new(IpvsCmd::GetService, vec![]),
            Read::Service(k) | Read::Destinations(k) => IpvsMessage::new(
                if matches!(self, Read::Service(_)) {
                    IpvsCmd::GetService
                } else {
                    IpvsCmd::GetDest
                },
                vec![IpvsAttr::Service(service::key_attrs(k))],
            ),
            Read::Timeouts => IpvsMessage::new(IpvsCmd::GetConfig, vec![]),
            Read::Info => IpvsMessage::new(IpvsCmd::GetInfo, vec![]),
        }
    }
}

impl fmt::Display for Read {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Read::Services => f.write_str("list services"),
            Read::Service(k) => write!(f, "get service {k}"),
            Read::Destinations(k) => write!(f, "list destinations of service {k}"),
            Read::Timeouts => f.write_str("get timeouts"),
            Read::Info => f.write_str("get IPVS info"),
        }
    }
}
