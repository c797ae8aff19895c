//! `bastion`: the FHIR server binary and its operator commands.
#![forbid(unsafe_code)]

mod demo;
mod import;

use std::path::PathBuf;
use std::process::ExitCode;

use bastion_server::Config;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bastion", version, about = "A FHIR R4 server with security and privacy built in")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Configuration file (TOML); defaults apply without one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Load demo data and print what to try.
        #[arg(long)]
        demo: bool,
    },
    /// Read a password on standard input and print its Argon2id PHC string (for a user's
    /// `password` key).
    HashPassword,
    /// Load transaction/batch Bundles (.json) and NDJSON files (.ndjson) into the store.
    Import {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Files to load; each lands completely or not at all.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, String> {
    Config::load(path, std::env::vars()).map_err(|e| e.to_string())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BASTION_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn hash_password() -> Result<(), String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| format!("reading the password: {e}"))?;
    let password = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    println!("{}", bastion_auth::secret::hash_password(password).map_err(|e| e.to_string())?);
    Ok(())
}

async fn serve(mut config: Config, demo: bool) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let public_url = config.server.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    let demo_secret = if demo { Some(demo::add_demo_client(&mut config)?) } else { None };
    let demo_password = if demo { Some(demo::add_demo_users(&mut config)?) } else { None };
    if config.auth.disabled {
        for _ in 0..3 {
            tracing::warn!(
                "auth.disabled = true: the FHIR API answers WITHOUT A TOKEN. Development only; never expose this server."
            );
        }
    }
    let engine = bastion_server::build_engine(&config, &public_url).await.map_err(|e| e.to_string())?;
    let auth = bastion_server::auth::AuthService::new(&config, &public_url, engine.store.clone())?
        .with_consents(engine.consents());
    if demo {
        demo::load(&engine).await.map_err(|e| format!("loading demo data: {e}"))?;
    }
    let app = bastion_server::http::router(bastion_server::http::AppState {
        engine: engine.clone(),
        auth: std::sync::Arc::new(auth),
        auth_disabled: config.auth.disabled,
        anonymous: bastion_server::http::anonymous_scope(&config)?,
    });
    println!("Bastion {} listening on http://{addr}", env!("CARGO_PKG_VERSION"));
    println!("FHIR base: {}", engine.base);
    println!("Storage:   {} ({})", redact_url(&config.storage.url), engine.store.backend());
    if let Some(secret) = &demo_secret {
        demo::print_tips(&engine.base, &public_url, secret);
    }
    if let Some(password) = &demo_password {
        demo::print_users(&public_url, password);
    }
    // The client address feeds the per-address sign-in lockout.
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}

/// A storage URL without its password, for printing.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***{}", &url[..s], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config, demo } => serve(load_config(config.as_deref())?, demo).await,
            Command::HashPassword => hash_password(),
            Command::Import { config, files, quiet } => {
                import::run(&load_config(config.as_deref())?, &files, quiet).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
