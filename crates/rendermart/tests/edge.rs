//! The HTTP edge of the real application, on both stacks: what an outside probe found
//! (unbounded metric labels, slowloris, bare edge errors, one address for everyone behind
//! a proxy, public metrics) stays fixed. Each test states one rule.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use rendermart_testkit::{assert_problem, Stack, TestApp};
use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const PASSWORD: &str = "correct horse battery";

fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::now_v7().simple())
}

rendermart_testkit::on_both_stacks!(
    made_up_methods_and_paths_leave_metrics_small_and_their_labels_bounded,
    slow_header_clients_cannot_starve_the_app_and_are_cut_off,
    metrics_are_served_only_on_the_ops_address_when_one_is_set,
    without_trusted_proxies_forwarded_addresses_are_ignored,
    behind_a_trusted_proxy_each_client_has_its_own_address,
    edge_errors_are_problems_for_the_api_and_pages_with_security_headers_for_people,
    api_answers_are_not_stored_or_sniffed,
    one_problem_type_has_one_title_and_every_bad_request_says_why,
);

fn socket_addr(app: &TestApp) -> SocketAddr {
    app.address
        .trim_start_matches("http://")
        .parse()
        .expect("the test app listens on an IP address")
}

/// Sends a raw request and reads until the server closes (the request says
/// `Connection: close`); returns the status line and headers, and the body.
async fn raw_exchange(addr: SocketAddr, request: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut bytes))
        .await
        .expect("the server answered and closed within 20s")
        .expect("read");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_owned())
}

fn metric_series(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count()
}

fn label_values<'a>(metrics: &'a str, metric: &str, label: &str) -> BTreeSet<&'a str> {
    let prefix = format!("{metric}{{");
    let key = format!("{label}=\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.split(&key).nth(1)?.split('"').next())
        .collect()
}

async fn made_up_methods_and_paths_leave_metrics_small_and_their_labels_bounded(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let client = reqwest::Client::new();
    let metrics_text = || async {
        client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = metrics_text().await;
    let marker = uuid::Uuid::now_v7().simple().to_string();
    for i in 0..1500 {
        // Made-up methods against /healthz (no log-in needed), made-up paths for pages and
        // for the API: every one different.
        let method = Method::from_bytes(format!("X{marker}{i}").as_bytes()).unwrap();
        let path = match i % 3 {
            0 => "/healthz".to_owned(),
            1 => format!("/p-{marker}-{i}"),
            _ => format!("/api/v1/{marker}/{i}"),
        };
        let response = client.request(method, app.url(&path)).send().await.unwrap();
        assert!(
            response.status().is_client_error(),
            "{path}: {}",
            response.status()
        );
    }
    let after = metrics_text().await;

    assert!(
        !after.contains(&marker),
        "a method or path the client chose became a label"
    );
    let methods = label_values(&after, "http_requests_total", "method");
    assert!(methods.contains("OTHER"), "{methods:?}");
    let known = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "OTHER",
    ];
    assert!(methods.iter().all(|m| known.contains(m)), "{methods:?}");
    let routes = label_values(&after, "http_requests_total", "route");
    assert!(routes.contains("unmatched"), "{routes:?}");
    assert!(
        routes
            .iter()
            .all(|r| *r == "unmatched" || r.starts_with('/')),
        "{routes:?}"
    );
    // 1,500 distinct requests added a handful of series (OTHER × a few statuses), not
    // 1,500 × (counter + histogram buckets). Other tests share the recorder, hence the
    // margin.
    let added = metric_series(&after).saturating_sub(metric_series(&before));
    assert!(added < 300, "{added} new series");
    assert!(after.len() < 200_000, "/metrics is {} bytes", after.len());
}

async fn slow_header_clients_cannot_starve_the_app_and_are_cut_off(stack: Stack) {
    let header_timeout = Duration::from_secs(3);
    let Some(app) = TestApp::spawn_with(stack, |s| {
        s.header_read_timeout_secs = header_timeout.as_secs()
    })
    .await
    else {
        return;
    };
    let addr = socket_addr(&app);
    let mut slow = Vec::new();
    for i in 0..300 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ").as_bytes())
            .await
            .unwrap();
        slow.push(stream);
    }
    let opened = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(1),
        reqwest::Client::new().get(app.url("/healthz")).send(),
    )
    .await
    .expect("a normal request was answered at once beside 300 slow clients")
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    for mut stream in slow {
        let mut buf = [0u8; 256];
        let _ = tokio::time::timeout(header_timeout * 3, stream.read(&mut buf))
            .await
            .expect("the app closed a connection that never finished its headers");
    }
    assert!(opened.elapsed() >= header_timeout - Duration::from_millis(500));
}

