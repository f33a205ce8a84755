//! The HTTP edge over real sockets: the server loop's bounds (header-read timeout,
//! connection bound, graceful shutdown) and what the middleware stack promises every
//! response (client resolution behind trusted proxies, errors in the caller's format,
//! security headers, bounded metric labels). No database: a small router stands in for
//! the services.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::{
    response::IntoResponse,
    routing::{get, post},
    Router,
};
use rendermart_platform::http::{
    edge_layers, serve, ApiJson, ClientInfo, EdgeConfig, Problem, ServeConfig, TrustedProxies,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

/// A running server; dropping the handle's sender shuts it down.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(10), self.done)
            .await
            .expect("serve returned within 10s of shutdown")
            .expect("serve task did not panic");
        result.expect("serve returned Ok");
    }
}

/// The routes the tests talk to: an API route, a page form, a slow handler, one that
/// echoes what the edge resolved about the client, one that panics.
fn routes() -> Router {
    #[derive(serde::Deserialize)]
    struct Login {
        #[allow(dead_code)]
        email: String,
    }
    #[derive(serde::Deserialize)]
    struct Paging {
        limit: u32,
    }
    Router::new()
        .route(
            "/api/v1/echo",
            post(|ApiJson(_): ApiJson<Login>| async { "ok" }),
        )
        .route(
            "/api/v1/page",
            get(|axum::extract::Query(q): axum::extract::Query<Paging>| async move {
                ApiJson(serde_json::json!({ "limit": q.limit }))
            }),
        )
        .route(
            "/api/v1/cached",
            get(|| async { ([("cache-control", "public, max-age=60")], "cached") }),
        )
        .route(
            "/api/v1/client",
            get(|client: ClientInfo| async move {
                ApiJson(serde_json::json!({
                    "ip": client.ip.map(|ip| ip.to_string()),
                    "https": client.https,
                }))
            }),
        )
        .route(
            "/api/v1/panic",
            get(|| async {
                if true {
                    panic!("a bug");
                }
                "unreachable"
            }),
        )
        .route(
            "/login",
            post(|body: String| async move { axum::response::Html(format!("<p>{}</p>", body.len())) }),
        )
        .route(
            "/page",
            get(|| async { axum::response::Html("<!doctype html><p>hello") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                "finished"
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|uri: http::Uri| async move {
            if uri.path().starts_with("/api/") {
                Problem::not_found("No such API endpoint.").into_response()
            } else {
                (http::StatusCode::NOT_FOUND, axum::response::Html("<p>no page")).into_response()
            }
        })
}

async fn start(edge: EdgeConfig, serve_config: ServeConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = edge_layers(routes(), &edge);
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        serve(listener, router, &serve_config, async {
            let _ = stopped.await;
        })
        .await
    });
    Server {
        addr,
        stop: Some(stop),
        done,
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn assert_problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let problem = self.json();
        assert_eq!(problem["status"], status, "{problem}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{problem}"
        );
        problem
    }

    fn assert_page(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.header("content-type")
                .is_some_and(|ct| ct.starts_with("text/html")),
            "{self:?}"
        );
        assert!(
            self.body.contains("<html") || self.body.contains("<p>"),
            "{self:?}"
        );
        assert_page_security_headers(self);
    }
}

fn assert_page_security_headers(answer: &Answer) {
    assert!(
        answer
            .header("content-security-policy")
            .is_some_and(|csp| csp.contains("default-src 'none'")),
        "{answer:?}"
    );
    assert_eq!(
        answer.header("x-content-type-options"),
        Some("nosniff"),
        "{answer:?}"
    );
    assert_eq!(answer.header("x-frame-options"), Some("DENY"), "{answer:?}");
    assert_eq!(
        answer.header("referrer-policy"),
        Some("same-origin"),
        "{answer:?}"
    );
}

/// Sends `raw` (a whole request, which should say `Connection: close`) and reads the
/// answer until the server closes.
async fn exchange(addr: SocketAddr, raw: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    read_answer(&mut stream).await
}

async fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut bytes))
        .await
        .expect("the server answered and closed within 20s")
        .expect("read");
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    // De-chunk well enough for the small bodies here.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    Answer {
        status,
        head: head.to_owned(),
        body,
    }
}

fn get_request(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n")
}

fn trusting(ranges: &str) -> EdgeConfig {
    EdgeConfig {
        trusted_proxies: ranges.parse::<TrustedProxies>().unwrap(),
        ..EdgeConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_do_not_delay_a_normal_request_and_are_closed_after_the_header_timeout(
) {
    let header_timeout = Duration::from_secs(2);
    let server = start(
        EdgeConfig::default(),
        ServeConfig {
            header_read_timeout: header_timeout,
            ..ServeConfig::default()
        },
    )
    .await;

    // 300 clients that start a request and never finish its headers.
    let mut slow = Vec::new();
    for i in 0..300 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(format!("GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow-{i}: ").as_bytes())
            .await
            .unwrap();
        slow.push(stream);
    }
    let opened = Instant::now();

    // A normal request is answered at once, long before any of them times out.
    let answer = tokio::time::timeout(
        header_timeout / 2,
        exchange(server.addr, &get_request("/healthz", "")),
    )
    .await
    .expect("a normal request was answered while 300 slow clients were connected");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "ok");

    // Every slow connection is closed by the server once the header timeout has passed
    // (and not before it had a fair chance).
    for mut stream in slow {
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout(header_timeout * 3, stream.read(&mut buf))
            .await
            .expect("the server closed a slow connection within 3x the header timeout");
        // EOF, a reset, or at most an error status before the close.
        if let Ok(n) = read {
            if n > 0 {
                let answer = parse(&buf[..n]);
                assert!(answer.status >= 400, "{answer:?}");
            }
        }
    }
    assert!(
        opened.elapsed() >= header_timeout - Duration::from_millis(300),
        "closed before the header timeout: {:?}",
        opened.elapsed()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_bound_holds_and_a_freed_slot_is_reused() {
    let server = start(
        EdgeConfig::default(),
        ServeConfig {
            max_connections: 3,
            header_read_timeout: Duration::from_secs(30),
            ..ServeConfig::default()
        },
    )
    .await;
    // Three idle connections take every slot (each proved accepted by a served request).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("answered")
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(stream); // kept alive, idle
    }

    // A fourth connection is not served while they are open...
    let mut fourth = TcpStream::connect(server.addr).await.unwrap();
    fourth
        .write_all(get_request("/healthz", "").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let early = tokio::time::timeout(Duration::from_millis(800), fourth.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond the bound of 3: {early:?}");

    // ...and is served as soon as one of them closes.
    drop(held.pop());
    let answer = read_answer(&mut fourth).await;
    assert_eq!(answer.status, 200);
    drop(held);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let server = start(EdgeConfig::default(), ServeConfig::default()).await;
    let addr = server.addr;
    let in_flight = tokio::spawn(async move { exchange(addr, &get_request("/slow", "")).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = tokio::spawn(server.stop());

    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200, "the in-flight request was finished");
    assert_eq!(answer.body, "finished");
    stopping.await.unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_believed_only_from_trusted_proxies() {
    let spoofing = "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n";

    // Nobody trusted: the peer is the client, whatever the headers say.
    let server = start(EdgeConfig::default(), ServeConfig::default()).await;
    let client = exchange(server.addr, &get_request("/api/v1/client", spoofing))
        .await
        .json();
    assert_eq!(client["ip"], "127.0.0.1");
    assert_eq!(client["https"], false);
    server.stop().await;

    // Only another range trusted: still the peer.
    let server = start(trusting("10.0.0.0/8"), ServeConfig::default()).await;
    let client = exchange(server.addr, &get_request("/api/v1/client", spoofing))
        .await
        .json();
    assert_eq!(client["ip"], "127.0.0.1");
    assert_eq!(client["https"], false);
    server.stop().await;

    // The peer is a trusted proxy: the right-most untrusted hop, and its scheme.
    let server = start(trusting("127.0.0.0/8, 10.0.0.0/8"), ServeConfig::default()).await;
    let chain =
        "X-Forwarded-For: 198.51.100.1, 203.0.113.9, 10.1.2.3\r\nX-Forwarded-Proto: https\r\n";
    let client = exchange(server.addr, &get_request("/api/v1/client", chain))
        .await
        .json();
    assert_eq!(client["ip"], "203.0.113.9");
    assert_eq!(client["https"], true);
    let client = exchange(server.addr, &get_request("/api/v1/client", ""))
        .await
        .json();
    assert_eq!(client["ip"], "127.0.0.1");
    assert_eq!(client["https"], false);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_edge_errors_become_problems_for_the_api_and_pages_for_people() {
    let server = start(
        EdgeConfig {
            request_timeout: Duration::from_secs(1),
            body_limit: 1024,
            ..EdgeConfig::default()
        },
        ServeConfig::default(),
    )
    .await;
    let addr = server.addr;

    // A body that stops arriving: 408 in the caller's format, not a bare status.
    let stalled = |path: &str, content_type: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n\
             Content-Length: 100\r\nConnection: close\r\n\r\n{{\"email\":"
        )
    };
    let answer = exchange(addr, &stalled("/api/v1/echo", "application/json")).await;
    let problem = answer.assert_problem(408);
    assert_eq!(problem["type"], "/problems/request-timeout");
    let answer = exchange(
        addr,
        &stalled("/login", "application/x-www-form-urlencoded"),
    )
    .await;
    answer.assert_page(408);

    // The wrong method: 405 with Allow, as a problem or a page.
    let answer = exchange(addr, &get_request("/api/v1/echo", "")).await;
    let problem = answer.assert_problem(405);
    assert_eq!(problem["type"], "/problems/method-not-allowed");
    assert!(
        answer.header("allow").is_some_and(|a| a.contains("POST")),
        "{answer:?}"
    );
    let answer = exchange(addr, &get_request("/login", "")).await;
    answer.assert_page(405);
    assert!(
        answer.header("allow").is_some_and(|a| a.contains("POST")),
        "{answer:?}"
    );

    // Too large, declared or streamed: 413 as a problem or a page with security headers.
    let big = "x".repeat(2048);
    let post = |path: &str, extra: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{extra}Connection: close\r\n\r\n"
        )
    };
    let declared = format!(
        "{}{big}",
        post("/login", &format!("Content-Length: {}\r\n", big.len()))
    );
    exchange(addr, &declared).await.assert_page(413);
    let chunked = format!(
        "{}{:x}\r\n{big}\r\n0\r\n\r\n",
        post("/login", "Transfer-Encoding: chunked\r\n"),
        big.len()
    );
    exchange(addr, &chunked).await.assert_page(413);
    let declared = format!(
        "{}{big}",
        post(
            "/api/v1/echo",
            &format!("Content-Length: {}\r\n", big.len())
        )
    );
    let problem = exchange(addr, &declared).await.assert_problem(413);
    assert_eq!(problem["type"], "/problems/payload-too-large");

    // A panic is a 500 problem, and the server keeps serving.
    let problem = exchange(addr, &get_request("/api/v1/panic", ""))
        .await
        .assert_problem(500);
    assert_eq!(problem["type"], "/problems/internal");
    assert!(!problem.to_string().contains("a bug"), "{problem}");
    assert_eq!(
        exchange(addr, &get_request("/healthz", "")).await.status,
        200
    );

    // Pages a handler rendered get the security headers too; so does the fallback 404.
    exchange(addr, &get_request("/page", ""))
        .await
        .assert_page(200);
    exchange(addr, &get_request("/nowhere", ""))
        .await
        .assert_page(404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_client_is_told_why_an_extractor_refused_its_request() {
    let server = start(EdgeConfig::default(), ServeConfig::default()).await;
    let answer = exchange(server.addr, &get_request("/api/v1/page?limit=abc", "")).await;
    let problem = answer.assert_problem(400);
    assert_eq!(problem["type"], "/problems/bad-request");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("limit"), "{problem}");
    let answer = exchange(server.addr, &get_request("/api/v1/page", "")).await;
    let problem = answer.assert_problem(400);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("limit"),
        "{problem}"
    );
    let answer = exchange(server.addr, &get_request("/api/v1/page?limit=5", "")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_are_not_stored_or_sniffed_and_hsts_follows_secure_cookies() {
    let server = start(trusting("127.0.0.1"), ServeConfig::default()).await;
    let answer = exchange(server.addr, &get_request("/api/v1/client", "")).await;
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        answer.header("strict-transport-security"),
        None,
        "plain HTTP"
    );
    // A handler's own caching decision stands; nosniff is still added.
    let answer = exchange(server.addr, &get_request("/api/v1/cached", "")).await;
    assert_eq!(answer.header("cache-control"), Some("public, max-age=60"));
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    // Errors too.
    let answer = exchange(server.addr, &get_request("/api/v1/nope", "")).await;
    answer.assert_problem(404);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    // HTTPS through the trusted proxy: HSTS on every answer.
    let https = "X-Forwarded-Proto: https\r\n";
    let answer = exchange(server.addr, &get_request("/api/v1/client", https)).await;
    assert_eq!(
        answer.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    let answer = exchange(server.addr, &get_request("/page", https)).await;
    assert!(answer.header("strict-transport-security").is_some());
    server.stop().await;

    // From an untrusted peer the same header earns nothing...
    let server = start(EdgeConfig::default(), ServeConfig::default()).await;
    let answer = exchange(
        server.addr,
        &get_request("/page", "X-Forwarded-Proto: https\r\n"),
    )
    .await;
    assert_eq!(answer.header("strict-transport-security"), None);
    server.stop().await;
    // ...but configured secure cookies always send it.
    let server = start(
        EdgeConfig {
            cookie_secure: true,
            ..EdgeConfig::default()
        },
        ServeConfig::default(),
    )
    .await;
    let answer = exchange(server.addr, &get_request("/page", "")).await;
    assert_eq!(
        answer.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_and_paths_leave_the_metric_labels_bounded() {
    let handle = rendermart_platform::telemetry::metrics_handle();
    let server = start(EdgeConfig::default(), ServeConfig::default()).await;
    let marker = uuid::Uuid::now_v7().simple().to_string();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // 2,000 requests on one kept-alive connection: made-up methods on a real route and
    // made-up paths, every one different.
    for i in 0..2000 {
        let method = format!("M{marker}{i}");
        let path = if i % 2 == 0 {
            "/healthz".to_owned()
        } else {
            format!("/p{marker}/{i}")
        };
        stream
            .write_all(format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        read_one_response(&mut stream).await;
    }
    let text = handle.render();
    assert!(
        !text.contains(&marker),
        "a client's method or path became a label"
    );
    let methods: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter_map(|l| l.split("method=\"").nth(1)?.split('"').next())
        .collect();
    let allowed = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "OTHER",
    ];
    assert!(methods.contains("OTHER"), "{methods:?}");
    assert!(methods.iter().all(|m| allowed.contains(m)), "{methods:?}");
    let routes: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter_map(|l| l.split("route=\"").nth(1)?.split('"').next())
        .collect();
    assert!(routes.contains("unmatched"), "{routes:?}");
    assert!(routes.len() < 20, "{routes:?}");
    server.stop().await;
}

/// Reads one response off a kept-alive connection (headers, then a Content-Length body or
/// a chunked body).
async fn read_one_response(stream: &mut TcpStream) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a response within 10s")
            .unwrap();
        assert!(n > 0, "the server closed the connection");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let lower = head.to_ascii_lowercase();
        if let Some(len) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            if body.len() >= len {
                return;
            }
        } else if lower.contains("transfer-encoding: chunked") {
            if body.ends_with("0\r\n\r\n") {
                return;
            }
        } else {
            return;
        }
    }
}
