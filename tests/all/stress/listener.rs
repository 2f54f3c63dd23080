//! A storm of hostile connections: 100 clients that stall in the request head or push a
//! large body without a key; every connection is closed and weir's memory stays bounded.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::listener::{
    SLACK, chat, config, key, read_until_closed, rss_kib, settled_rss_kib, status_of,
};
use crate::procs::{call, serve, sim};

/// Seen: 100 connections with headers and 960 KiB of body but no key, then silence, held
/// about 97 MiB and stayed open. Now the key is checked before the body is read (401, the
/// connection closes) and a half-sent head is cut by the header timeout.
#[tokio::test]
async fn stalled_unauthenticated_connections_are_closed_and_memory_stays_bounded() {
    let up = sim(&[]);
    let weir = serve(&config(
        up.addr,
        "header_read_timeout_ms = 1000\nbody_read_timeout_ms = 1000",
        &key("sk-team"),
    ));
    let addr = weir.addr;
    // Warm up: one request through, so lazily built state is not counted as growth.
    let auth = [("authorization", "Bearer sk-team")];
    let body = Bytes::from(chat(false).to_string());
    let warm = call(
        addr,
        Method::POST,
        "/v1/chat/completions",
        &auth,
        Some(body),
    )
    .await;
    assert_eq!(warm.status, 200);
    let pid = weir.child.id();
    let before = settled_rss_kib(pid).await;

    let mut clients = tokio::task::JoinSet::new();
    for i in 0..100 {
        clients.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            if i % 2 == 0 {
                let _ = stream
                    .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: weir\r\n")
                    .await;
            } else {
                let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: weir\r\n\
                            Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n";
                let send = async {
                    stream.write_all(head.as_bytes()).await?;
                    let piece = vec![b' '; 64 * 1024];
                    for _ in 0..15 {
                        stream.write_all(&piece).await?;
                    }
                    std::io::Result::Ok(())
                };
                // weir answers 401 and closes without reading the body: writes then fail.
                let _ = tokio::time::timeout(SLACK, send).await;
            }
            let (got, closed) = read_until_closed(&mut stream, SLACK).await;
            (i, got, closed)
        });
    }
    let mut peak = before;
    let mut results = Vec::new();
    while !clients.is_empty() {
        tokio::select! {
            done = clients.join_next() => results.push(done.unwrap().unwrap()),
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                peak = peak.max(rss_kib(pid));
            }
        }
    }
    peak = peak.max(rss_kib(pid));
    for (i, got, closed) in &results {
        assert!(
            closed,
            "stalled connection {i} is still open after {SLACK:?}"
        );
        if i % 2 == 1 && !got.is_empty() {
            assert_eq!(status_of(got), Some(401), "connection {i}");
        }
    }
    let grown_mib = (peak.saturating_sub(before)) / 1024;
    assert!(
        grown_mib < 40,
        "weir's RSS grew by {grown_mib} MiB ({before} KiB → {peak} KiB)"
    );
    // weir still serves.
    let body = Bytes::from(chat(false).to_string());
    let after = call(
        addr,
        Method::POST,
        "/v1/chat/completions",
        &auth,
        Some(body),
    )
    .await;
    assert_eq!(after.status, 200);
}
