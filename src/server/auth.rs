//! Gateway and admin keys: `Authorization: Bearer <key>` checked in constant time against
//! every configured key. The key itself is never logged and never forwarded (adapters send the
//! provider's configured key). Which models a key may use is checked by the chat handler,
//! once the model is known.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::live::Live;
use super::middleware::Arrival;
use crate::cache;
use crate::config::{CacheScope, GatewayKey, Secret};
use crate::error::GatewayError;

/// Who is calling: the index of the matched key, or `None` when no keys are configured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller(Option<usize>);

impl Caller {
    /// The caller's key, if keys are configured.
    pub(crate) fn key<'a>(&self, live: &'a Live) -> Option<&'a GatewayKey> {
        let index = self.0?;
        live.auth.as_ref()?.keys.get(index)
    }

    /// Whose cached answers the caller may see.
    pub(crate) fn cache_scope<'a>(&self, live: &'a Live) -> cache::Scope<'a> {
        match self.key(live) {
            Some(key) if key.cache == CacheScope::Private => cache::Scope::Private(&key.name),
            _ => cache::Scope::Shared,
        }
    }

    /// Whether the caller may use `model`.
    pub(crate) fn allows(&self, live: &Live, model: &str) -> bool {
        self.key(live).is_none_or(|key| key.allows(model))
    }
}

/// The caller of a gateway route (chat, models) and the config its key was checked against,
/// which the request runs on to its end. An extractor, so the check runs before the body is
/// read: without a valid gateway key the request gets 401 `invalid_api_key` (an admin key is
/// not one, even when no gateway key is required). The key's name goes into the request's
/// record.
pub(crate) struct Authorized {
    pub(crate) caller: Caller,
    pub(crate) live: Arc<Live>,
}

impl FromRequestParts<AppState> for Authorized {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, GatewayError> {
        Authorized::check(&parts.headers, parts.extensions.get::<Arrival>(), state)
    }
}

impl Authorized {
    /// Checks the request's key; notes the key's name in the request's record (`arrival`).
    pub(crate) fn check(
        headers: &HeaderMap,
        arrival: Option<&Arrival>,
        state: &AppState,
    ) -> Result<Self, GatewayError> {
        let live = state.live();
        let presented = presented_token(headers);
        if presented.is_some_and(|token| matches_any(live.admin_keys(), token)) {
            return Err(GatewayError::InvalidApiKey);
        }
        let caller = if live.requires_key() {
            let keys = live.auth.as_ref().map_or(&[][..], |a| &a.keys[..]);
            match presented.and_then(|token| matching_key(keys, token)) {
                Some(index) => Caller(Some(index)),
                None => return Err(GatewayError::InvalidApiKey),
            }
        } else {
            // No keys are configured.
            Caller(None)
        };
        if let Some(key) = caller.key(&live)
            && let Some(arrival) = arrival
        {
            let name = Arc::<str>::from(key.name.as_str());
            arrival.observed.update(|record| record.key = Some(name));
        }
        Ok(Authorized { caller, live })
    }
}

/// `/admin/*`: 404 without admin keys, 401 without a key, 403 with a key that is not an
/// admin key.
pub(crate) async fn require_admin_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let live: Arc<Live> = state.live();
    if live.admin_keys().is_empty() {
        return GatewayError::NotFound(request.uri().path().to_owned()).into_response();
    }
    match presented_token(request.headers()) {
        None => GatewayError::InvalidApiKey.into_response(),
        Some(token) if matches_any(live.admin_keys(), token) => next.run(request).await,
        Some(_) => GatewayError::AdminKeyRequired.into_response(),
    }
}

/// The bearer token of the `Authorization` header, if any.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .filter(|token| !token.is_empty())
}

fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The index of the key equal to `token`. Every key is compared, each in constant time, so
/// the time taken does not tell which key (or how much of one) matched.
fn matching_key(keys: &[GatewayKey], token: &str) -> Option<usize> {
    let mut found = None;
    for (index, key) in keys.iter().enumerate() {
        if bool::from(key.key.expose().as_bytes().ct_eq(token.as_bytes())) {
            found = Some(index);
        }
    }
    found
}

/// Whether `token` is one of `keys`, every one compared in constant time.
fn matches_any(keys: &[Secret], token: &str) -> bool {
    keys.iter().fold(false, |found, key| {
        found | bool::from(key.expose().as_bytes().ct_eq(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly() {
        let keys = vec![
            GatewayKey {
                name: "a".into(),
                key: Secret::new("sk-a"),
                models: vec!["*".into()],
                cache: Default::default(),
                limits: Default::default(),
            },
            GatewayKey {
                name: "b".into(),
                key: Secret::new("sk-bb"),
                models: vec!["echo/*".into()],
                cache: Default::default(),
                limits: Default::default(),
            },
        ];
        assert_eq!(matching_key(&keys, "sk-bb"), Some(1));
        assert_eq!(matching_key(&keys, "sk-b"), None);
        assert_eq!(matching_key(&keys, ""), None);
        assert_eq!(bearer_token("Bearer sk-a"), Some("sk-a"));
        assert_eq!(bearer_token("bearer  sk-a "), Some("sk-a"));
        assert_eq!(bearer_token("Basic abc"), None);
        let admin = [Secret::new("sk-admin")];
        assert!(matches_any(&admin, "sk-admin"));
        assert!(!matches_any(&admin, "sk-admi"));
        assert!(!matches_any(&[], "sk-admin"));
        assert!(keys[1].allows("echo/x"));
        assert!(!keys[1].allows("openai/x"));
    }
}
