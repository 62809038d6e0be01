//! process-compose's state stream (`GET /process/states/ws`, v1.110.0+): a WebSocket that sends
//! the subscribed processes' states on connect and every change after.

use std::collections::BTreeSet;

use futures::StreamExt;
use http::{Request, StatusCode};
use pc_eventd_events::process_compose::model::ProcessState;
use pc_eventd_events::process_compose::{
    ComposeClient, ComposeError, Connection, TOKEN_HEADER, percent_encode,
};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Most names in one state-stream subscription: below the server's 256-frame buffer, which
/// the connect snapshot must fit in.
const STREAM_CHUNK: usize = 200;
/// Frames waiting to be diffed and published.
const STREAM_QUEUE: usize = 4096;
/// The frames of every subscription of a session, in arrival order; an error ends the session.
pub(crate) type Frames = mpsc::Receiver<Result<StateFrame, ComposeError>>;

/// One frame of the state stream: `{"snapshot":true,"state":{…}}` on connect, then
/// `{"state":{…}}` for every change.
#[derive(Debug, Clone, Deserialize)]
pub struct StateFrame {
    #[serde(default)]
    pub snapshot: bool,
    pub state: ProcessState,
}

/// An open state-stream subscription.
pub(crate) struct StateStream {
    socket: WebSocketStream<Box<dyn Connection>>,
}

/// Subscribes to the state stream for the named processes only or, with `None`, for all. A
/// server without the stream answers [`ComposeError::StreamUnsupported`].
pub(crate) async fn subscribe(
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
    pub(crate) async fn next(&mut self) -> Option<Result<StateFrame, ComposeError>> {
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

/// A stream session's subscriptions. The server closes a subscriber whose 256-frame buffer
/// overflows, and the connect snapshot alone overflows it past 256 processes: large projects
/// subscribe by name, in chunks.
pub(crate) struct Subscriptions {
    frames: mpsc::Sender<Result<StateFrame, ComposeError>>,
    readers: tokio::task::JoinSet<()>,
    /// Subscribed by name; `covered` holds the names subscribed so far.
    chunked: bool,
    covered: BTreeSet<String>,
}

impl Subscriptions {
    /// Subscribes for `observed`: to all processes at once, or by name in chunks. The frames of
    /// every subscription come out of the returned receiver.
    pub(crate) async fn open(
        compose: &ComposeClient,
        observed: &[ProcessState],
    ) -> Result<(Self, Frames), ComposeError> {
        let (frames, received) = mpsc::channel(STREAM_QUEUE);
        let mut subscriptions = Self {
            frames,
            readers: tokio::task::JoinSet::new(),
            chunked: observed.len() > STREAM_CHUNK,
            covered: BTreeSet::new(),
        };
        if subscriptions.chunked {
            subscriptions.cover(compose, observed).await?;
        } else {
            subscriptions.subscribe(compose, None).await?;
        }
        Ok((subscriptions, received))
    }

    /// How many subscriptions are open.
    pub(crate) fn open_count(&self) -> usize {
        self.readers.len()
    }

    /// Subscribes by name to those of `observed` not covered yet (nothing to do when one
    /// subscription takes every process).
    pub(crate) async fn cover(
        &mut self,
        compose: &ComposeClient,
        observed: &[ProcessState],
    ) -> Result<(), ComposeError> {
        if !self.chunked {
            return Ok(());
        }
        let new: Vec<String> = observed
            .iter()
            .map(|p| p.name.clone())
            .filter(|name| !self.covered.contains(name))
            .collect();
        for group in new.chunks(STREAM_CHUNK) {
            self.subscribe(compose, Some(group)).await?;
            self.covered.extend(group.iter().cloned());
        }
        Ok(())
    }

    async fn subscribe(
        &mut self,
        compose: &ComposeClient,
        names: Option<&[String]>,
    ) -> Result<(), ComposeError> {
        let stream = subscribe(compose, names).await?;
        self.readers.spawn(read_frames(stream, self.frames.clone()));
        Ok(())
    }
}

/// Forwards a subscription's frames; an error or the end of the stream ends the session.
async fn read_frames(
    mut stream: StateStream,
    frames: mpsc::Sender<Result<StateFrame, ComposeError>>,
) {
    loop {
        let next = stream.next().await;
        let end = !matches!(next, Some(Ok(_)));
        let item = next
            .unwrap_or_else(|| Err(ComposeError::WebSocket(Box::new(WsError::ConnectionClosed))));
        if frames.send(item).await.is_err() || end {
            return;
        }
    }
}
