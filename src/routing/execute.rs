//! Running a [`Plan`]: attempts, retries with backoff, fallbacks, timeouts, hedging.
//!
//! Attempts run as futures in one `FuturesUnordered`, so a hedge is simply a second attempt
//! started while the first is still pending, and dropping the set (a winner returned, the
//! total deadline passed, the client went away) cancels whatever still runs, which closes its
//! upstream request. After a failure the next step comes from [`retry::decide`]: the same
//! candidate again after a backoff while it has tries left, else the next candidate, or stop.
//! What an attempt does (prepare, call, and for streams wait for the first chunk) is the
//! caller's closure, so the same loop serves whole answers and streams.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use super::health::{Availability, Health};
use super::plan::{Candidate, Plan};
use super::retry::{self, Next};
use crate::error::{GatewayError, ProviderError};
use crate::providers::Unsupported;

/// Why one attempt failed.
#[derive(Debug)]
pub enum AttemptError {
    /// The upstream failed.
    Provider(ProviderError),
    /// The candidate cannot take the request (another candidate may).
    Unsupported(Unsupported),
}

impl From<ProviderError> for AttemptError {
    fn from(e: ProviderError) -> Self {
        AttemptError::Provider(e)
    }
}

/// The attempt that succeeded.
pub struct Success<T> {
    /// What it produced.
    pub value: T,
    /// Where it went.
    pub candidate: Candidate,
    /// Attempts started, this one and hedges included.
    pub attempts: u32,
}

/// The failure of a whole plan, with the attempts it took.
pub struct Failure {
    /// What the client is told.
    pub error: GatewayError,
    /// Attempts started.
    pub attempts: u32,
}

/// A timer that never fires in practice.
const NEVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

type AttemptFuture<'a, T> =
    Pin<Box<dyn Future<Output = (usize, Result<T, AttemptError>)> + Send + 'a>>;

/// Which candidate is current and how often it has been tried.
struct Schedule<'p> {
    plan: &'p Plan,
    health: &'p Health,
    /// The next candidate to consider when moving on.
    next: usize,
    /// The candidate retries go to, and its tries so far.
    current: Option<(usize, u32)>,
}

impl<'p> Schedule<'p> {
    /// Claims the next healthy candidate.
    fn advance(&mut self) -> Option<usize> {
        while self.next < self.plan.candidates.len() {
            let index = self.next;
            self.next += 1;
            match self.health.claim(&self.plan.candidates[index].key) {
                Availability::Ejected => {}
                Availability::Available | Availability::Probe => {
                    self.current = Some((index, 1));
                    return Some(index);
                }
            }
        }
        None
    }

    /// After `error`, which [`retry::decide`] judged `next`, the candidate to try and the
    /// pause before it.
    fn after_failure(&mut self, error: &ProviderError, next: Next) -> Option<(usize, Duration)> {
        let (index, tries) = self.current?;
        let policy = &self.plan.retry;
        if next == Next::Retry && tries < policy.attempts {
            self.current = Some((index, tries + 1));
            let pause = retry::backoff(
                policy,
                tries + 1,
                fastrand::f64(),
                retry::retry_after(error),
            );
            return Some((index, pause));
        }
        self.advance().map(|index| (index, Duration::ZERO))
    }
}

/// Releases a half-open probe claim however the attempt ends.
struct ProbeRelease<'h>(&'h Health, &'h str);

