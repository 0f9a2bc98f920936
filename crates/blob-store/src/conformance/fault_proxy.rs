//! A fault-injecting HTTP proxy for S3 tests: it sits between an S3 client and the local
//! S3 server (moto) and, as a test switches it at runtime, answers `503 SlowDown`, cuts
//! responses mid-way with a connection reset, stalls, adds latency, or refuses every
//! connection for a while (an outage).
//!
//! Point the client's endpoint at [`FaultProxy::url`]. Requests that are not faulted are
//! forwarded byte for byte (the request head, `Host` included, is never rewritten), so
//! SigV4 signatures stay valid; the proxy only parses enough HTTP/1.1 to find where each
//! request and response ends (`Content-Length` or chunked framing), which is where its
//! faults apply.
//!
//! Every forwarded request uses a fresh upstream connection, read to the end of its
//! response before anything goes back to the client, so a cut response is cut at a known
//! point. Client connections are kept alive across requests as the response allows.
//!
//! Faults:
//! - [`Fault::SlowDown`]: the request is read and dropped; the client gets `503 Slow Down`
//!   with S3's XML error body (`<Code>SlowDown</Code>`). The server never sees it.
//! - [`Fault::ResetMidResponse`]: the request reaches the server (so a write takes effect);
//!   the client gets half of the response (half the body, or half the head when there is
//!   no body) and then a TCP reset.
//! - [`Fault::StallMidResponse`]: as above, but the connection then hangs, sending nothing,
//!   until the client gives up.
//! - [`Fault::Stall`]: the request is never answered nor forwarded.
//! - An outage ([`FaultProxy::outage_for`], [`FaultProxy::outage`]): every new connection is
//!   reset at once and every request on a kept-alive one is answered with a reset.
//! - Latency ([`FaultProxy::set_latency`]): every request waits this long before it is
//!   forwarded or faulted.
//!
//! Rules ([`FaultRule`]) pick requests by method and path and fire for the next N matching
//! requests, for a fraction of them (deterministically: every request that carries the
//! running sum of the fraction past a whole number), or for all of them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Longest request or response head the proxy reads.
const MAX_HEAD: usize = 64 * 1024;

/// What a fired rule does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `503 Slow Down` with S3's XML error body; the request is not forwarded.
    SlowDown,
    /// The request is forwarded; the response is cut half-way by a TCP reset.
    ResetMidResponse,
    /// The request is forwarded; half the response is sent, then nothing, until the client
    /// closes the connection.
    StallMidResponse,
    /// The request is neither forwarded nor answered, until the client closes.
    Stall,
}

/// How many matching requests a rule fires for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Budget {
    Next(u64),
    Fraction { fraction: f64, sum: f64 },
    Always,
}

/// A fault for some requests: which ones (method, a substring of the path) and how many.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    fault: Fault,
    budget: Budget,
    method: Option<String>,
    path_contains: Option<String>,
}

impl FaultRule {
    /// `fault` for the next `count` matching requests.
    pub fn next(fault: Fault, count: u64) -> Self {
        Self {
            fault,
            budget: Budget::Next(count),
            method: None,
            path_contains: None,
        }
    }

    /// `fault` for `fraction` (0 to 1) of the matching requests, evenly spread.
    pub fn fraction(fault: Fault, fraction: f64) -> Self {
        Self {
            fault,
            budget: Budget::Fraction {
                fraction: fraction.clamp(0.0, 1.0),
                sum: 0.0,
            },
            method: None,
            path_contains: None,
        }
    }

    /// `fault` for every matching request, until healed.
    pub fn always(fault: Fault) -> Self {
        Self {
            fault,
            budget: Budget::Always,
            method: None,
            path_contains: None,
        }
    }

