"""Protocol checks ported from vLLM's OpenAI-server tests (github.com/vllm-project/vllm, mostly
tests/entrypoints/openai/), run against the gateway with the official `openai` SDK or raw HTTP.

Each test names the vLLM test it comes from. vLLM asserts things about one model server; here each check
is pointed at the path that serves it — plain chat at the edge (r1-edge, the shipped model), tools /
`response_format` / logprobs / `n > 1` at the center (routed there by the gateway; the demo's center is
the scripted stand-in for the big-model API) — and asserts what OpenAI's API does. Where vLLM asserts
model quality (different samples, a right answer) the port asserts the protocol part only."""

import json

import jsonschema
import openai
import pytest
import requests
from conftest import MODEL

# The edge answers these (short, simple, plain chat).
EDGE_MESSAGES = [
    {"role": "system", "content": "you are a helpful assistant"},
    {"role": "user", "content": "what is 1+1?"},
]
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "default": "Vienna"},
                    "country": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "options": {"$ref": "#/$defs/WeatherOptions"},
                },
                "required": ["country", "unit"],
                "$defs": {
                    "WeatherOptions": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                    }
                },
            },
        },
    }
]
WEATHER_MESSAGES = [
    {"role": "user", "content": "Hi! How are you doing today?"},
    {"role": "assistant", "content": "I'm doing well! How can I help you?"},
    {"role": "user", "content": "Can you tell me what the current weather is in Berlin, in fahrenheit?"},
]
# vLLM's `sample_json_schema` fixture (tests/entrypoints/conftest.py), an employee profile.
EMPLOYEE_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "skills": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 3},
        "work_history": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "company": {"type": "string"},
                    "duration": {"type": "number"},
                    "position": {"type": "string"},
                },
                "required": ["company", "position"],
            },
        },
    },
    "required": ["name", "age", "skills", "work_history"],
}


EMPTY_TOOL = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
]


def sdk(stack) -> openai.OpenAI:
    """A client of a caller of its own: no earlier conversation made its routes sticky."""
    return openai.OpenAI(base_url=stack.base_url, api_key=stack.fresh_token(), max_retries=0)


def raw_stream(stack, body) -> tuple[requests.Response, list[str]]:
    """A streamed answer's SSE `data:` payloads, in order, as the bytes said them."""
    response = requests.post(
        f"{stack.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {stack.fresh_token()}"},
        json={"model": MODEL, "stream": True, **body},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    events = [e for e in response.text.split("\n\n") if e.strip() and not e.startswith(":")]
    assert all(e.startswith("data: ") for e in events), events
    return response, [e[len("data: ") :] for e in events]


def post(stack, body, **kwargs) -> requests.Response:
    return requests.post(
        f"{stack.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {stack.fresh_token()}", **kwargs.pop("headers", {})},
        timeout=60,
        **({"json": {"model": MODEL, **body}} if body is not None else {}),
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------------
# Streaming


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_chat_streaming
def test_chat_streaming(stack):
    c = sdk(stack)
    raw = c.chat.completions.with_raw_response.create(
        model=MODEL, messages=EDGE_MESSAGES, max_completion_tokens=10, temperature=0.0
    )
    assert raw.headers["x-r1-route"] == "edge"
    completion = raw.parse()
    output, stop_reason = completion.choices[0].message.content, completion.choices[0].finish_reason
    stream = c.chat.completions.create(
        model=MODEL, messages=EDGE_MESSAGES, max_completion_tokens=10, temperature=0.0, stream=True
    )
    pieces, finish_reason_count = [], 0
    for chunk in stream:
        delta = chunk.choices[0].delta
        if delta.role:
            assert delta.role == "assistant"
        if delta.content:
            pieces.append(delta.content)
        if chunk.choices[0].finish_reason is not None:
            finish_reason_count += 1
    # finish reason only in the last block
    assert finish_reason_count == 1
    assert chunk.choices[0].finish_reason == stop_reason
    assert "".join(pieces) == output


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_chat_streaming (the chunk contract its
# loop relies on: one id, one object type, the first delta carrying the role)
@pytest.mark.parametrize("route", ["edge", "center"])
def test_stream_chunks_share_id_object_created_and_model(stack, route):
    body = {"messages": FRANCE, "max_tokens": 8, "temperature": 0}
    if route == "center":
        body["logprobs"] = True
    response, events = raw_stream(stack, body)
    assert response.headers["x-r1-route"] == route
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["created"] for c in chunks} == {chunks[0]["created"]}
    assert {c["model"] for c in chunks} == {MODEL}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in ch["delta"] for c in chunks[1:] for ch in c["choices"] if ch["index"] == 0)


