//! RoomControl's load generator.
//!
//! `loadgen run` drives one RPC (CreateToken, GetRoom, ListRooms) at a fixed
//! concurrency (closed loop) or a fixed rate (open loop, `--rate`) for a
//! fixed time, over gRPC on N HTTP/2 connections, grpc-web on N HTTP/1.1
//! connections, or Twirp straight to LiveKit (the baseline of the
//! RoomControl calls that go to LiveKit). Every response's status is
//! checked: a gRPC error is an error, not a success, except that an
//! overload run (`--refusals`) counts RESOURCE_EXHAUSTED as a refusal,
//! timed apart from the admitted calls. Latencies go into an
//! HDR histogram; the server's CPU time and RSS are sampled from `/proc`.
//!
//! `loadgen webhooks` POSTs distinct, pre-signed LiveKit webhooks to
//! RoomControl's intake over HTTP/1.1 keep-alive connections, and
//! `loadgen watch` fans webhooks at a fixed rate out to many WatchEvents
//! streams, timing each delivery from the webhook's POST.
//!
//! `scripts/bench` runs the scenarios of docs/benchmarks.md with it and
//! `loadgen report` turns the results into the table.
#![forbid(unsafe_code)]

pub mod client;
pub mod procfs;
pub mod record;
pub mod report;
pub mod run;
pub mod timeline;

/// The generated RoomControl API: the client the load generator drives and
/// the server trait the baseline implements.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("roomcontrol.v1");
}

/// A tokio runtime with `threads` workers; with one, the single-threaded
/// runtime (cheapest on one core). `baseline-server` passes the CPUs it may
/// use, as RoomControl does with `server.worker_threads = 0`.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
}

/// Parses `name:value`.
pub fn parse_header(header: &str) -> Result<(String, String), String> {
    let (name, value) = header.split_once(':').ok_or_else(|| format!("{header:?}: expected name:value"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{header:?}: the header name is empty"));
    }
    Ok((name.to_ascii_lowercase(), value.trim().to_owned()))
}

/// Parses a target URL (`http://127.0.0.1:50051`) into the address to
/// connect to and the authority for the Host header. Names are resolved.
pub fn parse_target(target: &str) -> Result<(std::net::SocketAddr, String), String> {
    use std::net::ToSocketAddrs as _;
    let uri: http::Uri = target.parse().map_err(|e| format!("{target:?}: {e}"))?;
    if uri.scheme_str().is_some_and(|scheme| scheme != "http") {
        return Err(format!("{target:?}: only plain http:// targets are supported"));
    }
    let authority = uri.authority().ok_or_else(|| format!("{target:?}: expected http://host:port"))?;
    let port = authority.port_u16().unwrap_or(80);
    let addr = (authority.host().trim_start_matches('[').trim_end_matches(']'), port)
        .to_socket_addrs()
        .map_err(|e| format!("{target:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target:?}: the name resolves to no address"))?;
    Ok((addr, authority.as_str().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_as_name_colon_value() {
        assert_eq!(parse_header("Authorization: Bearer abc").unwrap(), ("authorization".into(), "Bearer abc".into()));
        assert!(parse_header("no-colon").is_err());
        assert!(parse_header(": value").is_err());
    }

    #[test]
    fn targets_parse_into_an_address_and_an_authority() {
        let (addr, authority) = parse_target("http://127.0.0.1:50051").unwrap();
        assert_eq!(addr.port(), 50051);
        assert_eq!(authority, "127.0.0.1:50051");
        assert!(parse_target("https://127.0.0.1:1").is_err());
    }
}
