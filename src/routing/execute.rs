//! Running a [`Plan`]: attempts, retries with backoff, fallbacks, timeouts, hedging.
//!
//! Attempts run as futures in one `FuturesUnordered`, so a hedge is simply a second attempt
//! started while the first is still pending, and dropping the set (a winner returned, the
//! total deadline passed, the client went away) cancels whatever still runs, which closes its
//! upstream request. After a failure the next step comes from [`retry::decide`]: the same
//! candidate again after a backoff while it has tries left, else the next candidate, or stop.
//! What an attempt does (prepare, call, and for streams wait for the first chunk) is the
//! caller's closure, so the same loop serves whole answers and streams.
//!
//! Circuits: a candidate ejected since planning is skipped, unless nothing could be sent
//! otherwise (then every candidate is tried in order). Only failures that are the target's
//! own count against it: a cancelled attempt, or a timeout the client's `call_timeout` made
//! shorter than the provider's `timeout_ms`, does not.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;
use tracing::Instrument;

use super::health::{Claim, Health, ProbeToken};
use super::plan::{Candidate, Plan};
use super::retry::{self, Next};
use crate::error::{GatewayError, ProviderError};
use crate::observe::record::Tally;
use crate::observe::{AttemptOutcome, upstream_attempt};
use crate::providers::Unsupported;
use crate::telemetry;

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// The upstream failed.
    Provider(ProviderError),
    /// The candidate cannot take the request (another candidate may).
    Unsupported(Unsupported),
}

impl AttemptError {
    /// The upstream's failure, if it was one.
    fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            AttemptError::Provider(error) => Some(error),
            AttemptError::Unsupported(_) => None,
        }
    }
}

impl From<ProviderError> for AttemptError {
    fn from(e: ProviderError) -> Self {
        AttemptError::Provider(e)
    }
}

/// The attempt that succeeded.
pub(crate) struct Success<T> {
    /// What it produced.
    pub(crate) value: T,
    /// Where it went.
    pub(crate) candidate: Candidate,
    /// Attempts started, this one and hedges included.
    pub(crate) attempts: u32,
    /// Attempts, retries, fallbacks and hedges, for the metrics.
    pub(crate) tally: Tally,
}

/// The failure of a whole plan (with the attempts it took, for the tests).
pub(crate) struct Failure {
    /// What the client is told.
    pub(crate) error: GatewayError,
    /// Attempts, retries, fallbacks and hedges, for the metrics.
    pub(crate) tally: Tally,
    /// Attempts started.
    #[cfg(test)]
    pub(crate) attempts: u32,
}

/// A timer that never fires in practice.
const NEVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What a finished attempt hands back to the loop.
struct Outcome<'a, T> {
    index: usize,
    /// The attempt's probe claim, if it is the probe (released when dropped).
    probe: ProbeGuard<'a>,
    /// The client's `call_timeout` was shorter than the provider's `timeout_ms`.
    client_timeout: bool,
    result: Result<T, AttemptError>,
}

type AttemptFuture<'a, T> = Pin<Box<dyn Future<Output = Outcome<'a, T>> + Send + 'a>>;

/// The next attempt: which candidate, after what pause, with which probe claim.
struct Step {
    index: usize,
    pause: Duration,
    probe: Option<ProbeToken>,
}

/// Which candidate is current and how often it has been tried.
struct Schedule<'p> {
    plan: &'p Plan,
    health: &'p Health,
    deadline: Option<Instant>,
    /// The next candidate to consider when moving on.
    next: usize,
    /// The candidate retries go to, and its tries so far.
    current: Option<(usize, u32)>,
    /// Send to ejected candidates too (every one was ejected).
    send_anyway: bool,
}

impl<'p> Schedule<'p> {
    /// Claims the next candidate, skipping ejected ones unless sending anyway.
    fn advance(&mut self) -> Option<Step> {
        while self.next < self.plan.candidates.len() {
            let index = self.next;
            self.next += 1;
            let probe = match self.health.claim(&self.plan.candidates[index].key) {
                Claim::Ejected if !self.send_anyway => continue,
                Claim::Ejected | Claim::Available => None,
                Claim::Probe(token) => Some(token),
            };
            self.current = Some((index, 1));
            return Some(Step {
                index,
                pause: Duration::ZERO,
                probe,
            });
        }
        None
    }