    /// Only requests of this HTTP method (`GET`, `PUT`, `HEAD`, ...).
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only requests whose path (with query) contains `text`.
    pub fn path_contains(mut self, text: &str) -> Self {
        self.path_contains = Some(text.to_owned());
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|wanted| wanted == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|text| path.contains(text))
    }

    /// Whether the rule fires for this matching request (and uses its budget).
    fn fire(&mut self) -> bool {
        match &mut self.budget {
            Budget::Next(0) => false,
            Budget::Next(count) => {
                *count -= 1;
                true
            }
            Budget::Fraction { fraction, sum } => {
                *sum += *fraction;
                if *sum >= 1.0 {
                    *sum -= 1.0;
                    true
                } else {
                    false
                }
            }
            Budget::Always => true,
        }
    }

    fn spent(&self) -> bool {
        self.budget == Budget::Next(0)
    }
}

/// What the proxy has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Connections accepted (including those reset by an outage).
    pub connections: u64,
    /// Requests read from clients.
    pub requests: u64,
    /// Requests forwarded to the server.
    pub forwarded: u64,
    /// Requests answered with `503 SlowDown`.
    pub slow_downs: u64,
    /// Responses cut by a reset.
    pub resets: u64,
    /// Requests or responses stalled.
    pub stalls: u64,
    /// Connections and requests reset because of an outage.
    pub outage_resets: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    forwarded: AtomicU64,
    slow_downs: AtomicU64,
    resets: AtomicU64,
    stalls: AtomicU64,
    outage_resets: AtomicU64,
}

#[derive(Debug)]
enum Outage {
    None,
    Until(Instant),
    Permanent,
}

#[derive(Debug)]
struct Faults {
    rules: Vec<FaultRule>,
    latency: Duration,
    outage: Outage,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Faults>,
    counters: Counters,
}

impl Shared {
    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn in_outage(&self) -> bool {
        match self.faults().outage {
            Outage::None => false,
            Outage::Until(deadline) => Instant::now() < deadline,
            Outage::Permanent => true,
        }
    }

    /// The fault for this request, if a rule fires, and the latency to add.
    fn decide(&self, method: &str, path: &str) -> (Option<Fault>, Duration) {
        let mut faults = self.faults();
        let mut fired = None;
        for rule in &mut faults.rules {
            if rule.matches(method, path) && rule.fire() {
                fired = Some(rule.fault);
                break;
            }
        }
        faults.rules.retain(|rule| !rule.spent());
        (fired, faults.latency)
    }
}

