//! The project's one Server-Sent Events parser (the WHATWG `text/event-stream` format, as
//! shelfsync's `/v1/stream` sends it), used by the agent's stock stream and by the load tools
//! and tests (`shelfsync_load::sse`): fed the body's chunks as they come, it gives each event once its blank line
//! arrived. Lines are split on bytes and decoded whole, so a UTF-8 character split across
//! two chunks is read as it was sent; a line, or an event's data over many lines, longer than
//! the parser's bound is refused instead of growing without end; only the new bytes of each chunk are searched for line
//! ends (a snapshot line can be hundreds of KB over many chunks).

/// One event: its `event:` name (`message` when it has none) and its `data:` lines, joined
/// by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: String,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream line or event longer than {0} bytes")]
pub struct TooLong(pub usize);

#[derive(Debug)]
pub struct Parser {
    line_max: usize,
    /// Bytes of a line whose end has not arrived yet.
    partial: Vec<u8>,
    event: String,
    data: Option<String>,
    /// The `id:` of the event being read, and the last one of an event that ended (kept
    /// until another replaces it, as a browser's EventSource keeps it for `Last-Event-ID`).
    id: Option<String>,
    last_id: Option<String>,
}

impl Parser {
    /// A parser that refuses a line, or an event's data, longer than `line_max` bytes.
    pub fn new(line_max: usize) -> Self {
        Self {
            line_max,
            partial: Vec::new(),
            event: String::new(),
            data: None,
            id: None,
            last_id: None,
        }
    }

    /// The id a reconnect sends as `Last-Event-ID`: that of the last event that ended, data
    /// or not (a keep-alive with an `id:` moves it too).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Reads one chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, TooLong> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            if self.partial.len() + end > self.line_max {
                return Err(TooLong(self.line_max));
            }
            self.partial.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            let line = std::mem::take(&mut self.partial);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if let Some(event) = self.line(&String::from_utf8_lossy(line))? {
                events.push(event);
            }
        }
        if self.partial.len() + rest.len() > self.line_max {
            return Err(TooLong(self.line_max));
        }
        self.partial.extend_from_slice(rest);
        Ok(events)
    }

    fn line(&mut self, line: &str) -> Result<Option<Event>, TooLong> {
        if line.is_empty() {
            if let Some(id) = self.id.take() {
                self.last_id = Some(id);
            }
            let event = std::mem::take(&mut self.event);
            let Some(data) = self.data.take() else {
                return Ok(None);
            };
            let event = if event.is_empty() {
                "message".to_owned()
            } else {
                event
            };
            return Ok(Some(Event { event, data }));
        }
        if line.starts_with(':') {
            return Ok(None); // a comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => match &mut self.data {
                Some(d) if d.len() + 1 + value.len() > self.line_max => {
                    return Err(TooLong(self.line_max))
                }
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            // An id with a NUL is ignored (WHATWG); retry: is the reader's business.
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, data: &str) -> Event {
        Event {
            event: name.into(),
            data: data.into(),
        }
    }

    #[test]
    fn events_end_at_their_blank_line_whatever_the_chunks() {
        let stream = b": keep-alive\n\nevent: stock\ndata: {\"seq\":1}\n\nevent: snapshot\r\ndata: a\r\ndata: b\r\n\r\n";
        let whole = Parser::new(1024).push(stream).unwrap();
        assert_eq!(
            whole,
            vec![event("stock", "{\"seq\":1}"), event("snapshot", "a\nb")]
        );
        for size in 1..stream.len() {
            let mut p = Parser::new(1024);
            let mut got = Vec::new();
            for chunk in stream.chunks(size) {
                got.extend(p.push(chunk).unwrap());
            }
            assert_eq!(got, whole, "chunks of {size}");
        }
    }

    #[test]
    fn the_last_event_id_is_that_of_the_last_event_that_ended_data_or_not() {
        let mut p = Parser::new(1024);
        assert_eq!(p.last_event_id(), None);
        p.push(b"event: stock\nid: a-1\ndata: 1\n\n").unwrap();
        assert_eq!(p.last_event_id(), Some("a-1"));
        p.push(b": keep-alive\nid: a-7\n").unwrap();
        assert_eq!(p.last_event_id(), Some("a-1"), "not before its blank line");
        assert!(p.push(b"\n").unwrap().is_empty(), "no data: no event");
        assert_eq!(p.last_event_id(), Some("a-7"), "a keep-alive moves it too");
        p.push(b"data: 2\n\n").unwrap();
        assert_eq!(
            p.last_event_id(),
            Some("a-7"),
            "an event without id keeps it"
        );
    }

    #[test]
    fn a_character_split_across_chunks_is_read_whole() {
        let stream = "event: stock\ndata: {\"name\":\"काजू कतली\"}\n\n".as_bytes();
        let split = stream.iter().position(|b| *b >= 0x80).unwrap() + 1;
        let mut p = Parser::new(1024);
        assert!(p.push(&stream[..split]).unwrap().is_empty());
        let got = p.push(&stream[split..]).unwrap();
        assert_eq!(got, vec![event("stock", "{\"name\":\"काजू कतली\"}")]);
    }

    #[test]
    fn a_line_past_the_bound_is_refused_with_or_without_its_end() {
        assert_eq!(Parser::new(8).push(b"data: 0123456789\n"), Err(TooLong(8)));
        let mut p = Parser::new(8);
        assert!(p.push(b"data: 01").is_ok());
        assert_eq!(p.push(b"23456789"), Err(TooLong(8)));
    }

    #[test]
    fn an_event_whose_data_lines_pass_the_bound_together_is_refused() {
        let mut p = Parser::new(16);
        assert!(p.push(b"data: 0123456789\n").unwrap().is_empty());
        assert_eq!(p.push(b"data: 0123456789\n"), Err(TooLong(16)));
    }

    #[test]
    fn a_comment_or_an_event_without_data_dispatches_nothing() {
        let mut p = Parser::new(64);
        assert!(p.push(b": ping\n\nevent: stock\n\n").unwrap().is_empty());
        assert_eq!(p.push(b"data: x\n\n").unwrap(), vec![event("message", "x")]);
    }
}
