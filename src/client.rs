//! The command line's HTTP side: `shelfsync import --counts FILE` and `shelfsync export`
//! talk to a running service with an API key, as any client would, so that a count goes
//! through the outlet actors (idempotent by event id) and an export through the same stream
//! a browser would get.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::domain::digest;

/// A count sheet's row: what was counted of `sku` at `outlet`.
#[derive(Deserialize)]
struct CountRow {
    outlet: String,
    sku: String,
    qty: i64,
}

#[derive(Debug, Default)]
pub struct ImportTotals {
    pub lines: usize,
    pub applied: usize,
    pub replayed: usize,
    /// `(file line, message)`.
    pub refused: Vec<(u64, String)>,
    pub unavailable: usize,
}

/// Times an `unavailable` line is sent again before it is reported.
const RETRIES: usize = 3;

fn client(timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .timeout(timeout)
        .disable_redirects()
        .finish()
}

/// Sends a count sheet (`outlet,sku,qty`) as `count` movements in chunks of `chunk` lines.
/// Every chunk is checked first (`dry_run`), so a bad row refuses the whole file with its
/// line number before anything is applied. Each row's event id is derived from the file's
/// digest and the row's line, and its `at` is `at` (by default the file's modification
/// time), so sending the same file again is a replay.
pub async fn import_counts(
    url: &str,
    key: &str,
    file: &Path,
    at: Option<String>,
    chunk: usize,
) -> anyhow::Result<ImportTotals> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let tag = &digest(&bytes)[..12];
    let at = match at {
        Some(at) => at,
        None => {
            let modified = std::fs::metadata(file)?.modified()?;
            chrono::DateTime::<chrono::Utc>::from(modified)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        }
    };
    let text = crate::wire::unix_lines(&bytes);
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(&text[..]);
    let headers = reader.headers().context("reading the header")?.clone();
    let mut lines = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let line = record.position().map_or(0, |p| p.line());
        let row: CountRow = record
            .deserialize(Some(&headers))
            .map_err(|e| anyhow::anyhow!("{} line {line}: {e}", file.display()))?;
        lines.push((
            line,
            json!({"event_id": format!("count-{tag}-{line}"), "outlet": row.outlet,
                "sku": row.sku, "kind": "count", "qty": row.qty, "at": at}),
        ));
    }
    let http = client(Duration::from_secs(120));
    let endpoint = format!("{}/v1/movements/bulk", url.trim_end_matches('/'));
    let chunk = chunk.max(1);
    for part in lines.chunks(chunk) {
        let body = json!({"lines": part.iter().map(|(_, v)| v).collect::<Vec<_>>()});
        let answer = post(&http, &format!("{endpoint}?dry_run=true"), key, &body).await?;
        if let Some(errors) = answer.get("errors").and_then(Value::as_array) {
            let mut out = String::new();
            for e in errors.iter().take(20) {
                let i = e["line"].as_u64().unwrap_or(1).saturating_sub(1) as usize;
                out.push_str(&format!(
                    "\n  line {}: {} {}",
                    part.get(i).map_or(0, |l| l.0),
                    e["field"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                ));
            }
            bail!("{} has bad rows; nothing was applied:{out}", file.display());
        }
    }
    let bar = ProgressBar::new(lines.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("[{bar:40}] {pos:>7}/{len:7} lines {elapsed:>4} {msg}")
            .context("progress style")?
            .progress_chars("=> "),
    );
    let mut totals = ImportTotals {
        lines: lines.len(),
        ..Default::default()
    };
    for part in lines.chunks(chunk) {
        let mut todo: Vec<&(u64, Value)> = part.iter().collect();
        for attempt in 0..=RETRIES {
            let body = json!({"lines": todo.iter().map(|(_, v)| v).collect::<Vec<_>>()});
            let answer = post(&http, &endpoint, key, &body).await?;
            let results = answer["results"].as_array().context("no results")?;
            let mut again = Vec::new();
            for (r, line) in results.iter().zip(&todo) {
                match r["status"].as_str() {
                    Some("applied") => totals.applied += 1,
                    Some("replay") => totals.replayed += 1,
                    Some("unavailable") if attempt < RETRIES => again.push(*line),
                    Some("unavailable") => totals.unavailable += 1,
                    _ => totals.refused.push((
                        line.0,
                        r["message"].as_str().unwrap_or("refused").to_owned(),
                    )),
                }
            }
            bar.inc((todo.len() - again.len()) as u64);
            if again.is_empty() {
                break;
            }
            todo = again;
            actix_web::rt::time::sleep(Duration::from_secs(1)).await;
        }
        bar.set_message(format!(
            "{} applied, {} already there",
            totals.applied, totals.replayed
        ));
    }
    bar.finish();
    Ok(totals)
}

async fn post(http: &awc::Client, url: &str, key: &str, body: &Value) -> anyhow::Result<Value> {
    let mut res = http
        .post(url)
        .bearer_auth(key)
        .send_json(body)
        .await
        .map_err(|e| anyhow::anyhow!("POST {url}: {e}"))?;
    let status = res.status();
    let answer: Value = res
        .json()
        .limit(64 << 20)
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer of {url}: {e}"))?;
    if status.as_u16() == 422 && answer.get("errors").is_some() {
        return Ok(answer);
    }
    if !status.is_success() {
        bail!(
            "{url}: {status}: {}",
            answer["message"].as_str().unwrap_or("")
        );
    }
    Ok(answer)
}

/// Streams `GET {url}{path_and_query}` into `out` (a file, or standard output for `-`), with
/// a spinner counting rows and bytes; returns the rows (lines, less a CSV header).
pub async fn export(url: &str, key: &str, path_and_query: &str, out: &Path) -> anyhow::Result<u64> {
    let http = client(Duration::from_secs(3600));
    let full = format!("{}{path_and_query}", url.trim_end_matches('/'));
    let mut res = http
        .get(&full)
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("GET {full}: {e}"))?;
    if !res.status().is_success() {
        let body = res.body().limit(1 << 20).await.unwrap_or_default();
        bail!(
            "{full}: {}: {}",
            res.status(),
            String::from_utf8_lossy(&body)
        );
    }
    let csv = (res.headers().get("content-type"))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/csv"));
    let mut sink: Box<dyn Write> = if out == Path::new("-") {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
        ))
    };
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos:>10} rows {bytes:>10} {elapsed:>4} {msg}")
            .context("progress style")?,
    );
    let (mut lines, mut bytes, mut tail_failed) = (0u64, 0u64, false);
    while let Some(chunk) = res.next().await {
        let chunk = chunk.map_err(|e| anyhow::anyhow!("reading {full}: {e}"))?;
        sink.write_all(&chunk)?;
        let n = chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        lines += n;
        bytes += chunk.len() as u64;
        tail_failed = chunk.ends_with(b"the rest is missing\n")
            || chunk.ends_with(b"the rest is missing\"}\n");
        bar.set_position(lines);
        bar.set_message(indicatif::HumanBytes(bytes).to_string());
    }
    sink.flush()?;
    bar.finish();
    if tail_failed {
        bail!("the service could not read all of the ledger; the export is incomplete");
    }
    Ok(if csv { lines.saturating_sub(1) } else { lines })
}
