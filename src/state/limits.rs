//! What a key's limits decide, whichever backend keeps the counts: the refusal codes, the
//! `x-ratelimit-*` headers, the token estimate, budget windows and the bucket arithmetic
//! (the memory backend runs it here; the Redis scripts in `lua/` mirror it line for line).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};

use crate::calendar::{civil_from_days, days_from_civil};
use crate::config::BudgetWindow;
use crate::schema::{ChatRequest, MessageContent};

/// The limit that refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    Requests,
    Tokens,
    Concurrency,
    Budget,
}

impl Limit {
    /// The error code clients get.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Limit::Requests => "rate_limit_requests",
            Limit::Tokens => "rate_limit_tokens",
            Limit::Concurrency => "too_many_concurrent_requests",
            Limit::Budget => "budget_exceeded",
        }
    }

    /// The `limit` label of `llmgate_ratelimit_rejections_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Limit::Requests => "requests",
            Limit::Tokens => "tokens",
            Limit::Concurrency => "concurrency",
            Limit::Budget => "budget",
        }
    }

    /// The message clients get (names the key's limit, never the key).
    pub(crate) fn message(self) -> &'static str {
        match self {
            Limit::Requests => "rate limit reached: requests per minute for this key",
            Limit::Tokens => "rate limit reached: tokens per minute for this key",
            Limit::Concurrency => "too many concurrent requests for this key",
            Limit::Budget => "budget exceeded for this key in its budget window",
        }
    }

    /// The backends' numeric code (0 is "admitted").
    pub(crate) fn from_code(code: i64) -> Option<Limit> {
        match code {
            1 => Some(Limit::Requests),
            2 => Some(Limit::Tokens),
            3 => Some(Limit::Concurrency),
            4 => Some(Limit::Budget),
            _ => None,
        }
    }
}

/// One bucket's state for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BucketView {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    /// Until the bucket is full again.
    pub(crate) reset: Duration,
}

/// The `x-ratelimit-*` headers of a limited key's response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RateHeaders {
    pub(crate) requests: Option<BucketView>,
    pub(crate) tokens: Option<BucketView>,
}

impl RateHeaders {
    /// The headers of each limited bucket, as names and values.
    pub(crate) fn pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for (kind, bucket) in [("requests", self.requests), ("tokens", self.tokens)] {
            let Some(bucket) = bucket else { continue };
            pairs.push((
                format!("x-ratelimit-limit-{kind}"),
                bucket.limit.to_string(),
            ));
            pairs.push((
                format!("x-ratelimit-remaining-{kind}"),
                bucket.remaining.to_string(),
            ));
            pairs.push((
                format!("x-ratelimit-reset-{kind}"),
                reset_text(bucket.reset),
            ));
        }
        pairs
    }

    /// Adds the headers of each limited bucket.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        apply_pairs(&self.pairs(), headers);
    }
}

/// Adds `pairs` (the gateway's own names and numbers) as headers.
pub(crate) fn apply_pairs(pairs: &[(String, String)], headers: &mut HeaderMap) {
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            headers.insert(name, value);
        }
    }
}

/// A duration as OpenAI writes resets: `1m30s`, `6s`, `250ms`, `0s`.
pub(crate) fn reset_text(reset: Duration) -> String {
    let ms = reset.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms.div_ceil(1000);
    let (minutes, secs) = (secs / 60, secs % 60);
    match (minutes, secs) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) limit: Limit,
    /// Seconds until a retry can pass, when waiting helps.
    pub(crate) retry_after: Option<u64>,
    pub(crate) headers: RateHeaders,
}

/// Tokens reserved for a request before it is sent: its prompt's estimate
/// ([`prompt_estimate`]), plus `max_completion_tokens` (or `max_tokens`) when given.
pub(crate) fn reservation(prompt: u64, request: &ChatRequest) -> u64 {
    prompt.saturating_add(request.token_limit().unwrap_or(0))
}

/// A prompt's tokens estimated from its text: message text bytes / 4.
pub(crate) fn prompt_estimate(request: &ChatRequest) -> u64 {
    let text_bytes: u64 = request
        .messages
        .iter()
        .filter_map(|m| m.content.as_ref())
        .map(|content| match content {
            MessageContent::Text(text) => text.len() as u64,
            MessageContent::Parts(parts) => parts
                .iter()
                .filter_map(|part| part.text.as_ref())
                .map(|text| text.len() as u64)
                .fold(0u64, u64::saturating_add),
        })
        .fold(0u64, u64::saturating_add);
    text_bytes / 4
}

/// Milliseconds per minute: buckets refill their capacity once per minute.
const MINUTE_MS: f64 = 60_000.0;

