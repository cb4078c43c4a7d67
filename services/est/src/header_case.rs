//! Canonical header-name spelling on HTTP/1 responses.
//!
//! Embedded EST clients compare header names case-sensitively (`Content-Type`,
//! `WWW-Authenticate`), but hyper writes names lower-case, and its title-casing gives
//! `Www-Authenticate`; hyper 1 keeps its header-case map private. So the connection's write
//! side rewrites the names in each response head and passes bodies through untouched. The
//! rewriting is a sans-IO value ([`HeadRewriter`]); [`CanonicalCase`] is the thin stream
//! wrapper around it.
//!
//! Framing: a head ends at the first empty line; the body that follows is as long as the
//! head's `Content-Length` (none for 1xx, 204, 304 and answers to HEAD). The service notes each
//! request's method in [`RequestMethods`] as it is called; final responses are written in
//! request order, so each final head takes the oldest entry to learn whether it answers a HEAD. A head with `Transfer-Encoding` (which this server never sends)
//! or an over-long head switches the rewriter to passing everything through unchanged: the
//! stream is never corrupted, only left in hyper's spelling.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Heads longer than this are passed through as they are.
const MAX_HEAD: usize = 64 * 1024;

/// Header names whose canonical spelling is not plain title case, and the common ones.
const CANONICAL: &[&str] = &[
    "WWW-Authenticate",
    "Content-Type",
    "Content-Length",
    "Content-Transfer-Encoding",
    "Retry-After",
    "Connection",
    "Allow",
    "Date",
    "Location",
];

/// The canonical spelling of a header name: from the table, else title case per `-` part.
pub fn canonical_name(name: &str) -> String {
    if let Some(c) = CANONICAL.iter().find(|c| c.eq_ignore_ascii_case(name)) {
        return (*c).to_string();
    }
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for ch in name.chars() {
        if upper {
            out.push(ch.to_ascii_uppercase());
        } else {
            out.push(ch.to_ascii_lowercase());
        }
        upper = ch == '-';
    }
    out
}

/// Per connection: whether each request not yet answered is a HEAD, oldest first.
#[derive(Debug, Clone, Default)]
pub struct RequestMethods(Arc<Mutex<VecDeque<bool>>>);

/// More unanswered requests than hyper ever has in flight on one connection; a bound so that a
/// misuse cannot grow the queue.
const MAX_UNANSWERED: usize = 16;

impl RequestMethods {
    /// Called by the service for each request, in order.
    pub fn note(&self, is_head: bool) {
        let mut q = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() < MAX_UNANSWERED {
            q.push_back(is_head);
        }
    }

    /// Whether the oldest unanswered request is a HEAD (false for responses hyper makes itself,
    /// which answer no service call).
    fn answered(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
            .unwrap_or(false)
    }
}

#[derive(Debug)]
enum State {
    /// Collecting a response head.
    Head(Vec<u8>),
    /// Passing this many body bytes through.
    Body(u64),
    /// Framing unknown: everything passes through.
    Passthrough,
}

/// Rewrites header names in a stream of HTTP/1 responses; bytes in, bytes out.
#[derive(Debug)]
pub struct HeadRewriter {
    state: State,
}

impl Default for HeadRewriter {
    fn default() -> Self {
        HeadRewriter {
            state: State::Head(Vec::new()),
        }
    }
}

