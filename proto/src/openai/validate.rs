//! The request checks OpenAI's API makes before any model sees a chat request, with its codes: a value
//! out of range, or a parameter that only means something beside another, is a 400 naming it —
//! never forwarded to a model server to be clamped, ignored or crash on.

use serde_json::Value;

use super::ChatCompletionRequest;

/// Most choices OpenAI's API gives one request.
pub const MAX_N: u32 = 128;
/// Most alternatives per token in `top_logprobs`.
pub const MAX_TOP_LOGPROBS: u64 = 20;

/// Why a request is invalid: the parameter, OpenAI's code for it, and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The parameter at fault.
    pub param: &'static str,
    /// OpenAI's code (`decimal_above_max_value`, `integer_below_min_value`, `invalid_value`, …).
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Invalid {
    fn new(param: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            param,
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn range(param: &'static str, value: Option<f64>, min: f64, max: f64) -> Result<(), Invalid> {
    match value {
        Some(v) if v.is_nan() || v < min => Err(Invalid::new(
            param,
            "decimal_below_min_value",
            format!("Invalid '{param}': decimal below minimum value. Expected a value >= {min}, but got {v} instead."),
        )),
        Some(v) if v > max => Err(Invalid::new(
            param,
            "decimal_above_max_value",
            format!("Invalid '{param}': decimal above maximum value. Expected a value <= {max}, but got {v} instead."),
        )),
        _ => Ok(()),
    }
}

fn at_least_one(param: &'static str, value: Option<u32>) -> Result<(), Invalid> {
    match value {
        Some(0) => Err(Invalid::new(
            param,
            "integer_below_min_value",
            format!("Invalid '{param}': integer below minimum value. Expected a value >= 1, but got 0 instead."),
        )),
        _ => Ok(()),
    }
}

/// Checks `request` as OpenAI's API does; `Err` names the first parameter at fault.
pub fn validate(request: &ChatCompletionRequest) -> Result<(), Invalid> {
    range("temperature", request.temperature, 0.0, 2.0)?;
    range("top_p", request.top_p, 0.0, 1.0)?;
    range("presence_penalty", request.presence_penalty, -2.0, 2.0)?;
    range("frequency_penalty", request.frequency_penalty, -2.0, 2.0)?;
    at_least_one("max_tokens", request.max_tokens)?;
    at_least_one("max_completion_tokens", request.max_completion_tokens)?;
    at_least_one("n", request.n)?;
    if let Some(n) = request.n
        && n > MAX_N
    {
        return Err(Invalid::new(
            "n",
            "integer_above_max_value",
            format!("Invalid 'n': integer above maximum value. Expected a value <= {MAX_N}, but got {n} instead."),
        ));
    }
    if request.stream_options.is_some() && !request.is_stream() {
        return Err(Invalid::new(
            "stream_options",
            "invalid_value",
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        ));
    }
    let extra = &request.extra;
    let logprobs = match extra.get("logprobs") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(on)) => *on,
        Some(_) => {
            return Err(Invalid::new(
                "logprobs",
                "invalid_type",
                "Invalid type for 'logprobs': expected a boolean.",
            ));
        }
    };
    match extra.get("top_logprobs") {
        None | Some(Value::Null) => {}
        Some(value) => {
            let Some(k) = value.as_u64() else {
                return Err(Invalid::new(
                    "top_logprobs",
                    "invalid_type",
                    "Invalid type for 'top_logprobs': expected an integer from 0 to 20.",
                ));
            };
            if k > MAX_TOP_LOGPROBS {
                return Err(Invalid::new(
                    "top_logprobs",
                    "integer_above_max_value",
                    format!(
                        "Invalid 'top_logprobs': integer above maximum value. Expected a value <= {MAX_TOP_LOGPROBS}, but got {k} instead."
                    ),
                ));
            }
            if !logprobs {
                return Err(Invalid::new(
                    "top_logprobs",
                    "invalid_value",
                    "'top_logprobs' is only allowed when 'logprobs' is true.",
                ));
            }
        }
    }
    check_tool_choice(extra)?;
    if let Some(Value::Object(format)) = extra.get("response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("text" | "json_object") => {}
            Some("json_schema") => {
                if !format.get("json_schema").is_some_and(Value::is_object) {
                    return Err(Invalid::new(
                        "response_format.json_schema",
                        "missing_required_parameter",
                        "Missing required parameter: 'response_format.json_schema'.",
                    ));
                }
            }
            _ => {
                return Err(Invalid::new(
                    "response_format.type",
                    "invalid_value",
                    "Invalid value for 'response_format.type': expected one of 'text', 'json_object', 'json_schema'.",
                ));
            }
        }
    }
    match extra.get("logit_bias") {
        None | Some(Value::Null) => {}
        Some(Value::Object(bias)) => {
            for (token, value) in bias {
                if token.parse::<u32>().is_err() {
                    return Err(Invalid::new(
                        "logit_bias",
                        "invalid_value",
                        format!("Invalid 'logit_bias': `{token}` is not a token id."),
                    ));
                }
                if !value.as_f64().is_some_and(|b| (-100.0..=100.0).contains(&b)) {
                    return Err(Invalid::new(
                        "logit_bias",
                        "invalid_value",
                        format!("Invalid 'logit_bias': the bias of token {token} must be a number from -100 to 100."),
                    ));
                }
            }
        }
        Some(_) => {
            return Err(Invalid::new(
                "logit_bias",
                "invalid_type",
                "Invalid type for 'logit_bias': expected an object of token ids to biases.",
            ));
        }
    }
    Ok(())
}

