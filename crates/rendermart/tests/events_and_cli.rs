//! Identity's event leaves through the outbox and reaches a subscriber on the configured
//! bus; and the CLI commands an operator uses.

use std::{
    io::Write,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use rendermart::app::Backends;
use rendermart_identity_api::UserRegistered;
use rendermart_platform::{
    bus::{Handler, HandlerError, Subscription},
    events::Envelope,
    shutdown::Shutdown,
};
use rendermart_testkit::{stack_tests, TestApp};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::Mutex;

#[derive(Default)]
struct Collect(Mutex<Vec<Envelope>>);

#[async_trait]
impl Handler for Collect {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        self.0.lock().await.push(envelope.clone());
        Ok(())
    }
}

fn rendermart_cli(app: &TestApp) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rendermart"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RENDERMART_DATA_DIR", &app.settings.data_dir)
        .env("RENDERMART_LOG_FORMAT", "json")
        .env("RENDERMART_CONFIG", "/nonexistent/rendermart.toml")
        .env("RENDERMART_NAMESPACE", &app.settings.namespace);
    if let Some(url) = &app.settings.database_url {
        cmd.env("RENDERMART_DATABASE_URL", url.expose());
    }
    if let Some(url) = &app.settings.bus {
        cmd.env("RENDERMART_BUS", url.expose());
    }
    cmd
}