/// A running fault proxy on a loopback port; stops (with every connection) on drop.
#[derive(Debug)]
pub struct FaultProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to the server at `upstream_url` (`http://HOST:PORT`), forwarding
    /// everything until faults are switched on.
    ///
    /// # Panics
    /// When the URL is not plain `http://HOST:PORT` or no loopback port can be bound.
    pub async fn start(upstream_url: &str) -> Self {
        let host_port = upstream_url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("the fault proxy speaks plain http, not {upstream_url}"))
            .trim_end_matches('/');
        let upstream = tokio::net::lookup_host(host_port)
            .await
            .unwrap_or_else(|error| panic!("resolving {host_port}: {error}"))
            .next()
            .unwrap_or_else(|| panic!("{host_port} resolves to no address"));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fault proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Faults {
                rules: Vec::new(),
                latency: Duration::ZERO,
                outage: Outage::None,
            }),
            counters: Counters::default(),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Self {
            address,
            shared,
            task,
        }
    }

    /// The URL clients use as their S3 endpoint, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Adds a rule; rules are tried in the order added, the first that fires wins.
    pub fn add_rule(&self, rule: FaultRule) {
        self.shared.faults().rules.push(rule);
    }

    /// `503 SlowDown` for the next `count` requests.
    pub fn slow_down_next(&self, count: u64) {
        self.add_rule(FaultRule::next(Fault::SlowDown, count));
    }

    /// `503 SlowDown` for `fraction` of the requests.
    pub fn slow_down_fraction(&self, fraction: f64) {
        self.add_rule(FaultRule::fraction(Fault::SlowDown, fraction));
    }

    /// A reset half-way through the response of the next `count` requests.
    pub fn reset_next(&self, count: u64) {
        self.add_rule(FaultRule::next(Fault::ResetMidResponse, count));
    }

    /// A reset half-way through the response of `fraction` of the requests.
    pub fn reset_fraction(&self, fraction: f64) {
        self.add_rule(FaultRule::fraction(Fault::ResetMidResponse, fraction));
    }

    /// Every request waits `latency` before it is forwarded or faulted.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults().latency = latency;
    }

    /// Every connection and request is reset for `duration` from now.
    pub fn outage_for(&self, duration: Duration) {
        self.shared.faults().outage = Outage::Until(Instant::now() + duration);
    }

    /// Every connection and request is reset until [`FaultProxy::heal`].
    pub fn outage(&self) {
        self.shared.faults().outage = Outage::Permanent;
    }

    /// Whether an outage is on now.
    pub fn in_outage(&self) -> bool {
        self.shared.in_outage()
    }

    /// Removes every rule, the latency and any outage: everything is forwarded again.
    /// (Connections already stalled stay stalled until their clients give up.)
    pub fn heal(&self) {
        let mut faults = self.shared.faults();
        faults.rules.clear();
        faults.latency = Duration::ZERO;
        faults.outage = Outage::None;
    }

    /// What the proxy has done so far.
    pub fn stats(&self) -> FaultStats {
        let counters = &self.shared.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        FaultStats {
            connections: load(&counters.connections),
            requests: load(&counters.requests),
            forwarded: load(&counters.forwarded),
            slow_downs: load(&counters.slow_downs),
            resets: load(&counters.resets),
            stalls: load(&counters.stalls),
            outage_resets: load(&counters.outage_resets),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept loop owns every connection task: aborting it drops them all.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    continue;
                };
                shared.counters.connections.fetch_add(1, Ordering::Relaxed);
                if shared.in_outage() {
                    shared.counters.outage_resets.fetch_add(1, Ordering::Relaxed);
                    reset(client);
                    continue;
                }
                let _ = client.set_nodelay(true);
                connections.spawn(serve_connection(client, shared.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Closes with a TCP reset (RST) instead of an orderly FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Waits until the peer closes (or errs), discarding what it sends.
async fn hang(mut stream: TcpStream) {
    let mut sink = [0_u8; 4096];
    while let Ok(read) = stream.read(&mut sink).await {
        if read == 0 {
            break;
        }
    }
}

/// One parsed HTTP/1.1 message head.
#[derive(Debug)]
struct Head {
    /// The raw bytes, up to and including the blank line.
    raw: Vec<u8>,
    /// Request: method and path; response: status code in `status`.
    method: String,
    path: String,
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

/// Bytes read from a stream and not consumed yet.
struct Reader {
    buffer: Vec<u8>,
}

impl Reader {
    fn new() -> Self {
        Self { buffer: Vec::new() }
    }

    /// Reads more bytes; false at the end of the stream.
    async fn fill(&mut self, stream: &mut TcpStream) -> std::io::Result<bool> {
        let mut chunk = [0_u8; 16 * 1024];
        let read = stream.read(&mut chunk).await?;
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(read > 0)
    }

    /// A message head, or `None` at a clean end of stream before any byte of one.
    async fn head(&mut self, stream: &mut TcpStream) -> std::io::Result<Option<Head>> {
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let raw: Vec<u8> = self.buffer.drain(..end + 4).collect();
                return parse_head(raw).map(Some);
            }
            if self.buffer.len() > MAX_HEAD {
                return Err(invalid("message head too long"));
            }
            if !self.fill(stream).await? {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    /// Exactly `length` bytes.
    async fn exact(&mut self, stream: &mut TcpStream, length: usize) -> std::io::Result<Vec<u8>> {
        while self.buffer.len() < length {
            if !self.fill(stream).await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buffer.drain(..length).collect())
    }

    /// One CRLF-terminated line, raw (with its CRLF).
    async fn line(&mut self, stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n") {
                return Ok(self.buffer.drain(..end + 2).collect());
            }
            if self.buffer.len() > MAX_HEAD {
                return Err(invalid("chunk line too long"));
            }
            if !self.fill(stream).await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// A chunked body, raw (sizes, data, trailers and the final CRLF).
    async fn chunked(&mut self, stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        let mut raw = Vec::new();
        loop {
            let line = self.line(stream).await?;
            let size_text = std::str::from_utf8(&line)
                .map_err(|_| invalid("chunk size is not text"))?
                .trim_end()
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            let size = usize::from_str_radix(&size_text, 16)
                .map_err(|_| invalid("chunk size is not hex"))?;
            raw.extend_from_slice(&line);
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    let trailer = self.line(stream).await?;
                    let last = trailer == b"\r\n";
                    raw.extend_from_slice(&trailer);
                    if last {
                        return Ok(raw);
                    }
                }
            }
            raw.extend_from_slice(&self.exact(stream, size + 2).await?);
        }
    }

    /// Everything until the peer closes.
    async fn until_close(&mut self, stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        while self.fill(stream).await? {}
        Ok(std::mem::take(&mut self.buffer))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn invalid(message: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

fn parse_head(raw: Vec<u8>) -> std::io::Result<Head> {
    let text = std::str::from_utf8(&raw).map_err(|_| invalid("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.splitn(3, ' ');
    let (one, two) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (method, path, status) = if one.starts_with("HTTP/") {
        let status = two.parse().map_err(|_| invalid("bad status code"))?;
        (String::new(), String::new(), status)
    } else {
        (one.to_owned(), two.to_owned(), 0)
    };
    let mut content_length = None;
    let mut chunked = false;
    let mut close = first.ends_with("HTTP/1.0") || one == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                content_length = Some(value.parse().map_err(|_| invalid("bad content-length"))?);
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let value = value.to_ascii_lowercase();
                if value.contains("close") {
                    close = true;
                } else if value.contains("keep-alive") {
                    close = false;
                }
            }
            _ => {}
        }
    }
    Ok(Head {
        raw,
        method,
        path,
        status,
        content_length,
        chunked,
        close,
    })
}

/// Serves one client connection, request by request, until it closes or is cut.
async fn serve_connection(mut client: TcpStream, shared: Arc<Shared>) {
    let mut reader = Reader::new();
    loop {
        let Ok(Some(request)) = reader.head(&mut client).await else {
            return;
        };
        let body = if request.chunked {
            reader.chunked(&mut client).await
        } else {
            reader
                .exact(&mut client, request.content_length.unwrap_or(0))
                .await
        };
        let Ok(body) = body else {
            return;
        };
        shared.counters.requests.fetch_add(1, Ordering::Relaxed);
        let (fault, latency) = shared.decide(&request.method, &request.path);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if shared.in_outage() {
            shared
                .counters
                .outage_resets
                .fetch_add(1, Ordering::Relaxed);
            reset(client);
            return;
        }
        match fault {
            Some(Fault::SlowDown) => {
                shared.counters.slow_downs.fetch_add(1, Ordering::Relaxed);
                if client
                    .write_all(&slow_down_response(&request.method))
                    .await
                    .is_err()
                    || request.close
                {
                    return;
                }
                continue;
            }
            Some(Fault::Stall) => {
                shared.counters.stalls.fetch_add(1, Ordering::Relaxed);
                hang(client).await;
                return;
            }
            _ => {}
        }
        shared.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        let Ok((response, framed_by_close)) = forward(&shared, &request, &body).await else {
            // The server failed us: the client sees its connection cut.
            reset(client);
            return;
        };
        match fault {
            Some(Fault::ResetMidResponse) => {
                shared.counters.resets.fetch_add(1, Ordering::Relaxed);
                let _ = client.write_all(half(&response)).await;
                let _ = client.flush().await;
                reset(client);
                return;
            }
            Some(Fault::StallMidResponse) => {
                shared.counters.stalls.fetch_add(1, Ordering::Relaxed);
                let _ = client.write_all(half(&response)).await;
                let _ = client.flush().await;
                hang(client).await;
                return;
            }
            _ => {}
        }
        if client.write_all(&response.bytes).await.is_err()
            || request.close
            || response.close
            || framed_by_close
        {
            let _ = client.shutdown().await;
            return;
        }
    }
}

/// A whole response from the server: every byte as sent, and where its head ends.
struct Response {
    bytes: Vec<u8>,
    head_len: usize,
    close: bool,
}

/// The first half of the body, or of the head when there is no body.
fn half(response: &Response) -> &[u8] {
    let body_len = response.bytes.len() - response.head_len;
    let end = if body_len > 0 {
        response.head_len + body_len / 2
    } else {
        response.head_len / 2
    };
    &response.bytes[..end]
}

/// Sends the request to the server on a fresh connection and reads its whole response
/// (interim `1xx` heads included). Also says whether the body ended with the connection.
async fn forward(
    shared: &Shared,
    request: &Head,
    body: &[u8],
) -> std::io::Result<(Response, bool)> {
    let mut upstream = TcpStream::connect(shared.upstream).await?;
    let _ = upstream.set_nodelay(true);
    upstream.write_all(&request.raw).await?;
    upstream.write_all(body).await?;
    let mut reader = Reader::new();
    let mut bytes = Vec::new();
    loop {
        let head = reader
            .head(&mut upstream)
            .await?
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        bytes.extend_from_slice(&head.raw);
        if (100..200).contains(&head.status) {
            continue;
        }
        let head_len = bytes.len();
        let no_body = request.method == "HEAD" || head.status == 204 || head.status == 304;
        let mut framed_by_close = false;
        if !no_body {
            if head.chunked {
                bytes.extend_from_slice(&reader.chunked(&mut upstream).await?);
            } else if let Some(length) = head.content_length {
                bytes.extend_from_slice(&reader.exact(&mut upstream, length).await?);
            } else {
                bytes.extend_from_slice(&reader.until_close(&mut upstream).await?);
                framed_by_close = true;
            }
        }
        let response = Response {
            bytes,
            head_len,
            close: head.close,
        };
        return Ok((response, framed_by_close));
    }
}

/// S3's answer to too many requests: `503 Slow Down` with its XML error body.
fn slow_down_response(method: &str) -> Vec<u8> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                <Message>Please reduce your request rate.</Message>\
                <RequestId>folio-fault-proxy</RequestId></Error>";
    let mut response = format!(
        "HTTP/1.1 503 Slow Down\r\ncontent-type: application/xml\r\n\
         x-amz-request-id: folio-fault-proxy\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_fire_evenly_and_next_counts_down() {
        let mut rule = FaultRule::fraction(Fault::SlowDown, 0.25);
        let fired: Vec<bool> = (0..8).map(|_| rule.fire()).collect();
        assert_eq!(fired.iter().filter(|fired| **fired).count(), 2);
        let mut rule = FaultRule::next(Fault::SlowDown, 2);
        assert!(rule.fire() && rule.fire() && !rule.fire());
        assert!(rule.spent());
        let rule = FaultRule::always(Fault::Stall)
            .method("get")
            .path_contains("metadata.json");
        assert!(rule.matches("GET", "/bucket/books/a/metadata.json"));
        assert!(!rule.matches("PUT", "/bucket/books/a/metadata.json"));
        assert!(!rule.matches("GET", "/bucket/books/a/pages/0001.png"));
    }

    #[test]
    fn heads_parse_framing() {
        let head =
            parse_head(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n".to_vec())
                .unwrap();
        assert_eq!((head.method.as_str(), head.path.as_str()), ("PUT", "/b/k"));
        assert_eq!(head.content_length, Some(12));
        assert!(!head.close && !head.chunked);
        let head = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec(),
        )
        .unwrap();
        assert_eq!(head.status, 200);
        assert!(head.chunked && head.close);
    }
}
