//! A minimal DNS client for tests: asks the local cluster's CoreDNS for A records over UDP
//! (RFC 1035 message format, one question, recursion not needed).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;

/// Why a lookup gave no addresses.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// Sending or receiving failed.
    #[error("DNS query for {name} to {server}: {source}")]
    Io {
        /// The name asked for.
        name: String,
        /// The server asked.
        server: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// No answer within the timeout.
    #[error("DNS query for {name} to {server}: no answer within {timeout:?}")]
    Timeout {
        /// The name asked for.
        name: String,
        /// The server asked.
        server: SocketAddr,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The server answered with an error code (3 = NXDOMAIN, 5 = REFUSED, ...).
    #[error("DNS query for {name}: response code {rcode} ({})", rcode_name(*rcode))]
    Rcode {
        /// The name asked for.
        name: String,
        /// The response code.
        rcode: u8,
    },
    /// The response could not be parsed.
    #[error("DNS query for {name}: malformed response: {reason}")]
    Malformed {
        /// The name asked for.
        name: String,
        /// What was wrong.
        reason: &'static str,
    },
}

fn rcode_name(rcode: u8) -> &'static str {
    match rcode {
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "other",
    }
}

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const TIMEOUT: Duration = Duration::from_secs(2);

/// The IPv4 addresses `server` gives for `name` (a fully qualified name such as
/// `node-cache.ns.svc.cluster.local`), sorted.
///
/// # Errors
/// When the query fails, times out, the server answers with an error code, or the answer cannot
/// be parsed.
pub async fn lookup_a(server: SocketAddr, name: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
    static NEXT_ID: AtomicU16 = AtomicU16::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let io = |source| DnsError::Io {
        name: name.to_owned(),
        server,
        source,
    };
    let socket = UdpSocket::bind(("127.0.0.1", 0)).await.map_err(io)?;
    socket.connect(server).await.map_err(io)?;
    socket.send(&query(id, name)).await.map_err(io)?;
    let mut buf = vec![0u8; 4096];
    loop {
        let len = tokio::time::timeout(TIMEOUT, socket.recv(&mut buf))
            .await
            .map_err(|_| DnsError::Timeout {
                name: name.to_owned(),
                server,
                timeout: TIMEOUT,
            })?
            .map_err(io)?;
        let response = &buf[..len];
        // A late answer to an earlier query on a reused port: keep waiting for ours.
        if response.len() >= 2 && u16::from_be_bytes([response[0], response[1]]) != id {
            continue;
        }
        return parse_a_records(response).map_err(|e| match e {
            ParseError::Rcode(rcode) => DnsError::Rcode {
                name: name.to_owned(),
                rcode,
            },
            ParseError::Malformed(reason) => DnsError::Malformed {
                name: name.to_owned(),
                reason,
            },
        });
    }
}

/// A query message: header (id, RD set, one question) and the question `name IN A`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // standard query, recursion desired
    q.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    q.extend_from_slice(&[0; 6]); // ANCOUNT, NSCOUNT, ARCOUNT
    for label in name.trim_end_matches('.').split('.') {
        let bytes = label.as_bytes();
        q.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX).min(63));
        q.extend_from_slice(&bytes[..bytes.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&TYPE_A.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    q
}

#[derive(Debug, PartialEq, Eq)]
enum ParseError {
    Rcode(u8),
    Malformed(&'static str),
}

fn read_u16(msg: &[u8], at: usize) -> Result<u16, ParseError> {
    msg.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(ParseError::Malformed("truncated"))
}

/// The offset just past the (possibly compressed) name starting at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Result<usize, ParseError> {
    loop {
        let len = *msg.get(at).ok_or(ParseError::Malformed("truncated name"))?;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xC0 == 0xC0 => return Ok(at + 2), // compression pointer ends the name
            l => at += 1 + usize::from(l),
        }
    }
}

/// The A records of the answer section, sorted.
fn parse_a_records(msg: &[u8]) -> Result<Vec<Ipv4Addr>, ParseError> {
    let flags = read_u16(msg, 2)?;
    if flags & 0x8000 == 0 {
        return Err(ParseError::Malformed("not a response"));
    }
    let rcode = (flags & 0x000F) as u8;
    if rcode != 0 {
        return Err(ParseError::Rcode(rcode));
    }
    let questions = read_u16(msg, 4)?;
    let answers = read_u16(msg, 6)?;
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let rtype = read_u16(msg, at)?;
        let rdlength = usize::from(read_u16(msg, at + 8)?);
        let data = msg
            .get(at + 10..at + 10 + rdlength)
            .ok_or(ParseError::Malformed("truncated record"))?;
        if rtype == TYPE_A && data.len() == 4 {
            out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + rdlength;
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encodes_labels() {
        let q = query(7, "a.bc.");
        assert_eq!(&q[..2], &[0, 7]);
        assert_eq!(&q[12..], &[1, b'a', 2, b'b', b'c', 0, 0, 1, 0, 1]);
    }

    #[test]
    fn parses_compressed_answers_and_error_codes() {
        // Response to "a.bc IN A" with two A records whose names point back at the question.
        let mut msg = query(7, "a.bc");
        msg[2] = 0x81;
        msg[3] = 0x80;
        msg[7] = 2; // ANCOUNT
        for ip in [[10, 244, 0, 9], [10, 244, 0, 3]] {
            msg.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
            msg.extend_from_slice(&ip);
        }
        assert_eq!(
            parse_a_records(&msg),
            Ok(vec![
                Ipv4Addr::new(10, 244, 0, 3),
                Ipv4Addr::new(10, 244, 0, 9)
            ])
        );
        msg[3] = 0x83; // NXDOMAIN
        assert_eq!(parse_a_records(&msg), Err(ParseError::Rcode(3)));
        msg[3] = 0x80;
        assert_eq!(
            parse_a_records(&msg[..msg.len() - 2]),
            Err(ParseError::Malformed("truncated record"))
        );
    }
}