# vLLM: tests/entrypoints/openai/chat_completion/test_chat_error.py::test_chat_error_stream (a stream ends
# with `data: [DONE]`)
@pytest.mark.parametrize("route", ["edge", "center"])
def test_stream_ends_with_done(stack, route):
    body = {"messages": FRANCE, "max_tokens": 4}
    if route == "center":
        body["n"] = 2
    response, events = raw_stream(stack, body)
    assert response.headers["x-r1-route"] == route
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    for event in events[:-1]:
        assert isinstance(json.loads(event), dict)


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_chat_completion_stream_options
# (stream_options={"include_usage": False})
def test_stream_options_include_usage_false(stack):
    stream = sdk(stack).chat.completions.create(
        model=MODEL,
        messages=FRANCE,
        max_completion_tokens=10,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": False},
    )
    chunks = list(stream)
    assert chunks and all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks), "no usage-only chunk"


# vLLM: tests/entrypoints/openai/completion/test_completion.py::test_completion_stream_options
# (stream_options={} — usage not asked for)
def test_stream_options_empty(stack):
    chunks = list(
        sdk(stack).chat.completions.create(
            model=MODEL, messages=FRANCE, max_tokens=5, temperature=0.0, stream=True, stream_options={}
        )
    )
    assert chunks and all(chunk.usage is None for chunk in chunks)


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_chat_completion_stream_options
# (stream_options={"include_usage": True}: usage null until one last chunk with `choices: []`)
@pytest.mark.parametrize("route", ["edge", "center"])
def test_stream_options_include_usage_true(stack, route):
    extra = {"n": 2} if route == "center" else {}
    with sdk(stack).chat.completions.with_streaming_response.create(
        model=MODEL,
        messages=FRANCE,
        max_completion_tokens=10,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
        **extra,
    ) as response:
        assert response.headers["x-r1-route"] == route
        chunks = list(response.parse())
    *content, final = chunks
    assert all(chunk.usage is None for chunk in content)
    assert any(ch.finish_reason for chunk in content for ch in chunk.choices)
    assert final.choices == []
    assert final.usage.prompt_tokens > 0 and final.usage.completion_tokens > 0
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_chat_completion_stream_options
# (stream=False with stream_options is a 400)
@pytest.mark.parametrize("stream_options", [{"include_usage": None}, {"include_usage": True}])
def test_stream_options_without_stream_is_refused(stack, stream_options):
    with pytest.raises(openai.BadRequestError) as err:
        sdk(stack).chat.completions.create(
            model=MODEL, messages=FRANCE, max_completion_tokens=10, stream=False, stream_options=stream_options
        )
    assert err.value.param == "stream_options"


# ---------------------------------------------------------------------------------------------------
# Lengths, stops, seeds


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_single_chat_session
def test_single_chat_session(stack):
    c = sdk(stack)
    messages = list(EDGE_MESSAGES)
    completion = c.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=5)
    assert completion.id is not None
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 5
    assert choice.message.role == "assistant"
    assert choice.message.content
    # multi-turn dialogue
    messages.append({"role": "assistant", "content": choice.message.content})
    messages.append({"role": "user", "content": "express your result in json"})
    follow_up = c.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=5)
    assert follow_up.choices[0].message.content is not None


# vLLM: tests/entrypoints/openai/completion/test_completion.py::test_single_completion (max_tokens=5 →
# finish_reason "length", 5 completion tokens)
@pytest.mark.parametrize("route", ["edge", "center"])
def test_max_tokens_cuts_with_finish_reason_length(stack, route):
    extra = {"logprobs": True} if route == "center" else {}
    raw = sdk(stack).chat.completions.with_raw_response.create(
        model=MODEL, messages=FRANCE, max_tokens=1, temperature=0.0, **extra
    )
    assert raw.headers["x-r1-route"] == route
    completion = raw.parse()
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 1
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 1


