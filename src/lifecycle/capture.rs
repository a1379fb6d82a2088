//! Bounded capture of one output stream: the head is kept up to a limit, the rest is counted and
//! dropped, so packbox's memory stays flat whatever an action prints.

/// One stream's captured bytes.
#[derive(Debug)]
pub struct BoundedBuffer {
    name: &'static str,
    limit: usize,
    bytes: Vec<u8>,
    truncated: bool,
}

/// A finished capture: text (lossy UTF-8, marker appended when cut) and whether it was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub text: String,
    pub truncated: bool,
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

    /// The captured text, with the truncation marker when the limit was exceeded.
    pub fn finish(self) -> Captured {
        // Valid UTF-8 (the usual case) becomes the text without a copy.
        let mut text = String::from_utf8(self.bytes)
            .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned());
        if self.truncated {
            text.push_str(&format!(
                "\n\n[OUTPUT TRUNCATED: {} exceeded size limit]\n",
                self.name
            ));
        }
        Captured {
            text,
            truncated: self.truncated,
        }
    }
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
                text: "helloworld".into(),
                truncated: false
            }
        );
    }

    #[test]
    fn over_the_limit_the_head_is_kept_and_marked() {
        let mut buffer = BoundedBuffer::new("stderr", 8);
        buffer.push(b"0123456");
        buffer.push(b"789abc");
        buffer.push(b"more");
        let captured = buffer.finish();
        assert!(captured.truncated);
        assert_eq!(
            captured.text,
            "01234567\n\n[OUTPUT TRUNCATED: stderr exceeded size limit]\n"
        );
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