impl Drop for ProbeRelease<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// Runs `plan`, calling `call(candidate, attempt_timeout)` for each attempt.
pub async fn execute<'a, T, F, Fut>(
    plan: &'a Plan,
    health: &'a Health,
    call: F,
) -> Result<Success<T>, Failure>
where
    T: Send + 'a,
    F: Fn(&'a Candidate, Duration) -> Fut,
    Fut: Future<Output = Result<T, AttemptError>> + Send + 'a,
{
    let deadline = plan.total_timeout.map(|t| Instant::now() + t);
    let mut schedule = Schedule {
        plan,
        health,
        next: 0,
        current: None,
    };
    let mut running: FuturesUnordered<AttemptFuture<'a, T>> = FuturesUnordered::new();
    let mut attempts = 0u32;
    let launch = |index: usize, pause: Duration, attempts: &mut u32| -> AttemptFuture<'a, T> {
        *attempts += 1;
        let candidate = &plan.candidates[index];
        let timeout = plan
            .attempt_timeout
            .unwrap_or(candidate.provider.config.timeout);
        let attempt = call(candidate, timeout);
        Box::pin(async move {
            let _release = ProbeRelease(health, &candidate.key);
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let result = match tokio::time::timeout(timeout, attempt).await {
                Ok(result) => result,
                Err(_) => Err(AttemptError::Provider(ProviderError::Timeout(
                    u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                ))),
            };
            (index, result)
        })
    };
    let Some(first) = schedule.advance() else {
        return Err(Failure {
            error: no_healthy(plan),
            attempts,
        });
    };
    running.push(launch(first, Duration::ZERO, &mut attempts));
    // The hedge timer exists either way; it is only polled while a hedge is still to come.
    let mut hedge_pending = plan.hedge_after.is_some();
    let hedge = tokio::time::sleep(plan.hedge_after.unwrap_or(NEVER));
    let total = tokio::time::sleep_until(deadline.unwrap_or_else(|| Instant::now() + NEVER));
    tokio::pin!(hedge, total);

    loop {
        let hedge_armed = hedge_pending && running.len() == 1;
        tokio::select! {
            Some((index, result)) = running.next() => {
                let candidate = &plan.candidates[index];
                let error = match result {
                    Ok(value) => {
                        health.success(&candidate.key);
                        return Ok(Success { value, candidate: candidate.clone(), attempts });
                    }
                    Err(error) => error,
                };
                // What follows: retry, the next target, or stop (an unsupported request is the
                // candidate's own limit, so the next one may take it).
                let decision = match &error {
                    AttemptError::Provider(e) => {
                        tracing::info!(target = %candidate.key, error = %e, "attempt failed");
                        if retry::is_target_fault(e) {
                            health.failure(&candidate.key);
                        }
                        retry::decide(e, &plan.retry)
                    }
                    AttemptError::Unsupported(_) => Next::NextTarget,
                };
                if decision == Next::GiveUp {
                    return Err(Failure { error: into_gateway_error(candidate, error), attempts });
                }
                if !running.is_empty() {
                    continue; // a hedge is still running; its outcome decides
                }
                let next = match &error {
                    AttemptError::Provider(e) => schedule.after_failure(e, decision),
                    AttemptError::Unsupported(_) => schedule.advance().map(|i| (i, Duration::ZERO)),
                };
                match next {
                    Some((index, pause)) => running.push(launch(index, pause, &mut attempts)),
                    None => return Err(Failure { error: into_gateway_error(candidate, error), attempts }),
                }
            }
            () = &mut hedge, if hedge_armed => {
                hedge_pending = false;
                if let Some(index) = schedule.advance() {
                    tracing::info!(target = %plan.candidates[index].key, "hedging");
                    running.push(launch(index, Duration::ZERO, &mut attempts));
                }
            }
            () = &mut total, if deadline.is_some() => {
                let budget = plan.total_timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
                let index = schedule.current.map_or(0, |(i, _)| i);
                return Err(Failure {
                    error: GatewayError::Upstream {
                        provider: plan.candidates[index].provider.name.clone(),
                        error: ProviderError::Timeout(budget),
                    },
                    attempts,
                });
            }
        }
    }
}

fn no_healthy(plan: &Plan) -> GatewayError {
    let names: Vec<&str> = plan.candidates.iter().map(|c| c.key.as_str()).collect();
    GatewayError::NoHealthyUpstream(format!(
        "{}: each is ejected or being probed by another request",
        names.join(", ")
    ))
}

fn into_gateway_error(candidate: &Candidate, error: AttemptError) -> GatewayError {
    match error {
        AttemptError::Provider(error) => GatewayError::Upstream {
            provider: candidate.provider.name.clone(),
            error,
        },
        AttemptError::Unsupported(u) => GatewayError::Unsupported {
            param: u.param,
            message: u.message,
        },
    }
}

#[cfg(test)]
mod tests;