# vLLM: tests/detokenizer/test_stop_strings.py::test_stop_basic (a stop string ends the answer before
# it, with finish_reason "stop"), over the HTTP API, streamed and not
def test_stop_string(stack):
    c = sdk(stack)
    whole = c.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=24, temperature=0.0)
    text = whole.choices[0].message.content
    words = text.split()
    assert len(words) >= 3, text
    stop = words[2]
    expected = text[: text.index(stop)]
    stopped = c.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=24, temperature=0.0, stop=[stop])
    assert stopped.choices[0].message.content == expected
    assert stopped.choices[0].finish_reason == "stop"
    chunks = list(
        c.chat.completions.create(
            model=MODEL, messages=FRANCE, max_tokens=24, temperature=0.0, stop=[stop], stream=True
        )
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == expected
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["stop"]


# vLLM: tests/samplers/test_seeded_generate.py::test_random_sample_with_seed (the same seed samples the
# same tokens at a high temperature; different seeds differ)
def test_seeded_sampling_is_deterministic(stack):
    c = sdk(stack)
    poem = [{"role": "user", "content": "Write a poem about the sea."}]

    def sample(seed) -> str:
        raw = c.chat.completions.with_raw_response.create(
            model=MODEL, messages=poem, max_tokens=12, temperature=1.5, seed=seed
        )
        assert raw.headers["x-r1-route"] == "edge"
        return raw.parse().choices[0].message.content

    first = {seed: sample(seed) for seed in (100, 200, 300)}
    assert sample(100) == first[100]
    assert sample(200) == first[200]
    assert len(set(first.values())) > 1, first


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_long_seed
@pytest.mark.parametrize("seed", [-(2**63) - 1, 2**63])
def test_long_seed(stack, seed):
    with pytest.raises(openai.BadRequestError):
        sdk(stack).chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": "You are a helpful assistant."}],
            temperature=0,
            seed=seed,
        )


# ---------------------------------------------------------------------------------------------------
# Logprobs


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_no_logprobs_chat
def test_no_logprobs_chat(stack):
    raw = sdk(stack).chat.completions.with_raw_response.create(
        model=MODEL, messages=EDGE_MESSAGES, max_completion_tokens=5, temperature=0.0, logprobs=False
    )
    assert raw.headers["x-r1-route"] == "edge", "logprobs=False is plain chat"
    assert raw.parse().choices[0].logprobs is None


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_zero_logprobs_chat and
# ::test_some_logprobs_chat
@pytest.mark.parametrize("top_logprobs", [0, 5])
def test_top_logprobs_count(stack, top_logprobs):
    raw = sdk(stack).chat.completions.with_raw_response.create(
        model=MODEL,
        messages=EDGE_MESSAGES,
        max_completion_tokens=5,
        temperature=0.0,
        logprobs=True,
        top_logprobs=top_logprobs,
    )
    assert raw.headers["x-r1-route"] == "center"
    choice = raw.parse().choices[0]
    assert choice.logprobs is not None
    assert choice.logprobs.content is not None
    assert len(choice.logprobs.content[0].top_logprobs) == top_logprobs
    # vLLM's test_structured_outputs_choice_chat_logprobs: -9999.0 is the least OpenAI returns
    assert all(item.logprob >= -9999.0 for item in choice.logprobs.content[0].top_logprobs)


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_too_many_chat_logprobs
def test_too_many_chat_logprobs(stack):
    c = sdk(stack)
    with pytest.raises(openai.BadRequestError):
        stream = c.chat.completions.create(
            model=MODEL, messages=EDGE_MESSAGES, max_completion_tokens=10, logprobs=True, top_logprobs=21, stream=True
        )
        for _ in stream:
            pass
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(
            model=MODEL, messages=EDGE_MESSAGES, max_completion_tokens=10, logprobs=True, top_logprobs=30
        )
    assert err.value.param == "top_logprobs"
    # the server still works afterwards
    completion = c.chat.completions.create(model=MODEL, messages=EDGE_MESSAGES, max_completion_tokens=10)
    assert completion.choices[0].message.content is not None