/// `tool_choice`: `none`, `auto`, `required`, or a function named in `tools`; only with `tools` (but
/// `none`).
fn check_tool_choice(extra: &serde_json::Map<String, Value>) -> Result<(), Invalid> {
    let choice = match extra.get("tool_choice") {
        None | Some(Value::Null) => return Ok(()),
        Some(choice) => choice,
    };
    let names: Vec<&str> = extra
        .get("tools")
        .and_then(Value::as_array)
        .map(|tools| tools.iter().filter_map(|t| t["function"]["name"].as_str()).collect())
        .unwrap_or_default();
    let has_tools = extra
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    let invalid = |message: String| Invalid::new("tool_choice", "invalid_value", message);
    match choice {
        Value::String(mode) if mode == "none" => Ok(()),
        Value::String(mode) if mode == "auto" || mode == "required" => {
            if has_tools {
                Ok(())
            } else {
                Err(invalid(
                    "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified."
                        .to_owned(),
                ))
            }
        }
        Value::String(mode) => Err(invalid(format!(
            "Invalid value for 'tool_choice': '{mode}'. Supported values are: 'none', 'auto', and 'required'."
        ))),
        Value::Object(forced) => {
            let name = forced
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            match name {
                Some(name) if names.contains(&name) => Ok(()),
                Some(name) => Err(invalid(format!(
                    "Invalid value for 'tool_choice': no function named '{name}' was specified in the 'tools' parameter."
                ))),
                None => Err(invalid(
                    "Invalid value for 'tool_choice': expected {\"type\": \"function\", \"function\": {\"name\": ...}}.".to_owned(),
                )),
            }
        }
        _ => Err(invalid(
            "Invalid type for 'tool_choice': expected a string or an object.".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(extra: Value) -> Result<(), Invalid> {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        validate(&serde_json::from_value(body).unwrap())
    }

    #[test]
    fn what_openai_accepts_passes() {
        for ok in [
            json!({}),
            json!({"temperature": 0, "top_p": 1, "presence_penalty": -2, "frequency_penalty": 2, "n": 128}),
            json!({"stream": true, "stream_options": {"include_usage": true}}),
            json!({"logprobs": true, "top_logprobs": 20}),
            json!({"logprobs": false}),
            json!({"logit_bias": {"50256": -100}}),
            json!({"max_tokens": 1, "max_completion_tokens": 1}),
            json!({"tool_choice": "none"}),
            json!({"tool_choice": {"type": "function", "function": {"name": "f"}}, "tools": [{"type": "function", "function": {"name": "f"}}]}),
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}),
        ] {
            assert_eq!(check(ok.clone()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn what_openai_refuses_is_named_with_its_code() {
        for (bad, param, code) in [
            (json!({"temperature": 9e99}), "temperature", "decimal_above_max_value"),
            (json!({"temperature": -0.5}), "temperature", "decimal_below_min_value"),
            (json!({"top_p": 7}), "top_p", "decimal_above_max_value"),
            (
                json!({"presence_penalty": 2.5}),
                "presence_penalty",
                "decimal_above_max_value",
            ),
            (
                json!({"frequency_penalty": -3}),
                "frequency_penalty",
                "decimal_below_min_value",
            ),
            (json!({"n": 1000}), "n", "integer_above_max_value"),
            (json!({"n": 0}), "n", "integer_below_min_value"),
            (json!({"max_tokens": 0}), "max_tokens", "integer_below_min_value"),
            (
                json!({"max_completion_tokens": 0}),
                "max_completion_tokens",
                "integer_below_min_value",
            ),
            (
                json!({"stream_options": {"include_usage": true}}),
                "stream_options",
                "invalid_value",
            ),
            (
                json!({"stream": false, "stream_options": {}}),
                "stream_options",
                "invalid_value",
            ),
            (json!({"top_logprobs": 3}), "top_logprobs", "invalid_value"),
            (
                json!({"logprobs": true, "top_logprobs": 21}),
                "top_logprobs",
                "integer_above_max_value",
            ),
            (json!({"logprobs": "yes"}), "logprobs", "invalid_type"),
            (json!({"logit_bias": {"a": 1}}), "logit_bias", "invalid_value"),
            (json!({"logit_bias": {"1": 101}}), "logit_bias", "invalid_value"),
            (json!({"tool_choice": "auto"}), "tool_choice", "invalid_value"),
            (
                json!({"tool_choice": "bogus", "tools": [{"type": "function", "function": {"name": "f"}}]}),
                "tool_choice",
                "invalid_value",
            ),
            (
                json!({"tool_choice": {"type": "function", "function": {"name": "g"}}, "tools": [{"type": "function", "function": {"name": "f"}}]}),
                "tool_choice",
                "invalid_value",
            ),
            (
                json!({"tool_choice": {}, "tools": [{"type": "function", "function": {"name": "f"}}]}),
                "tool_choice",
                "invalid_value",
            ),
            (
                json!({"response_format": {"type": "json_schema"}}),
                "response_format.json_schema",
                "missing_required_parameter",
            ),
            (
                json!({"response_format": {"type": "yaml"}}),
                "response_format.type",
                "invalid_value",
            ),
        ] {
            let err = check(bad.clone()).unwrap_err();
            assert_eq!((err.param, err.code), (param, code), "{bad}: {err}");
        }
    }
}
