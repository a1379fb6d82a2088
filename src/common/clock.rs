//! Wall-clock times as the stores keep them: milliseconds since the Unix epoch in the
//! database, RFC 3339 with milliseconds wherever a person or a client reads them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch (0 on a clock set before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A time kept as milliseconds since the epoch, as RFC 3339 in UTC (`2026-12-07T09:30:00.123Z`).
pub fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_634_000_123), "2026-12-07T09:00:00.123Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00.000Z", "before the epoch");
        assert!(now_ms() > 1_796_634_000_000);
    }
}
