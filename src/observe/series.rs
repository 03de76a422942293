//! Per-request metric series, looked up once per label set and then reused. Building a
//! series' key (a label vector, its hash, a registry lookup and a retained copy) cost more
//! than the request's increments themselves; this cache hashes the label strings once and
//! hands back the handles.
//!
//! Label values are configured names only (see the record), so the sets are few; still, the
//! cache holds at most [`MAX_SETS`] of them and starts over when full (the series stay in
//! the registry; only the shortcut is lost).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{Counter, Histogram, counter, histogram};

use super::names;
use crate::NameMap;

/// The most label sets kept.
const MAX_SETS: usize = 4096;

/// The labels a request's series share: `(ingress, model, provider, key)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Labels<'a> {
    pub(crate) ingress: &'static str,
    pub(crate) model: &'a str,
    pub(crate) provider: &'a str,
    pub(crate) key: &'a str,
}

/// The series of one label set.
pub(crate) struct Series {
    /// `llmgate_request_duration_seconds{ingress,model,provider}`.
    pub(crate) duration: Histogram,
    /// `llmgate_time_to_first_token_seconds{model,provider}`.
    pub(crate) ttft: Histogram,
    /// `llmgate_tokens_total{model,provider,key,type="prompt"}`.
    pub(crate) prompt_tokens: Counter,
    /// `llmgate_tokens_total{model,provider,key,type="completion"}`.
    pub(crate) completion_tokens: Counter,
    /// `llmgate_requests_total{ingress,model,provider,key,code}`, by code as they occur.
    requests: Mutex<Vec<(u16, Counter)>>,
    /// `llmgate_unpriced_tokens_total{provider}`, made on first use.
    unpriced: OnceLock<Counter>,
    labels: Owned,
}

impl Series {
    fn new(labels: Owned) -> Self {
        let l = &labels;
        let tokens = |kind: &'static str| {
            counter!(names::TOKENS, "model" => l.model.clone(), "provider" => l.provider.clone(),
                "key" => l.key.clone(), "type" => kind)
        };
        Series {
            duration: histogram!(names::DURATION, "ingress" => l.ingress,
                "model" => l.model.clone(), "provider" => l.provider.clone()),
            ttft: histogram!(names::TTFT, "model" => l.model.clone(), "provider" => l.provider.clone()),
            prompt_tokens: tokens("prompt"),
            completion_tokens: tokens("completion"),
            requests: Mutex::default(),
            unpriced: OnceLock::new(),
            labels,
        }
    }

    /// The counter of tokens without a price.
    pub(crate) fn unpriced(&self) -> &Counter {
        (self.unpriced)
            .get_or_init(|| counter!(names::UNPRICED, "provider" => self.labels.provider.clone()))
    }

    /// The request counter of status `code`.
    pub(crate) fn requests(&self, code: u16) -> Counter {
        let mut codes = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, counter)) = codes.iter().find(|(c, _)| *c == code) {
            return counter.clone();
        }
        let l = &self.labels;
        let counter = counter!(names::REQUESTS, "ingress" => l.ingress, "model" => l.model.clone(),
            "provider" => l.provider.clone(), "key" => l.key.clone(), "code" => code.to_string());
        // Codes are HTTP statuses: a few hundred at the very most.
        codes.push((code, counter.clone()));
        counter
    }
}

/// The series of `labels`, made on first use.
pub(crate) fn of(labels: Labels<'_>) -> Arc<Series> {
    static CACHE: OnceLock<Mutex<NameMap<Owned, Arc<Series>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    find_or_make(&mut cache.lock().unwrap_or_else(|e| e.into_inner()), labels)
}

/// The series of `labels` in `sets`, made and kept there when missing; `sets` starts over
/// when it holds [`MAX_SETS`].
fn find_or_make(sets: &mut NameMap<Owned, Arc<Series>>, labels: Labels<'_>) -> Arc<Series> {
    if let Some(series) = sets.get(&labels as &dyn View) {
        return series.clone();
    }
    if sets.len() >= MAX_SETS {
        sets.clear();
    }
    let owned = Owned::from(labels);
    let series = Arc::new(Series::new(owned.clone()));
    sets.insert(owned, series.clone());
    series
}

/// [`Labels`] with owned strings, as the cache's key.
/// Hashed through [`View`], as the borrowed form must be.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    ingress: &'static str,
    model: String,
    provider: String,
    key: String,
}

impl From<Labels<'_>> for Owned {
    fn from(l: Labels<'_>) -> Self {
        Owned {
            ingress: l.ingress,
            model: l.model.to_owned(),
            provider: l.provider.to_owned(),
            key: l.key.to_owned(),
        }
    }
}

/// The four strings of a label set, owned or borrowed, so the cache is searched without
/// copying them.
trait View {
    fn parts(&self) -> (&str, &str, &str, &str);
}

impl View for Owned {
    fn parts(&self) -> (&str, &str, &str, &str) {
        (self.ingress, &self.model, &self.provider, &self.key)
    }
}

impl View for Labels<'_> {
    fn parts(&self) -> (&str, &str, &str, &str) {
        (self.ingress, self.model, self.provider, self.key)
    }
}

impl Hash for Owned {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl<'a> Borrow<dyn View + 'a> for Owned {
    fn borrow(&self) -> &(dyn View + 'a) {
        self
    }
}

impl Hash for dyn View + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for dyn View + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn View + '_ {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_set_is_made_once_and_found_again() {
        let labels = Labels {
            ingress: "openai",
            model: "series-test-model",
            provider: "p",
            key: "k",
        };
        let first = of(labels);
        let again = of(labels);
        assert!(Arc::ptr_eq(&first, &again));
        let other = of(Labels {
            key: "other",
            ..labels
        });
        assert!(!Arc::ptr_eq(&first, &other));
        first.requests(200).increment(1);
        first.requests(200).increment(1);
        first.requests(502).increment(1);
        assert_eq!(first.requests.lock().unwrap().len(), 2);
    }

    #[test]
    fn the_cache_holds_at_most_max_sets() {
        let mut sets = NameMap::default();
        for i in 0..=MAX_SETS {
            let key = format!("bound-{i}");
            let labels = Labels {
                ingress: "nugen",
                model: "series-bound-test",
                provider: "p",
                key: &key,
            };
            let made = find_or_make(&mut sets, labels);
            assert!(Arc::ptr_eq(&made, &find_or_make(&mut sets, labels)));
            assert!(sets.len() <= MAX_SETS, "{}", sets.len());
        }
        assert_eq!(
            sets.len(),
            1,
            "full at MAX_SETS: started over with the new set"
        );
    }
}
