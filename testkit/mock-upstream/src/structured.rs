//! What a request's parameters make of the scripted answer: a JSON document for `response_format`
//! (a minimal instance of its schema), a tool call's arguments, and `logprobs` entries.

use serde_json::{Map, Value, json};

/// The pieces (tokens) a JSON document or a tool call's arguments stream in.
pub(crate) const JSON_PIECES: usize = 3;

/// The arguments of a scripted tool call when they fit the tool's parameters, streamed in these pieces.
pub(crate) const DEFAULT_ARGUMENTS: [&str; 3] = ["{\"query\": ", "\"mock", "\"}"];

/// Deepest nesting an instance is built to (a recursive `$ref` stops there with `null`).
const MAX_DEPTH: usize = 32;

/// The document a `response_format` asks for, or `None` for plain text (`text`, or none given):
/// `json_object` gets `{"answer": "mock"}`, `json_schema` a minimal instance of its schema.
pub(crate) fn response_document(request_extra: &Map<String, Value>) -> Option<String> {
    let format = request_extra.get("response_format")?;
    match format.get("type").and_then(Value::as_str)? {
        "json_object" => Some(json!({"answer": "mock"}).to_string()),
        "json_schema" => {
            let schema = format
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"}));
            Some(instance(&schema).to_string())
        }
        _ => None,
    }
}

/// A tool call's arguments, in pieces: [`DEFAULT_ARGUMENTS`] when `{"query": "mock"}` is valid for the
/// tool's `parameters` (none given, no required property but a string `query`), else a minimal instance
/// of them.
pub(crate) fn tool_arguments(parameters: Option<&Value>) -> Vec<String> {
    match parameters {
        Some(schema) if !default_arguments_fit(schema, schema) => split(&instance(schema).to_string(), JSON_PIECES),
        _ => DEFAULT_ARGUMENTS.iter().map(|piece| (*piece).to_owned()).collect(),
    }
}

/// Whether `{"query": "mock"}` is valid under `schema` (as far as a tool's parameters go).
fn default_arguments_fit(schema: &Value, root: &Value) -> bool {
    let schema = resolve(schema, root);
    let Some(object) = schema.as_object() else {
        return true; // `true` or anything that is not a schema object: every value fits
    };
    if object.get("type").is_some_and(|t| !type_names(t).contains(&"object")) {
        return false;
    }
    let required_fit = object
        .get("required")
        .and_then(Value::as_array)
        .is_none_or(|required| required.iter().all(|name| name == "query"));
    let query = object.get("properties").and_then(|p| p.get("query"));
    let query_fits = match query {
        Some(query) => {
            let query = resolve(query, root);
            query.get("type").is_none_or(|t| type_names(t).contains(&"string"))
                && query.get("enum").is_none()
                && query.get("const").is_none()
                && query.get("pattern").is_none()
        }
        None => object.get("additionalProperties") != Some(&Value::Bool(false)),
    };
    required_fit && query_fits
}

/// A minimal document valid under `schema`: objects with their required properties, strings
/// `"mock"`, numbers 0 (or their bound), booleans `true`, arrays of `minItems` elements, enums and
/// consts their first value; `$ref`s into the document (`#/$defs/…`, `#/definitions/…`) followed.
pub(crate) fn instance(schema: &Value) -> Value {
    build(schema, schema, 0)
}

fn build(schema: &Value, root: &Value, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    let schema = resolve(schema, root);
    let Some(object) = schema.as_object() else {
        return Value::Null;
    };
    if let Some(value) = object.get("const") {
        return value.clone();
    }
    if let Some(first) = object.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = object.get(key).and_then(Value::as_array) {
            // The first alternative that is not `null` (pydantic writes `Optional[X]` as X | null).
            let pick = options
                .iter()
                .find(|option| resolve(option, root).get("type") != Some(&json!("null")))
                .or(options.first());
            return pick.map_or(Value::Null, |option| build(option, root, depth + 1));
        }
    }
    if let Some(parts) = object.get("allOf").and_then(Value::as_array) {
        let mut merged = Map::new();
        for part in parts {
            match build(part, root, depth + 1) {
                Value::Object(fields) => merged.extend(fields),
                other if parts.len() == 1 => return other,
                _ => {}
            }
        }
        return Value::Object(merged);
    }
    let kind = match object.get("type") {
        Some(types) => type_names(types).into_iter().find(|t| *t != "null").unwrap_or("null"),
        None if object.contains_key("properties") || object.contains_key("required") => "object",
        None if object.contains_key("items") || object.contains_key("prefixItems") => "array",
        None => "null",
    };
    match kind {
        "object" => {
            let properties = object.get("properties");
            let required = object.get("required").and_then(Value::as_array);
            let fields = required.into_iter().flatten().filter_map(Value::as_str).map(|name| {
                let property = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                (name.to_owned(), build(property, root, depth + 1))
            });
            Value::Object(fields.collect())
        }
        "array" => {
            let min = object.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let prefix = object.get("prefixItems").and_then(Value::as_array);
            let items = object.get("items").unwrap_or(&Value::Null);
            let items = (0..min).map(|i| {
                let item = prefix.and_then(|p| p.get(i as usize)).unwrap_or(items);
                build(item, root, depth + 1)
            });
            Value::Array(items.collect())
        }
        "string" => Value::String(string(object)),
        "integer" => json!(integer(object)),
        "number" => number(object),
        "boolean" => Value::Bool(true),
        _ => Value::Null,
    }
}

