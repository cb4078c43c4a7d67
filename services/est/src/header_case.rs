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
//! head's `Content-Length` (none for 1xx, 204, 304 and answers to HEAD). hyper answers one
//! request at a time on a connection, so a flag the service sets for the request being answered
//! says whether it was a HEAD. A head with `Transfer-Encoding` (which this server never sends)
//! or an over-long head switches the rewriter to passing everything through unchanged: the
//! stream is never corrupted, only left in hyper's spelling.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Feeds bytes hyper wrote; appends what goes on the wire to `out`. `answers_head` says
    /// whether the response being written answers a HEAD request.
    pub fn feed(&mut self, mut input: &[u8], answers_head: bool, out: &mut Vec<u8>) {
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
fn rewrite_head(head: &[u8], answers_head: bool, out: &mut Vec<u8>) -> Option<u64> {
    let Ok(text) = std::str::from_utf8(head) else {
        out.extend_from_slice(head);
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
    if (100..200).contains(&status) || status == 204 || status == 304 || answers_head {
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
    answers_head: Arc<AtomicBool>,
    pending: Vec<u8>,
    written: usize,
}

impl<T> CanonicalCase<T> {
    /// `answers_head` is set by the service while it answers a HEAD request.
    pub fn new(inner: T, answers_head: Arc<AtomicBool>) -> Self {
        CanonicalCase {
            inner,
            rewriter: HeadRewriter::default(),
            answers_head,
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
        let answers_head = this.answers_head.load(Ordering::Acquire);
        let mut out = std::mem::take(&mut this.pending);
        this.rewriter.feed(buf, answers_head, &mut out);
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
            r.feed(chunk, false, &mut out);
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
            true,
            &mut out,
        );
        r.feed(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            false,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Allow: GET"));
        assert!(text.ends_with("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"));

        let mut r = HeadRewriter::default();
        let mut out = Vec::new();
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhttp/1.1 a: b\r\n\r\n";
        r.feed(chunked, false, &mut out);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("\r\n\r\n5\r\nhttp/1.1 a: b\r\n\r\n")
        );
    }
}
