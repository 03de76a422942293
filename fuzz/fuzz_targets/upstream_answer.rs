//! An upstream's whole answer or error body: read as a completion and normalized, and read
//! as an error of any status, as each dialect maps it. An answer the fast path takes must
//! give the client the same JSON as the slow path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmgate::error::GatewayError;
use llmgate::providers::http::{Dialect, error_from_body};
use llmgate::providers::{nugen::Nugen, orq::Orq};
use llmgate::schema::ChatResponse;
use llmgate::stream::normalize::normalize_response;
use llmgate::stream::splice::AnswerInShape;
use serde_json::Value;
use serde_json::value::RawValue;

fuzz_target!(|input: &[u8]| {
    let Some((&status, body)) = input.split_first() else {
        return;
    };
    let slow = serde_json::from_slice::<ChatResponse>(body)
        .ok()
        .and_then(|mut response| {
            normalize_response(&mut response, "client/model", 2).ok()?;
            serde_json::to_vec(&response).ok()
        });
    if let Ok(answer) = AnswerInShape::scan(body.to_vec())
        && let Some(fast) = answer.client_body("client/model", 2)
    {
        let slow = slow.expect("the slow path takes what the fast one does");
        // Both pass a number beyond `f64` on as written; serde_json cannot hold it as a
        // `Value`, so such an answer compares as `None` on both sides.
        serde_json::from_slice::<&RawValue>(&fast).expect("JSON");
        let mut fast: Option<Value> = serde_json::from_slice(&fast).ok();
        let mut slow: Option<Value> = serde_json::from_slice(&slow).ok();
        // Both stamp the time now when the upstream gave none; it may tick between them.
        for answer in [&mut fast, &mut slow].into_iter().flatten() {
            answer["created"] = Value::Null;
        }
        assert_eq!(fast, slow);
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
