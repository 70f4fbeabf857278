"""LiteLLM as a client library: `litellm.completion(model="openai/deepseek-r1", api_base=..., api_key=...)`,
the way LiteLLM users reach any OpenAI-compatible server, streamed and not."""

import json
import os

# The price list ships with the package; without this LiteLLM fetches it from GitHub on import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
from conftest import MODEL  # noqa: E402

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def ask(stack, **kwargs):
    return litellm.completion(
        model=f"openai/{MODEL}", api_base=stack.base_url, api_key=stack.fresh_token(), num_retries=0, **kwargs
    )


def test_completion_and_stream(stack):
    answer = ask(stack, messages=QUESTION, temperature=0, max_tokens=24)
    text = answer.choices[0].message.content
    assert "Paris" in text
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.completion_tokens > 0

    stream = ask(stack, messages=QUESTION, temperature=0, max_tokens=24, stream=True)
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len([p for p in pieces if p]) > 1, pieces
    assert "".join(pieces) == text


def test_tool_call(stack):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    answer = ask(stack, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=tools)
    (call,) = answer.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    assert answer.choices[0].finish_reason == "tool_calls"
