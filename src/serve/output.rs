//! The live output of a running execution, for `GET /v1/executions/{id}/output`: what the action
//! printed, scrubbed of its secrets as it streams, in arrival order, with positions that let a
//! reader resume after a dropped connection.
//!
//! A position is the number of bytes of stdout and of stderr delivered so far (an event id
//! `O:E`). The log keeps only a window of the most recent bytes, so memory stays bounded however
//! much an action prints and however slowly a client reads: a reader that fell behind the window
//! is told how much it missed (a gap; the stored output has it). Each stream is cut at the
//! server's output limit, as the stored output is.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use packbox::{StreamKind, StreamScrubber};
use tokio::sync::watch;

/// Bytes of output kept for readers that are behind, per execution.
pub const WINDOW: usize = 1 << 20;
/// Bytes handed to a reader at once.
const READ_BATCH: usize = 256 << 10;

/// Where a reader is: bytes of stdout and of stderr delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Bytes of stdout delivered.
    pub stdout: u64,
    /// Bytes of stderr delivered.
    pub stderr: u64,
}

impl Position {
    /// The position an event id names (`O:E`).
    pub fn parse(id: &str) -> Option<Position> {
        let (stdout, stderr) = id.trim().split_once(':')?;
        Some(Position {
            stdout: stdout.parse().ok()?,
            stderr: stderr.parse().ok()?,
        })
    }

    /// The event id of this position.
    pub fn id(self) -> String {
        format!("{}:{}", self.stdout, self.stderr)
    }

    fn get(&self, stream: StreamKind) -> u64 {
        match stream {
            StreamKind::Stdout => self.stdout,
            StreamKind::Stderr => self.stderr,
        }
    }

    fn set(&mut self, stream: StreamKind, value: u64) {
        match stream {
            StreamKind::Stdout => self.stdout = value,
            StreamKind::Stderr => self.stderr = value,
        }
    }
}

/// What a reader gets, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Output text (bytes that are not UTF-8 are replaced) and the position after it.
    Text {
        /// The stream it is from.
        stream: StreamKind,
        /// The text.
        text: String,
        /// Where the reader is once it has this piece (the event id to resume from).
        after: Position,
    },
    /// Bytes the reader missed: they fell out of the window before it read them.
    Gap {
        /// The stream the bytes were missed from.
        stream: StreamKind,
        /// How many bytes were missed.
        skipped: u64,
        /// Where the reader is after the gap.
        after: Position,
    },
}

struct Chunk {
    stream: StreamKind,
    /// The offset of its first byte in its stream.
    start: u64,
    bytes: Bytes,
}

/// One stream's writing side: scrubbing, the output limit, UTF-8 boundaries.
struct Writer {
    scrubber: Option<StreamScrubber>,
    /// Raw bytes taken so far (the limit counts these, like the stored output).
    taken: u64,
    /// An incomplete UTF-8 character held until the next chunk completes it.
    partial: Vec<u8>,
    /// Bytes of this stream in the log so far (scrubbed).
    written: u64,
    /// Offset below which this stream's bytes are no longer kept.
    dropped: u64,
}

struct State {
    chunks: VecDeque<Chunk>,
    kept: usize,
    stdout: Writer,
    stderr: Writer,
    ended: bool,
}

impl State {
    fn writer(&mut self, stream: StreamKind) -> &mut Writer {
        match stream {
            StreamKind::Stdout => &mut self.stdout,
            StreamKind::Stderr => &mut self.stderr,
        }
    }

    fn append(&mut self, stream: StreamKind, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let writer = self.writer(stream);
        let start = writer.written;
        writer.written += bytes.len() as u64;
        self.kept += bytes.len();
        self.chunks.push_back(Chunk {
            stream,
            start,
            bytes: Bytes::from(bytes),
        });
        while self.kept > WINDOW {
            let Some(oldest) = self.chunks.pop_front() else {
                break;
            };
            self.kept -= oldest.bytes.len();
            let end = oldest.start + oldest.bytes.len() as u64;
            self.writer(oldest.stream).dropped = end;
        }
    }
}

