use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::config::{MAX_MODEL_ID_BYTES, ProviderKind};

fn parse(value: &Value) -> Result<Listing, String> {
    parse_model_list(value.to_string().as_bytes())
}

#[test]
fn openai_lists_are_read_sorted_and_without_duplicates() {
    let body = json!({"object": "list", "data": [
        {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
        {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
        {"id": "babbage-002", "object": "model", "created": 1692634615, "owned_by": "system"},
        {"id": "gpt-4o", "object": "model"},
    ]});
    let listing = parse(&body).unwrap();
    assert_eq!(listing.ids, ["babbage-002", "gpt-4o", "gpt-4o-mini"]);
    assert_eq!((listing.invalid, listing.over_limit), (0, 0));
    // Servers that leave out `object` (or add fields of their own) are read too.
    let bare = json!({"data": [{"id": "llama3:8b", "details": {"size": 1}}], "extra": [1]});
    assert_eq!(parse(&bare).unwrap().ids, ["llama3:8b"]);
    assert_eq!(
        parse(&json!({"object": "list", "data": []})).unwrap(),
        Listing::default()
    );
}

#[test]
fn invalid_entries_are_left_out_and_counted() {
    let body = json!({"object": "list", "data": [
        {"id": "ok"},
        "a-string",
        7,
        null,
        [{"id": "nested"}],
        {"name": "no-id"},
        {"id": 42},
        {"id": {"id": "deeper"}},
        {"id": ""},
        {"id": "bell\u{7}"},
        {"id": "m".repeat(MAX_MODEL_ID_BYTES + 1)},
        {"id": "m".repeat(MAX_MODEL_ID_BYTES)},
    ]});
    let listing = parse(&body).unwrap();
    assert_eq!(
        listing.ids,
        ["m".repeat(MAX_MODEL_ID_BYTES), "ok".to_owned()]
    );
    assert_eq!(listing.invalid, 10);
    // Two `id`s make an entry ambiguous.
    let twice = br#"{"data": [{"id": "a", "id": "b"}, {"id": "c"}]}"#;
    let listing = parse_model_list(twice).unwrap();
    assert_eq!((listing.ids, listing.invalid), (vec!["c".to_owned()], 1));
}

#[test]
fn anything_but_the_list_shape_is_refused() {
    for body in [
        &b"not json"[..],
        b"",
        b"[]",
        b"[{\"id\": \"a\"}]",
        b"{}",
        b"{\"object\": \"list\"}",
        b"{\"data\": null}",
        b"{\"data\": {\"id\": \"a\"}}",
        b"{\"data\": \"a\"}",
        b"{\"object\": \"model\", \"data\": []}",
        b"{\"object\": 1, \"data\": []}",
        b"{\"data\": [], \"data\": []}",
        b"{\"data\": []} trailing",
        b"{\"data\": [{\"id\": \"a\"}",
    ] {
        let result = parse_model_list(body);
        assert!(
            result.is_err(),
            "{:?}: {result:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn deep_nesting_is_skipped_without_overflowing_the_stack() {
    let depth = 100_000;
    let nested = |open: &str, close: &str| {
        format!(
            "{{\"data\": [{}{}, {{\"id\": \"ok\"}}]}}",
            open.repeat(depth),
            close.repeat(depth)
        )
    };
    for body in [
        nested("[", "]"),
        nested("{\"id\":", "}").replacen("}", "1}", 1),
    ] {
        let listing = parse_model_list(body.as_bytes()).unwrap();
        assert_eq!((listing.ids, listing.invalid), (vec!["ok".to_owned()], 1));
    }
    let unterminated = format!("{{\"data\": [{}", "{\"id\":".repeat(depth));
    assert!(parse_model_list(unterminated.as_bytes()).is_err());
}

#[test]
fn at_most_the_limit_is_kept() {
    let data: Vec<Value> = (0..MAX_PROVIDER_MODELS + 5)
        .map(|i| json!({"id": format!("model-{i:05}")}))
        .collect();
    let listing = parse(&json!({"object": "list", "data": data})).unwrap();
    assert_eq!(listing.ids.len(), MAX_PROVIDER_MODELS);
    assert_eq!(listing.over_limit, 5);
    assert_eq!(listing.ids[0], "model-00000");
}

#[test]
fn long_parser_messages_are_cut() {
    let body = format!("{{\"object\": \"{}\", \"data\": 5}}", "x".repeat(5000));
    let error = parse_model_list(body.as_bytes()).unwrap_err();
    assert!(error.len() < 400, "{error}");
}

/// Any JSON value, nested a few levels, with keys that matter here among others.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z\u{0}-\u{1f}\u{7f}é/:. ]{0,12}".prop_map(Value::String),
        (250usize..270).prop_map(|n| Value::String("x".repeat(n))),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((object_key(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// Keys that matter here, and others.
fn object_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("id".to_owned()),
        Just("object".to_owned()),
        Just("data".to_owned()),
        "[a-z]{1,3}",
    ]
}

/// What a kept list must be: sorted, unique, each a valid name, within the limit.
fn bounds_hold(listing: &Listing) {
    assert!(listing.ids.len() <= MAX_PROVIDER_MODELS);
    assert!(
        listing.ids.windows(2).all(|w| w[0] < w[1]),
        "sorted, unique"
    );
    for id in &listing.ids {
        assert_eq!(model_id_problem(id), None, "{id:?}");
    }
}

proptest! {
    #[test]
    fn hostile_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(listing) = parse_model_list(&body) {
            bounds_hold(&listing);
        }
    }

    #[test]
    fn hostile_lists_keep_their_bounds(
        data in prop::collection::vec(json_value(), 0..24),
        object in prop_oneof![Just(None), Just(Some(json!("list"))), json_value().prop_map(Some)],
    ) {
        let mut body = json!({"data": data});
        if let Some(object) = object {
            body["object"] = object;
        }
        if let Ok(listing) = parse(&body) {
            bounds_hold(&listing);
            let entries = body["data"].as_array().map_or(0, Vec::len);
            prop_assert!(listing.ids.len() + listing.invalid + listing.over_limit <= entries);
        }
    }

    #[test]
    fn any_document_never_panics(value in json_value()) {
        if let Ok(listing) = parse(&value) {
            bounds_hold(&listing);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn work_runs_at_start_and_then_every_interval() {
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let mut task = JoinSet::new();
    task.spawn(every(INTERVAL, move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async {}
    }));
    let count = || runs.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(), 1, "at start");
    tokio::time::sleep(INTERVAL - Duration::from_secs(2)).await;
    assert_eq!(count(), 1, "not before the interval");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(), 2, "after it");
    tokio::time::sleep(INTERVAL * 3).await;
    assert_eq!(count(), 5);
    task.abort_all();
}

fn discovering(base_url: &str) -> ProviderConfig {
    let mut config = ProviderConfig::new(ProviderKind::OpenAi);
    config.base_url = base_url.to_owned();
    config.discover_models = true;
    config
}

#[tokio::test]
async fn restarts_keep_lists_only_for_the_same_upstream() {
    let discovery = Discovery::default();
    let providers = |pairs: &[(&str, ProviderConfig)]| -> BTreeMap<String, ProviderConfig> {
        pairs
            .iter()
            .map(|(n, c)| (n.to_string(), c.clone()))
            .collect()
    };
    let (a, b) = (
        discovering("http://127.0.0.1:9/a"),
        discovering("http://127.0.0.1:9/b"),
    );
    // A current-thread runtime: the spawned tasks do not run before the test yields.
    let tasks = discovery.restart(
        &providers(&[("a", a.clone()), ("b", b.clone())]),
        JoinSet::new(),
    );
    assert_eq!(tasks.len(), 2);
    for name in ["a", "b"] {
        discovery.slots.load()[name]
            .models
            .store(Arc::new(vec![format!("{name}-model")]));
    }
    // `a` keeps its upstream (its key changes), `b` moves, `c` does not discover.
    let mut a_rotated = a.clone();
    a_rotated.api_key = Some(crate::config::Secret::new("sk-new"));
    let mut c = discovering("http://127.0.0.1:9/c");
    c.discover_models = false;
    let tasks = discovery.restart(
        &providers(&[
            ("a", a_rotated),
            ("b", discovering("http://127.0.0.1:9/b2")),
            ("c", c),
        ]),
        tasks,
    );
    assert_eq!(tasks.len(), 2);
    assert_eq!(*discovery.models("a"), ["a-model"]);
    assert!(
        discovery.models("b").is_empty(),
        "a new upstream starts over"
    );
    assert!(discovery.models("c").is_empty());
    let tasks = discovery.restart(&providers(&[]), tasks);
    assert!(tasks.is_empty());
    assert!(
        discovery.models("a").is_empty(),
        "a removed provider's list goes"
    );
}
