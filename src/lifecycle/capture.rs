//! Bounded capture of one output stream: the head is kept up to a limit, the rest is counted and
//! dropped, so packbox's memory stays flat whatever an action prints.

use crate::contract::exit::Captured;

/// One stream's captured bytes.
#[derive(Debug)]
pub struct BoundedBuffer {
    name: &'static str,
    limit: usize,
    bytes: Vec<u8>,
    truncated: bool,
}

impl BoundedBuffer {
    /// A buffer for the stream called `name` (`stdout`, `stderr`), keeping at most `limit` bytes.
    pub fn new(name: &'static str, limit: usize) -> Self {
        BoundedBuffer {
            name,
            limit,
            bytes: Vec::with_capacity(limit.min(64 << 10)),
            truncated: false,
        }
    }

    /// Appends a chunk, keeping only what fits under the limit.
    pub fn push(&mut self, chunk: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// Whether more was pushed than the limit keeps: nothing pushed from now on is kept.
    pub fn is_full(&self) -> bool {
        self.truncated
    }

    /// The captured text. Where the limit cut a character in half, its first bytes go too.
    pub fn finish(mut self) -> Captured {
        if self.truncated {
            let cut_char = incomplete_char_len(&self.bytes);
            self.bytes.truncate(self.bytes.len() - cut_char);
        }
        // Valid UTF-8 (the usual case) becomes the text without a copy.
        let text = String::from_utf8(self.bytes)
            .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned());
        Captured {
            stream: self.name,
            text,
            truncated: self.truncated,
        }
    }
}

/// How many bytes at the end of `bytes` are the start of a UTF-8 character that is not complete.
fn incomplete_char_len(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back for its lead
        }
        let needed = match byte {
            0b1100_0000..=0b1101_1111 => 2,
            0b1110_0000..=0b1110_1111 => 3,
            0b1111_0000..=0b1111_0111 => 4,
            _ => return 0,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_the_limit_everything_is_kept() {
        let mut buffer = BoundedBuffer::new("stdout", 10);
        buffer.push(b"hello");
        buffer.push(b"world");
        assert_eq!(
            buffer.finish(),
            Captured {
                stream: "stdout",
                text: "helloworld".into(),
                truncated: false
            }
        );
    }

    #[test]
    fn over_the_limit_the_head_is_kept_and_the_cut_is_said() {
        let mut buffer = BoundedBuffer::new("stderr", 8);
        buffer.push(b"0123456");
        buffer.push(b"789abc");
        buffer.push(b"more");
        let captured = buffer.finish();
        assert!(captured.truncated);
        assert_eq!(captured.text, "01234567");
    }

    #[test]
    fn a_character_cut_by_the_limit_is_dropped_whole() {
        for (limit, kept) in [(1, "a"), (2, "a"), (3, "aé"), (4, "aé"), (6, "aé")] {
            let mut buffer = BoundedBuffer::new("stdout", limit);
            buffer.push("aé😀x".as_bytes());
            assert_eq!(buffer.finish().text, kept, "limit {limit}");
        }
        let mut buffer = BoundedBuffer::new("stdout", 7);
        buffer.push("aé😀x".as_bytes());
        assert_eq!(buffer.finish().text, "aé😀");
    }

    #[test]
    fn memory_stays_at_the_limit() {
        let mut buffer = BoundedBuffer::new("stdout", 1024);
        let chunk = vec![b'x'; 32 << 10];
        for _ in 0..1000 {
            buffer.push(&chunk);
        }
        assert!(buffer.bytes.capacity() <= 64 << 10);
        assert_eq!(buffer.bytes.len(), 1024);
    }
}
