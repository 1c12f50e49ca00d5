//! Why a netlink request failed.

use std::io;
use std::time::Duration;

/// A failed netlink request. Callers name the request; this says what
/// happened to it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused the request with this errno (positive).
    #[error("{}", io::Error::from_raw_os_error(*.errno))]
    Kernel {
        /// `EEXIST`, `ENOENT`, …
        errno: i32,
    },
    /// Opening, sending on or receiving from the socket failed.
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel did not answer within the socket's timeout.
    #[error("no reply from the kernel in {}s", .0.as_secs())]
    Timeout(Duration),
    /// The receive buffer overflowed (`ENOBUFS`): the kernel dropped replies,
    /// and this request's acknowledgement was among them. The kernel may or
    /// may not have carried it out.
    #[error("the socket's receive buffer overflowed and the reply was lost: outcome unknown")]
    Overrun,
    /// A reply was not a well-formed netlink message, or did not fit the
    /// receive buffer.
    #[error("malformed netlink reply: {0}")]
    Malformed(String),
}

impl Error {
    /// The kernel's errno, for [`Error::Kernel`].
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno } => Some(*errno),
            _ => None,
        }
    }

    /// The same failure again, for every request it stands for.
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Kernel { errno } => Error::Kernel { errno: *errno },
            Error::Socket(e) => Error::Socket(match e.raw_os_error() {
                Some(errno) => io::Error::from_raw_os_error(errno),
                None => io::Error::new(e.kind(), e.to_string()),
            }),
            Error::Timeout(d) => Error::Timeout(*d),
            Error::Overrun => Error::Overrun,
            Error::Malformed(m) => Error::Malformed(m.clone()),
        }
    }
}

/// For callers whose own errors carry an `io::Error`: the errno survives.
impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Kernel { errno } => io::Error::from_raw_os_error(errno),
            Error::Socket(e) => e,
            Error::Timeout(_) => io::Error::new(io::ErrorKind::TimedOut, e.to_string()),
            Error::Overrun => io::Error::from_raw_os_error(libc::ENOBUFS),
            Error::Malformed(_) => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        }
    }
}
