"""The official `openai` Python SDK on the center path, unchanged but for the base URL: what the edge
cannot serve (tools, `response_format`, logprobs, `n > 1`, `max_tokens` over its cap) is routed to the
center by the gateway on its own, and answered there by the model server (the scripted stand-in in the
demo) through the task hand-off. Also the gateway's OpenAI parameter checks, as the SDK reports them."""

import json
from typing import Literal

import jsonschema
import openai
import pytest
from conftest import CENTER_MODEL, EDGE_MODEL, MODEL
from pydantic import BaseModel

SIMPLE = [{"role": "user", "content": "What is the weather in Paris?"}]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}


def sdk(stack) -> openai.OpenAI:
    """A client of a caller of its own (no sticky route from an earlier test)."""
    return openai.OpenAI(base_url=stack.base_url, api_key=stack.fresh_token(), max_retries=0)


def assert_center(headers, unmet: str):
    assert headers["x-r1-route"] == "center", dict(headers)
    assert headers["x-r1-route-reason"] == f"edge_cannot_serve_{unmet}", dict(headers)
    assert headers["x-r1-model"] == CENTER_MODEL


def assemble_tool_calls(chunks) -> dict:
    """The streamed `tool_calls` fragments joined by their index: id, name and argument pieces."""
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for fragment in choice.delta.tool_calls or []:
                call = calls.setdefault(fragment.index, {"id": None, "type": None, "name": "", "arguments": ""})
                call["id"] = fragment.id or call["id"]
                call["type"] = fragment.type or call["type"]
                if fragment.function is not None:
                    call["name"] += fragment.function.name or ""
                    call["arguments"] += fragment.function.arguments or ""
    return calls


def test_streamed_tool_call_assembles_by_index(stack):
    with sdk(stack).chat.completions.with_streaming_response.create(
        model=MODEL, messages=SIMPLE, tools=[WEATHER], stream=True
    ) as response:
        assert_center(response.headers, "tools")
        chunks = list(response.parse())
    calls = assemble_tool_calls(chunks)
    assert list(calls) == [0], calls
    call = calls[0]
    assert call["id"] and call["type"] == "function"
    assert call["name"] == "get_weather"
    arguments = json.loads(call["arguments"])
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert {c.model for c in chunks} == {MODEL}, "the name the client asked for"
    assert len({c.id for c in chunks}) == 1


def test_tool_call_then_the_tool_result_round_trip(stack):
    c = sdk(stack)
    raw = c.chat.completions.with_raw_response.create(model=MODEL, messages=SIMPLE, tools=[WEATHER])
    assert_center(raw.headers, "tools")
    completion = raw.parse()
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    # The next turn carries the assistant's call and the tool's result, as every agent loop sends it.
    follow_up = c.chat.completions.create(
        model=MODEL,
        messages=[
            *SIMPLE,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "unit": "celsius"}'},
        ],
        tools=[WEATHER],
        tool_choice="none",
    )
    assert follow_up.choices[0].message.content
    assert follow_up.choices[0].finish_reason == "stop"


class City(BaseModel):
    name: str
    country: str


class Forecast(BaseModel):
    city: City
    temperature: float
    unit: Literal["celsius", "fahrenheit"]
    sunny: bool
    warnings: list[str]


def test_structured_output_parse_with_a_pydantic_model(stack):
    raw = sdk(stack).chat.completions.with_raw_response.parse(
        model=MODEL, messages=SIMPLE, response_format=Forecast
    )
    assert_center(raw.headers, "response_format")
    completion = raw.parse()
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Forecast), completion
    assert isinstance(parsed.city, City)
    assert parsed.unit in ("celsius", "fahrenheit")


def test_json_schema_response_format_streams_a_valid_document(stack):
    schema = Forecast.model_json_schema()
    with sdk(stack).chat.completions.with_streaming_response.create(
        model=MODEL,
        messages=SIMPLE,
        response_format={"type": "json_schema", "json_schema": {"name": "forecast", "schema": schema}},
        stream=True,
    ) as response:
        assert_center(response.headers, "response_format")
        chunks = list(response.parse())
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    jsonschema.validate(json.loads(content), schema)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1, "streamed in pieces"


def test_logprobs_with_top_logprobs(stack):
    c = sdk(stack)
    raw = c.chat.completions.with_raw_response.create(model=MODEL, messages=SIMPLE, logprobs=True, top_logprobs=2)
    assert_center(raw.headers, "logprobs")
    completion = raw.parse()
    content = completion.choices[0].logprobs.content
    assert content, completion
    assert "".join(entry.token for entry in content) == completion.choices[0].message.content
    for entry in content:
        assert entry.logprob <= 0
        assert bytes(entry.bytes).decode() == entry.token
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob

    stream = c.chat.completions.create(model=MODEL, messages=SIMPLE, logprobs=True, top_logprobs=2, stream=True)
    entries = [e for chunk in stream for ch in chunk.choices if ch.logprobs for e in ch.logprobs.content or []]
    assert entries and all(len(e.top_logprobs) == 2 for e in entries)


def test_n_choices(stack):
    c = sdk(stack)
    raw = c.chat.completions.with_raw_response.create(model=MODEL, messages=SIMPLE, n=2)
    assert_center(raw.headers, "n")
    completion = raw.parse()
    assert [ch.index for ch in completion.choices] == [0, 1]
    assert all(ch.message.content and ch.finish_reason == "stop" for ch in completion.choices)

    texts: dict[int, str] = {}
    for chunk in c.chat.completions.create(model=MODEL, messages=SIMPLE, n=2, stream=True):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert sorted(texts) == [0, 1] and all(texts.values()), texts


def test_max_tokens_over_the_edge_cap_goes_to_the_center(stack):
    # The edge's model card says it generates at most 1024 tokens; the gateway learned it.
    raw = sdk(stack).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=2048
    )
    assert raw.http_response.status_code == 200
    assert_center(raw.headers, "max_tokens")
    assert raw.parse().choices[0].message.content


def test_the_answer_names_the_model_asked_for_and_the_header_the_pool(stack):
    c = sdk(stack)
    edge = c.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8, temperature=0
    )
    assert (edge.headers["x-r1-route"], edge.headers["x-r1-model"]) == ("edge", EDGE_MODEL)
    assert edge.parse().model == MODEL
    center = c.chat.completions.with_raw_response.create(model=MODEL, messages=SIMPLE, n=2)
    assert (center.headers["x-r1-route"], center.headers["x-r1-model"]) == ("center", CENTER_MODEL)
    assert center.parse().model == MODEL


def test_out_of_range_parameters_are_refused_as_openai_does(stack):
    c = sdk(stack)
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model=MODEL, messages=SIMPLE, temperature=5)
    assert (err.value.param, err.value.code) == ("temperature", "decimal_above_max_value")
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model=MODEL, messages=SIMPLE, stream_options={"include_usage": True})
    assert err.value.param == "stream_options"
    assert err.value.status_code == 400
