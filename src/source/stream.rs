//! process-compose's state stream (`GET /process/states/ws`, v1.110.0+): a WebSocket that sends
//! the subscribed processes' states on connect and every change after.

use futures::StreamExt;
use http::{Request, StatusCode};
use pc_eventd_events::process_compose::model::ProcessState;
use pc_eventd_events::process_compose::{
    ComposeClient, ComposeError, Connection, TOKEN_HEADER, percent_encode,
};
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// One frame of the state stream: `{"snapshot":true,"state":{…}}` on connect, then
/// `{"state":{…}}` for every change.
#[derive(Debug, Clone, Deserialize)]
pub struct StateFrame {
    #[serde(default)]
    pub snapshot: bool,
    pub state: ProcessState,
}

/// An open state-stream subscription.
pub struct StateStream {
    socket: WebSocketStream<Box<dyn Connection>>,
}

/// Subscribes to the state stream for the named processes only or, with `None`, for all. A
/// server without the stream answers [`ComposeError::StreamUnsupported`].
pub async fn subscribe(
    client: &ComposeClient,
    names: Option<&[String]>,
) -> Result<StateStream, ComposeError> {
    let mut path = "/process/states/ws".to_owned();
    if let Some(names) = names {
        let names: Vec<String> = names.iter().map(|n| percent_encode(n)).collect();
        path = format!("{path}?name={}", names.join(","));
    }
    let handshake = async {
        let (host, path) = client.target(&path);
        let mut request = Request::get(format!("ws://{host}{path}"))
            .header(http::header::HOST, host)
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header(
                "Sec-WebSocket-Key",
                tokio_tungstenite::tungstenite::handshake::client::generate_key(),
            );
        if let Some(token) = client.token() {
            request = request.header(TOKEN_HEADER, token.expose());
        }
        let request = request.body(()).expect("a valid upgrade request");
        let stream = client.connect().await?;
        tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(handshake_error)
    };
    let (socket, _) = tokio::time::timeout(client.timeout(), handshake)
        .await
        .map_err(|_| ComposeError::Timeout(client.timeout()))??;
    Ok(StateStream { socket })
}

/// What a refused upgrade means: no stream on this server, a wrong token, or another answer.
fn handshake_error(err: WsError) -> ComposeError {
    match err {
        WsError::Http(response) => match response.status() {
            StatusCode::NOT_FOUND => ComposeError::StreamUnsupported,
            StatusCode::UNAUTHORIZED => ComposeError::Unauthorized,
            status => ComposeError::Status {
                status,
                body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .chars()
                    .take(200)
                    .collect(),
            },
        },
        other => ComposeError::WebSocket(Box::new(other)),
    }
}

impl StateStream {
    /// The next frame; `None` once the server closed the stream.
    pub async fn next(&mut self) -> Option<Result<StateFrame, ComposeError>> {
        loop {
            let message = match self.socket.next().await? {
                Ok(message) => message,
                Err(err) => return Some(Err(ComposeError::WebSocket(Box::new(err)))),
            };
            match message {
                Message::Text(text) => {
                    return Some(serde_json::from_str(text.as_str()).map_err(ComposeError::from));
                }
                Message::Binary(bytes) => {
                    return Some(serde_json::from_slice(&bytes).map_err(ComposeError::from));
                }
                Message::Close(_) => return None,
                // tungstenite answers pings itself
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }
}
