//! `llmgate health`: the container's health check without curl or a shell. One plain
//! HTTP/1.1 `GET` of the health URL (the gateway's own listener, so no TLS), 2 s in all;
//! healthy when the answer's status is 200.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The whole check's time budget.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// The most of the answer read (its status line is all that matters).
const MAX_ANSWER_BYTES: usize = 4096;

/// The default URL: `/healthz` on `listen` (an unspecified address means this host).
pub fn default_url(listen: Option<&str>) -> String {
    let listen = listen.unwrap_or("127.0.0.1:8080");
    match listen.parse::<SocketAddr>() {
        Ok(mut addr) => {
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                });
            }
            format!("http://{addr}/healthz")
        }
        Err(_) => format!("http://{listen}/healthz"),
    }
}

/// GETs `url`; `Ok` when it answers 200 within [`TIMEOUT`], else why not.
pub fn check(url: &str) -> Result<(), String> {
    let deadline = Instant::now() + TIMEOUT;
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!("`{url}` must be an http:// URL"));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("`{url}` has no host"))?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addr = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {host}"))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut stream = TcpStream::connect_timeout(&addr, left())
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_write_timeout(Some(left()))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {host}:{port}\r\nconnection: close\r\nuser-agent: llmgate-health\r\n\r\n",
        parsed.path()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending the request failed: {e}"))?;
    let mut answer = Vec::with_capacity(256);
    let mut piece = [0u8; 512];
    while !answer.windows(2).any(|w| w == b"\r\n") && answer.len() < MAX_ANSWER_BYTES {
        stream
            .set_read_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        let n = stream
            .read(&mut piece)
            .map_err(|e| format!("reading the answer failed: {e}"))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&piece[..n]);
    }
    let status_line = answer.split(|&b| b == b'\r').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    match status_line.split(' ').nth(1) {
        Some("200") => Ok(()),
        Some(status) => Err(format!("{url} answered {status}")),
        None => Err(format!("{url} sent no HTTP answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_url_follows_the_listen_address() {
        assert_eq!(default_url(None), "http://127.0.0.1:8080/healthz");
        assert_eq!(
            default_url(Some("0.0.0.0:9000")),
            "http://127.0.0.1:9000/healthz"
        );
        assert_eq!(default_url(Some("[::]:9000")), "http://[::1]:9000/healthz");
        assert_eq!(
            default_url(Some("10.1.2.3:80")),
            "http://10.1.2.3:80/healthz"
        );
    }

    #[test]
    fn only_plain_http_urls_are_checked() {
        assert!(
            check("https://127.0.0.1:1/healthz")
                .unwrap_err()
                .contains("http://")
        );
        assert!(check("not a url").is_err());
    }
}
