//! Issue 8 §6: the local CA bounds slow clients like the EST server does, and refuses an
//! over-limit declared Content-Length before reading the body. Raw TCP against plain HTTP, with
//! the timeouts configured short; the assertions are on what the server sends and that it
//! closes, never on how long it took (the outer bound only keeps a broken server from hanging
//! the test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HANG_GUARD: Duration = Duration::from_secs(120);

async fn plain_ca() -> TestCa {
    TestCa::start_with(|c| {
        c.plain_http = true;
        c.header_timeout_seconds = 1;
        c.body_timeout_seconds = 1;
    })
    .await
}

async fn connect(t: &TestCa) -> TcpStream {
    let addr =
        t.ca.base_url()
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
    TcpStream::connect(addr).await.unwrap()
}

/// Everything the server sends until it closes the connection.
async fn read_until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(HANG_GUARD, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let t = plain_ca().await;
    let mut s = connect(&t).await;
    s.write_all(b"GET /directory HTTP/1.1\r\nHost: ca.test\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut s).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_gets_408_and_the_connection_closes() {
    let t = plain_ca().await;
    let mut s = connect(&t).await;
    s.write_all(
        b"POST /new-account HTTP/1.1\r\nHost: ca.test\r\nContent-Type: application/jose+json\r\n\
          Content-Length: 100\r\n\r\n{\"partial\":",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_limit_content_length_is_refused_before_the_body() {
    let t = plain_ca().await;
    let max = t.ca.config().max_body_bytes;
    let mut s = connect(&t).await;
    // The head only: a server that waited for the body would answer 408 (or nothing), not 413.
    s.write_all(
        format!(
            "POST /new-account HTTP/1.1\r\nHost: ca.test\r\nContent-Type: application/jose+json\r\n\
             Content-Length: {}\r\n\r\n",
            max * 100
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    t.stop().await;
}
