//! The `shelfsync` command: parses arguments and calls into the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shelfsync",
    version,
    about = "Real-time stock sync for a retail chain"
)]
struct Cli {
    /// Settings file; every key can be overridden as SHELFSYNC__SECTION__KEY.
    #[arg(
        long,
        global = true,
        default_value = "config.toml",
        env = "SHELFSYNC_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API until SIGINT/SIGTERM, then drain gracefully.
    Serve,
    /// Load the opening stock of the catalogue as `count` movements.
    Import {
        /// Also import into outlets whose ledger already has history.
        #[arg(long)]
        force: bool,
    },
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    shelfsync::init_tracing();
    let cli = Cli::parse();
    let settings = shelfsync::Settings::load(&cli.config)?;
    match cli.command {
        Command::Serve => {
            shelfsync::Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        Command::Import { force } => {
            let report = shelfsync::import::run(settings, force).await?;
            println!(
                "imported {} stock rows ({} already there); skipped outlets with history: {}",
                report.applied,
                report.replayed,
                report.skipped_outlets.len()
            );
            Ok(())
        }
    }
}
