//! The human-readable summary `llmgate check` prints.

use std::fmt::Write;

use super::Config;

impl Config {
    /// The resolved listener, keys, providers and model routes, one item per line.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "listen: {}", self.server.listen);
        match &self.auth {
            None => out.push_str("auth: none (no gateway key required)\n"),
            Some(auth) => {
                let names: Vec<&str> = auth.keys.iter().map(|k| k.name.as_str()).collect();
                let _ = writeln!(
                    out,
                    "auth: {} key(s): {}; {} admin key(s)",
                    names.len(),
                    names.join(", "),
                    auth.admin_keys.len()
                );
                for key in auth.keys.iter().filter(|k| k.limits.any()) {
                    let _ = writeln!(out, "  {}: {}", key.name, limits_text(&key.limits));
                }
            }
        }
        let state = &self.state;
        match &state.url {
            None => out.push_str("state: memory (this process only)\n"),
            Some(url) => {
                let _ = writeln!(
                    out,
                    "state: redis at {} (prefix `{}`, on_error={}, timeout_ms={}, lease_ms={})",
                    shown_url(url.expose()),
                    state.key_prefix,
                    match state.on_error {
                        super::OnStateError::Allow => "allow",
                        super::OnStateError::Deny => "deny",
                    },
                    state.timeout.as_millis(),
                    state.lease.as_millis()
                );
            }
        }
        match &self.telemetry.otlp_endpoint {
            Some(url) => {
                let _ = writeln!(out, "traces: exported to {url}/v1/traces (OTLP/HTTP)");
            }
            None => {
                out.push_str("traces: not exported (upstream requests still get traceparent)\n")
            }
        }
        out.push_str("providers:\n");
        for (name, p) in &self.providers {
            if p.kind == super::ProviderKind::Echo {
                let _ = write!(out, "  {name}: kind=echo (built in, offline)");
            } else {
                let key = if p.api_key.is_some() { "set" } else { "none" };
                let _ = write!(
                    out,
                    "  {name}: kind={} base_url={} path={} key={key} timeout_ms={}",
                    p.kind.as_str(),
                    shown_url(&p.base_url),
                    p.kind.operation_path(),
                    p.timeout.as_millis()
                );
            }
            if !p.models.is_empty() {
                let _ = write!(out, " models=[{}]", p.models.join(", "));
            }
            if p.discover_models {
                let _ = write!(
                    out,
                    " discover_models=true (GET {}/models)",
                    shown_url(&p.base_url)
                );
            }
            out.push('\n');
        }
        out.push_str("models:\n");
        if self.models.is_empty() {
            out.push_str("  (no aliases; send `<provider>/<model>`)\n");
        }
        for (alias, m) in &self.models {
            let targets: Vec<String> = m
                .targets
                .iter()
                .map(|t| format!("{}/{} (weight {})", t.provider, t.model, t.weight))
                .collect();
            let _ = write!(out, "  {alias} -> {}", targets.join(", "));
            if !m.fallbacks.is_empty() {
                let _ = write!(out, "; fallbacks: {}", m.fallbacks.join(", "));
            }
            let _ = write!(
                out,
                "; retry: {} attempt(s) on {:?}, backoff {} ms",
                m.retry.attempts,
                m.retry.on_status,
                m.retry.backoff.as_millis()
            );
            if let Some(timeout) = m.timeout {
                let _ = write!(out, "; timeout_ms: {}", timeout.as_millis());
            }
            if let Some(hedge) = m.hedge_after {
                let _ = write!(out, "; hedge_after_ms: {}", hedge.as_millis());
            }
            if let Some(ttl) = m.cache_ttl {
                let _ = write!(out, "; cache_ttl_secs: {}", ttl.as_secs());
            }
            out.push('\n');
        }
        out
    }
}

/// A key's limits, e.g. `rpm=600 tpm=200000 max_concurrent=20 budget=50 USD/month`.
fn limits_text(limits: &super::KeyLimits) -> String {
    let mut parts = Vec::new();
    if let Some(rpm) = limits.rpm {
        parts.push(format!("rpm={rpm}"));
    }
    if let Some(tpm) = limits.tpm {
        parts.push(format!("tpm={tpm}"));
    }
    if let Some(max) = limits.max_concurrent {
        parts.push(format!("max_concurrent={max}"));
    }
    if let Some(budget) = limits.budget {
        parts.push(format!(
            "budget={} USD/{}",
            budget.usd,
            budget.window.as_str()
        ));
    }
    parts.join(" ")
}

/// `url` without userinfo and query, which may hold credentials.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            // Both fail only for URLs that cannot have userinfo, which then has none.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_carry_no_credentials() {
        assert_eq!(
            shown_url("https://user:s3cret@llm.internal:8443/v1?api_key=k"),
            "https://llm.internal:8443/v1"
        );
        assert_eq!(
            shown_url("http://127.0.0.1:9100/v1"),
            "http://127.0.0.1:9100/v1"
        );
    }
}
