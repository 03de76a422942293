use bytes::Bytes;

use super::super::{parse_and_validate, parse_client_body};

/// The members a body forwards as written, without the leading comma; `None` when declined.
fn forwarded(body: &str) -> Option<String> {
    let request = parse_client_body(Bytes::copy_from_slice(body.as_bytes())).unwrap();
    let mut out = Vec::new();
    request.write_forwarded_members(&mut out)?;
    Some(String::from_utf8(out).unwrap().split_off(1))
}

const HI: &str = r#"[{"role":"user","content":"hi"}]"#;

#[test]
fn members_pass_as_written_minus_the_gateways_own() {
    let body = format!(
        r#"{{ "model" : "a/m", "messages" : {HI}, "temperature": 1E0 ,
        "stream": true, "stream_options": {{"include_usage": false}}, "retry": {{"count": 1}},
        "fallbacks": [{{"model": "b/m"}}], "timeout": {{"call_timeout": 1000}},
        "cache": {{"type": "exact_match"}}, "variables": null,
        "load_balancer": {{"type": "weight_based", "models": [{{"model": "c/m"}}]}},
        "user": "caf\u00e9 \"x\"", "vendor": {{"n": 1.50}} }}"#
    );
    assert_eq!(
        forwarded(&body).unwrap(),
        format!(
            r#""messages" : {HI},"temperature": 1E0,"user": "caf\u00e9 \"x\"","vendor": {{"n": 1.50}}"#
        )
    );
}

#[test]
fn known_fields_set_to_null_are_left_out_and_unknown_ones_kept() {
    let body = format!(
        r#"{{"model":"a/m","messages":{HI},"top_k":null,"seed":null,"vendor":null,"n":1}}"#
    );
    assert_eq!(
        forwarded(&body).unwrap(),
        format!(r#""messages":{HI},"vendor":null,"n":1"#)
    );
}

#[test]
fn text_that_reads_two_ways_is_declined() {
    for body in [
        format!(r#"{{"model":"a/m","messages":{HI},"seed":1,"seed":2}}"#),
        format!(r#"{{"model":"a/m","model":"b/m","messages":{HI}}}"#),
        r#"{"model":"a/m","messages":[{"role":"user","content":"hi","content":"ho"}]}"#.to_owned(),
        format!(r#"{{"model":"a/m","messages":{HI},"v":{{"x":1,"y":{{"z":[{{"q":1,"q":1}}]}}}}}}"#),
        format!(r#"{{"model":"a/m","messages":{HI},"v":{{"\u0061":1}}}}"#),
        format!(r#"{{"model":"a/m","messages":{HI},"\u0076":1}}"#),
    ] {
        assert_eq!(forwarded(&body), None, "{body}");
    }
}

#[test]
fn a_request_without_its_body_has_none_to_forward() {
    let body = format!(r#"{{"model":"a/m","messages":{HI}}}"#);
    let request = parse_and_validate(body.as_bytes()).unwrap();
    assert!(request.write_forwarded_members(&mut Vec::new()).is_none());
}

#[test]
fn the_same_key_at_two_depths_reads_one_way_and_is_taken() {
    let body = format!(r#"{{"model":"a/m","messages":{HI},"v":{{"v":{{"v":1}},"w":2}},"w":3}}"#);
    assert_eq!(
        forwarded(&body).unwrap(),
        format!(r#""messages":{HI},"v":{{"v":{{"v":1}},"w":2}},"w":3"#)
    );
}