/// The live output of one execution.
pub struct OutputLog {
    state: Mutex<State>,
    /// Bumped on every change, so readers wake up.
    changed: watch::Sender<u64>,
    max_output: u64,
}

impl OutputLog {
    /// A log for a run with these scrubbers (one per stream) and this output limit per stream.
    pub fn new(stdout: StreamScrubber, stderr: StreamScrubber, max_output: usize) -> OutputLog {
        let writer = |scrubber| Writer {
            scrubber: Some(scrubber),
            taken: 0,
            partial: Vec::new(),
            written: 0,
            dropped: 0,
        };
        OutputLog {
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                kept: 0,
                stdout: writer(stdout),
                stderr: writer(stderr),
                ended: false,
            }),
            changed: watch::channel(0).0,
            max_output: max_output as u64,
        }
    }

    /// Takes a chunk of the action's output.
    pub fn push(&self, stream: StreamKind, raw: &[u8]) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let max = self.max_output;
        let writer = state.writer(stream);
        let room = max.saturating_sub(writer.taken) as usize;
        if room == 0 {
            return;
        }
        let raw = &raw[..raw.len().min(room)];
        writer.taken += raw.len() as u64;
        let Some(scrubber) = writer.scrubber.as_mut() else {
            return;
        };
        let mut shown = std::mem::take(&mut writer.partial);
        shown.extend(scrubber.push(raw));
        let complete = complete_utf8(&shown);
        writer.partial = shown.split_off(complete);
        state.append(stream, shown);
        drop(state);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Marks the end of the output: what scrubbing held back is released.
    pub fn finish(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        for stream in [StreamKind::Stdout, StreamKind::Stderr] {
            let writer = state.writer(stream);
            let mut rest = std::mem::take(&mut writer.partial);
            if let Some(scrubber) = writer.scrubber.take() {
                rest.extend(scrubber.finish());
            }
            state.append(stream, rest);
        }
        state.ended = true;
        drop(state);
        self.changed.send_modify(|n| *n += 1);
    }

    /// What there is after `from` (at most a batch), and whether the output has ended and
    /// everything was read.
    pub fn read(&self, from: Position) -> (Vec<Piece>, Position, bool) {
        let Ok(state) = self.state.lock() else {
            return (Vec::new(), from, true);
        };
        let mut at = from;
        let mut pieces = Vec::new();
        for (stream, writer) in [
            (StreamKind::Stdout, &state.stdout),
            (StreamKind::Stderr, &state.stderr),
        ] {
            if at.get(stream) < writer.dropped {
                let skipped = writer.dropped - at.get(stream);
                at.set(stream, writer.dropped);
                pieces.push(Piece::Gap {
                    stream,
                    skipped,
                    after: at,
                });
            }
        }
        let mut batch = 0;
        for chunk in &state.chunks {
            let end = chunk.start + chunk.bytes.len() as u64;
            let seen = at.get(chunk.stream);
            if end <= seen {
                continue;
            }
            if batch >= READ_BATCH {
                return (pieces, at, false);
            }
            let from = (seen.max(chunk.start) - chunk.start) as usize;
            let bytes = &chunk.bytes[from..];
            batch += bytes.len();
            at.set(chunk.stream, end);
            pieces.push(Piece::Text {
                stream: chunk.stream,
                text: String::from_utf8_lossy(bytes).into_owned(),
                after: at,
            });
        }
        (pieces, at, state.ended)
    }

    /// A receiver that wakes up whenever the log changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// The length of the longest prefix of `bytes` that does not end inside a UTF-8 character: an
