//! The dashboard's HTTP side: the page and its assets (embedded in the binary), the live feed,
//! one process's history; read-only, with a strict Content-Security-Policy, and the access
//! token where one is set.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use pc_eventd_events::nats::Secret;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::feed::{self, Position, Streams};
use super::history::{self, HistoryQuery};

type Body = BoxBody<Bytes, Infallible>;

/// The page, its script and its style: hand-written, no build step, nothing from elsewhere.
const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Scripts, styles and connections from this server only; no inline script or style, no
/// frames, no forms but the token's.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The cookie that holds the access token once the page was given it.
const TOKEN_COOKIE: &str = "pc_eventd_dashboard";

/// How many frames a slow page may have waiting before its feed waits for it.
const FEED_BUFFER: usize = 64;

/// What the server needs for every request.
pub(crate) struct Dashboard {
    pub streams: Streams,
    pub token: Option<Secret>,
    pub stop: CancellationToken,
}

/// What a request asks for, once it may.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Index,
    Asset(&'static str, &'static str),
    Feed(Option<Position>),
    History(HistoryQuery),
    /// The token was given: keep it in a cookie and go to the page without it in the URL.
    SignIn,
    /// The token is needed, or was wrong.
    SignInPage,
    /// Not a loopback host name while no token is set: a page elsewhere reaching the dashboard
    /// through a DNS name it points at 127.0.0.1 (DNS rebinding).
    ForeignHost,
    BadRequest(&'static str),
    NotFound,
    MethodNotAllowed,
}

impl Dashboard {
    /// Answers one request.
    pub(crate) async fn respond(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let query = query_pairs(request.uri().query());
        let route = route(
            request.method(),
            request.uri().path(),
            &query,
            request.headers(),
            self.token.as_ref(),
        );
        let response = match route {
            Route::Index => html(StatusCode::OK, INDEX_HTML),
            Route::Asset(content_type, body) => full(StatusCode::OK, content_type, body),
            Route::Feed(resume) => self.feed(resume),
            Route::History(query) => self.history(&query).await,
            Route::SignIn => sign_in(self.token.as_ref()),
            Route::SignInPage => html(StatusCode::UNAUTHORIZED, SIGN_IN_HTML),
            Route::ForeignHost => text(
                StatusCode::FORBIDDEN,
                "this dashboard answers only to 127.0.0.1, localhost and [::1] unless dashboard.token_file is set\n",
            ),
            Route::BadRequest(why) => text(StatusCode::BAD_REQUEST, why),
            Route::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
            Route::MethodNotAllowed => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "the dashboard is read-only: GET only\n",
            ),
        };
        secured(response)
    }

    /// The live feed: a task per page writes frames that the body streams out.
    fn feed(self: Arc<Self>, resume: Option<Position>) -> Response<Body> {
        let (out, mut frames) = mpsc::channel::<Bytes>(FEED_BUFFER);
        let stop = self.stop.clone();
        tokio::spawn(async move { feed::run(&self.streams, resume, out, stop).await });
        let body = StreamBody::new(futures::stream::poll_fn(move |cx| {
            frames
                .poll_recv(cx)
                .map(|frame| frame.map(|bytes| Ok::<_, Infallible>(Frame::data(bytes))))
        }));
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-store")
            .body(BodyExt::boxed(body))
            .expect("a valid response")
    }

    async fn history(&self, query: &HistoryQuery) -> Response<Body> {
        match history::read(&self.streams.lifecycle, query).await {
            Ok(page) => full(
                StatusCode::OK,
                "application/json",
                serde_json::to_string(&page).expect("a history page serializes"),
            ),
            Err(err) => {
                warn!(error = %err, "dashboard: cannot read a process's history");
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot read the history from NATS now\n",
                )
            }
        }
    }
}