    /// The first attempt: every candidate may have been ejected since planning, and a
    /// request is never refused for that alone, so then they are all tried in order.
    fn first(&mut self) -> Option<Step> {
        self.advance().or_else(|| {
            self.send_anyway = true;
            self.next = 0;
            self.advance()
        })
    }

    /// After `error`, which [`retry::decide`] judged `next`, the attempt to make.
    fn after_failure(&mut self, error: &ProviderError, next: Next) -> Option<Step> {
        let (index, tries) = self.current?;
        let policy = &self.plan.retry;
        let asked = retry::retry_after(error);
        if next == Next::Retry && tries < policy.attempts && asked.is_none_or(|w| self.may_wait(w))
        {
            self.current = Some((index, tries + 1));
            return Some(Step {
                index,
                pause: retry::backoff(policy, tries + 1, fastrand::f64(), asked),
                probe: None,
            });
        }
        // Out of tries, or the upstream asks for a longer wait than the gateway makes: the
        // next candidate, or (none left) this error at once, `retry-after` and all.
        self.advance()
    }

    /// Whether a retry may wait `wait` for the upstream's `retry-after`.
    fn may_wait(&self, wait: Duration) -> bool {
        let fits = |deadline: Instant| {
            Instant::now()
                .checked_add(wait)
                .is_some_and(|end| end < deadline)
        };
        wait <= self.plan.max_retry_wait && self.deadline.is_none_or(fits)
    }
}

/// A probe claim, released when dropped however the attempt ends; a verdict recorded first
/// has already ended it, and a stale claim cannot end another's.
struct ProbeGuard<'h> {
    health: &'h Health,
    target: &'h str,
    token: Option<ProbeToken>,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if let Some(token) = self.token {
            self.health.release(self.target, token);
        }
    }
}

/// Counts an upstream attempt in `llmgate_upstream_requests_total` when dropped: as
/// cancelled unless it ended first (a lost hedge, the deadline, a client gone).
struct CountAttempt<'a> {
    provider: &'a str,
    /// `None` when no upstream call was made (the candidate could not take the request).
    outcome: Option<AttemptOutcome>,
}

impl Drop for CountAttempt<'_> {
    fn drop(&mut self) {
        if let Some(outcome) = self.outcome {
            upstream_attempt(self.provider, outcome);
        }
    }
}

/// Counts a finished attempt in its target's recent window (for the status page): failed
/// when the failure is the target's own; an attempt the candidate could not take is not one.
fn count_attempt<T>(
    health: &Health,
    target: &str,
    result: &Result<T, AttemptError>,
    client_timeout: bool,
) {
    match result {
        Ok(_) => health.count_attempt(target, false),
        Err(AttemptError::Provider(e)) => {
            health.count_attempt(target, counts_against_target(e, client_timeout));
        }
        Err(AttemptError::Unsupported(_)) => {}
    }
}

fn attempt_outcome<T>(result: &Result<T, AttemptError>) -> Option<AttemptOutcome> {
    match result {
        Ok(_) => Some(AttemptOutcome::Ok),
        Err(AttemptError::Provider(ProviderError::Timeout(_))) => Some(AttemptOutcome::Timeout),
        Err(AttemptError::Provider(_)) => Some(AttemptOutcome::Error),
        Err(AttemptError::Unsupported(_)) => None,
    }
}