# ---------------------------------------------------------------------------------------------------
# n


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_chat_completion_n_parameter_non_streaming
# (not its "all different" check: the center is a scripted stand-in)
def test_n_parameter_non_streaming(stack):
    raw = sdk(stack).chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the opposite of big?"}],
        max_completion_tokens=20,
        temperature=0.7,
        n=3,
    )
    assert raw.headers["x-r1-route"] == "center"
    completion = raw.parse()
    assert len(completion.choices) == 3
    for i, choice in enumerate(completion.choices):
        assert choice.index == i
        assert choice.message.content


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_chat_completion_n_parameter_streaming
# and tests/entrypoints/openai/completion/test_completion.py::test_parallel_streaming (one finish per choice)
def test_n_parameter_streaming(stack):
    stream = sdk(stack).chat.completions.create(
        model=MODEL, messages=FRANCE, max_completion_tokens=15, temperature=0.7, n=2, stream=True
    )
    pieces: dict[int, list[str]] = {0: [], 1: []}
    finishes: dict[int, int] = {0: 0, 1: 0}
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                pieces[choice.index].append(choice.delta.content)
            if choice.finish_reason is not None:
                finishes[choice.index] += 1
    assert pieces[0] and pieces[1], pieces
    assert finishes == {0: 1, 1: 1}


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_chat_completion_n_with_seed
def test_n_with_seed(stack):
    completion = sdk(stack).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_completion_tokens=10,
        temperature=0.8,
        n=2,
        seed=42,
    )
    assert [choice.index for choice in completion.choices] == [0, 1]
    assert all(choice.message.content for choice in completion.choices)


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_chat_completion_n_equals_1
def test_n_equals_1(stack):
    raw = sdk(stack).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_completion_tokens=10, temperature=0.7, n=1
    )
    assert raw.headers["x-r1-route"] == "edge", "n=1 is plain chat"
    completion = raw.parse()
    assert len(completion.choices) == 1
    assert completion.choices[0].index == 0
    assert completion.choices[0].message.content is not None


# ---------------------------------------------------------------------------------------------------
# response_format


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_response_format_json_object
def test_response_format_json_object(stack):
    for _ in range(2):
        resp = sdk(stack).chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": 'what is 1+1? please respond with a JSON object, the format is {"result": 2}',
                }
            ],
            response_format={"type": "json_object"},
        )
        content = resp.choices[0].message.content
        assert content is not None
        assert isinstance(json.loads(content), dict)


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_response_format_json_schema (the
# schema requires `result`, so the document must carry it)
def test_response_format_json_schema(stack):
    schema = {"type": "object", "properties": {"result": {"type": "integer"}}, "required": ["result"]}
    resp = sdk(stack).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": 'what is 1+1? The format is "result": 2'}],
        response_format={"type": "json_schema", "json_schema": {"name": "foo_test", "schema": schema}},
    )
    content = resp.choices[0].message.content
    assert content is not None
    loaded = json.loads(content)
    jsonschema.validate(loaded, schema)
    assert isinstance(loaded["result"], int)


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_structured_outputs_json_chat (the
# employee-profile schema), through `response_format`
def test_structured_output_employee_schema(stack):
    resp = sdk(stack).chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": f"Give an example JSON for an employee profile that fits this schema: {EMPLOYEE_SCHEMA}",
            }
        ],
        max_completion_tokens=1000,
        response_format={"type": "json_schema", "json_schema": {"name": "employee", "schema": EMPLOYEE_SCHEMA}},
    )
    jsonschema.validate(json.loads(resp.choices[0].message.content), EMPLOYEE_SCHEMA)


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_response_format_text
def test_response_format_text(stack):
    raw = sdk(stack).chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "what is 1+1?"}],
        max_completion_tokens=10,
        response_format={"type": "text"},
    )
    assert raw.headers["x-r1-route"] == "edge", "text is plain chat"
    assert raw.parse().choices[0].message.content is not None


