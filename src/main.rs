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
    /// Rebuild Redis from the ledger (latest checkpoint + the ledger after it), with a
    /// progress bar, and checkpoint what was folded. Run it with the service stopped; an
    /// outlet whose Redis is ahead of the ledger is left alone.
    Rebuild {
        /// Only this outlet.
        #[arg(long)]
        outlet: Option<String>,
        /// Fold the whole ledger, ignoring checkpoints (for measuring).
        #[arg(long)]
        no_checkpoint: bool,
    },
    /// Read-only audit: per outlet, the ledger against Redis and any gap in the seqs. Exits
    /// 0 only when everything is clean.
    Check,
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
        Command::Rebuild {
            outlet,
            no_checkpoint,
        } => {
            let only = outlet
                .map(|o| shelfsync::domain::OutletId::parse("outlet", &o))
                .transpose()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let started = std::time::Instant::now();
            let done = shelfsync::rebuild::run(settings, only, !no_checkpoint).await?;
            println!(
                "{:<26} {:>9} {:>11} {:>9} {:>6} {:>6} {:>10}",
                "outlet", "seq", "checkpoint", "folded", "skus", "holds", "ms"
            );
            for r in &done {
                println!(
                    "{:<26} {:>9} {:>11} {:>9} {:>6} {:>6} {:>10.1}{}",
                    r.outlet.as_str(),
                    r.seq,
                    r.checkpoint_seq.map_or("-".to_string(), |s| s.to_string()),
                    r.folded,
                    r.skus,
                    r.holds,
                    r.elapsed.as_secs_f64() * 1000.0,
                    if r.restored {
                        ""
                    } else {
                        "  (Redis ahead: left alone)"
                    }
                );
            }
            let rebuild_ms: f64 = done.iter().map(|r| r.elapsed.as_secs_f64() * 1000.0).sum();
            println!(
                "rebuilt {} outlets: {rebuild_ms:.1} ms rebuilding, {:.1} s with checkpointing",
                done.len(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Check => {
            let checks = shelfsync::audit::run(&settings).await?;
            println!(
                "{:<26} {:>9} {:>9} {:>9} {:>11} {:>6}  status",
                "outlet", "documents", "ledger", "redis", "checkpoint", "drift"
            );
            let opt = |v: Option<u64>| v.map_or("-".to_string(), |s| s.to_string());
            for c in &checks {
                println!(
                    "{:<26} {:>9} {:>9} {:>9} {:>11} {:>6}  {}",
                    c.outlet.as_str(),
                    c.ledger_docs,
                    c.ledger_seq,
                    opt(c.redis_seq),
                    opt(c.checkpoint_seq),
                    c.drift.len(),
                    if c.clean() { "clean" } else { "NOT CLEAN" }
                );
            }
            let mut clean = true;
            for c in checks.iter().filter(|c| !c.clean()) {
                clean = false;
                for p in &c.problems {
                    println!("{}: {p}", c.outlet.as_str());
                }
                for d in &c.drift {
                    println!(
                        "{}: {} Redis on_hand {} reserved {}, ledger on_hand {} reserved {}",
                        c.outlet.as_str(),
                        d.sku.as_str(),
                        d.redis_on_hand,
                        d.redis_reserved,
                        d.ledger_on_hand,
                        d.ledger_reserved
                    );
                }
            }
            if !clean {
                std::process::exit(1);
            }
            println!("clean");
            Ok(())
        }
    }
}
