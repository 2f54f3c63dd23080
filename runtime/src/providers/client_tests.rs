//! One attempt's timeout on paused time: headers and a failure status's body share one
//! deadline. Backs `one_attempt_is_bounded_by_its_timeout_even_when_the_error_body_stalls`
//! in `tests/all/upstream.rs`, which can only bound it generously on a loaded machine.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::{AttemptError, ProviderClient, Upstream};

#[tokio::test(start_paused = true)]
async fn a_failure_body_that_stalls_is_read_within_what_is_left_of_the_same_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let headers_after = Duration::from_millis(3600);
    // Headers after 3.6 s, then the start of a 100-byte error body and nothing more.
    let _upstream = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 4096];
        let _ = stream.read(&mut request).await;
        tokio::time::sleep(headers_after).await;
        stream
            .write_all(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n\
                  content-length: 100\r\n\r\n{\"error\":",
            )
            .await
            .unwrap();
        std::future::pending::<()>().await;
    });
    let timeout = Duration::from_millis(4000);
    let upstream = Upstream {
        name: "up".into(),
        base_url: format!("http://{addr}/v1"),
        dialect: crate::providers::Dialect::OpenAi,
        signing: Vec::new(),
        model: None,
        timeout,
        ttft_timeout: timeout,
        stream_json: false,
        headers: Vec::new(),
    };
    let started = Instant::now();
    let result = ProviderClient::new()
        .unwrap()
        .send(
            http::Method::POST,
            &upstream,
            (
                format!("http://{addr}/v1/chat/completions"),
                Bytes::from_static(b"{}"),
            ),
            &[],
            timeout,
            &super::Sent::default(),
        )
        .await;
    // One deadline: 4 s in all, not 3.6 s + a fresh 4 s for the body.
    assert_eq!(started.elapsed(), timeout);
    match result {
        Err(AttemptError::Status { status, body, .. }) => {
            assert_eq!(status, 500);
            assert!(
                body.is_empty(),
                "a body that never came whole is left empty"
            );
        }
        Err(other) => panic!("expected the status, got {other}"),
        Ok(response) => panic!("expected the status, got {}", response.status()),
    }
}
