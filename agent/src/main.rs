//! `shelfsync-agent [--config agent.toml] [serve]` runs the agent; `shelfsync-agent status`
//! asks a running one how it is doing and prints it for a person.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shelfsync_agent::settings::Settings;
use shelfsync_agent::Agent;

#[derive(Parser)]
#[command(
    version,
    about = "The outlet agent: keeps the till's sales on disk until shelfsync has them"
)]
struct Cli {
    /// Settings file; SHELFSYNC_AGENT__SECTION__KEY overrides any key.
    #[arg(long, env = "SHELFSYNC_AGENT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Take the till's webhooks and forward them (the default).
    Serve,
    /// Print the running agent's status (link, pending sales, rejected lines, disk).
    Status {
        /// The agent's address; by default the one the settings give (then they must load).
        #[arg(long)]
        url: Option<String>,
        /// The agent's `http.token`; by default the settings'.
        #[arg(long, env = "SHELFSYNC_AGENT_TOKEN")]
        token: Option<String>,
        /// Print the status JSON as it is.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (file, named) = match cli.config {
        Some(f) => (f, true),
        None => (PathBuf::from("agent.toml"), false),
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let settings = Settings::load(&file, named)?;
            actix_web::rt::System::new().block_on(async {
                let agent = Agent::build(settings)?;
                agent.run().await?;
                Ok(())
            })
        }
        Command::Status { url, token, json } => {
            // With --url the settings are needed only for a token not given.
            let settings = match (&url, Settings::load(&file, named)) {
                (_, Ok(settings)) => Some(settings),
                (Some(_), Err(_)) => None,
                (None, Err(e)) => return Err(e),
            };
            let base = url.unwrap_or_else(|| {
                let h = &settings.as_ref().expect("loaded").http;
                format!("http://{}:{}", h.host, h.port)
            });
            let token = token.or_else(|| {
                let t = settings.as_ref()?.http.token.as_ref()?;
                Some(t.expose().to_owned())
            });
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(status(base, token, json))
        }
    }
}

async fn status(base: String, token: Option<String>, raw: bool) -> anyhow::Result<()> {
    let mut req = reqwest::Client::new().get(format!("{}/status", base.trim_end_matches('/')));
    if let Some(token) = &token {
        req = req.bearer_auth(token);
    }
    let res = req
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("no agent answers at {base}: {e}"))?;
    let s: serde_json::Value = res.error_for_status()?.json().await?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let link = &s["link"];
    let state = match (link["up"].as_bool(), link["stale"].as_bool()) {
        (Some(true), Some(false)) => "up",
        (Some(true), _) => "up, but silent (stock may be stale)",
        _ => "DOWN (stock is stale; sales are kept and sent when it is back)",
    };
    println!("outlet      {}", s["outlet"].as_str().unwrap_or("?"));
    println!(
        "link        {state} via {} (since {})",
        s["via"].as_str().unwrap_or("?"),
        link["since"].as_str().unwrap_or("-")
    );
    let p = &s["pending"];
    println!(
        "pending     {} events (oldest {} s, {} in flight, at most {})",
        p["events"], p["oldest_secs"], p["in_flight"], p["max"]
    );
    println!("applied     {} kept", s["applied_kept"]);
    println!(
        "disk        {} of {} bytes in use ({} in files)",
        s["disk"]["used"], s["disk"]["max"], s["disk"]["files"]
    );
    println!("stock       {} SKUs", s["stock_values"]);
    let rejected = s["rejected"].as_array().cloned().unwrap_or_default();
    println!(
        "rejected    {} kept (need a person: fix the SKU or the till and record the sale again)",
        s["rejected_kept"]
    );
    for r in rejected {
        println!(
            "  {} voucher {} sku {}: {} {}",
            r["at"].as_str().unwrap_or("?"),
            r["voucher"].as_str().unwrap_or("?"),
            r["sku"].as_str().unwrap_or("?"),
            r["code"].as_str().unwrap_or("?"),
            r["reason"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