/// incomplete character at the very end waits for the next chunk. Invalid bytes elsewhere pass
/// (and are replaced when read).
fn complete_utf8(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(3) {
        let lead = bytes[len - back];
        if lead & 0xC0 == 0x80 {
            continue;
        }
        let needed = match lead {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if needed > back { len - back } else { len };
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(max_output: usize) -> OutputLog {
        OutputLog::new(
            StreamScrubber::default(),
            StreamScrubber::default(),
            max_output,
        )
    }

    fn texts(pieces: &[Piece]) -> String {
        pieces
            .iter()
            .map(|p| match p {
                Piece::Text { stream, text, .. } => format!("{stream:?}:{text}|"),
                Piece::Gap {
                    stream, skipped, ..
                } => format!("{stream:?} gap {skipped}|"),
            })
            .collect()
    }

    #[test]
    fn a_reader_gets_everything_in_order_and_resumes_where_it_left() {
        let log = log(1 << 20);
        log.push(StreamKind::Stdout, b"one\n");
        log.push(StreamKind::Stderr, b"warn\n");
        let (pieces, at, ended) = log.read(Position::default());
        assert_eq!(texts(&pieces), "Stdout:one\n|Stderr:warn\n|");
        assert_eq!(at.id(), "4:5");
        assert!(!ended);
        log.push(StreamKind::Stdout, b"two\n");
        log.finish();
        let (pieces, at, ended) = log.read(at);
        assert_eq!(texts(&pieces), "Stdout:two\n|");
        assert_eq!(
            at,
            Position {
                stdout: 8,
                stderr: 5
            }
        );
        assert!(ended);
        // Resuming from an event id in the middle gives only what follows it.
        let (pieces, _, _) = log.read(Position::parse("4:0").expect("an id"));
        assert_eq!(texts(&pieces), "Stderr:warn\n|Stdout:two\n|");
        let (pieces, _, _) = log.read(Position::parse("2:5").expect("an id"));
        assert_eq!(texts(&pieces), "Stdout:e\n|Stdout:two\n|");
    }

    #[test]
    fn a_slow_reader_is_told_what_it_missed_and_memory_stays_bounded() {
        let log = log(1 << 30);
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..64 {
            log.push(StreamKind::Stdout, &chunk);
        }
        let (pieces, _, _) = log.read(Position::default());
        match &pieces[0] {
            Piece::Gap {
                stream, skipped, ..
            } => {
                assert_eq!(*stream, StreamKind::Stdout);
                assert_eq!(*skipped, (64 << 10) * 64 - WINDOW as u64);
            }
            other => panic!("expected a gap first, got {other:?}"),
        }
        let kept: usize = log
            .state
            .lock()
            .map(|s| s.chunks.iter().map(|c| c.bytes.len()).sum())
            .unwrap_or(0);
        assert!(kept <= WINDOW);
    }

    #[test]
    fn each_stream_stops_at_the_output_limit() {
        let log = log(10);
        log.push(StreamKind::Stdout, b"0123456789abcdef");
        log.push(StreamKind::Stdout, b"more");
        log.push(StreamKind::Stderr, b"err");
        log.finish();
        let (pieces, at, _) = log.read(Position::default());
        assert_eq!(texts(&pieces), "Stdout:0123456789|Stderr:err|");
        assert_eq!(at.id(), "10:3");
    }

    #[test]
    fn a_character_split_across_chunks_arrives_whole() {
        let log = log(1 << 20);
        let text = "é€😀".as_bytes();
        for byte in text {
            log.push(StreamKind::Stdout, &[*byte]);
        }
        log.finish();
        let (pieces, _, _) = log.read(Position::default());
        assert!(
            pieces
                .iter()
                .all(|p| matches!(p, Piece::Text { text, .. } if !text.contains('\u{FFFD}')))
        );
        assert_eq!(
            texts(&pieces).replace("Stdout:", "").replace('|', ""),
            "é€😀"
        );
    }

    #[test]
    fn event_ids_are_two_numbers() {
        assert_eq!(
            Position::parse("12:3"),
            Some(Position {
                stdout: 12,
                stderr: 3
            })
        );
        assert_eq!(Position::parse("12"), None);
        assert_eq!(Position::parse("a:b"), None);
        assert_eq!(Position::parse("-1:0"), None);
    }
}
