//! Gateway keys: `Authorization: Bearer <key>` checked in constant time against every
//! configured key. The key itself is never logged and never forwarded (adapters send the
//! provider's configured key). Which models a key may use is checked by the chat handler,
//! once the model is known.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::cache;
use crate::config::{CacheScope, GatewayKey};
use crate::error::GatewayError;
use crate::observe::record::Observed;

/// Who is calling: the index of the matched key, or `None` when no keys are configured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller(Option<usize>);

impl Caller {
    /// A caller when no keys are configured.
    pub(crate) const NONE: Caller = Caller(None);

    /// The caller's key, if keys are configured.
    pub(crate) fn key<'a>(&self, state: &'a AppState) -> Option<&'a GatewayKey> {
        let index = self.0?;
        state.auth.as_ref()?.keys.get(index)
    }

    /// Whose cached answers the caller may see.
    pub(crate) fn cache_scope<'a>(&self, state: &'a AppState) -> cache::Scope<'a> {
        match self.key(state) {
            Some(key) if key.cache == CacheScope::Private => cache::Scope::Private(&key.name),
            _ => cache::Scope::Shared,
        }
    }

    /// Whether the caller may use `model`.
    pub(crate) fn allows(&self, state: &AppState, model: &str) -> bool {
        self.key(state).is_none_or(|key| key.allows(model))
    }
}

/// Rejects requests without a valid key with 401 `invalid_api_key`.
pub(crate) async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match &state.auth {
        None => Caller(None),
        Some(auth) => {
            let presented = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_token);
            match presented.and_then(|token| matching_key(&auth.keys, token)) {
                Some(index) => Caller(Some(index)),
                None => return GatewayError::InvalidApiKey.into_response(),
            }
        }
    };
    if let (Some(key), Some(observed)) =
        (caller.key(&state), request.extensions().get::<Observed>())
    {
        let name: Arc<str> = Arc::from(key.name.as_str());
        observed.update(|record| record.key = Some(name));
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn tokens_match_exactly() {
        let keys = vec![
            GatewayKey {
                name: "a".into(),
                key: Secret::new("sk-a"),
                models: vec!["*".into()],
                cache: Default::default(),
            },
            GatewayKey {
                name: "b".into(),
                key: Secret::new("sk-bb"),
                models: vec!["echo/*".into()],
                cache: Default::default(),
            },
        ];
        assert_eq!(matching_key(&keys, "sk-bb"), Some(1));
        assert_eq!(matching_key(&keys, "sk-b"), None);
        assert_eq!(matching_key(&keys, ""), None);
        assert_eq!(bearer_token("Bearer sk-a"), Some("sk-a"));
        assert_eq!(bearer_token("bearer  sk-a "), Some("sk-a"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert!(keys[1].allows("echo/x"));
        assert!(!keys[1].allows("openai/x"));
    }
}