/// A token bucket of `capacity` per minute: its level (may be negative after a request used
/// more than it reserved) and when it was last brought up to date.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bucket {
    pub(crate) level: f64,
    pub(crate) at_ms: u64,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn full(capacity: u64, now_ms: u64) -> Self {
        Bucket {
            level: capacity as f64,
            at_ms: now_ms,
        }
    }

    /// Refills for the time passed since the last update, up to `capacity`.
    pub(crate) fn refill(&mut self, capacity: u64, now_ms: u64) {
        let capacity = capacity as f64;
        let passed = now_ms.saturating_sub(self.at_ms) as f64;
        self.level = (self.level + passed * capacity / MINUTE_MS).min(capacity);
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Milliseconds until the level reaches `need`.
    pub(crate) fn wait_ms(&self, need: f64, capacity: u64) -> u64 {
        ms_for(need - self.level, capacity)
    }

    /// What the headers show.
    pub(crate) fn view(&self, capacity: u64) -> BucketView {
        BucketView {
            limit: capacity,
            remaining: self.level.max(0.0).floor() as u64,
            reset: Duration::from_millis(ms_for(capacity as f64 - self.level, capacity)),
        }
    }
}

/// Milliseconds a bucket of `capacity` per minute takes to gain `amount`.
fn ms_for(amount: f64, capacity: u64) -> u64 {
    if amount <= 0.0 || capacity == 0 {
        return 0;
    }
    // Float to int `as` saturates.
    (amount * MINUTE_MS / capacity as f64).ceil() as u64
}

/// Whole seconds covering `ms`, at least 1 (for `retry-after`).
pub(crate) fn retry_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

/// The current budget window of `window` at unix second `now`: its name (part of the
/// counter's key) and the seconds until it ends (`None` for `total`).
pub(crate) fn budget_window(window: BudgetWindow, now: i64) -> (String, Option<u64>) {
    let days = now.div_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let seconds_into_day = now.rem_euclid(86_400);
    let until_next_day = 86_400 - seconds_into_day;
    match window {
        BudgetWindow::Total => ("total".to_owned(), None),
        BudgetWindow::Day => (
            format!("{year:04}-{month:02}-{day:02}"),
            u64::try_from(until_next_day).ok(),
        ),
        BudgetWindow::Month => {
            let (next_year, next_month) = if month == 12 {
                (year + 1, 1)
            } else {
                (year, month + 1)
            };
            let next = days_from_civil(next_year, next_month, 1) * 86_400;
            (
                format!("{year:04}-{month:02}"),
                u64::try_from(next - now).ok(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_are_written_like_openai() {
        assert_eq!(reset_text(Duration::ZERO), "0s");
        assert_eq!(reset_text(Duration::from_millis(250)), "250ms");
        assert_eq!(reset_text(Duration::from_millis(6000)), "6s");
        assert_eq!(reset_text(Duration::from_millis(6001)), "7s");
        assert_eq!(reset_text(Duration::from_secs(90)), "1m30s");
        assert_eq!(reset_text(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn buckets_refill_at_capacity_per_minute_up_to_capacity() {
        let mut bucket = Bucket::full(60, 0);
        bucket.level -= 60.0;
        assert_eq!(bucket.wait_ms(1.0, 60), 1000);
        bucket.refill(60, 500);
        assert!((bucket.level - 0.5).abs() < 1e-9);
        bucket.refill(60, 10_000_000);
        assert_eq!(bucket.level, 60.0);
        assert_eq!(bucket.view(60).remaining, 60);
        assert_eq!(bucket.view(60).reset, Duration::ZERO);
        // Time going backwards never drains it.
        bucket.refill(60, 0);
        assert_eq!(bucket.level, 60.0);
        bucket.level = -30.0;
        assert_eq!(bucket.view(60).remaining, 0);
        assert_eq!(bucket.view(60).reset, Duration::from_secs(90));
    }

    #[test]
    fn budget_windows_are_calendar_utc() {
        // 2026-11-29T18:00:00Z
        let now = 1_795_975_200;
        assert_eq!(
            budget_window(BudgetWindow::Day, now),
            ("2026-11-29".to_owned(), Some(6 * 3600))
        );
        let (month, left) = budget_window(BudgetWindow::Month, now);
        assert_eq!(month, "2026-11");
        assert_eq!(left, Some(24 * 3600 + 6 * 3600));
        assert_eq!(
            budget_window(BudgetWindow::Total, now),
            ("total".to_owned(), None)
        );
        // December rolls into the next year.
        let dec = days_from_civil(2026, 12, 31) * 86_400;
        assert_eq!(budget_window(BudgetWindow::Month, dec).1, Some(86_400));
    }

    #[test]
    fn the_estimate_counts_text_and_the_completion_cap() {
        let request = crate::schema::parse_request(
            br#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"12345678"},
                {"role":"user","content":[{"type":"text","text":"abcd"}]}]}"#,
        )
        .unwrap();
        assert_eq!(prompt_estimate(&request), 3);
        assert_eq!(reservation(prompt_estimate(&request), &request), 3 + 10);
    }
}
