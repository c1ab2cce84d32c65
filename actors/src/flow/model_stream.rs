//! Reading an OpenAI-compatible chat completion as it streams (`"stream": true`): the answer is
//! server-sent events, each `data: {chat.completion.chunk}` carrying a piece of the reply in
//! `choices[0].delta.content`, ended by `data: [DONE]`. Each piece is handed on as it arrives
//! (it becomes a `model.delta` run event); the pieces joined are the reply.
//!
//! A server that ignores `stream` and answers one JSON completion is read as such, so a model
//! that cannot stream still works, in one piece.

use serde_json::Value;

/// The largest reply read from a streaming model, as for any answer.
const MAX_REPLY: usize = 16 * 1024 * 1024;

/// Parses a chat-completions event stream fed in arbitrary byte pieces.
#[derive(Default)]
pub struct ChatStream {
    /// Bytes of a line not ended yet.
    partial: Vec<u8>,
    /// The reply so far.
    reply: String,
    done: bool,
    /// What the server said went wrong inside the stream (an `error` object), if it did.
    error: Option<String>,
    read: usize,
}

/// Why a streamed reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// The server reported an error inside the stream.
    Server(String),
    TooLarge,
    /// The stream ended before `[DONE]` and without any content.
    Empty,
}

impl ChatStream {
    /// Feeds the next bytes; returns the pieces of the reply they completed, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, StreamError> {
        self.read += bytes.len();
        if self.read > MAX_REPLY {
            return Err(StreamError::TooLarge);
        }
        let mut pieces = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.partial.push(b);
                continue;
            }
            let line = std::mem::take(&mut self.partial);
            if let Some(piece) = self.line(&line) {
                pieces.push(piece);
            }
        }
        match &self.error {
            Some(e) => Err(StreamError::Server(e.clone())),
            None => Ok(pieces),
        }
    }

    fn line(&mut self, line: &[u8]) -> Option<String> {
        let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
        let data = line.strip_prefix("data:")?.trim_start();
        if data == "[DONE]" {
            self.done = true;
            return None;
        }
        let chunk: Value = serde_json::from_str(data).ok()?;
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string());
            self.error = Some(message);
            return None;
        }
        let piece = chunk.pointer("/choices/0/delta/content")?.as_str()?;
        if piece.is_empty() {
            return None;
        }
        self.reply.push_str(piece);
        Some(piece.to_owned())
    }

    /// The whole reply, once the stream has ended.
    pub fn finish(mut self) -> Result<String, StreamError> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
        if let Some(e) = self.error {
            return Err(StreamError::Server(e));
        }
        if !self.done && self.reply.is_empty() {
            return Err(StreamError::Empty);
        }
        Ok(self.reply)
    }
}

/// The reply of a server that answered one JSON completion instead of a stream.
pub fn whole_reply(answer: &Value) -> Option<String> {
    answer
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str) -> String {
        format!(
            "data: {}\n\n",
            serde_json::json!({"object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": text}}]})
        )
    }

    #[test]
    fn pieces_come_out_as_their_lines_complete_however_the_bytes_are_cut() {
        let stream = format!(
            "data: {}\n\n{}{}: keep-alive\n\n{}data: [DONE]\n\n",
            serde_json::json!({"choices": [{"delta": {"role": "assistant"}}]}),
            chunk("Hel"),
            chunk("lo, "),
            chunk("wörld")
        );
        let bytes = stream.as_bytes();
        for cut in [1, 3, 7, bytes.len()] {
            let mut parser = ChatStream::default();
            let mut pieces = Vec::new();
            for part in bytes.chunks(cut) {
                pieces.extend(parser.feed(part).expect("no error"));
            }
            assert_eq!(pieces, ["Hel", "lo, ", "wörld"], "cut {cut}");
            assert_eq!(parser.finish().expect("done"), "Hello, wörld");
        }
    }

    #[test]
    fn an_error_inside_the_stream_fails_it() {
        let mut parser = ChatStream::default();
        let err = parser
            .feed(b"data: {\"error\": {\"message\": \"quota exceeded\"}}\n\n")
            .expect_err("an error");
        assert_eq!(err, StreamError::Server("quota exceeded".into()));
    }

    #[test]
    fn a_stream_cut_before_any_content_is_empty_not_an_empty_reply() {
        let mut parser = ChatStream::default();
        parser.feed(b"data: {\"choices\": []}\n\n").expect("fine");
        assert_eq!(parser.finish(), Err(StreamError::Empty));
        assert_eq!(
            whole_reply(&serde_json::json!({"choices": [{"message": {"content": "hi"}}]})),
            Some("hi".into())
        );
    }
}
