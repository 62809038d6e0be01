//! A fake process-compose for what the real one will not do on demand: 5xx, garbage,
//! truncation, resets, stalls. It answers each request with the next scripted reply.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const HEALTHY_BODY: &str = r#"{"data":[{"name":"web","namespace":"default","status":"Running","is_ready":"-","restarts":0,"exit_code":0,"pid":4242,"is_running":true}]}"#;

/// One scripted answer.
#[derive(Clone)]
pub enum Reply {
    Json(u16, &'static str),
    /// Promise more bytes than are sent, then close.
    Truncated(&'static str),
    /// Close without answering.
    Reset,
    /// Never answer.
    Stall,
    /// A valid start of a body this many bytes long, sent as fast as it is read.
    Huge(usize),
    /// Headers, then one byte of the body every 100 ms.
    Drip,
}

/// Serves `script` in order, then repeats its last reply for ever.
pub async fn serve(listener: TcpListener, script: Vec<Reply>) {
    serve_counting(listener, script, Arc::new(AtomicUsize::new(0))).await;
}

/// Like [`serve`], counting the requests answered (or stalled) in `served`.
pub async fn serve_counting(listener: TcpListener, script: Vec<Reply>, served: Arc<AtomicUsize>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let n = served.fetch_add(1, Ordering::SeqCst);
        let reply = script[n.min(script.len() - 1)].clone();
        tokio::spawn(answer(stream, reply));
    }
}

async fn answer(mut stream: TcpStream, reply: Reply) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let (status, body, length) = match reply {
        Reply::Json(status, body) => (status, body, body.len()),
        Reply::Truncated(body) => (200, body, body.len() + 100),
        Reply::Reset => return,
        Reply::Stall => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        Reply::Huge(length) => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(br#"{"data":["#).await;
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 9;
            while sent < length {
                let n = chunk.len().min(length - sent);
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                sent += n;
            }
            return;
        }
        Reply::Drip => {
            let body = br#"{"data":[]}"#;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).await;
            for byte in body {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
            }
            return;
        }
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
}
