"""The legacy completions API with the official openai SDK, on both pools: the edge (a short prompt)
and the center through the in-process task hand-off (a hard prompt)."""

import openai


def client(stack):
    return openai.OpenAI(base_url=stack.base_url, api_key=stack.token, max_retries=0)


def test_completions_on_the_edge_and_through_the_hand_off(stack):
    c = client(stack)
    for prompt, route in (("Hello!", "edge"), ("Prove that the square root of 2 is irrational, step by step.", "center")):
        raw = c.completions.with_raw_response.create(model="deepseek-r1", prompt=prompt, temperature=0, max_tokens=32)
        assert raw.headers["x-r1-route"] == route
        completion = raw.parse()
        assert completion.object == "text_completion"
        assert completion.model == "deepseek-r1"
        assert completion.choices[0].text
        assert completion.usage.completion_tokens > 0
        pieces = list(
            c.completions.create(model="deepseek-r1", prompt=prompt, temperature=0, max_tokens=32, stream=True)
        )
        assert all(p.object == "text_completion" for p in pieces)
        assert "".join(p.choices[0].text for p in pieces if p.choices) == completion.choices[0].text


def test_what_a_chat_model_cannot_give_is_refused(stack):
    try:
        client(stack).completions.create(model="deepseek-r1", prompt="a", echo=True, max_tokens=4)
    except openai.BadRequestError as err:
        assert err.param == "echo"
    else:
        raise AssertionError("echo was accepted")