/// Decides what a request gets: the method, the host, the token, then the path.
fn route(
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    token: Option<&Secret>,
) -> Route {
    if method != Method::GET && method != Method::HEAD {
        return Route::MethodNotAllowed;
    }
    match token {
        None if !is_loopback_host(headers) => return Route::ForeignHost,
        None => {}
        Some(token) => {
            if path == "/" && query.get("token").is_some_and(|t| same(t, token.expose())) {
                return Route::SignIn;
            }
            if !carries_token(headers, token) {
                return Route::SignInPage;
            }
        }
    }
    match path {
        "/" => Route::Index,
        "/app.js" => Route::Asset("text/javascript; charset=utf-8", APP_JS),
        "/app.css" => Route::Asset("text/css; charset=utf-8", APP_CSS),
        "/events" => {
            // The browser's own reconnection sends the header; the page's sends the query.
            let id = headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .or(query.get("last_event_id").map(String::as_str));
            match id.map(Position::parse) {
                None => Route::Feed(None),
                Some(Some(position)) => Route::Feed(Some(position)),
                Some(None) => Route::BadRequest("Last-Event-ID: expected L:R\n"),
            }
        }
        "/api/history" => history_query(query),
        _ => Route::NotFound,
    }
}

fn history_query(query: &HashMap<String, String>) -> Route {
    let (Some(source), Some(process)) = (query.get("source"), query.get("process")) else {
        return Route::BadRequest("source and process (namespace/name) are needed\n");
    };
    let before = match query.get("before").map(|b| b.parse::<u64>()) {
        None => None,
        Some(Ok(before)) => Some(before),
        Some(Err(_)) => return Route::BadRequest("before: expected a stream sequence\n"),
    };
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 50,
        Some(Ok(limit)) => limit,
        Some(Err(_)) => return Route::BadRequest("limit: expected a number\n"),
    };
    Route::History(HistoryQuery {
        source: source.clone(),
        process: process.clone(),
        before,
        limit,
    })
}

/// Whether the request names a loopback host: an IP literal or `localhost`, any port.
fn is_loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the token came in the cookie or as `Authorization: Bearer`.
fn carries_token(headers: &HeaderMap, token: &Secret) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| value);
    bearer
        .into_iter()
        .chain(cookies)
        .any(|given| same(given, token.expose()))
}

/// Compares without stopping at the first difference, so that the time taken does not tell
/// how much of a guess was right.
fn same(given: &str, token: &str) -> bool {
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// Splits a query string into its (percent-decoded) pairs.
fn query_pairs(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| {
            bytes
                .get(at)
                .and_then(|&b| (b as char).to_digit(16))
                .map(|d| d as u8)
        };
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push(high << 4 | low);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The sign-in form, for a dashboard with a token.
const SIGN_IN_HTML: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>pc-eventd dashboard: sign in</title><link rel=\"stylesheet\" href=\"/app.css\"></head>\
<body class=\"sign-in\"><form method=\"get\" action=\"/\"><h1>pc-eventd dashboard</h1>\
<p>This dashboard needs its access token (the content of <code>dashboard.token_file</code>).</p>\
<input type=\"password\" name=\"token\" autocomplete=\"current-password\" autofocus>\
<button type=\"submit\">Open</button></form></body></html>";

fn sign_in(token: Option<&Secret>) -> Response<Body> {
    let token = token.map(Secret::expose).unwrap_or_default();
    let cookie = format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, "/")
        .header(header::SET_COOKIE, cookie)
        .body(empty())
        .expect("a valid response")
}

/// Adds the headers every answer carries.
fn secured(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
    response
}

fn full(code: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(BodyExt::boxed(Full::new(body.into())))
        .expect("a valid response")
}

fn html(code: StatusCode, body: &'static str) -> Response<Body> {
    full(code, "text/html; charset=utf-8", body)
}

fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    full(code, "text/plain; charset=utf-8", body)
}

