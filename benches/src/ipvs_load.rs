//! Loading an empty IPVS table with N services × E destinations, three
//! ways, and reading it back (issue #4's benchmark; run it in the kernel
//! lab with `cargo xtask bench ipvs`):
//!
//! - [`Method::Pipelined`]: [`Client::apply`] of every add, windows of
//!   requests in one `sendmsg`, acknowledgements matched by sequence;
//! - [`Method::Serial`]: [`Client::execute`], one request per round trip
//!   (what moby/ipvs and kube-proxy's IPVS mode do);
//! - [`Method::Restore`]: `ipvsadm -R` reading the equivalent rules on stdin
//!   (the rule text is generated before the clock starts).
//!
//! Every load is verified before its time counts: the whole table is read
//! back and must hold exactly N services and N × E destinations.

use crate::synthetic::{cluster_ip, endpoint_ip};
use crate::{BenchError, seconds_since};
use kipvs_ipvs::{Client, Destination, Op, Service, ServiceKey};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

/// How the table is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// kipvs `Client::apply`: pipelined requests.
    Pipelined,
    /// kipvs `Client::execute`: one request per round trip.
    Serial,
    /// `ipvsadm -R` of the equivalent rules.
    Restore,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Pipelined => "kipvs pipelined",
            Method::Serial => "kipvs one per round trip",
            Method::Restore => "ipvsadm -R",
        }
    }
}

/// Service `i`'s virtual server: TCP ClusterIP:80, round robin.
pub fn service_key(i: u32) -> ServiceKey {
    ServiceKey::tcp(cluster_ip(i), 80)
}

/// The adds that build `n` services × `e` destinations (masquerade,
/// weight 1, port 8080), each service before its destinations.
pub fn ops(n: u32, e: u32) -> Vec<Op> {
    let mut ops = Vec::with_capacity((n * (e + 1)) as usize);
    for i in 0..n {
        let key = service_key(i);
        ops.push(Op::AddService(Service::new(key, "rr")));
        for j in 0..e {
            ops.push(Op::AddDestination {
                service: key,
                destination: Destination::new(endpoint_ip(i, j, e), 8080),
            });
        }
    }
    ops
}

/// The same table as `ipvsadm -R` input.
pub fn restore_rules(n: u32, e: u32) -> String {
    let mut s = String::with_capacity((n * (e + 1) * 56) as usize);
    for i in 0..n {
        let vip = cluster_ip(i);
        s.push_str(&format!("-A -t {vip}:80 -s rr\n"));
        for j in 0..e {
            let rip = endpoint_ip(i, j, e);
            s.push_str(&format!("-a -t {vip}:80 -r {rip}:8080 -m -w 1\n"));
        }
    }
    s
}

/// Loads the table one way; returns the seconds it took. The kernel must
/// hold no services with these addresses beforehand.
pub fn load(method: Method, n: u32, e: u32) -> Result<f64, BenchError> {
    let seconds = match method {
        Method::Pipelined | Method::Serial => {
            let ops = ops(n, e);
            let mut ipvs = Client::new()?;
            let start = Instant::now();
            let failed = if method == Method::Pipelined {
                ipvs.apply(&ops).into_iter().filter(Result::is_err).count()
            } else {
                ops.iter().filter(|op| ipvs.execute(op).is_err()).count()
            };
            let t = seconds_since(start);
            if failed > 0 {
                return Err(BenchError::Failed(format!(
                    "{failed} of {} requests failed",
                    ops.len()
                )));
            }
            t
        }
        Method::Restore => {
            let rules = restore_rules(n, e);
            let start = Instant::now();
            run_with_stdin(Command::new("ipvsadm").arg("-R"), rules.as_bytes())?;
            seconds_since(start)
        }
    };
    verify(n, e)?;
    Ok(seconds)
}

/// Reads the whole table back (1 + N dumps, on `threads` sockets) and
/// returns the seconds it took.
pub fn dump(n: u32, e: u32, threads: usize) -> Result<f64, BenchError> {
    let mut ipvs = Client::new()?;
    ipvs.set_dump_threads(threads);
    let start = Instant::now();
    let table = ipvs.dump_all()?;
    let t = seconds_since(start);
    check_counts(&table, n, e)?;
    Ok(t)
}

/// The kernel holds exactly `n` services and `n × e` destinations.
pub fn verify(n: u32, e: u32) -> Result<(), BenchError> {
    let table = Client::new()?.dump_all()?;
    check_counts(&table, n, e)
}

fn check_counts(table: &[kipvs_ipvs::TableEntry], n: u32, e: u32) -> Result<(), BenchError> {
    let services = table.len();
    let destinations: usize = table.iter().map(|t| t.destinations.len()).sum();
    if services != n as usize || destinations != (n * e) as usize {
        return Err(BenchError::Failed(format!(
            "the kernel holds {services} services and {destinations} destinations, \
             not {n} and {}",
            n * e
        )));
    }
    Ok(())
}

/// Runs a command with `input` on its stdin; an error names the command.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Result<(), BenchError> {
    let name = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::Failed(format!("starting {name}: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input)
        .map_err(|e| BenchError::Failed(format!("writing to {name}: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| BenchError::Failed(format!("waiting for {name}: {e}")))?;
    if !out.status.success() {
        return Err(BenchError::Failed(format!(
            "{name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ops_and_the_rules_describe_the_same_table() {
        let ops = ops(2, 3);
        assert_eq!(ops.len(), 8);
        assert_eq!(
            restore_rules(1, 2),
            "-A -t 10.96.0.1:80 -s rr\n\
             -a -t 10.96.0.1:80 -r 10.128.0.1:8080 -m -w 1\n\
             -a -t 10.96.0.1:80 -r 10.128.0.2:8080 -m -w 1\n"
        );
        assert!(matches!(&ops[0], Op::AddService(s) if s.key == service_key(0)));
        assert!(
            matches!(&ops[6], Op::AddDestination { service, destination }
            if *service == service_key(1) && destination.addr == endpoint_ip(1, 1, 3))
        );
    }
}
