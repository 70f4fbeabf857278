"""Clients as users run them, with nothing changed but the base URL: the official `openai` Python SDK
(sync, streaming, async) and plain `requests`, against the real gateway in front of real r1-edge servers."""

import asyncio

import openai
import pytest
import requests

SIMPLE = [{"role": "user", "content": "What is the capital of France?"}]
COMPLEX = [{"role": "user", "content": "Prove that the square root of 2 is irrational, step by step."}]


def client(stack):
    return openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)


def test_sdk_sync_with_route_headers(stack):
    raw = client(stack).chat.completions.with_raw_response.create(
        model="deepseek-r1", messages=SIMPLE, temperature=0, max_tokens=24
    )
    assert raw.headers["x-r1-route"] == "edge"
    assert raw.headers["x-r1-route-reason"] == "below_edge_max"
    assert raw.headers["x-request-id"]
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == "r1-edge-mini"
    assert "Paris" in completion.choices[0].message.content
    assert completion.usage.completion_tokens > 0


def test_sdk_streaming_equals_non_streaming(stack):
    c = client(stack)
    for messages, route in ((SIMPLE, "edge"), (COMPLEX, "center")):
        whole = c.chat.completions.create(model="deepseek-r1", messages=messages, temperature=0, max_tokens=24)
        with c.chat.completions.with_streaming_response.create(
            model="deepseek-r1",
            messages=messages,
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        ) as response:
            assert response.headers["x-r1-route"] == route
            assert response.headers["content-type"].startswith("text/event-stream")
            chunks = list(response.parse())
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text == whole.choices[0].message.content
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_sdk_async_concurrent(stack):
    async def main():
        c = openai.AsyncOpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
        questions = ["Hello!", "你好", "What is 7 plus 5?", "法国的首都是哪里？"]
        results = await asyncio.gather(
            *(
                c.chat.completions.create(
                    model="deepseek-r1", messages=[{"role": "user", "content": q}], temperature=0, max_tokens=16
                )
                for q in questions
            )
        )
        await c.close()
        return results

    results = asyncio.run(main())
    assert len(results) == 4
    assert all(r.choices[0].message.content for r in results)


def test_sdk_errors_are_typed(stack):
    with pytest.raises(openai.NotFoundError) as err:
        client(stack).chat.completions.create(model="gpt-9", messages=SIMPLE)
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client(stack).chat.completions.create(model="deepseek-r1", messages=[{"role": "wizard", "content": "hi"}])


def test_plain_requests_client(stack):
    r = requests.post(
        f"{stack.base_url}/chat/completions",
        json={"model": "deepseek-r1", "messages": SIMPLE, "temperature": 0, "max_tokens": 16},
        timeout=30,
    )
    assert r.status_code == 200
    assert r.headers["x-r1-route"] in ("edge", "center")
    assert r.json()["choices"][0]["message"]["content"]
    simple = requests.post(
        f"http://{stack.public}/v1/r1/inference", json={"prompt": "Hello!", "max_tokens": 16}, timeout=30
    )
    assert simple.status_code == 200, simple.text
    assert simple.json()["choices"][0]["message"]["content"]
    models = requests.get(f"{stack.base_url}/models", timeout=5).json()
    assert {"deepseek-r1", "r1-edge-mini"} <= {m["id"] for m in models["data"]}
