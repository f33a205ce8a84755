//! `rendermart`: the one binary. Parses the command line, loads the configuration, and
//! hands over to the library; it holds no logic of its own.
//!
//! The flags of the settings come from the configuration's declarations
//! (`config::flags()`) and the `--<service>-url` flags from the list of services, so
//! neither is written here.

use std::{io::BufRead, path::PathBuf, process::ExitCode};

use clap::{Arg, ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use rendermart::{
    app::Backends,
    config::{self, url_key},
    services, Application, Settings,
};
use rendermart_platform::telemetry;

/// mimalloc: per-thread free lists suit a server that allocates many small objects per
/// request (measured with scripts/bench-baseline; see docs/decisions.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    #[command(subcommand)]
    command: Option<Command>,
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
    /// Fill an empty RenderMart with a living demo (people, images, listings, sales,
    /// offers); they all sign in with the password "demo password 1234".
    Seed,
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
        #[arg(
            long,
            env = "RENDERMART_ADMIN_PASSWORD",
            hide_env_values = true,
            hide = true
        )]
        admin_password: Option<String>,
    },
}

/// The settings' flags and one `--<name>-url` per service, on top of the derived CLI.
fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for flag in config::flags() {
        let env = format!("RENDERMART_{}", flag.key.to_ascii_uppercase());
        cmd = cmd.arg(
            Arg::new(flag.key)
                .long(flag.key.replace('_', "-"))
                .global(true)
                .value_name(flag.value_name)
                .help(format!("{} [env: {env}]", flag.help.trim())),
        );
    }
    for def in services::all() {
        let key = url_key(def.name);
        cmd = cmd.arg(
            Arg::new(key.clone())
                .long(key.replace('_', "-"))
                .global(true)
                .value_name("URL")
                .help(format!(
                    "Where the {} service runs when it is not in this process [env: RENDERMART_{}]",
                    def.name,
                    key.to_ascii_uppercase()
                )),
        );
    }
    cmd
}

/// The flags given on the command line, as (settings key, value).
fn given_flags(matches: &ArgMatches) -> Vec<(String, String)> {
    let mut keys: Vec<String> = config::flags().iter().map(|f| f.key.to_owned()).collect();
    keys.extend(services::all().iter().map(|d| url_key(d.name)));
    keys.into_iter()
        .filter_map(|key| {
            let value = matches.get_one::<String>(&key)?.clone();
            Some((key, value))
        })
        .collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let settings = match Settings::load(&cli.config, std::env::vars(), &given_flags(&matches)) {
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
    // The seeder's progress bar is the output; the app it runs only speaks of trouble.
    let log_level = match cli.command {
        Some(Command::Seed) => "warn".to_owned(),
        _ => settings.log_level.clone(),
    };
    let _telemetry = telemetry::init(
        settings.log_format,
        &log_level,
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
            admin_password,
        }) => {
            create_admin(
                settings,
                &email,
                &display_name,
                password_stdin,
                admin_password,
            )
            .await
        }
        Command::Events(command) => rendermart::events_cli::run(command, &settings).await,
        Command::Seed => seed(settings).await,
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

async fn seed(settings: Settings) -> anyhow::Result<()> {
    let seeded = rendermart::seed::run(settings, &mut std::io::stderr()).await?;
    println!(
        "seeded: {} people, {} images, {} listings, {} sales, {} offers, {} store products \
         ({} there already), {} SKUs stocked; sign in as {} (or the store's admin, {}) with \"{}\"",
        seeded.people,
        seeded.images,
        seeded.listings,
        seeded.sales,
        seeded.offers,
        seeded.products,
        seeded.products_existing,
        seeded.skus_stocked,
        rendermart::seed::PEOPLE[0].0,
        rendermart::seed::STORE_ACCOUNT.0,
        rendermart::seed::DEMO_PASSWORD
    );
    Ok(())
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
    for def in services::all() {
        if !settings.services.contains(def.name) {
            continue;
        }
        match def.migrations {
            Some(migrator) => {
                let db = backends.database(def.name, migrator).await?;
                db.close().await;
                println!("{}: migrated", def.name);
            }
            None => println!("{}: no database", def.name),
        }
    }
    Ok(())
}

async fn create_admin(
    settings: Settings,
    email: &str,
    display_name: &str,
    password_stdin: bool,
    admin_password: Option<String>,
) -> anyhow::Result<()> {
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        admin_password.ok_or_else(|| {
            anyhow::anyhow!("give the password on standard input with --password-stdin, or in RENDERMART_ADMIN_PASSWORD")
        })?
    };
    let backends = Backends::connect(&settings).await?;
    let db = backends
        .database(
            rendermart_identity_api::SERVICE,
            &rendermart_identity::MIGRATOR,
        )
        .await?;
    let config = settings.section(rendermart_identity_api::SERVICE)?;
    let identity =
        rendermart_identity::Identity::new(db.clone(), backends.limiter.clone(), config).await?;
    let user = identity
        .create_admin(email, display_name, &password)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "created admin {} <{}> id={}",
        user.display_name, user.email, user.id
    );
    db.close().await;
    Ok(())
}