/// `"mock"`, or a value of the string's `format`, fitted to `minLength`/`maxLength`.
fn string(schema: &Map<String, Value>) -> String {
    let mut text = match schema.get("format").and_then(Value::as_str) {
        Some("date-time") => "1970-01-01T00:00:00Z".to_owned(),
        Some("date") => "1970-01-01".to_owned(),
        Some("time") => "00:00:00Z".to_owned(),
        Some("uuid") => "00000000-0000-0000-0000-000000000000".to_owned(),
        Some("email") => "mock@example.com".to_owned(),
        Some("uri") => "https://example.com/mock".to_owned(),
        _ => "mock".to_owned(),
    };
    let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    while text.chars().count() < min {
        text.push('k');
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        text = text.chars().take(max as usize).collect();
    }
    text
}

/// 0, moved inside `minimum`/`exclusiveMinimum` or `maximum`/`exclusiveMaximum` when they exclude it.
fn integer(schema: &Map<String, Value>) -> i64 {
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    if let Some(min) = bound("minimum").filter(|m| *m > 0.0) {
        return min.ceil() as i64;
    }
    if let Some(min) = bound("exclusiveMinimum").filter(|m| *m >= 0.0) {
        return min.floor() as i64 + 1;
    }
    if let Some(max) = bound("maximum").filter(|m| *m < 0.0) {
        return max.floor() as i64;
    }
    if let Some(max) = bound("exclusiveMaximum").filter(|m| *m <= 0.0) {
        return max.ceil() as i64 - 1;
    }
    0
}

fn number(schema: &Map<String, Value>) -> Value {
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    if let Some(min) = bound("minimum").filter(|m| *m > 0.0) {
        return json!(min);
    }
    if let Some(min) = bound("exclusiveMinimum").filter(|m| *m >= 0.0) {
        return json!(min + 1.0);
    }
    if let Some(max) = bound("maximum").filter(|m| *m < 0.0) {
        return json!(max);
    }
    if let Some(max) = bound("exclusiveMaximum").filter(|m| *m <= 0.0) {
        return json!(max - 1.0);
    }
    json!(0)
}

