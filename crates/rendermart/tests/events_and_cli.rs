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
