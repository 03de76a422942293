//! A client's request body: parsed, validated, and translated for every provider dialect.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmgate::providers::CallCx;
use llmgate::providers::http::Dialect;
use llmgate::providers::{atoma::Atoma, nugen::Nugen, openai::OpenAi, orq::Orq};
use llmgate::schema::parse_and_validate;

fuzz_target!(|body: &[u8]| {
    let Ok(request) = parse_and_validate(body) else {
        return;
    };
    let cx = CallCx {
        upstream_model: "m".to_owned(),
        session_id: Some("s".to_owned()),
        request_id: "r".to_owned(),
        trace: Default::default(),
    };
    let _ = OpenAi.prepare("openai", &request, &cx);
    let _ = Nugen.prepare("nugen", &request, &cx);
    let _ = Atoma.prepare("atoma", &request, &cx);
    let _ = Orq.prepare("orq", &request, &cx);
});
