//! Keeping execution records bounded in bytes: an output stream longer than the per-record cap
//! is kept as its head and its tail with a line saying how much was left out, and a result
//! larger than the cap is left out (the record says so). What an action prints is bounded by the
//! run's output limit; this bounds what the records keep of it, run after run.

use serde_json::Value;

/// What is put between the head and the tail of a clipped stream.
fn marker(left_out: usize) -> String {
    format!("\n\n[OUTPUT CLIPPED: {left_out} bytes in the middle are not kept in the record]\n\n")
}

/// `text` within `cap` bytes: itself when it fits, else its head and tail (each about half the
/// cap, cut at character boundaries) around a marker. Returns whether it was clipped.
pub fn clip_text(text: String, cap: usize) -> (String, bool) {
    if text.len() <= cap {
        return (text, false);
    }
    let half = cap / 2;
    let mut head_end = half.min(text.len());
    while !text.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = text.len().saturating_sub(cap - half).max(head_end);
    while !text.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    let left_out = tail_start - head_end;
    let mut clipped = String::with_capacity(cap + 100);
    clipped.push_str(&text[..head_end]);
    clipped.push_str(&marker(left_out));
    clipped.push_str(&text[tail_start..]);
    (clipped, true)
}

/// Whether the result, as JSON, fits in `cap` bytes (serialising stops as soon as it does not).
pub fn fits(result: &Value, cap: usize) -> bool {
    struct Counter {
        bytes: usize,
        cap: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes += buf.len();
            if self.bytes > self.cap {
                // Stops serialising as soon as the cap is passed.
                return Err(std::io::Error::other("over the cap"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(&mut Counter { bytes: 0, cap }, result).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(clip_text("hello".into(), 5), ("hello".into(), false));
    }

    #[test]
    fn long_text_keeps_its_head_and_tail() {
        let text = format!("HEAD{}TAIL", "x".repeat(10_000));
        let (clipped, was) = clip_text(text, 100);
        assert!(was);
        assert!(
            clipped.starts_with("HEAD") && clipped.ends_with("TAIL"),
            "{clipped}"
        );
        assert!(clipped.contains("[OUTPUT CLIPPED: 9908 bytes"), "{clipped}");
        assert!(clipped.len() < 100 + 100);
    }

    #[test]
    fn clipping_cuts_at_character_boundaries() {
        let text = "é".repeat(1000);
        for cap in [1, 2, 3, 7, 101] {
            let (clipped, was) = clip_text(text.clone(), cap);
            assert!(was, "{cap}");
            assert!(clipped.contains("OUTPUT CLIPPED"));
        }
    }

    #[test]
    fn results_fit_or_not() {
        let big = Value::String("x".repeat(1000));
        assert!(fits(&big, 1002));
        assert!(!fits(&big, 1001));
    }
}
