//! An upstream's whole answer or error body: read as a completion and normalized, and read
//! as an error of any status, as each dialect maps it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmgate::error::GatewayError;
use llmgate::providers::http::{Dialect, error_from_body};
use llmgate::providers::{nugen::Nugen, orq::Orq};
use llmgate::schema::ChatResponse;
use llmgate::stream::normalize::normalize_response;

fuzz_target!(|input: &[u8]| {
    let Some((&status, body)) = input.split_first() else {
        return;
    };
    if let Ok(mut response) = serde_json::from_slice::<ChatResponse>(body)
        && normalize_response(&mut response, "client/model", 2).is_ok()
    {
        let _ = serde_json::to_vec(&response);
    }
    let status = 400 + u16::from(status) % 200;
    for error in [
        error_from_body(status, body, None),
        Nugen.map_error(error_from_body(status, body, None)),
        Orq.map_error(error_from_body(status, body, None)),
    ] {
        let error = GatewayError::Upstream {
            provider: "p".to_owned(),
            error,
        };
        let _ = (error.status(), error.code(), error.message());
    }
});
