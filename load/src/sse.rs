//! Reading shelfsync's `/v1/stream` in the load tools and tests, on the project's one
//! event-stream parser (`shelfsync_agent::sse`: bounded lines, UTF-8 safe across chunks).

use futures_util::StreamExt;

pub use shelfsync_agent::sse::{Event, Parser, TooLong};

/// Reads a streaming response's events until it ends, fails or `on_event` returns false;
/// `on_event` gets each event with the time its last chunk arrived. The error says why the
/// stream stopped (`stream ended` when it simply ended).
pub async fn read(
    response: reqwest::Response,
    line_max: usize,
    mut on_event: impl FnMut(Event, std::time::Instant) -> bool,
) -> String {
    let mut parser = Parser::new(line_max);
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let at = std::time::Instant::now();
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return format!("read: {}", e.without_url()),
        };
        match parser.push(&chunk) {
            Ok(events) => {
                for e in events {
                    if !on_event(e, at) {
                        return "closed by the reader".to_owned();
                    }
                }
            }
            Err(e) => return e.to_string(),
        }
    }
    "stream ended".to_owned()
}
