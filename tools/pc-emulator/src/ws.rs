//! `GET /process/states/ws[?name=a,b]`: process-compose's WebSocket state
//! stream (`state_ws_api.go`, v1.110.0+; write deadline of v1.116.0+).
//!
//! The handshake is checked like gorilla's `Upgrader{}`; the subscription
//! (snapshot + registration) is taken before the `101` goes out, so a client
//! that has its handshake answer is already registered. The writer then sends
//! the queued frames as text messages, one JSON object plus `\n` each, with a
//! 10 s deadline per frame. Client frames are read and discarded (tungstenite
//! answers pings and close frames). No pings are sent. On a slow consumer, a
//! write error or the project's end, the connection is dropped without a
//! close frame, as `ws.Close()` or the server's exit does.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderMap, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Message, Role};
use tokio_util::task::TaskTracker;

use crate::broadcast::{Subscription, parse_name_filter};
use crate::supervisor::Runner;
use crate::{info, warn};

/// process-compose's per-frame write deadline (v1.116.0+).
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// Answers the upgrade request and spawns the stream on `tasks`.
pub fn states_stream(
    runner: &Runner,
    tasks: &TaskTracker,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let key = match check_handshake(req.headers()) {
        Ok(key) => key,
        Err((status, message)) => return handshake_error(status, &message),
    };
    let filter = parse_name_filter(query_param(req.uri().query(), "name").as_deref());
    let subscription = runner.subscribe(filter);

    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        "Sec-WebSocket-Accept",
        HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .expect("base64 is a valid header"),
    );

    tasks.spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                write_frames(ws, subscription).await;
            }
            Err(err) => warn!("state stream upgrade failed: {err}"),
        }
    });
    resp
}

/// Sends the subscription's frames until it is killed or ended, or the
/// client goes away.
async fn write_frames<S>(mut ws: WebSocketStream<S>, mut sub: Subscription)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        tokio::select! {
            biased;
            () = sub.kill.cancelled() => {
                info!("state stream closed (slow consumer)");
                break;
            }
            frame = sub.frames.recv() => {
                // None: the project is shutting down and everything queued is sent.
                let Some(frame) = frame else { break };
                let Ok(text) = Utf8Bytes::try_from(frame) else { break };
                match tokio::time::timeout(WRITE_DEADLINE, ws.send(Message::Text(text))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => {
                        info!("state stream write failed: {err}");
                        break;
                    }
                    Err(_) => {
                        warn!("state stream write took over {WRITE_DEADLINE:?}; closing it");
                        break;
                    }
                }
            }
            incoming = ws.next() => match incoming {
                // Discarded; tungstenite queues the pong or close reply itself.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    // Dropping the stream closes the socket without a close frame.
}

/// gorilla/websocket's `Upgrader.Upgrade` checks, in its order. Returns the
/// client's key, or the status and error text gorilla gives.
fn check_handshake(headers: &HeaderMap) -> Result<String, (StatusCode, String)> {
    const BAD: &str = "websocket: the client is not using the websocket protocol: ";
    if !has_token(headers, CONNECTION.as_str(), "upgrade") {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("{BAD}'upgrade' token not found in 'Connection' header"),
        ));
    }
    if !has_token(headers, UPGRADE.as_str(), "websocket") {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("{BAD}'websocket' token not found in 'Upgrade' header"),
        ));
    }
    if !has_token(headers, "sec-websocket-version", "13") {
        return Err((
            StatusCode::BAD_REQUEST,
            "websocket: unsupported version: 13 not found in 'Sec-Websocket-Version' header"
                .to_owned(),
        ));
    }
    if !same_origin(headers) {
        return Err((
            StatusCode::FORBIDDEN,
            "websocket: request origin not allowed by Upgrader.CheckOrigin".to_owned(),
        ));
    }
    let key = headers
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or_default();
    if !is_base64_16_bytes(key) {
        return Err((
            StatusCode::BAD_REQUEST,
            "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header must be Base64 encoded value of 16-byte in length".to_owned(),
        ));
    }
    Ok(key.to_owned())
}

/// Whether a comma-separated header (any of its lines) holds `token`.
fn has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// gorilla's default `CheckOrigin`: no `Origin`, or its host equals `Host`.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get("origin") else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    let origin_host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin_host.eq_ignore_ascii_case(host)
}

fn is_base64_16_bytes(key: &str) -> bool {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    key.len() == 24
        && key.ends_with("==")
        && key.as_bytes()[..22].iter().all(|b| ALPHABET.contains(b))
}

/// gorilla writes `http.Error(w, "Bad Request", 400)` and then gin's
/// handler appends `{"error": …}` to the same body.
fn handshake_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let text = status.canonical_reason().unwrap_or_default();
    let body = format!("{text}\n{}", serde_json::json!({ "error": message }));
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("Sec-Websocket-Version", HeaderValue::from_static("13"));
    headers.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The first value of `key` in a query string, decoded like Go's
/// `url.ParseQuery` (`+` is a space, `%XX` escapes); `None` if absent.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_query(k)? == key).then(|| decode_query(v)).flatten()
        })
        .next()
}

fn decode_query(text: &str) -> Option<String> {
    crate::api::percent_decode(&text.replace('+', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const GOOD: [(&str, &str); 5] = [
        ("host", "127.0.0.1:8080"),
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn handshake_checks_follow_gorilla() {
        assert_eq!(
            check_handshake(&headers(&GOOD)).unwrap(),
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        // RFC 6455's sample key and answer.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );

        let err = check_handshake(&headers(&[("host", "x")])).unwrap_err();
        assert_eq!(err.0, StatusCode::BAD_REQUEST);
        assert!(
            err.1
                .contains("'upgrade' token not found in 'Connection' header")
        );

        let mut bad_key = GOOD;
        bad_key[4].1 = "short";
        let err = check_handshake(&headers(&bad_key)).unwrap_err();
        assert!(err.1.contains("Sec-WebSocket-Key"), "{}", err.1);

        let mut with_origin = GOOD.to_vec();
        with_origin.push(("origin", "http://127.0.0.1:8080"));
        assert!(check_handshake(&headers(&with_origin)).is_ok());
        with_origin.pop();
        with_origin.push(("origin", "http://evil.example"));
        assert_eq!(
            check_handshake(&headers(&with_origin)).unwrap_err().0,
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn query_param_decodes_like_go() {
        assert_eq!(query_param(None, "name"), None);
        assert_eq!(query_param(Some("x=1"), "name"), None);
        assert_eq!(
            query_param(Some("name=a,b&name=c"), "name").as_deref(),
            Some("a,b")
        );
        assert_eq!(
            query_param(Some("x=1&name=a%2Fb,+c"), "name").as_deref(),
            Some("a/b, c")
        );
        assert_eq!(query_param(Some("name"), "name").as_deref(), Some(""));
    }
}
