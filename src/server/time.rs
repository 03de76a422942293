//! RFC 3339 timestamps for the admin API (UTC, whole seconds), without a date crate.

use std::time::Duration;

use tokio::time::Instant;

use crate::calendar::civil_from_days;
use crate::stream::normalize::unix_now;

/// `unix` seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn rfc3339(unix: i64) -> String {
    let (days, seconds) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

/// The wall-clock time (unix seconds, rounded up) of a monotonic `instant`.
pub(crate) fn unix_of(instant: Instant) -> i64 {
    let now = Instant::now();
    let seconds = |d: Duration| {
        i64::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(i64::MAX / 2)
    };
    match instant.checked_duration_since(now) {
        Some(ahead) => unix_now().saturating_add(seconds(ahead)),
        None => unix_now().saturating_sub(seconds(now - instant)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