# vLLM: tests/entrypoints/openai/chat_completion/test_chat_error.py::test_json_schema_response_format_missing_schema
def test_json_schema_response_format_missing_schema(stack):
    with pytest.raises(openai.BadRequestError) as err:
        sdk(stack).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}], response_format={"type": "json_schema"}
        )
    assert "response_format" in (err.value.param or "")


# ---------------------------------------------------------------------------------------------------
# Tools


# vLLM: tests/entrypoints/openai/chat_completion/test_completion_with_function_calling.py::test_function_tool_use
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    "tool_choice", ["auto", "required", {"type": "function", "function": {"name": "get_current_weather"}}]
)
def test_function_tool_use(stack, stream, tool_choice):
    c = sdk(stack)
    if not stream:
        completion = c.chat.completions.create(
            messages=WEATHER_MESSAGES, model=MODEL, tools=WEATHER_TOOLS, tool_choice=tool_choice
        )
        assert completion.choices[0].message.tool_calls
        assert completion.choices[0].message.reasoning_content, "R1 thinks first (DeepSeek's reasoning_content)"
        call = completion.choices[0].message.tool_calls[0]
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOLS[0]["function"]["parameters"])
    else:
        output, reasoning = [], []
        for chunk in c.chat.completions.create(
            messages=WEATHER_MESSAGES, model=MODEL, tools=WEATHER_TOOLS, tool_choice=tool_choice, stream=True
        ):
            if chunk.choices:
                if getattr(chunk.choices[0].delta, "reasoning_content", None):
                    reasoning.append(chunk.choices[0].delta.reasoning_content)
                if chunk.choices[0].delta.tool_calls:
                    output.extend(chunk.choices[0].delta.tool_calls)
        assert output
        assert reasoning


# vLLM: tests/entrypoints/openai/chat_completion/test_completion_with_function_calling.py::test_named_tool_use
# (not its "a different name and age the second time": the center is scripted)
def test_named_tool_use(stack):
    c = sdk(stack)
    messages = [
        {"role": "system", "content": "you are a helpful assistant"},
        {"role": "user", "content": "Give an example JSON for an employee profile using the specified tool."},
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "dummy_function_name",
                "description": "This is a dummy function",
                "parameters": EMPLOYEE_SCHEMA,
            },
        }
    ]
    tool_choice = {"type": "function", "function": {"name": "dummy_function_name"}}
    completion = c.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_completion_tokens=1000,
        tools=tools,
        temperature=0.0,
        tool_choice=tool_choice,
    )
    message = completion.choices[0].message
    assert not message.content
    json_string = message.tool_calls[0].function.arguments
    jsonschema.validate(json.loads(json_string), EMPLOYEE_SCHEMA)

    messages.append({"role": "assistant", "content": json_string})
    messages.append({"role": "user", "content": "Give me another one with a different name and age"})
    output, finish_reason_count = [], 0
    for chunk in c.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_completion_tokens=1000,
        tools=tools,
        tool_choice=tool_choice,
        temperature=0.0,
        stream=True,
    ):
        delta = chunk.choices[0].delta
        if delta.role:
            assert delta.role == "assistant"
        assert delta.content is None or len(delta.content) == 0
        if delta.tool_calls and delta.tool_calls[0].function.arguments:
            output.append(delta.tool_calls[0].function.arguments)
        if chunk.choices[0].finish_reason is not None:
            finish_reason_count += 1
    # finish reason only in the last block
    assert finish_reason_count == 1
    jsonschema.validate(json.loads("".join(output)), EMPLOYEE_SCHEMA)


# vLLM: tests/entrypoints/openai/chat_completion/test_completion_with_function_calling.py::test_no_args_tool_call
@pytest.mark.parametrize("arguments", ["{}", ""])
def test_no_args_tool_call(stack, arguments):
    c = sdk(stack)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_current_time",
                "description": "Get the current date and time. No parameters needed.",
                "parameters": {"type": "object", "properties": {}, "required": []},
            },
        }
    ]
    messages = [
        {"role": "system", "content": "You are a helpful assistant. Always use the available tools when relevant."},
        {"role": "user", "content": "What time is it now?"},
    ]
    shared = {"model": MODEL, "temperature": 0.0, "seed": 42}
    response = c.chat.completions.create(**shared, messages=messages, tools=tools, tool_choice="auto")
    message = response.choices[0].message
    assert message.tool_calls, "the scripted center always calls an offered tool"
    tool_call = message.tool_calls[0]
    assert tool_call.function.name == "get_current_time"
    tool_call.function.arguments = arguments
    messages.append(message)
    messages.append({"role": "tool", "tool_call_id": tool_call.id, "content": "2026-01-01T00:00:00"})
    final = c.chat.completions.create(**shared, messages=messages, max_completion_tokens=128)
    assert final.choices[0].message.content and final.choices[0].message.content.strip()


