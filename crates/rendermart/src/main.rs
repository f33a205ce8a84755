//! `rendermart`: the one binary. Parses the command line, loads the configuration, and
//! hands over to the library; it holds no logic of its own.

use std::{io::BufRead, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use rendermart::{
    app::{open_identity, Backends},
    Application, Overrides, ServiceName, ServiceSet, Settings,
};
use rendermart_platform::telemetry::{self, LogFormat};

/// RenderMart: generate images from prompts, own them, trade them, and run a store beside.
///
/// With no command, `serve` runs everything in one process on the embedded defaults
/// (SQLite and files under ./data, in-process events). Every flag has a RENDERMART_*
/// environment twin and a key in rendermart.toml; flags win over the environment, which
/// wins over the file.
#[derive(Parser, Debug)]
#[command(name = "rendermart", version, propagate_version = true)]
struct Cli {
    /// Configuration file (read if it exists).
    #[arg(
        long,
        global = true,
        env = "RENDERMART_CONFIG",
        default_value = "rendermart.toml"
    )]
    config: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Debug, Default)]
struct CommonArgs {
    /// Address to serve HTTP on.
    #[arg(long, global = true, env = "RENDERMART_ADDR", value_name = "HOST:PORT")]
    addr: Option<std::net::SocketAddr>,
    /// Directory for the embedded SQLite files, local bus and objects.
    #[arg(long, global = true, env = "RENDERMART_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL (each service in its own schema); unset: SQLite under the data dir.
    #[arg(
        long,
        global = true,
        env = "RENDERMART_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Redis URL for shared rate-limit counters; unset: in-process counters.
    #[arg(
        long,
        global = true,
        env = "RENDERMART_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    redis_url: Option<String>,
    /// RabbitMQ URL (amqp://…) for events; unset: the in-process bus.
    #[arg(
        long,
        global = true,
        env = "RENDERMART_BUS",
        value_name = "URL",
        hide_env_values = true
    )]
    bus: Option<String>,
    /// Services to run here: `all` or a list such as `identity,web`.
    #[arg(long, global = true, env = "RENDERMART_SERVICES", value_name = "LIST")]
    services: Option<ServiceSet>,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "RENDERMART_LOG_FORMAT",
        value_name = "json|pretty"
    )]
    log_format: Option<LogFormat>,
    /// OTLP/HTTP endpoint to export traces to.
    #[arg(
        long,
        global = true,
        env = "RENDERMART_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    otlp_endpoint: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the site, the API and the workers of the selected services (the default).
    Serve,
    /// Apply database migrations of the selected services, then exit.
    Migrate,
    /// Print the effective configuration (secrets redacted), then exit.
    Config,
    /// Administer accounts.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Operate the event machinery: dead letters, parked outbox rows, replays.
    #[command(subcommand)]
    Events(rendermart::events_cli::EventsCommand),
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Create an administrator account.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        display_name: String,
        /// Read the password from the first line of standard input
        /// (otherwise from RENDERMART_ADMIN_PASSWORD).
        #[arg(long)]
        password_stdin: bool,
    },
}

impl CommonArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            addr: self.addr,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            redis_url: self.redis_url.clone(),
            bus: self.bus.clone(),
            services: self.services.clone(),
            log_format: self.log_format,
            otlp_endpoint: self.otlp_endpoint.clone(),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(&cli.config, std::env::vars(), &cli.common.overrides()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rendermart: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Config) = cli.command {
        print!("{}", settings.redacted_toml());
        return ExitCode::SUCCESS;
    }
    let _telemetry = telemetry::init(
        settings.log_format,
        &settings.log_level,
        settings.otlp_endpoint.as_deref(),
    );
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => migrate(settings).await,
        Command::Config => unreachable!("handled above"),
        Command::Admin(AdminCommand::Create {
            email,
            display_name,
            password_stdin,
        }) => create_admin(settings, &email, &display_name, password_stdin).await,
        Command::Events(command) => rendermart::events_cli::run(command, &settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "rendermart failed");
            eprintln!("rendermart: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    let shutdown = app.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        shutdown.trigger();
    });
    app.run_until_stopped().await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let backends = Backends::connect(&settings).await?;
    for service in settings.services.iter() {
        match service {
            ServiceName::Identity => {
                let db = backends
                    .database(rendermart_identity::SERVICE, &rendermart_identity::MIGRATOR)
                    .await?;
                db.close().await;
                println!("identity: migrated");
            }
            ServiceName::Web => println!("web: no database"),
        }
    }
    Ok(())
}

async fn create_admin(
    settings: Settings,
    email: &str,
    display_name: &str,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        std::env::var("RENDERMART_ADMIN_PASSWORD").map_err(|_| {
            anyhow::anyhow!("give the password on standard input with --password-stdin, or in RENDERMART_ADMIN_PASSWORD")
        })?
    };
    let backends = Backends::connect(&settings).await?;
    let identity = open_identity(&settings, &backends).await?;
    let user = identity
        .create_admin(email, display_name, &password)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "created admin {} <{}> id={}",
        user.display_name, user.email, user.id
    );
    identity.db().close().await;
    Ok(())
}