/// Runs `plan`, calling `call(candidate, attempt_timeout)` for each attempt.
pub(crate) async fn execute<'a, T, F, Fut>(
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
        deadline,
        next: 0,
        current: None,
        send_anyway: plan.all_ejected,
    };
    let mut running: FuturesUnordered<AttemptFuture<'a, T>> = FuturesUnordered::new();
    let mut tally = Tally::default();
    // Attempt spans are children of the request span (current while the plan runs), so
    // retries, fallbacks and hedges are siblings.
    let request_span = tracing::Span::current();
    let launch = |step: Step, tally: &mut Tally| -> AttemptFuture<'a, T> {
        tally.attempts += 1;
        let number = tally.attempts;
        let request_span = request_span.clone();
        let candidate = &plan.candidates[step.index];
        let provider_timeout = candidate.provider.config.timeout;
        let timeout = plan
            .attempt_timeout
            .map_or(provider_timeout, |t| t.min(provider_timeout));
        let attempt = call(candidate, timeout);
        let probe = ProbeGuard {
            health,
            target: &candidate.key,
            token: step.probe,
        };
        Box::pin(async move {
            if !step.pause.is_zero() {
                tokio::time::sleep(step.pause).await;
            }
            let mut counted = CountAttempt {
                provider: &candidate.provider.name,
                outcome: Some(AttemptOutcome::Cancelled),
            };
            // Made after the backoff pause, so the span is the attempt's own time.
            let span = telemetry::attempt_span(&request_span, candidate, number);
            let result = match tokio::time::timeout(timeout, attempt)
                .instrument(span.clone())
                .await
            {
                Ok(result) => result,
                Err(_) => Err(AttemptError::Provider(ProviderError::Timeout(
                    u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                ))),
            };
            if let Err(error) = &result {
                telemetry::attempt_failed(&span, error.provider_error());
            }
            counted.outcome = attempt_outcome(&result);
            Outcome {
                index: step.index,
                probe,
                client_timeout: timeout < provider_timeout,
                result,
            }
        })
    };
    let Some(first) = schedule.first() else {
        return Err(Failure {
            error: GatewayError::Internal("a plan without candidates".to_owned()),
            tally,
            #[cfg(test)]
            attempts: tally.attempts,
        });
    };
    running.push(launch(first, &mut tally));
    // The hedge timer exists either way; it is only polled while a hedge is still to come.
    let mut hedge_pending = plan.hedge_after.is_some();
    let hedge = tokio::time::sleep(plan.hedge_after.unwrap_or(NEVER));
    let total = tokio::time::sleep_until(deadline.unwrap_or_else(|| Instant::now() + NEVER));
    tokio::pin!(hedge, total);

    loop {
        let hedge_armed = hedge_pending && running.len() == 1;
        tokio::select! {
            Some(outcome) = running.next() => {
                let candidate = &plan.candidates[outcome.index];
                count_attempt(health, &candidate.key, &outcome.result, outcome.client_timeout);
                let error = match outcome.result {
                    Ok(value) => {
                        health.success(&candidate.key);
                        return Ok(Success { value, candidate: candidate.clone(), attempts: tally.attempts, tally });
                    }
                    Err(error) => error,
                };
                // What follows: retry, the next target, or stop (an unsupported request is the
                // candidate's own limit, so the next one may take it).
                let decision = match &error {
                    AttemptError::Provider(e) => {
                        tracing::info!(target = %candidate.key, error = %e, "attempt failed");
                        if counts_against_target(e, outcome.client_timeout) {
                            health.failure(&candidate.key, outcome.probe.token);
                        }
                        retry::decide(e, &plan.retry)
                    }
                    AttemptError::Unsupported(_) => Next::Advance,
                };
                drop(outcome.probe);
                if decision == Next::GiveUp {
                    return Err(Failure {
                        error: into_gateway_error(candidate, error),
                        tally,
                        #[cfg(test)]
                        attempts: tally.attempts,
                    });
                }
                if !running.is_empty() {
                    continue; // a hedge is still running; its outcome decides
                }
                let next = match &error {
                    AttemptError::Provider(e) => schedule.after_failure(e, decision),
                    AttemptError::Unsupported(_) => schedule.advance(),
                };
                match next {
                    Some(step) => {
                        if step.index == outcome.index {
                            tally.retries += 1;
                        } else {
                            tally.fallbacks += 1;
                        }
                        running.push(launch(step, &mut tally));
                    }
                    None => {
                        return Err(Failure {
                            error: into_gateway_error(candidate, error),
                            tally,
                            #[cfg(test)]
                            attempts: tally.attempts,
                        });
                    }
                }
            }
            () = &mut hedge, if hedge_armed => {
                hedge_pending = false;
                if let Some(step) = schedule.advance() {
                    tracing::info!(target = %plan.candidates[step.index].key, "hedging");
                    tally.hedges += 1;
                    running.push(launch(step, &mut tally));
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
                    tally,
                    #[cfg(test)]
                    attempts: tally.attempts,
                });
            }
        }
    }
}

/// Whether a failure counts toward ejecting the target: it must be the target's own, and a
/// timeout the client's shorter `call_timeout` caused is the client's policy, not the
/// target's health (else one client could eject a target for everyone).
fn counts_against_target(error: &ProviderError, client_timeout: bool) -> bool {
    let clients_timeout = client_timeout && matches!(error, ProviderError::Timeout(_));
    retry::is_target_fault(error) && !clients_timeout
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
