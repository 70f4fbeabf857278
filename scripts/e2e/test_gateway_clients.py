"""Clients as users run them, with nothing changed but the base URL (and the key: a JWT): the official
`openai` Python SDK (sync, streaming, async) and plain `requests` + PyJWT as in the DeepSeek R1 guide,
against the real gateway in front of real r1-edge servers and the in-process center hand-off."""

import asyncio

import openai
import pytest
import requests

SIMPLE = [{"role": "user", "content": "What is the capital of France?"}]
COMPLEX = [{"role": "user", "content": "Prove that the square root of 2 is irrational, step by step."}]


def client(stack):
    return openai.OpenAI(base_url=stack.base_url, api_key=stack.token, max_retries=0)


def test_sdk_sync_with_route_headers(stack):
    raw = client(stack).chat.completions.with_raw_response.create(
        model="deepseek-r1", messages=SIMPLE, temperature=0, max_tokens=24
    )
    assert raw.headers["x-r1-route"] == "edge"
    assert raw.headers["x-r1-route-reason"] == "below_edge_max"
    assert raw.headers["x-request-id"]
    assert raw.headers["x-r1-model"] == "r1-edge-mini"
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == "deepseek-r1", "the name the client asked for"
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
        c = openai.AsyncOpenAI(base_url=stack.base_url, api_key=stack.token, max_retries=0)
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
        headers=stack.headers,
        json={"model": "deepseek-r1", "messages": SIMPLE, "temperature": 0, "max_tokens": 16},
        timeout=30,
    )
    assert r.status_code == 200
    assert r.headers["x-r1-route"] in ("edge", "center")
    assert r.json()["choices"][0]["message"]["content"]
    simple = requests.post(
        f"http://{stack.public}/v1/r1/inference",
        headers=stack.headers,
        json={"prompt": "Hello!", "max_tokens": 16, "temperature": 0, "top_p": 1, "stop": ["\n\n"]},
        timeout=30,
    )
    assert simple.status_code == 200, simple.text
    assert simple.json()["choices"][0]["message"]["content"]
    models = requests.get(f"{stack.base_url}/models", headers=stack.headers, timeout=5).json()
    assert {"deepseek-r1", "r1-edge-mini"} <= {m["id"] for m in models["data"]}


def test_without_a_valid_token_nothing_is_answered(stack):
    from conftest import token

    with pytest.raises(openai.AuthenticationError) as err:
        openai.OpenAI(base_url=stack.base_url, api_key="not-a-jwt", max_retries=0).chat.completions.create(
            model="deepseek-r1", messages=SIMPLE
        )
    assert err.value.code == "invalid_api_key"
    for headers in ({}, {"Authorization": f"Bearer {token(ttl=-120)}"}):  # none, expired
        r = requests.post(
            f"{stack.base_url}/chat/completions",
            headers=headers,
            json={"model": "deepseek-r1", "messages": SIMPLE},
            timeout=10,
        )
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"]["type"] == "authentication_error"


def test_async_task_through_the_hand_off(stack):
    r = requests.post(
        f"{stack.base_url}/tasks",
        headers=stack.headers,
        json={"request": {"model": "deepseek-r1", "messages": COMPLEX, "temperature": 0, "max_tokens": 16}},
        timeout=10,
    )
    assert r.status_code == 202, r.text
    url = f"http://{stack.public}{r.headers['location']}"
    import time

    deadline = time.monotonic() + 60
    while True:
        task = requests.get(url, headers=stack.headers, timeout=10).json()
        if task["status"] in ("succeeded", "failed"):
            break
        assert time.monotonic() < deadline, task
        time.sleep(0.1)
    assert task["status"] == "succeeded", task
    assert task["result"]["choices"][0]["message"]["content"]
    # Another caller does not see it.
    from conftest import token

    other = requests.get(url, headers={"Authorization": f"Bearer {token('someone-else')}"}, timeout=10)
    assert other.status_code == 404
