//! `kipvs explain`: asks the running agent why each endpoint of a Service
//! is, or is not, a real server, and which real servers are draining.

use crate::agent_client;
use anyhow::{Context, Result, bail};
use clap::Args;
use kipvs_engine::controller::AgentExplanation;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The Service: NAMESPACE/NAME (or NAME in `default`), optionally with
    /// `:PORT` (a port name or number) — or a virtual server's VIP:PORT.
    target: String,
    /// Print the agent's answer as JSON.
    #[arg(long)]
    json: bool,
    /// Where the agent serves its local endpoints.
    #[arg(long, default_value = agent_client::DEFAULT_AGENT, value_name = "IP:PORT")]
    agent: SocketAddr,
}

/// What the user asked about.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Service {
        namespace: String,
        name: String,
        port: Option<String>,
    },
    VirtualServer(IpAddr, u16),
}

fn parse_target(s: &str) -> Result<Target> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(Target::VirtualServer(sa.ip(), sa.port()));
    }
    let (svc, port) = match s.rsplit_once(':') {
        Some((svc, port)) => (svc, Some(port.to_owned())),
        None => (s, None),
    };
    let (namespace, name) = svc.split_once('/').unwrap_or(("default", svc));
    if name.is_empty() || namespace.is_empty() || name.contains('/') {
        bail!("`{s}` is not NAMESPACE/NAME[:PORT] or VIP:PORT");
    }
    Ok(Target::Service {
        namespace: namespace.into(),
        name: name.into(),
        port,
    })
}

pub fn run(a: ExplainArgs) -> Result<()> {
    let (namespace, name, port) = match parse_target(&a.target)? {
        Target::Service {
            namespace,
            name,
            port,
        } => (namespace, name, port),
        Target::VirtualServer(ip, p) => {
            let all = agent_client::virtual_servers(a.agent)
                .with_context(|| format!("no kipvs agent answers on {}", a.agent))?;
            let vs = all
                .into_iter()
                .find(|v| v.address == ip && v.port == p)
                .with_context(|| {
                    format!(
                        "no virtual server {} belongs to a Service",
                        SocketAddr::new(ip, p)
                    )
                })?;
            let (ns, n) = vs
                .service
                .split_once('/')
                .unwrap_or(("default", &vs.service));
            let port = (!vs.port_name.is_empty()).then(|| vs.port_name.clone());
            (ns.to_owned(), n.to_owned(), port)
        }
    };
    let (code, body) =
        agent_client::get(a.agent, &format!("/kipvs/v1/explain/{namespace}/{name}"))?;
    match code {
        200 => {}
        404 => bail!("the agent knows no Service {namespace}/{name}"),
        _ => bail!("the agent answered {code}: {}", body.trim()),
    }
    let mut e: AgentExplanation = serde_json::from_str(&body)
        .context("the agent's explanation is not what this kipvs reads")?;
    if let Some(p) = &port {
        e.explanation.ports.retain(|x| {
            x.port == *p
                || x.port.starts_with(&format!("{p} ("))
                || x.port.ends_with(&format!("({p})"))
        });
        if e.explanation.ports.is_empty() {
            bail!("Service {namespace}/{name} has no port {p}");
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_services_or_virtual_servers() {
        let svc = |ns: &str, n: &str, p: Option<&str>| Target::Service {
            namespace: ns.into(),
            name: n.into(),
            port: p.map(Into::into),
        };
        assert_eq!(parse_target("shop/web").unwrap(), svc("shop", "web", None));
        assert_eq!(
            parse_target("web:http").unwrap(),
            svc("default", "web", Some("http"))
        );
        assert_eq!(
            parse_target("shop/web:80").unwrap(),
            svc("shop", "web", Some("80"))
        );
        assert_eq!(
            parse_target("10.96.0.10:80").unwrap(),
            Target::VirtualServer("10.96.0.10".parse().unwrap(), 80)
        );
        assert_eq!(
            parse_target("[fd00::1]:443").unwrap(),
            Target::VirtualServer("fd00::1".parse().unwrap(), 443)
        );
        assert!(parse_target("a/b/c").is_err());
        assert!(parse_target("/x").is_err());
    }
}