# vLLM: tests/entrypoints/openai/chat_completion/test_tool_choice_null.py
#       ::test_null_tool_choice_defaults_to_auto_like_an_absent_one
def test_null_tool_choice_is_auto(stack):
    tools = EMPTY_TOOL
    messages = [{"role": "user", "content": "what is the weather in Paris?"}]
    omitted = post(stack, {"messages": messages, "tools": tools})
    explicit_null = post(stack, {"messages": messages, "tools": tools, "tool_choice": None})
    for response in (omitted, explicit_null):
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


# vLLM: tests/entrypoints/openai/chat_completion/test_tool_choice_null.py::test_explicit_none_tool_choice_is_untouched
def test_tool_choice_none_answers_in_text(stack):
    tools = EMPTY_TOOL
    raw = sdk(stack).chat.completions.with_raw_response.create(
        model=MODEL, messages=FRANCE, tools=tools, tool_choice="none", max_tokens=8
    )
    # The edge serves tools it is told not to call.
    assert raw.headers["x-r1-route"] == "edge"
    message = raw.parse().choices[0].message
    assert message.content and not message.tool_calls


# vLLM: tests/entrypoints/openai/chat_completion/test_completion_with_function_calling.py
#       ::test_inconsistent_tool_choice_and_tools (a named tool_choice without tools)
def test_named_tool_choice_without_tools_is_refused(stack):
    with pytest.raises(openai.BadRequestError) as err:
        sdk(stack).chat.completions.create(
            model=MODEL,
            messages=FRANCE,
            max_completion_tokens=10,
            tool_choice={"type": "function", "function": {"name": "dummy_function_name"}},
        )
    assert err.value.param == "tool_choice"


# vLLM: tests/entrypoints/openai/chat_completion/test_completion_with_function_calling.py
#       ::test_inconsistent_tool_choice_and_tools (a named function that is not among the tools; an empty
#       tool_choice)
@pytest.mark.parametrize("tool_choice", [{"type": "function", "function": {"name": "nondefined_function_name"}}, {}])
def test_inconsistent_tool_choice_and_tools(stack, tool_choice):
    tools = [{"type": "function", "function": {"name": "dummy_function_name", "parameters": EMPLOYEE_SCHEMA}}]
    with pytest.raises(openai.BadRequestError):
        sdk(stack).chat.completions.create(
            model=MODEL, messages=FRANCE, max_completion_tokens=10, tools=tools, tool_choice=tool_choice
        )


# vLLM: tests/entrypoints/openai/chat_completion/test_tool_choice_null.py::test_invalid_tool_choice_is_still_rejected
@pytest.mark.parametrize("tool_choice, with_tools", [("bogus", True), ("auto", False)])
def test_invalid_tool_choice_is_refused(stack, tool_choice, with_tools):
    body = {"messages": FRANCE, "tool_choice": tool_choice, "max_tokens": 4}
    if with_tools:
        body["tools"] = EMPTY_TOOL
    response = post(stack, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "tool_choice"


# ---------------------------------------------------------------------------------------------------
# Request validation and bodies


# vLLM: tests/entrypoints/openai/chat_completion/test_chat_logit_bias_validation.py
#       ::test_chat_logit_bias_non_integer_key and ::test_chat_logit_bias_non_numeric_value
@pytest.mark.parametrize(
    "logit_bias, named", [({"not_a_token_id": 50}, "not_a_token_id"), ({"1": "not_a_number"}, "1")]
)
def test_logit_bias_validation(stack, logit_bias, named):
    with pytest.raises(openai.BadRequestError) as err:
        sdk(stack).chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=5, logit_bias=logit_bias)
    assert err.value.status_code == 400
    assert "logit_bias" in str(err.value) and named in str(err.value)
    assert err.value.param == "logit_bias"