/// `type` as a list of names (`"string"` or `["string", "null"]`).
fn type_names(types: &Value) -> Vec<&str> {
    match types {
        Value::String(name) => vec![name.as_str()],
        Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// `schema`, or what its `$ref` points at in `root` (followed up to a few times).
fn resolve<'a>(mut schema: &'a Value, root: &'a Value) -> &'a Value {
    for _ in 0..8 {
        let Some(target) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| root.pointer(pointer))
        else {
            break;
        };
        schema = target;
    }
    schema
}

/// `text` in at most `parts` non-empty pieces of about equal length, split between characters.
pub(crate) fn split(text: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(parts.max(1)).max(1);
    chars.chunks(size).map(|piece| piece.iter().collect()).collect()
}

/// One `logprobs.content` entry for `token`, with `top` alternatives (the token itself first, as
/// OpenAI lists them, most likely first).
pub(crate) fn logprob_entry(token: &str, top: usize) -> Value {
    const CHOSEN: f64 = -0.0625;
    let alternatives = (0..top).map(|i| {
        let alternative = if i == 0 { token.to_owned() } else { format!("alt{i}") };
        json!({
            "token": alternative,
            "logprob": CHOSEN - 2.0 * i as f64,
            "bytes": alternative.as_bytes(),
        })
    });
    json!({
        "token": token,
        "logprob": CHOSEN,
        "bytes": token.as_bytes(),
        "top_logprobs": alternatives.collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_instances_have_the_required_properties_only() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 18},
                "score": {"type": "number"},
                "ok": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "two": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
                "unit": {"enum": ["celsius", "fahrenheit"]},
                "kind": {"const": "fixed"},
                "maybe": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 6}]},
                "nested": {"type": "object", "properties": {"x": {"type": ["integer", "null"]}}, "required": ["x"]},
                "optional": {"type": "string"},
            },
            "required": ["name", "age", "score", "ok", "tags", "two", "unit", "kind", "maybe", "nested"],
        });
        assert_eq!(
            instance(&schema),
            json!({
                "name": "mock", "age": 18, "score": 0, "ok": true, "tags": [], "two": [0, 0],
                "unit": "celsius", "kind": "fixed", "maybe": "mockkk", "nested": {"x": 0},
            })
        );
    }

    #[test]
    fn refs_into_defs_are_followed_as_pydantic_writes_them() {
        // `class Person(BaseModel): name: str; address: Address; pets: list[Pet] = []` in pydantic 2.
        let schema = json!({
            "$defs": {
                "Address": {"properties": {"city": {"title": "City", "type": "string"}}, "required": ["city"], "title": "Address", "type": "object"},
                "Pet": {"properties": {"kind": {"$ref": "#/$defs/Kind"}}, "required": ["kind"], "type": "object"},
                "Kind": {"enum": ["cat", "dog"], "title": "Kind", "type": "string"},
            },
            "properties": {
                "name": {"title": "Name", "type": "string"},
                "address": {"$ref": "#/$defs/Address"},
                "pets": {"items": {"$ref": "#/$defs/Pet"}, "type": "array", "minItems": 1},
                "born": {"format": "date-time", "type": "string"},
                "old": {"allOf": [{"$ref": "#/definitions/Old"}]},
            },
            "definitions": {"Old": {"type": "object", "properties": {"v": {"type": "boolean"}}, "required": ["v"]}},
            "required": ["name", "address", "pets", "born", "old"],
            "title": "Person",
            "type": "object",
        });
        assert_eq!(
            instance(&schema),
            json!({
                "name": "mock", "address": {"city": "mock"}, "pets": [{"kind": "cat"}],
                "born": "1970-01-01T00:00:00Z", "old": {"v": true},
            })
        );
        // A recursive model ends in `null` instead of overflowing.
        let recursive = json!({"$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}, "required": ["next"]}}, "$ref": "#/$defs/Node"});
        assert!(instance(&recursive).to_string().contains("null"));
    }

    #[test]
    fn response_formats_give_documents_and_text_gives_none() {
        let extra = |format: Value| {
            let mut map = Map::new();
            map.insert("response_format".to_owned(), format);
            map
        };
        assert_eq!(response_document(&Map::new()), None);
        assert_eq!(response_document(&extra(json!({"type": "text"}))), None);
        assert_eq!(
            response_document(&extra(json!({"type": "json_object"}))).as_deref(),
            Some(r#"{"answer":"mock"}"#)
        );
        let schema = json!({"type": "json_schema", "json_schema": {"name": "r", "strict": true, "schema": {
            "type": "object", "properties": {"result": {"type": "integer"}}, "required": ["result"]}}});
        assert_eq!(response_document(&extra(schema)).as_deref(), Some(r#"{"result":0}"#));
    }

    #[test]
    fn tool_arguments_are_the_default_unless_the_parameters_refuse_it() {
        let default: Vec<String> = DEFAULT_ARGUMENTS.iter().map(|p| (*p).to_owned()).collect();
        for fits in [
            None,
            Some(json!({})),
            Some(json!({"type": "object", "properties": {"query": {"type": "string"}}})),
            Some(json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]})),
        ] {
            assert_eq!(tool_arguments(fits.as_ref()), default, "{fits:?}");
        }
        let weather = json!({"type": "object", "properties": {
            "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"]});
        let pieces = tool_arguments(Some(&weather));
        assert_eq!(pieces.len(), JSON_PIECES);
        let arguments: Value = serde_json::from_str(&pieces.concat()).unwrap();
        assert_eq!(arguments, json!({"city": "mock", "unit": "celsius"}));
        let closed = json!({"type": "object", "properties": {}, "additionalProperties": false});
        assert_eq!(tool_arguments(Some(&closed)).concat(), "{}");
    }

    #[test]
    fn split_keeps_every_character_in_order() {
        assert_eq!(split(r#"{"a":"é"}"#, 3), [r#"{"a"#, r#"":""#, r#"é"}"#]);
        assert_eq!(split("ab", 3), ["a", "b"]);
        assert_eq!(split("", 3), Vec::<String>::new());
    }

    #[test]
    fn logprob_entries_have_the_openai_shape() {
        let entry = logprob_entry("ok", 2);
        assert_eq!(entry["token"], "ok");
        assert_eq!(entry["bytes"], json!([111, 107]));
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0]["token"], "ok");
        assert_eq!(top[0]["logprob"], entry["logprob"]);
        assert!(top[1]["logprob"].as_f64() < top[0]["logprob"].as_f64());
        assert_eq!(logprob_entry("ok", 0)["top_logprobs"], json!([]));
    }
}
