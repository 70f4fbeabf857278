"""OpenAI's Responses API with the official `openai` SDK (`responses.create`, `responses.stream`,
`responses.parse`) and Anthropic's Messages API with the official `anthropic` SDK (`messages.create`,
`messages.stream`), unchanged but for the base URL and the key, on the edge (a short prompt) and the
center (a hard prompt, or what the edge cannot serve) through the in-process task hand-off. The center
is the demo's R1 stand-in: it reasons before it answers, and that reasoning arrives as a `reasoning`
item (Responses) or `thinking` blocks (Messages)."""

import json
from typing import Literal

import anthropic
import jsonschema
import openai
import pytest
from conftest import CENTER_MODEL, MODEL
from pydantic import BaseModel

HARD = "Prove that the square root of 2 is irrational, step by step."
ROUTES = [("Hello!", "edge"), (HARD, "center")]

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
WEATHER_FUNCTION = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": WEATHER_SCHEMA,
}
WEATHER_TOOL = {"name": "get_weather", "description": "The current weather in a city.", "input_schema": WEATHER_SCHEMA}
ASK_WEATHER = "What is the weather in Paris?"


def oai(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=stack.fresh_token(), max_retries=0)


def claude(stack, key: str | None = None) -> anthropic.Anthropic:
    # The SDK appends /v1/messages to the base URL and sends the key as `x-api-key`.
    return anthropic.Anthropic(base_url=f"http://{stack.public}", api_key=key or stack.fresh_token(), max_retries=0)


# --- Responses API ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt,route", ROUTES)
def test_responses_create_on_both_pools(stack, prompt, route):
    raw = oai(stack).responses.with_raw_response.create(model=MODEL, input=prompt, max_output_tokens=48)
    assert raw.headers["x-r1-route"] == route, dict(raw.headers)
    response = raw.parse()
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.model == MODEL
    assert response.status in ("completed", "incomplete")
    assert response.output_text
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    kinds = [item.type for item in response.output]
    if route == "center":
        # R1's reasoning first, as a reasoning item with its text, then the message.
        assert kinds == ["reasoning", "message"], kinds
        assert response.output[0].content[0].type == "reasoning_text"
        assert response.output[0].content[0].text
    else:
        assert kinds[-1] == "message", kinds


@pytest.mark.parametrize("prompt,route", ROUTES)
def test_responses_stream_events_match_the_final_response(stack, prompt, route):
    c = oai(stack)
    events = list(c.responses.create(model=MODEL, input=prompt, max_output_tokens=48, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] in ("response.completed", "response.incomplete"), kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert {e.response.id for e in events if hasattr(e, "response")} == {final.id}
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and text == final.output_text
    if route == "center":
        reasoning = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
        assert reasoning and reasoning == final.output[0].content[0].text
    # The SDK's own accumulator checks the event order and item identities on the way.
    with c.responses.stream(model=MODEL, input=prompt, max_output_tokens=48) as stream:
        streamed = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        assert stream.get_final_response().output_text == streamed


def test_responses_function_call_streamed_and_not_then_its_output(stack):
    c = oai(stack)
    raw = c.responses.with_raw_response.create(model=MODEL, input=ASK_WEATHER, tools=[WEATHER_FUNCTION])
    assert raw.headers["x-r1-route"] == "center"
    assert raw.headers["x-r1-route-reason"] == "edge_cannot_serve_tools"
    response = raw.parse()
    (call,) = [item for item in response.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), WEATHER_SCHEMA)

    with c.responses.stream(model=MODEL, input=ASK_WEATHER, tools=[WEATHER_FUNCTION]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    (streamed,) = [item for item in final.output if item.type == "function_call"]
    assert deltas == streamed.arguments
    jsonschema.validate(json.loads(streamed.arguments), WEATHER_SCHEMA)

    # The agent loop's next turn: the call and its output go back as input items.
    follow_up = c.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": ASK_WEATHER},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature": 21}'},
        ],
        tools=[WEATHER_FUNCTION],
        tool_choice="none",
    )
    assert follow_up.output_text
    assert [i.type for i in follow_up.output if i.type == "function_call"] == []


class Forecast(BaseModel):
    city: str
    temperature: float
    unit: Literal["celsius", "fahrenheit"]