# vLLM: tests/entrypoints/openai/chat_completion/test_non_object_body_validation.py
#       ::test_chat_completion_request_rejects_non_object_body
@pytest.mark.parametrize("payload", ["this is not valid json{{{", '["not", "an", "object"]', "42", "null"])
def test_non_object_body_is_a_400(stack, payload):
    response = post(stack, None, data=payload, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


# vLLM: tests/entrypoints/openai/basic/test_basic.py::test_request_wrong_content_type
def test_request_wrong_content_type(stack):
    with pytest.raises(openai.APIStatusError) as err:
        sdk(stack).chat.completions.create(
            messages=FRANCE,
            model=MODEL,
            max_tokens=10,
            extra_headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert err.value.status_code == 400
    assert err.value.code == "invalid_content_type"


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_extra_fields_allowed
def test_extra_fields_allowed(stack):
    resp = sdk(stack).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "what is 1+1?", "extra_field": "0"}],
        temperature=0,
        seed=0,
        max_tokens=8,
    )
    assert resp.choices[0].message.content is not None


# vLLM: tests/entrypoints/openai/chat_completion/test_chat.py::test_complex_message_content and
# ::test_custom_role (a text-part list answers as the same text given as a string)
def test_complex_message_content(stack):
    c = sdk(stack)
    text = "what is 1+1?"
    answers = []
    for content in (text, [{"type": "text", "text": text}]):
        raw = c.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": content}], temperature=0, seed=0, max_tokens=8
        )
        assert raw.headers["x-r1-route"] == "edge"
        answers.append(raw.parse().choices[0].message.content)
    assert answers[0] and answers[0] == answers[1]


# vLLM: tests/entrypoints/openai/models/test_models.py::test_retrieve_unknown_model (here: chat with a model
# the gateway does not serve)
def test_unknown_model_is_a_404(stack):
    with pytest.raises(openai.NotFoundError) as err:
        sdk(stack).chat.completions.create(model="this-model-does-not-exist", messages=FRANCE)
    assert "does not exist" in str(err.value)
    assert err.value.code == "model_not_found"


# vLLM: tests/entrypoints/openai/models/test_models.py::test_check_models
def test_check_models(stack):
    models = sdk(stack).models.list()
    ids = [model.id for model in models.data]
    assert MODEL in ids
    assert all(model.object == "model" for model in models.data)
    assert len(ids) == len(set(ids))


# vLLM: tests/entrypoints/openai/basic/test_basic.py::test_check_health (the gateway's /healthz and /readyz)
def test_check_health(stack):
    for path in ("/healthz", "/readyz"):
        assert requests.get(f"http://{stack.public}{path}", timeout=5).status_code == 200, path


# ---------------------------------------------------------------------------------------------------
# The legacy completions API (/v1/completions)


# vLLM: tests/entrypoints/openai/completion/test_completion.py::test_single_completion
def test_single_completion(stack):
    raw = sdk(stack).completions.with_raw_response.create(
        model=MODEL, prompt="Hello, my name is", max_tokens=5, temperature=0.0
    )
    assert raw.headers["x-r1-route"] == "edge"
    completion = raw.parse()
    assert completion.id is not None
    assert completion.object == "text_completion"
    assert completion.choices is not None and len(completion.choices) == 1
    choice = completion.choices[0]
    assert len(choice.text) >= 5
    assert choice.finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 5


# vLLM: tests/entrypoints/openai/completion/test_completion.py::test_completion_streaming (not its check that
# the finishing chunk carries text: OpenAI's may be empty)
def test_completion_streaming(stack):
    c = sdk(stack)
    prompt = "What is an LLM?"
    single = c.completions.create(model=MODEL, prompt=prompt, max_tokens=5, temperature=0.0)
    with c.completions.with_streaming_response.create(
        model=MODEL, prompt=prompt, max_tokens=5, temperature=0.0, stream=True
    ) as response:
        assert response.headers["x-r1-route"] == "edge"
        chunks = list(response.parse())
    finish_reason_count = sum(1 for chunk in chunks if chunk.choices[0].finish_reason is not None)
    # finish reason only in the last block
    assert finish_reason_count == 1
    assert chunks[-1].choices[0].finish_reason == "length"
    assert "".join(chunk.choices[0].text for chunk in chunks) == single.choices[0].text
    assert {chunk.id for chunk in chunks} == {chunks[0].id}