fn empty() -> Body {
    BodyExt::boxed(Full::new(Bytes::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn get(path: &str, query: &str, pairs: &[(&'static str, &str)], token: Option<&str>) -> Route {
        let token = token.map(Secret::new);
        route(
            &Method::GET,
            path,
            &query_pairs(Some(query)),
            &headers(pairs),
            token.as_ref(),
        )
    }

    const LOCAL: (&str, &str) = ("host", "127.0.0.1:9480");

    #[test]
    fn only_reading_is_allowed() {
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let route = route(&method, "/", &HashMap::new(), &headers(&[LOCAL]), None);
            assert_eq!(route, Route::MethodNotAllowed, "{method}");
        }
        assert_eq!(get("/", "", &[LOCAL], None), Route::Index);
        assert_eq!(get("/nope", "", &[LOCAL], None), Route::NotFound);
        assert_eq!(
            get("/app.js", "", &[LOCAL], None),
            Route::Asset("text/javascript; charset=utf-8", APP_JS)
        );
        assert_eq!(
            get("/app.css", "", &[LOCAL], None),
            Route::Asset("text/css; charset=utf-8", APP_CSS)
        );
    }

    #[test]
    fn without_a_token_only_loopback_host_names_are_answered() {
        for host in [
            "127.0.0.1:9480",
            "localhost:9480",
            "LOCALHOST",
            "[::1]:9480",
            "127.0.0.5",
        ] {
            assert_eq!(
                get("/", "", &[("host", host)], None),
                Route::Index,
                "{host}"
            );
        }
        for host in [
            "evil.example:9480",
            "10.0.0.1:9480",
            "[::2]:80",
            "localhost.evil",
        ] {
            assert_eq!(
                get("/", "", &[("host", host)], None),
                Route::ForeignHost,
                "{host}"
            );
        }
        assert_eq!(get("/", "", &[], None), Route::ForeignHost);
    }

    #[test]
    fn with_a_token_every_path_needs_it() {
        let token = Some("s3cret");
        let elsewhere = ("host", "dash.example:9480");
        for path in ["/", "/app.js", "/events", "/api/history"] {
            assert_eq!(
                get(path, "", &[elsewhere], token),
                Route::SignInPage,
                "{path}"
            );
            let wrong = get(
                path,
                "",
                &[elsewhere, ("cookie", "pc_eventd_dashboard=s3creT")],
                token,
            );
            assert_eq!(wrong, Route::SignInPage, "{path}");
        }
        assert_eq!(get("/", "token=s3cret", &[elsewhere], token), Route::SignIn);
        assert_eq!(
            get("/", "token=s3cre", &[elsewhere], token),
            Route::SignInPage
        );
        let cookie = ("cookie", "theme=dark; pc_eventd_dashboard=s3cret");
        assert_eq!(get("/", "", &[elsewhere, cookie], token), Route::Index);
        let bearer = ("authorization", "Bearer s3cret");
        assert_eq!(
            get("/app.css", "", &[bearer], token),
            Route::Asset("text/css; charset=utf-8", APP_CSS)
        );
    }

    #[test]
    fn the_feed_resumes_from_the_header_or_the_query() {
        let at = Some(Position {
            lifecycle: 41,
            remediation: 2,
        });
        assert_eq!(get("/events", "", &[LOCAL], None), Route::Feed(None));
        assert_eq!(
            get("/events", "", &[LOCAL, ("last-event-id", "41:2")], None),
            Route::Feed(at)
        );
        assert_eq!(
            get("/events", "last_event_id=41%3A2", &[LOCAL], None),
            Route::Feed(at)
        );
        assert!(matches!(
            get("/events", "last_event_id=x", &[LOCAL], None),
            Route::BadRequest(_)
        ));
    }

    #[test]
    fn a_history_query_is_read_from_the_url() {
        let route = get(
            "/api/history",
            "source=web-01%2Fshop&process=jobs%2Fa+b&before=120&limit=20",
            &[LOCAL],
            None,
        );
        assert_eq!(
            route,
            Route::History(HistoryQuery {
                source: "web-01/shop".into(),
                process: "jobs/a b".into(),
                before: Some(120),
                limit: 20,
            })
        );
        for bad in [
            "process=a/b",
            "source=s&process=a/b&before=x",
            "source=s&process=a/b&limit=-1",
        ] {
            assert!(
                matches!(
                    get("/api/history", bad, &[LOCAL], None),
                    Route::BadRequest(_)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(percent_decode("%E2%9C%93"), "✓");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn every_answer_carries_the_policy() {
        let response = secured(text(StatusCode::OK, "x"));
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        // Every src and href is a path on this server.
        for attribute in INDEX_HTML
            .split(['\'', ' '])
            .filter(|a| a.starts_with("src=") || a.starts_with("href="))
        {
            let value = attribute.split('"').nth(1).unwrap_or_default();
            assert!(
                value.starts_with('/') && !value.starts_with("//"),
                "{attribute}"
            );
        }
        assert!(!APP_CSS.contains("url(") && !APP_CSS.contains("@import"));
        // The script talks to this server only (the SVG namespace is a name, not a fetch).
        let reached: Vec<&str> = APP_JS
            .match_indices("://")
            .map(|(at, _)| &APP_JS[at.saturating_sub(4)..(at + 30).min(APP_JS.len())])
            .collect();
        assert!(
            reached
                .iter()
                .all(|r| r.contains("http://www.w3.org/2000/svg")),
            "{reached:?}"
        );
        for call in ["fetch(\"/", "new EventSource(url)"] {
            assert!(APP_JS.contains(call), "{call}");
        }
    }

    /// The values of the options of `<select id="{id}">` in the page, in order.
    fn options_of(id: &str) -> Vec<&'static str> {
        let start = INDEX_HTML
            .find(&format!("<select id=\"{id}\""))
            .unwrap_or_else(|| panic!("no select {id}"));
        let end = start + INDEX_HTML[start..].find("</select>").expect("its end");
        INDEX_HTML[start..end]
            .split("<option value=\"")
            .skip(1)
            .map(|option| option.split('"').next().unwrap_or_default())
            .collect()
    }

    #[test]
    fn the_type_filter_offers_every_event_type() {
        use pc_eventd_events::event::EventType;
        let mut expected = vec![""];
        expected.extend(EventType::ALL.map(EventType::as_str));
        // Not lifecycle types, but rows of the timeline too.
        expected.extend(["events_lost", "remediation"]);
        assert_eq!(options_of("f-type"), expected);
    }

    #[test]
    fn the_severity_filter_and_the_script_know_every_severity() {
        use pc_eventd_events::event::Severity;
        // A new severity fails to compile here until it is added below.
        let every = |severity: Severity| match severity {
            Severity::Debug
            | Severity::Info
            | Severity::Warning
            | Severity::Error
            | Severity::Critical => severity,
        };
        let ordered = [
            Severity::Debug,
            Severity::Info,
            Severity::Warning,
            Severity::Error,
            Severity::Critical,
        ]
        .map(every);
        let names: Vec<String> = ordered
            .iter()
            .map(|s| {
                serde_json::to_value(s)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        // "all" stands for debug and up.
        let mut expected = vec![String::new()];
        expected.extend(names[1..].iter().cloned());
        assert_eq!(options_of("f-severity"), expected);
        // The script ranks each one, in the contract's order.
        let ranks = APP_JS
            .lines()
            .find(|line| line.starts_with("const SEVERITY_RANK = "))
            .expect("the script's severity ranks");
        let listed: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(rank, name)| format!("{name}: {rank}"))
            .collect();
        assert_eq!(
            ranks,
            format!("const SEVERITY_RANK = {{ {} }};", listed.join(", "))
        );
        // Each has a style of its own in the timeline.
        for name in &names {
            assert!(APP_CSS.contains(&format!(".sev-{name} {{")), "{name}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abd", "abc"));
        // Differences that would cancel out if they were not all kept.
        assert!(!same("ba", "ab"));
        assert!(!same("ab", "abc"));
        assert!(!same("", "abc"));
    }
}
