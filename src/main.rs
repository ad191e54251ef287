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
    /// The service's environment file (systemd `EnvironmentFile=` format, e.g.
    /// /etc/shelfsync/shelfsync-1.env): its variables are set where the environment has
    /// none, before the settings are read, so that a command reads what the service reads.
    #[arg(long, global = true, env = "SHELFSYNC_ENV_FILE")]
    env_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API until SIGINT/SIGTERM, then drain gracefully.
    Serve,
    /// Load the opening stock of the catalogue as `count` movements; with `--counts FILE`,
    /// send a count sheet (`outlet,sku,qty`) to the running service instead, with a progress
    /// bar (sending the same file again changes nothing).
    Import {
        /// Also import into outlets whose ledger already has history.
        #[arg(long)]
        force: bool,
        /// A count sheet to send to the service as bulk `count` movements.
        #[arg(long)]
        counts: Option<PathBuf>,
        /// When the counts were taken (RFC 3339); by default the file's modification time.
        #[arg(long)]
        at: Option<String>,
        /// Lines per request.
        #[arg(long, default_value_t = 6400)]
        chunk: usize,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Export from the running service to a file (or `-`), with a progress spinner.
    Export {
        #[command(subcommand)]
        what: ExportWhat,
        #[command(flatten)]
        service: ServiceArgs,
        /// Where to write it; `-` for standard output.
        #[arg(long, global = true, default_value = "-")]
        out: PathBuf,
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
    /// Print the settings this command line runs with (the file, then the SHELFSYNC__…
    /// overrides) once they pass their checks, secrets hidden; a setting that fails its
    /// check exits non-zero naming it.
    Settings,
}

/// Where the running service is, and the key to use.
#[derive(clap::Args)]
struct ServiceArgs {
    /// The service's address (default: http://{http.host}:{http.port} of the settings).
    #[arg(long, global = true)]
    url: Option<String>,
    /// An API key allowed to do it (admin or manager for counts; viewer or better to export).
    #[arg(long, global = true, env = "SHELFSYNC_API_KEY", hide_env_values = true)]
    key: Option<String>,
}

impl ServiceArgs {
    fn resolve(self, settings: &shelfsync::Settings) -> anyhow::Result<(String, String)> {
        let url = self
            .url
            .unwrap_or_else(|| format!("http://{}:{}", settings.http.host, settings.http.port));
        let key = self
            .key
            .ok_or_else(|| anyhow::anyhow!("give an API key: --key or SHELFSYNC_API_KEY"))?;
        Ok((url, key))
    }
}

#[derive(Subcommand)]
enum ExportWhat {
    /// An outlet's ledger over a time range.
    Ledger {
        #[arg(long)]
        outlet: String,
        /// RFC 3339, included.
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339, left out.
        #[arg(long)]
        to: Option<String>,
        /// csv or ndjson.
        #[arg(long, default_value = "csv")]
        format: String,
    },
    /// The reconciler's drift records over a time range.
    Drift {
        #[arg(long)]
        outlet: Option<String>,
        /// RFC 3339, included.
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339, left out.
        #[arg(long)]
        to: Option<String>,
        /// csv or ndjson.
        #[arg(long, default_value = "csv")]
        format: String,
    },
    /// An outlet's reservations by status (comma-separated; all by default).
    Reservations {
        #[arg(long)]
        outlet: String,
        #[arg(long)]
        status: Option<String>,
        /// csv or ndjson.
        #[arg(long, default_value = "csv")]
        format: String,
    },
    /// Every outlet's (or one's) counters with SKU names.
    Stock {
        #[arg(long)]
        outlet: Option<String>,
        /// csv or ndjson.
        #[arg(long, default_value = "csv")]
        format: String,
    },
}

/// A query string of the given pairs, values percent-encoded.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    parts.join("&")
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Before the settings, the log filter (a RUST_LOG in the file counts) and any thread of
    // ours: it sets environment variables.
    if let Some(file) = &cli.env_file {
        shelfsync::env_file::apply(file)?;
    }
    shelfsync::init_tracing();
    let settings = shelfsync::Settings::load(&cli.config)?;
    match cli.command {
        Command::Settings => {
            println!("{settings:#?}");
            Ok(())
        }
        Command::Serve => {
            shelfsync::Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        Command::Import {
            counts: Some(file),
            at,
            chunk,
            service,
            ..
        } => {
            let (url, key) = service.resolve(&settings)?;
            let t = shelfsync::client::import_counts(&url, &key, &file, at, chunk).await?;
            println!(
                "{} lines: {} applied, {} already there, {} refused, {} not applied (unavailable)",
                t.lines,
                t.applied,
                t.replayed,
                t.refused.len(),
                t.unavailable
            );
            for (line, message) in t.refused.iter().take(50) {
                println!("line {line}: {message}");
            }
            if !t.refused.is_empty() || t.unavailable > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Export { what, service, out } => {
            let (url, key) = service.resolve(&settings)?;
            let path = match &what {
                ExportWhat::Ledger {
                    outlet,
                    from,
                    to,
                    format,
                } => format!(
                    "/v1/export/ledger?{}",
                    query(&[
                        ("outlet", Some(outlet)),
                        ("from", from.as_deref()),
                        ("to", to.as_deref()),
                        ("format", Some(format)),
                    ])
                ),
                ExportWhat::Drift {
                    outlet,
                    from,
                    to,
                    format,
                } => format!(
                    "/v1/export/drift?{}",
                    query(&[
                        ("outlet", outlet.as_deref()),
                        ("from", from.as_deref()),
                        ("to", to.as_deref()),
                        ("format", Some(format)),
                    ])
                ),
                ExportWhat::Reservations {
                    outlet,
                    status,
                    format,
                } => format!(
                    "/v1/export/reservations?{}",
                    query(&[
                        ("outlet", Some(outlet)),
                        ("status", status.as_deref()),
                        ("format", Some(format)),
                    ])
                ),
                ExportWhat::Stock { outlet, format } => format!(
                    "/v1/export/stock?{}",
                    query(&[("outlet", outlet.as_deref()), ("format", Some(format))])
                ),
            };
            let started = std::time::Instant::now();
            let rows = shelfsync::client::export(&url, &key, &path, &out).await?;
            eprintln!(
                "exported {rows} rows in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Import { force, .. } => {
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
