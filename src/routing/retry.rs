//! What to do after a failed attempt: the one place that decides what is retryable.
//!
//! | failure | next |
//! |---|---|
//! | connect error, attempt timeout, broken or unreadable answer | retry the same target (then the next) |
//! | a status in the retry list (default 429, 500, 502, 503, 504) | retry the same target (then the next) |
//! | another 5xx, 401, 403, 404, a field the provider cannot take | the next target: the failure is this target's |
//! | any other 4xx (invalid request, context overflow ...) | give up: another target would fail the same way |
//!
//! Backoff between tries of one target is exponential with full jitter (a uniform draw
//! between zero and `base * 2^(try - 1)`, capped), and never shorter than the upstream's
//! `retry-after` (the executor does not retry at all when that is longer than it may wait).

use std::time::Duration;

pub(crate) use crate::config::RetryConfig as RetryPolicy;
use crate::error::ProviderError;

/// The longest single backoff, whatever the attempt number.
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Try the same target again (if it has tries left), else the next target.
    Retry,
    /// Move on to the next target.
    Advance,
    /// Stop and answer with this error.
    GiveUp,
}

/// Whether a failure says the target is unhealthy (counts toward ejecting it).
pub(crate) fn is_target_fault(error: &ProviderError) -> bool {
    match error {
        ProviderError::Status { status, .. } => *status == 429 || *status >= 500,
        ProviderError::Connect(_)
        | ProviderError::Timeout(_)
        | ProviderError::Decode(_)
        | ProviderError::Stream(_) => true,
    }
}

/// Decides what follows `error` under `policy`.
pub(crate) fn decide(error: &ProviderError, policy: &RetryPolicy) -> Next {
    match error {
        ProviderError::Connect(_)
        | ProviderError::Timeout(_)
        | ProviderError::Decode(_)
        | ProviderError::Stream(_) => Next::Retry,
        ProviderError::Status { .. } if error.is_context_overflow() => Next::GiveUp,
        ProviderError::Status { status, .. } if policy.on_status.contains(status) => Next::Retry,
        ProviderError::Status { status, .. } => match *status {
            401 | 403 | 404 | 429 => Next::Advance,
            500..=599 => Next::Advance,
            _ => Next::GiveUp,
        },
    }
}

/// The pause before try number `try_number` (2 for the first retry) of a target, given a
/// uniform draw `u` in `[0, 1)`, never shorter than the upstream's `retry_after`.
pub(crate) fn backoff(
    policy: &RetryPolicy,
    try_number: u32,
    u: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let exponent = try_number.saturating_sub(2).min(16);
    let ceiling = policy
        .backoff
        .saturating_mul(1u32 << exponent)
        .min(MAX_BACKOFF);
    let jittered = ceiling.mul_f64(u.clamp(0.0, 1.0));
    jittered.max(retry_after.unwrap_or_default())
}

/// The wait the upstream asked for with `retry-after`, if the error carries one.
pub(crate) fn retry_after(error: &ProviderError) -> Option<Duration> {
    match error {
        ProviderError::Status { retry_after, .. } => parse_retry_after(retry_after.as_deref()?),
        _ => None,
    }
}

/// A `retry-after` value in seconds (the HTTP-date form is not read). Negative and NaN are
/// ignored; a value too large for a `Duration` (infinity included) is the longest wait.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds = value.trim().parse::<f64>().ok()?;
    if seconds.is_nan() || seconds < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> ProviderError {
        ProviderError::Status {
            status,
            message: "x".into(),
            code: None,
            retry_after: None,
        }
    }

    #[test]
    fn decisions_follow_the_table() {
        let policy = RetryPolicy::default();
        assert_eq!(
            decide(&ProviderError::Connect("refused".into()), &policy),
            Next::Retry
        );
        assert_eq!(decide(&ProviderError::Timeout(5), &policy), Next::Retry);
        assert_eq!(decide(&status(503), &policy), Next::Retry);
        assert_eq!(decide(&status(429), &policy), Next::Retry);
        assert_eq!(decide(&status(501), &policy), Next::Advance);
        assert_eq!(decide(&status(401), &policy), Next::Advance);
        assert_eq!(decide(&status(400), &policy), Next::GiveUp);
        let only_502 = RetryPolicy {
            on_status: vec![502],
            ..policy
        };
        assert_eq!(decide(&status(429), &only_502), Next::Advance);
        let overflow = ProviderError::Status {
            status: 400,
            message: "maximum context length exceeded".into(),
            code: None,
            retry_after: None,
        };
        assert_eq!(decide(&overflow, &only_502), Next::GiveUp);
    }

    #[test]
    fn backoff_is_exponential_with_full_jitter_and_honours_retry_after() {
        let policy = RetryPolicy {
            backoff: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        assert_eq!(backoff(&policy, 2, 1.0, None), Duration::from_millis(100));
        assert_eq!(backoff(&policy, 3, 1.0, None), Duration::from_millis(200));
        assert_eq!(backoff(&policy, 4, 0.5, None), Duration::from_millis(200));
        assert_eq!(backoff(&policy, 2, 0.0, None), Duration::ZERO);
        assert_eq!(backoff(&policy, 40, 1.0, None), MAX_BACKOFF);
        assert_eq!(
            backoff(&policy, 2, 0.1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn retry_after_values_never_panic() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("1e20"), Some(Duration::MAX));
        assert_eq!(parse_retry_after("inf"), Some(Duration::MAX));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("-inf"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        let huge = ProviderError::Status {
            status: 429,
            message: "x".into(),
            code: None,
            retry_after: Some("1e20".into()),
        };
        let policy = RetryPolicy::default();
        assert_eq!(
            backoff(&policy, 2, 1.0, retry_after(&huge)),
            Duration::MAX,
            "the executor compares this with its limit; nothing overflows"
        );
    }
}
