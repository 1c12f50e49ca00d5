//! A client for the agent's local inspection API (`kipvs proxy` serves it
//! on `--metrics-bind-address`, default `127.0.0.1:10249`): plain HTTP/1.0
//! GETs over a loopback TCP connection, so the CLI needs neither the API
//! server nor an HTTP library.

use anyhow::{Context, Result, bail};
use kipvs_proxy::api::VirtualServerInfo;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The default address of the agent's local endpoints.
pub const DEFAULT_AGENT: &str = "127.0.0.1:10249";

/// GETs `path`; returns the status code and body.
pub fn get(agent: SocketAddr, path: &str) -> Result<(u16, String)> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&agent, Duration::from_millis(500))
        .with_context(|| format!("no kipvs agent answers on {agent}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {agent}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the agent's answer to {path}"))?;
    parse_response(&raw).with_context(|| format!("the agent's answer to {path}"))
}

/// Splits an HTTP/1.x response into status code and body.
pub fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("not an HTTP response");
    };
    let code = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("no status code")?;
    Ok((code, body.to_owned()))
}

/// The virtual servers the agent programs, with their Services; `None` if
/// no agent answers (names are then simply left out).
pub fn virtual_servers(agent: SocketAddr) -> Option<Vec<VirtualServerInfo>> {
    let (code, body) = get(agent, "/kipvs/v1/virtual-servers").ok()?;
    if code != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_split_into_code_and_body() {
        let (code, body) =
            parse_response(b"HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\nno\n").unwrap();
        assert_eq!((code, body.as_str()), (404, "no\n"));
        assert!(parse_response(b"garbage").is_err());
    }
}