def test_responses_parse_with_a_pydantic_model(stack):
    raw = oai(stack).responses.with_raw_response.parse(model=MODEL, input=ASK_WEATHER, text_format=Forecast)
    assert raw.headers["x-r1-route-reason"] == "edge_cannot_serve_response_format"
    parsed = raw.parse().output_parsed
    assert isinstance(parsed, Forecast)


def test_responses_refuses_what_needs_stored_state(stack):
    with pytest.raises(openai.BadRequestError) as refused:
        oai(stack).responses.create(model=MODEL, input="hi", previous_response_id="resp_123")
    assert refused.value.param == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as refused:
        oai(stack).responses.create(model=MODEL, input="hi", tools=[{"type": "web_search"}])
    assert refused.value.param == "tools"


# --- Anthropic Messages API ------------------------------------------------------------------------


@pytest.mark.parametrize("prompt,route", ROUTES)
def test_messages_create_on_both_pools(stack, prompt, route):
    raw = claude(stack).messages.with_raw_response.create(
        model=MODEL, max_tokens=48, messages=[{"role": "user", "content": prompt}]
    )
    assert raw.headers["x-r1-route"] == route, dict(raw.headers)
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.model == MODEL
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    kinds = [block.type for block in message.content]
    if route == "center":
        assert kinds == ["thinking", "text"], kinds
        assert message.content[0].thinking
    else:
        assert kinds == ["text"], kinds
    assert message.content[-1].text


@pytest.mark.parametrize("prompt,route", ROUTES)
def test_messages_stream_matches_the_final_message(stack, prompt, route):
    with claude(stack).messages.stream(
        model=MODEL, max_tokens=48, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and text == final.content[-1].text
    assert final.model == MODEL
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    if route == "center":
        assert final.content[0].type == "thinking" and final.content[0].thinking


def test_messages_thinking_disabled_leaves_the_reasoning_out(stack):
    message = claude(stack).messages.create(
        model=CENTER_MODEL,
        max_tokens=48,
        thinking={"type": "disabled"},
        messages=[{"role": "user", "content": HARD}],
    )
    assert [b.type for b in message.content] == ["text"]


def test_messages_tool_use_streamed_and_not_then_its_result(stack):
    c = claude(stack)
    ask = [{"role": "user", "content": ASK_WEATHER}]
    raw = c.messages.with_raw_response.create(model=MODEL, max_tokens=256, messages=ask, tools=[WEATHER_TOOL])
    assert raw.headers["x-r1-route-reason"] == "edge_cannot_serve_tools"
    message = raw.parse()
    assert message.stop_reason == "tool_use"
    (use,) = [b for b in message.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.id
    jsonschema.validate(use.input, WEATHER_SCHEMA)

    with c.messages.stream(model=MODEL, max_tokens=256, messages=ask, tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_message()
    (streamed,) = [b for b in final.content if b.type == "tool_use"]
    jsonschema.validate(streamed.input, WEATHER_SCHEMA)
    assert final.stop_reason == "tool_use"

    follow_up = c.messages.create(
        model=MODEL,
        max_tokens=256,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "none"},
        messages=[
            *ask,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C, sunny"}]},
        ],
    )
    assert follow_up.stop_reason == "end_turn"
    assert follow_up.content[-1].type == "text" and follow_up.content[-1].text


def test_messages_errors_are_anthropic_shaped(stack):
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude(stack).messages.create(
            model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}], extra_body={"frobnicate": 1}
        )
    assert refused.value.body["type"] == "error"
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert "frobnicate" in refused.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        claude(stack).messages.create(model="no-such-model", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.AuthenticationError) as refused:
        claude(stack, key="not-a-token").messages.create(
            model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.body["error"]["type"] == "authentication_error"


def test_embeddings_without_a_declaring_pool_is_a_404_naming_the_key(stack):
    # The demo's pools are chat models: neither declares `capabilities.embeddings`.
    with pytest.raises(openai.NotFoundError) as refused:
        oai(stack).embeddings.create(model=MODEL, input="hello")
    assert refused.value.code == "embeddings_not_configured"
    assert "edge.capabilities.embeddings" in refused.value.message