impl HeadRewriter {
    /// Feeds bytes hyper wrote; appends what goes on the wire to `out`. `answers_head` is asked,
    /// once per final (non-1xx) head, whether that response answers a HEAD request.
    pub fn feed(&mut self, mut input: &[u8], answers_head: &dyn Fn() -> bool, out: &mut Vec<u8>) {
        while !input.is_empty() {
            match &mut self.state {
                State::Passthrough => {
                    out.extend_from_slice(input);
                    return;
                }
                State::Body(remaining) => {
                    let n = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::Head(buf) => {
                    // Search from where the terminator could start, counting what is buffered.
                    let start = buf.len().saturating_sub(3);
                    buf.extend_from_slice(input);
                    input = &[];
                    let Some(end) = buf[start..]
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map(|p| start + p + 4)
                    else {
                        if buf.len() > MAX_HEAD {
                            out.extend_from_slice(buf);
                            self.state = State::Passthrough;
                        }
                        continue;
                    };
                    let rest = buf.split_off(end);
                    let head = std::mem::take(buf);
                    self.state = match rewrite_head(&head, answers_head, out) {
                        Some(0) => State::Head(Vec::new()),
                        Some(len) => State::Body(len),
                        None => State::Passthrough,
                    };
                    // Body bytes (and any next head) that came in the same write.
                    let mut rest_out = Vec::new();
                    self.feed(&rest, answers_head, &mut rest_out);
                    out.extend_from_slice(&rest_out);
                }
            }
        }
    }
}

/// Writes `head` with canonical names to `out`; returns the body length, or None when the
/// framing cannot be followed.
fn rewrite_head(head: &[u8], answers_head: &dyn Fn() -> bool, out: &mut Vec<u8>) -> Option<u64> {
    let Ok(text) = std::str::from_utf8(head) else {
        out.extend_from_slice(head);
        answers_head();
        return None;
    };
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    out.extend_from_slice(status_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut length = None;
    let mut chunked = false;
    for line in lines.filter(|l| !l.is_empty()) {
        match line.split_once(':') {
            Some((name, value)) => {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<u64>().ok();
                }
                if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = true;
                }
                out.extend_from_slice(canonical_name(name).as_bytes());
                out.push(b':');
                out.extend_from_slice(value.as_bytes());
            }
            None => out.extend_from_slice(line.as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if (100..200).contains(&status) {
        return Some(0);
    }
    if answers_head() || status == 204 || status == 304 {
        return Some(0);
    }
    if chunked {
        return None;
    }
    Some(length.unwrap_or(0))
}

/// A stream whose written HTTP/1 response heads get canonical header names.
pub struct CanonicalCase<T> {
    inner: T,
    rewriter: HeadRewriter,
    methods: RequestMethods,
    pending: Vec<u8>,
    written: usize,
}

impl<T> CanonicalCase<T> {
    /// `methods` is noted by the service for every request on this connection.
    pub fn new(inner: T, methods: RequestMethods) -> Self {
        CanonicalCase {
            inner,
            rewriter: HeadRewriter::default(),
            methods,
            pending: Vec::new(),
            written: 0,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncWrite + Unpin> CanonicalCase<T> {
    /// Writes out what the rewriter produced; Ready(Ok) once all of it is written.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CanonicalCase<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CanonicalCase<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Accept new bytes only once earlier output is out, so the buffer stays bounded.
        match this.drain(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let methods = this.methods.clone();
        let mut out = std::mem::take(&mut this.pending);
        this.rewriter.feed(buf, &|| methods.answered(), &mut out);
        this.pending = out;
        // Start writing now; what is left goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rewrite_in_pieces(wire: &[u8], piece: usize) -> String {
        let mut r = HeadRewriter::default();
        let mut out = Vec::new();
        for chunk in wire.chunks(piece) {
            r.feed(chunk, &|| false, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn names_get_canonical_spelling_and_bodies_stay() {
        // Two keep-alive responses; the first body holds text that looks like a header.
        let body1 = "x\r\nwww-authenticate: no\r\n\r\n";
        let wire = format!(
            "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm=\"a\"\r\n\
             content-type: text/plain\r\ncontent-length: {}\r\nx-custom-thing: 1\r\n\r\n{body1}\
             HTTP/1.1 100 Continue\r\n\r\n\
             HTTP/1.1 200 OK\r\ncontent-transfer-encoding: base64\r\nretry-after: 5\r\n\
             connection: close\r\ncontent-length: 4\r\n\r\nAAAA",
            body1.len()
        );
        let want = format!(
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"a\"\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\nX-Custom-Thing: 1\r\n\r\n{body1}\
             HTTP/1.1 100 Continue\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Transfer-Encoding: base64\r\nRetry-After: 5\r\n\
             Connection: close\r\nContent-Length: 4\r\n\r\nAAAA",
            body1.len()
        );
        for piece in [1, 2, 3, 7, 64, wire.len()] {
            assert_eq!(
                rewrite_in_pieces(wire.as_bytes(), piece),
                want,
                "piece {piece}"
            );
        }
    }

    #[test]
    fn head_answers_and_unknown_framing() {
        let mut r = HeadRewriter::default();
        let mut out = Vec::new();
        r.feed(
            b"HTTP/1.1 405 Method Not Allowed\r\nallow: GET\r\ncontent-length: 10\r\n\r\n",
            &|| true,
            &mut out,
        );
        r.feed(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            &|| false,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Allow: GET"));
        assert!(text.ends_with("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"));

        let mut r = HeadRewriter::default();
        let mut out = Vec::new();
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhttp/1.1 a: b\r\n\r\n";
        r.feed(chunked, &|| false, &mut out);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("\r\n\r\n5\r\nhttp/1.1 a: b\r\n\r\n")
        );
    }

    /// hyper itself behind the wrapper: keep-alive with pipelined requests, a HEAD among them
    /// (hyper sends its Content-Length but no body) and a body that looks like a head.
    #[tokio::test]
    async fn hyper_keep_alive_and_pipelining_through_the_wrapper() {
        use bytes::Bytes;
        use http_body_util::Full;
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        const BODY: &str = "x\r\n\r\nHTTP/1.1 200 OK\r\nwww-authenticate: body\r\n\r\n";
        let (client, server) = tokio::io::duplex(64 * 1024);
        let methods = RequestMethods::default();
        let noted = methods.clone();
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            noted.note(req.method() == http::Method::HEAD);
            async move {
                let resp = http::Response::builder()
                    .status(401)
                    .header("www-authenticate", "Basic realm=\"r\"")
                    .header("content-type", "text/plain")
                    .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let conn = tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(CanonicalCase::new(server, methods)), service)
                .await;
        });
        let (mut rd, mut wr) = tokio::io::split(client);
        wr.write_all(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        rd.read_to_end(&mut raw).await.unwrap();
        conn.await.unwrap();
        let text = String::from_utf8(raw).unwrap();
        let heads: Vec<&str> = text.matches("WWW-Authenticate: Basic").collect();
        assert_eq!(heads.len(), 3, "three heads rewritten: {text}");
        assert!(!text.contains("www-authenticate: Basic"), "{text}");
        assert!(!text.contains("content-type:"), "{text}");
        // Both GET bodies arrive byte for byte, the look-alike head inside them untouched.
        assert_eq!(text.matches(BODY).count(), 2, "{text}");
        assert_eq!(text.matches("www-authenticate: body").count(), 2, "{text}");
    }
}
