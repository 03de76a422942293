//! A config file: TOML, `${VAR}` secrets, every check.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use llmgate::config::from_toml_str;

fuzz_target!(|text: &str| {
    let env: BTreeMap<String, String> = [("KEY", "sk-fuzz"), ("EMPTY", "")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Ok(config) = from_toml_str(text, &env) {
        let _ = config.describe();
    }
});