stack_tests! {
    async fn signing_up_publishes_user_registered_once_through_the_outbox(app) {
        let backends = Backends::connect(&app.settings).await.unwrap();
        app.track_consumer("test.user_registered");
        let seen = Arc::new(Collect::default());
        let shutdown = Shutdown::new();
        let consumer = backends
            .bus
            .subscribe(
                Subscription::new("test.user_registered", &["identity.UserRegistered"]),
                seen.clone(),
                shutdown.clone(),
            )
            .await
            .unwrap();

        let user = app.signed_up_user().await;
        let deadline = Instant::now() + Duration::from_secs(15);
        let event = loop {
            let found = seen.0.lock().await.iter().find_map(|e| {
                let payload = e.decode::<UserRegistered>().ok()?;
                (payload.email == user.email).then(|| (e.clone(), payload))
            });
            if let Some(found) = found {
                break found;
            }
            assert!(Instant::now() < deadline, "UserRegistered never arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (envelope, payload) = event;
        assert_eq!(payload.user_id.to_string(), user.id);
        assert_eq!(envelope.version, 1);
        assert_eq!(envelope.id.get_version_num(), 7);
        assert!(envelope.trace.as_deref().is_some_and(|t| t.starts_with("00-")));
        // Delivered once: no duplicate arrives later.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let copies = seen.0.lock().await.iter().filter(|e| e.id == envelope.id).count();
        assert_eq!(copies, 1);
        shutdown.trigger();
        let _ = consumer.await;
    }

    async fn an_admin_created_from_the_cli_can_log_in_with_the_admin_role(app) {
        let email = format!("admin-{}@example.com", uuid::Uuid::now_v7().simple());
        let mut child = rendermart_cli(&app)
            .args(["admin", "create", "--email", &email, "--display-name", "Root", "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"admin password 123\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&email));

        let login = app.login(&app.new_client(), &email, "admin password 123").await;
        assert_eq!(login.status(), StatusCode::OK);
        let body: Value = login.json().await.unwrap();
        let roles = body["user"]["roles"].to_string();
        assert!(roles.contains("admin") && roles.contains("customer"), "{roles}");

        // The same email again is refused, with a message and a failing exit code.
        let out = rendermart_cli(&app)
            .args(["admin", "create", "--email", &email, "--display-name", "Root"])
            .env("RENDERMART_ADMIN_PASSWORD", "admin password 123")
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    }

    async fn migrate_is_idempotent_against_a_running_deployment(app) {
        for _ in 0..2 {
            let out = rendermart_cli(&app).arg("migrate").output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(String::from_utf8_lossy(&out.stdout).contains("identity: migrated"));
        }
    }

    async fn events_cli_lists_and_redrives_dead_letters_and_refuses_a_redrive_without_a_target(app) {
        let out = rendermart_cli(&app)
            .args(["events", "dlq", "list", "--consumer", "identity.nobody"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("no dead letters"));
        let out = rendermart_cli(&app)
            .args(["events", "dlq", "redrive", "--consumer", "identity.nobody"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--all"));
        let out = rendermart_cli(&app)
            .args(["events", "outbox", "parked"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("identity: no parked rows"));
        // A replay feeds a new consumer the sign-up it missed.
        app.signed_up_user().await;
        let db_sent = async {
            let backends = Backends::connect(&app.settings).await.unwrap();
            let db = backends.database(rendermart_identity_api::SERVICE, &rendermart_identity::MIGRATOR).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            while rendermart_platform::outbox::backlog(&db).await.unwrap() > 0 {
                assert!(Instant::now() < deadline, "the sign-up's event was never sent");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            db.close().await;
        };
        db_sent.await;
        app.track_consumer("identity.replayed");
        let out = rendermart_cli(&app)
            .args(["events", "replay", "--consumer", "identity.replayed", "--since", "1h", "--pattern", "identity.*"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 event(s) replayed"), "{}", String::from_utf8_lossy(&out.stdout));
        let backends = Backends::connect(&app.settings).await.unwrap();
        assert_eq!(backends.bus.pending("identity.replayed").await.unwrap(), 1);
    }

}

#[test]
fn config_prints_the_effective_configuration_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendermart.toml");
    std::fs::write(
        &file,
        "addr = \"0.0.0.0:9999\"\n[identity]\nsession_ttl_secs = 77\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rendermart"))
        .env_clear()
        .env(
            "RENDERMART_DATABASE_URL",
            "postgres://app:topsecret@db:5432/rm",
        )
        .env("RENDERMART_BUS", "amqp://rm:hunter2@mq:5672/%2f")
        .args([
            "--config",
            file.to_str().unwrap(),
            "config",
            "--services",
            "identity",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("addr = \"0.0.0.0:9999\""), "{shown}");
    assert!(shown.contains("session_ttl_secs = 77"), "{shown}");
    assert!(shown.contains("services = \"identity\""), "{shown}");
    assert!(shown.contains("postgres://app:***@db:5432/rm"), "{shown}");
    assert!(
        !shown.contains("topsecret") && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[test]
fn web_alone_needs_the_shared_secret_and_where_identity_runs() {
    let dir = tempfile::tempdir().unwrap();
    let serve_web = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rendermart"))
            .env_clear()
            .args([
                "--config",
                "/nonexistent.toml",
                "serve",
                "--services",
                "web",
            ])
            .args(["--addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = serve_web(&[]);
    assert!(stderr.contains("RENDERMART_SERVICE_SECRET"), "{stderr}");
    let stderr = serve_web(&["--service-secret", "s3cret-shared-by-all"]);
    assert!(stderr.contains("--identity-url"), "{stderr}");
    assert!(
        !stderr.contains("s3cret"),
        "the secret is never printed: {stderr}"
    );
}

#[test]
fn bad_configuration_is_reported_with_exit_code_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_rendermart"))
        .env_clear()
        .args(["--config", "/nonexistent.toml", "config"])
        .env("RENDERMART_SERVICES", "identity,billing")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown service"));
}

#[test]
fn help_lists_the_commands_and_their_environment_twins() {
    let out = Command::new(env!("CARGO_BIN_EXE_rendermart"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "serve",
        "migrate",
        "config",
        "admin",
        "--database-url",
        "RENDERMART_DATABASE_URL",
        "--services",
        "--log-format",
    ] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
}

/// Issue 6, defect 7: shutdown stops intake, lets in-flight requests commit, and only
/// then flushes the outbox, so the events of requests in flight at the signal are
/// published before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_by_requests_in_flight_at_shutdown_are_published_before_exit() {
    let mut stacks = vec![None];
    match rendermart_testkit::distributed_urls() {
        Some(urls) => stacks.push(Some(urls)),
        None => println!("skipping the distributed stack: backends not configured"),
    }
    for urls in stacks {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = rendermart::Settings {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_owned(),
            log_level: "warn".into(),
            ..rendermart::Settings::default()
        };
        settings.set("identity.signup_per_ip.max", 10_000);
        let mut database = None;
        if let Some((pg, amqp, redis)) = &urls {
            use sqlx::{Connection, Executor};
            let name = format!("rm_test_{}", uuid::Uuid::now_v7().simple());
            let mut admin = sqlx::PgConnection::connect(pg).await.unwrap();
            admin
                .execute(format!("CREATE DATABASE \"{name}\"").as_str())
                .await
                .unwrap();
            let _ = admin.close().await;
            let base = pg.rsplit_once('/').map_or(pg.as_str(), |(b, _)| b);
            settings.database_url = Some(format!("{base}/{name}").as_str().into());
            settings.bus = Some(amqp.as_str().into());
            settings.redis_url = Some(redis.as_str().into());
            settings.namespace = format!("rm_test_{}", uuid::Uuid::now_v7().simple());
            database = Some((pg.clone(), name));
        }
        let app = rendermart::Application::build(settings.clone())
            .await
            .unwrap();
        let address = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown_handle();
        let consumers = app.consumer_names().to_vec();
        let server = tokio::spawn(app.run_until_stopped());

        // Twenty sign-ups at once; the signal comes when the first has answered, so the
        // others are still being served (argon2 takes a while).
        let client = reqwest::Client::new();
        let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(32);
        let mut requests = Vec::new();
        for i in 0..20 {
            let (client, address, first_tx) = (client.clone(), address.clone(), first_tx.clone());
            requests.push(tokio::spawn(async move {
                let email = format!("inflight-{i}-{}@example.com", uuid::Uuid::now_v7().simple());
                let response = client
                    .post(format!("{address}/api/v1/auth/signup"))
                    .json(&serde_json::json!({ "email": email, "display_name": "In Flight", "password": "correct horse battery" }))
                    .send()
                    .await;
                let _ = first_tx.send(()).await;
                matches!(response, Ok(r) if r.status() == StatusCode::CREATED)
            }));
        }
        first_rx.recv().await;
        shutdown.trigger();
        let mut created = 0;
        for request in requests {
            if request.await.unwrap() {
                created += 1;
            }
        }
        tokio::time::timeout(Duration::from_secs(60), server)
            .await
            .expect("the process stops")
            .unwrap()
            .unwrap();
        assert!(created > 1, "some sign-ups were in flight at the signal");

        let backends = Backends::connect(&settings).await.unwrap();
        let db = backends
            .database(
                rendermart_identity_api::SERVICE,
                &rendermart_identity::MIGRATOR,
            )
            .await
            .unwrap();
        let sent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL")
            .fetch_one(db.pool())
            .await
            .unwrap();
        let unsent = rendermart_platform::outbox::backlog(&db).await.unwrap();
        db.close().await;
        assert_eq!(
            unsent, 0,
            "every committed sign-up's event was published before exit"
        );
        assert_eq!(sent, created, "one event per created account");
        if let Some(bus) = &settings.bus {
            rendermart_testkit::delete_bus_objects(
                bus.expose().to_owned(),
                settings.namespace.clone(),
                consumers,
            );
        }
        if let Some((pg, name)) = database {
            use sqlx::{Connection, Executor};
            if let Ok(mut admin) = sqlx::PgConnection::connect(&pg).await {
                let _ = admin
                    .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                    .await;
            }
        }
    }
}
