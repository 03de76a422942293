//! orq's `variables`: `{{name}}` in message text is replaced by the variable's value before
//! routing. Only when the request has `variables`: without it, braces in a prompt (code,
//! templates) are left alone. A referenced name that is missing is a 400 naming it and where.
//!
//! Substitution multiplies: one 5 MiB value used a million times would be terabytes. The text
//! of all messages together may grow to `max_bytes` (the server's `max_body_bytes`: no more
//! than a client could have sent literally); beyond that the request is a 400 naming
//! `variables`, and nothing larger is ever built.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

use crate::error::{FieldError, FieldPath, GatewayError};
use crate::schema::{ChatRequest, MessageContent};

/// Substitutes the request's variables into its messages' text, which may total at most
/// `max_bytes` afterwards.
pub(crate) fn apply(request: &mut ChatRequest, max_bytes: usize) -> Result<(), GatewayError> {
    let Some(variables) = request.variables.take() else {
        return Ok(());
    };
    // The messages may change: the client's body no longer says what the request is.
    request.source = None;
    let result = {
        let mut substitution = Substitution {
            values: rendered(&variables),
            budget: max_bytes,
            errors: Vec::new(),
        };
        substitution.messages(request).map(|()| substitution.errors)
    };
    request.variables = Some(variables);
    let errors = result?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(GatewayError::InvalidRequest(errors))
    }
}

/// Each variable's text: a string as it is, any other value as JSON (rendered once).
fn rendered(variables: &serde_json::Map<String, Value>) -> HashMap<&str, Cow<'_, str>> {
    variables
        .iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(text) => Cow::Borrowed(text.as_str()),
                other => Cow::Owned(other.to_string()),
            };
            (name.as_str(), text)
        })
        .collect()
}

/// The result would be larger than the budget.
struct TooLarge;

struct Substitution<'v> {
    values: HashMap<&'v str, Cow<'v, str>>,
    /// Bytes of message text still allowed.
    budget: usize,
    errors: Vec<FieldError>,
}

impl Substitution<'_> {
    fn messages(&mut self, request: &mut ChatRequest) -> Result<(), GatewayError> {
        let limit = self.budget;
        for (i, message) in request.messages.iter_mut().enumerate() {
            let path = FieldPath::key("messages").index(i).field("content");
            let result =
                match &mut message.content {
                    Some(MessageContent::Text(text)) => self.text(text, &path),
                    Some(MessageContent::Parts(parts)) => parts
                        .iter_mut()
                        .enumerate()
                        .try_for_each(|(j, part)| match &mut part.text {
                            Some(text) => self.text(text, &path.index(j).field("text")),
                            None => Ok(()),
                        }),
                    None => Ok(()),
                };
            result.map_err(|TooLarge| too_large(limit))?;
        }
        Ok(())
    }

    /// Substitutes into one text, charging its new length to the budget.
    fn text(&mut self, text: &mut String, path: &FieldPath) -> Result<(), TooLarge> {
        let budget = &mut self.budget;
        if !text.contains("{{") {
            return charge(budget, text.len());
        }
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("{{") {
            let Some(len) = rest[start + 2..].find("}}") else {
                break;
            };
            let name = rest[start + 2..start + 2 + len].trim();
            push(budget, &mut out, &rest[..start])?;
            match self.values.get(name) {
                Some(value) => push(budget, &mut out, value)?,
                None => {
                    self.errors.push(missing(name, path));
                    push(budget, &mut out, &rest[start..start + 4 + len])?;
                }
            }
            rest = &rest[start + 4 + len..];
        }
        push(budget, &mut out, rest)?;
        *text = out;
        Ok(())
    }
}

/// Appends `piece` if the budget allows it.
fn push(budget: &mut usize, out: &mut String, piece: &str) -> Result<(), TooLarge> {
    charge(budget, piece.len())?;
    out.push_str(piece);
    Ok(())
}

fn charge(budget: &mut usize, bytes: usize) -> Result<(), TooLarge> {
    *budget = budget.checked_sub(bytes).ok_or(TooLarge)?;
    Ok(())
}

fn missing(name: &str, path: &FieldPath) -> FieldError {
    FieldError::invalid(
        FieldPath::key("variables").field(name),
        format!("`{path}` uses the variable `{name}`, which `variables` does not define"),
    )
}

fn too_large(limit: usize) -> GatewayError {
    GatewayError::InvalidRequest(vec![FieldError::invalid(
        FieldPath::key("variables"),
        format!(
            "substituting `variables` would make the message text larger than {limit} bytes \
             (the server's max_body_bytes)"
        ),
    )])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(body: Value) -> ChatRequest {
        *crate::schema::parse_and_validate(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn variables_are_substituted_in_text_and_parts() {
        let mut r = request(json!({"model": "m/x", "variables": {"name": "Ann", "n": 3},
            "messages": [{"role": "system", "content": "Help {{ name }}."},
                {"role": "user", "content": [{"type": "text", "text": "{{n}} items for {{name}}"}]}]}));
        apply(&mut r, 1 << 20).unwrap();
        assert_eq!(r.messages[0].text(), "Help Ann.");
        assert_eq!(r.messages[1].text(), "3 items for Ann");
    }

    #[test]
    fn a_missing_variable_is_named() {
        let mut r = request(json!({"model": "m/x", "variables": {"a": "1"},
            "messages": [{"role": "user", "content": "{{a}} and {{b}}"}]}));
        let Err(GatewayError::InvalidRequest(errors)) = apply(&mut r, 1 << 20) else {
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
        apply(&mut r, 1 << 20).unwrap();
        assert_eq!(r.messages[0].text(), "fn() {{ }}");
    }

    #[test]
    fn the_expanded_text_is_bounded() {
        // 1,000 uses of a 1 KiB value would be 1 MiB; the budget is 64 KiB.
        let uses = "{{a}}".repeat(1000);
        let body = json!({"model": "m/x", "variables": {"a": "x".repeat(1024)},
            "messages": [{"role": "user", "content": uses}]});
        let mut r = request(body.clone());
        let Err(GatewayError::InvalidRequest(errors)) = apply(&mut r, 64 * 1024) else {
            panic!("expected a 400")
        };
        assert_eq!(errors[0].path.to_string(), "variables");
        assert!(
            errors[0].message.contains("65536 bytes"),
            "{}",
            errors[0].message
        );
        // Exactly at the budget is fine; the literal text of other messages counts too.
        let mut r = request(body.clone());
        apply(&mut r, 1000 * 1024).unwrap();
        assert_eq!(r.messages[0].text().len(), 1000 * 1024);
        let mut with_system = body;
        with_system["messages"] = json!([{"role": "system", "content": "hi"},
            {"role": "user", "content": uses}]);
        let mut r = request(with_system);
        assert!(apply(&mut r, 1000 * 1024).is_err());
    }
}