# vLLM: tests/entrypoints/openai/completion/test_completion.py::test_completion_stream_options
def test_completion_stream_options(stack):
    c = sdk(stack)
    prompt = "What is the capital of France?"
    for stream_options in ({"include_usage": False}, {}):
        for chunk in c.completions.create(
            model=MODEL, prompt=prompt, max_tokens=5, temperature=0.0, stream=True, stream_options=stream_options
        ):
            assert chunk.usage is None
    stream = iter(
        c.completions.create(
            model=MODEL,
            prompt=prompt,
            max_tokens=5,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    for chunk in stream:
        assert chunk.usage is None
        if chunk.choices[0].finish_reason is not None:
            final_chunk = next(stream)
            assert final_chunk.usage is not None
            assert final_chunk.usage.prompt_tokens > 0
            assert final_chunk.usage.completion_tokens > 0
            usage = final_chunk.usage
            assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
            assert final_chunk.choices == []
            break
    else:
        pytest.fail("no finishing chunk")
    assert next(stream, None) is None
    for stream_options in ({"include_usage": None}, {"include_usage": True}):
        with pytest.raises(openai.BadRequestError):
            c.completions.create(
                model=MODEL, prompt=prompt, max_tokens=5, temperature=0.0, stream=False, stream_options=stream_options
            )


# vLLM: tests/entrypoints/openai/completion/test_completion.py::test_no_logprobs
def test_completion_no_logprobs(stack):
    completion = sdk(stack).completions.create(
        model=MODEL, prompt="Hello, my name is", max_tokens=5, temperature=0.0, logprobs=None
    )
    assert completion.choices[0].logprobs is None


# vLLM: tests/entrypoints/openai/completion/test_completion.py::test_too_many_completion_logprobs (the
# gateway serves no completion logprobs at all, so any count is refused)
def test_too_many_completion_logprobs(stack):
    c = sdk(stack)
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model=MODEL, prompt="Hello, my name is", max_tokens=5, temperature=0.0, logprobs=21)
    with pytest.raises(openai.BadRequestError):
        for _ in c.completions.create(
            model=MODEL, prompt="Hello, my name is", max_tokens=5, temperature=0.0, logprobs=30, stream=True
        ):
            pass
    # the server still works afterwards
    completion = c.completions.create(model=MODEL, prompt="Hello, my name is", max_tokens=5, temperature=0.0)
    assert completion.choices[0].text and completion.choices[0].finish_reason in ("stop", "length")


# vLLM: tests/entrypoints/openai/completion/test_completion.py::test_parallel_no_streaming and
# ::test_parallel_streaming (n choices, each with its index and one finish; not their "all unique" and
# "different lengths" checks: the center is scripted)
def test_completion_parallel_sampling(stack):
    c = sdk(stack)
    n, max_tokens = 3, 50
    raw = c.completions.with_raw_response.create(
        model=MODEL, prompt="What is an LLM?", max_tokens=max_tokens, n=n, temperature=1.0, seed=42
    )
    assert raw.headers["x-r1-route"] == "center"
    completion = raw.parse()
    assert len(completion.choices) == n
    for idx, choice in enumerate(completion.choices):
        assert choice.index == idx
        assert choice.finish_reason is not None
        assert choice.text
    texts: list[list[str]] = [[] for _ in range(n)]
    finish_reason_count = 0
    for chunk in c.completions.create(
        model=MODEL, prompt="What is an LLM?", max_tokens=max_tokens, n=n, temperature=1.0, stream=True, seed=42
    ):
        texts[chunk.choices[0].index].append(chunk.choices[0].text)
        if chunk.choices[0].finish_reason is not None:
            finish_reason_count += 1
    assert finish_reason_count == n
    assert all(len(pieces) <= max_tokens + 1 and "".join(pieces) for pieces in texts), texts
