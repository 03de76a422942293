//! orq's per-request routing policy (`retry`, `fallbacks`, `timeout`, `load_balancer`,
//! `cache`), parsed into the canonical request and consumed by the gateway: no upstream ever
//! receives it. Ranges are checked by validation with orq's numbers.

use serde::Serialize;
use utoipa::ToSchema;

/// orq `retry`: `count` retries (1-5) after the first try, on `on_codes`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct RetryPolicy {
    /// Retries after the first try, 1 to 5 (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) count: Option<u32>,
    /// Statuses that trigger a retry, 100 to 599 (default `[429]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) on_codes: Option<Vec<u16>>,
}

/// orq fallback entry.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct FallbackModel {
    /// A model name a client could send.
    pub(crate) model: String,
}

/// orq `timeout`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct TimeoutPolicy {
    /// Per-attempt timeout in milliseconds, at least 100; it shortens, never lengthens, the
    /// provider's `timeout_ms`.
    pub(crate) call_timeout: u64,
}

/// orq `load_balancer`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct LoadBalancer {
    /// Always `weight_based`.
    #[serde(rename = "type")]
    pub(crate) kind: LoadBalancerType,
    /// Candidate models with weights (1 to 16).
    pub(crate) models: Vec<WeightedModel>,
}

/// Load balancer kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LoadBalancerType {
    /// Weighted random choice.
    WeightBased,
}

/// A load-balanced model.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct WeightedModel {
    /// A model name a client could send.
    pub(crate) model: String,
    /// 0.001 to 1 (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) weight: Option<f64>,
}

/// orq `cache`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct CachePolicy {
    /// Always `exact_match`.
    #[serde(rename = "type")]
    pub(crate) kind: CacheType,
    /// Seconds, 1 to 259200 (default 1800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ttl: Option<u32>,
}

/// Cache kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CacheType {
    /// Exact-match cache.
    ExactMatch,
}
