//! orq's `variables`: `{{name}}` in message text is replaced by the variable's value before
//! routing. Only when the request has `variables`: without it, braces in a prompt (code,
//! templates) are left alone. A referenced name that is missing is a 400 naming it and where.

use serde_json::Value;

use crate::error::{FieldError, FieldPath, GatewayError};
use crate::schema::{ChatRequest, MessageContent};

/// Substitutes the request's variables into its messages' text.
pub fn apply(request: &mut ChatRequest) -> Result<(), GatewayError> {
    let Some(variables) = request.variables.take() else {
        return Ok(());
    };
    let mut errors = Vec::new();
    for (i, message) in request.messages.iter_mut().enumerate() {
        let path = FieldPath::key("messages").index(i).field("content");
        match &mut message.content {
            Some(MessageContent::Text(text)) => substitute(text, &variables, &path, &mut errors),
            Some(MessageContent::Parts(parts)) => {
                for (j, part) in parts.iter_mut().enumerate() {
                    if let Some(text) = &mut part.text {
                        substitute(text, &variables, &path.index(j).field("text"), &mut errors);
                    }
                }
            }
            None => {}
        }
    }
    request.variables = Some(variables);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(GatewayError::InvalidRequest(errors))
    }
}

fn substitute(
    text: &mut String,
    variables: &serde_json::Map<String, Value>,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    if !text.contains("{{") {
        return;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + 2 + len].trim();
        out.push_str(&rest[..start]);
        match variables.get(name) {
            Some(Value::String(value)) => out.push_str(value),
            Some(value) => out.push_str(&value.to_string()),
            None => {
                errors.push(FieldError::invalid(
                    FieldPath::key("variables").field(name),
                    format!(
                        "`{path}` uses the variable `{name}`, which `variables` does not define"
                    ),
                ));
                out.push_str(&rest[start..start + 4 + len]);
            }
        }
        rest = &rest[start + 4 + len..];
    }
    out.push_str(rest);
    *text = out;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(body: Value) -> ChatRequest {
        crate::schema::parse_and_validate(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn variables_are_substituted_in_text_and_parts() {
        let mut r = request(json!({"model": "m/x", "variables": {"name": "Ann", "n": 3},
            "messages": [{"role": "system", "content": "Help {{ name }}."},
                {"role": "user", "content": [{"type": "text", "text": "{{n}} items for {{name}}"}]}]}));
        apply(&mut r).unwrap();
        assert_eq!(r.messages[0].text(), "Help Ann.");
        assert_eq!(r.messages[1].text(), "3 items for Ann");
    }

    #[test]
    fn a_missing_variable_is_named() {
        let mut r = request(json!({"model": "m/x", "variables": {"a": "1"},
            "messages": [{"role": "user", "content": "{{a}} and {{b}}"}]}));
        let Err(GatewayError::InvalidRequest(errors)) = apply(&mut r) else {
            panic!()
        };
        assert_eq!(errors[0].path.to_string(), "variables.b");
        assert!(errors[0].message.contains("messages[0].content"));
    }

    #[test]
    fn without_variables_braces_stay() {
        let mut r = request(
            json!({"model": "m/x", "messages": [{"role": "user", "content": "fn() {{ }}"}]}),
        );
        apply(&mut r).unwrap();
        assert_eq!(r.messages[0].text(), "fn() {{ }}");
    }
}