async fn metrics_are_served_only_on_the_ops_address_when_one_is_set(stack: Stack) {
    let Some(app) =
        TestApp::spawn_with(stack, |s| s.ops_addr = Some("127.0.0.1:0".parse().unwrap())).await
    else {
        return;
    };
    let ops = app.ops_address.clone().expect("an ops address was bound");
    let client = reqwest::Client::new();
    let get = |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await.unwrap() }
    };

    let public = get(app.url("/metrics")).await;
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    assert!(!public.text().await.unwrap().contains("http_requests_total"));
    for path in ["/healthz", "/readyz"] {
        assert_eq!(get(app.url(path)).await.status(), StatusCode::OK, "{path}");
        assert_eq!(
            get(format!("{ops}{path}")).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }
    let metrics = get(format!("{ops}/metrics")).await;
    assert_eq!(metrics.status(), StatusCode::OK);
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    assert!(metrics.contains("outbox_backlog"), "{metrics}");
}

async fn sign_up_from(app: &TestApp, forwarded_for: &str) -> reqwest::Response {
    app.new_client()
        .post(app.url("/api/v1/auth/signup"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"email": unique_email("fwd"), "display_name": "Fwd", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
}

async fn without_trusted_proxies_forwarded_addresses_are_ignored(stack: Stack) {
    let Some(app) = TestApp::spawn_with(stack, |s| s.set("identity.signup_per_ip.max", 2)).await
    else {
        return;
    };
    // A client that writes a new X-Forwarded-For on every request is still one address.
    for i in 1..=2 {
        let r = sign_up_from(&app, &format!("203.0.113.{i}")).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let third = sign_up_from(&app, "203.0.113.3").await;
    assert_problem(third, StatusCode::TOO_MANY_REQUESTS).await;
}

async fn behind_a_trusted_proxy_each_client_has_its_own_address(stack: Stack) {
    let Some(app) = TestApp::spawn_with(stack, |s| {
        s.set("identity.signup_per_ip.max", 2);
        s.trusted_proxies = "127.0.0.0/8, 10.0.0.0/8".parse().unwrap();
    })
    .await
    else {
        return;
    };
    // Three clients behind the proxy: each has its own per-address limit.
    for i in 1..=3 {
        let r = sign_up_from(&app, &format!("198.51.100.7, 203.0.113.{i}, 10.0.0.1")).await;
        assert_eq!(r.status(), StatusCode::CREATED, "client {i}");
    }
    // One client is still limited: the right-most untrusted hop is its address, whatever
    // it writes further left.
    let one = "203.0.113.50";
    for spoof in ["1.1.1.1", "2.2.2.2"] {
        let r = sign_up_from(&app, &format!("{spoof}, {one}")).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let limited = sign_up_from(&app, &format!("3.3.3.3, {one}")).await;
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
}

fn assert_page_security_headers(head: &str) {
    for expected in [
        "content-security-policy: default-src 'none'",
        "x-content-type-options: nosniff",
        "x-frame-options: deny",
        "referrer-policy: same-origin",
        "content-type: text/html",
    ] {
        assert!(head.contains(expected), "{expected} missing in\n{head}");
    }
}

async fn edge_errors_are_problems_for_the_api_and_pages_with_security_headers_for_people(
    stack: Stack,
) {
    let Some(app) = TestApp::spawn_with(stack, |s| s.request_timeout_secs = 1).await else {
        return;
    };
    let addr = socket_addr(&app);

    // GET on the log-out form's address: a 405 page, not a bare status.
    let (head, body) = raw_exchange(
        addr,
        "GET /logout HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 405"), "{head}");
    assert!(head.contains("allow: post"), "{head}");
    assert!(body.contains("<h1>"), "{body}");
    assert_page_security_headers(&head);

    // A body that stops arriving: 408 as problem+json for the API, a page for a form.
    let stalled = |path: &str, content_type: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
             Content-Length: 200\r\nConnection: close\r\n\r\nemail="
        )
    };
    let (head, body) = raw_exchange(addr, &stalled("/api/v1/auth/login", "application/json")).await;
    assert!(head.starts_with("http/1.1 408"), "{head}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["type"], "/problems/request-timeout");
    assert!(problem["detail"].is_string(), "{problem}");
    let (head, body) = raw_exchange(
        addr,
        &stalled("/login", "application/x-www-form-urlencoded"),
    )
    .await;
    assert!(head.starts_with("http/1.1 408"), "{head}");
    assert!(body.contains("<h1>"), "{body}");
    assert_page_security_headers(&head);

    // Too large for a form: a 413 page with the security headers.
    let big = "a".repeat(app.settings.body_limit_bytes + 1);
    let response = app
        .new_client()
        .post(app.url("/signup"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("email={big}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let headers = format!("{:?}", response.headers()).to_ascii_lowercase();
    for name in [
        "content-security-policy",
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
    ] {
        assert!(headers.contains(name), "{name} missing: {headers}");
    }

    // An unknown page: the site's 404 page with the security headers; unknown API: problem.
    let page = app
        .client
        .get(app.url("/no/such/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
    let api = app
        .client
        .delete(app.url("/api/v1/no/such"))
        .send()
        .await
        .unwrap();
    assert_problem(api, StatusCode::NOT_FOUND).await;
    let wrong_method = app.client.put(app.url("/api/v1/me")).send().await.unwrap();
    assert!(wrong_method.headers().contains_key(header::ALLOW));
    assert_problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
}

async fn api_answers_are_not_stored_or_sniffed(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let user = app.signed_up_user().await;
    let (_, token) = app.api_token(&user, "laptop").await;
    let answers = [
        app.signup(&app.new_client(), &unique_email("ns"), "Ns", PASSWORD)
            .await,
        app.login(&app.new_client(), &user.email, &user.password)
            .await,
        user.client.get(app.url("/api/v1/me")).send().await.unwrap(),
        app.get_with_token("/api/v1/tokens", &token).await,
        app.get_with_token("/api/v1/me", "rmt_wrong").await,
    ];
    for answer in answers {
        let url = answer.url().clone();
        assert_eq!(
            answer
                .headers()
                .get(header::CACHE_CONTROL)
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{url}"
        );
        assert_eq!(
            answer
                .headers()
                .get(header::X_CONTENT_TYPE_OPTIONS)
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{url}"
        );
        assert!(!answer
            .headers()
            .contains_key(header::STRICT_TRANSPORT_SECURITY));
    }
}

async fn one_problem_type_has_one_title_and_every_bad_request_says_why(stack: Stack) {
    let Some(app) = TestApp::spawn(stack).await else {
        return;
    };
    let user = app.signed_up_user().await;
    let (_, token) = app.api_token(&user, "cli").await;
    let client = app.new_client();
    let signup = app.url("/api/v1/auth/signup");
    let requests = vec![
        client
            .post(&signup)
            .header(header::CONTENT_TYPE, "application/json")
            .body("{\"email\": "),
        client
            .post(&signup)
            .header(header::CONTENT_TYPE, "text/plain")
            .body("x"),
        client.post(&signup).json(&json!({"email": "x"})),
        client
            .post(&signup)
            .json(&json!({"email": user.email, "display_name": "A", "password": PASSWORD})),
        client
            .post(&signup)
            .header(header::CONTENT_TYPE, "application/json")
            .body("x".repeat(200_000)),
        client.get(&signup),
        client.get(app.url("/api/v1/me")),
        client.get(app.url("/api/v1/nowhere")),
        client
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": user.email, "password": "wrong password"})),
        // Log-out with a token is a 400 from the handler.
        client
            .post(app.url("/api/v1/auth/logout"))
            .bearer_auth(&token),
        client
            .delete(app.url("/api/v1/tokens/not-a-uuid"))
            .bearer_auth(&token),
        client
            .get(app.url("/api/v1/tokens?cursor=%%%"))
            .bearer_auth(&token),
    ];
    let mut titles: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut statuses = BTreeSet::new();
    for request in requests {
        let response = request.send().await.unwrap();
        let status = response.status();
        assert!(status.is_client_error(), "{status}");
        let problem = assert_problem(response, status).await;
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(!detail.is_empty(), "a problem without a detail: {problem}");
        statuses.insert(status.as_u16());
        titles
            .entry(problem["type"].as_str().unwrap().to_owned())
            .or_default()
            .insert(problem["title"].as_str().unwrap().to_owned());
    }
    assert!(statuses.contains(&400), "{statuses:?}");
    for (kind, seen) in &titles {
        assert_eq!(seen.len(), 1, "{kind} has several titles: {seen:?}");
    }
    // The edge's own problems use the same words as the named ones.
    assert_eq!(
        titles["/problems/unauthorized"],
        BTreeSet::from(["Authentication required".to_owned()])
    );
    assert_eq!(
        titles["/problems/not-found"],
        BTreeSet::from(["Not found".to_owned()])
    );
}
