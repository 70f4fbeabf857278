"""LangChain's `ChatOpenAI` (langchain-openai) pointed at the gateway, as an agent framework user
configures it: `base_url`, the JWT as `api_key`, model `deepseek-r1`. Plain chat is answered by the edge;
tools and structured output go to the center on their own."""

from typing import Literal

import pytest
from conftest import MODEL
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field


def chat_model(stack, **kwargs) -> ChatOpenAI:
    return ChatOpenAI(base_url=stack.base_url, api_key=stack.fresh_token(), model=MODEL, max_retries=0, **kwargs)


def test_invoke_and_stream_agree(stack):
    # stream_usage: ask for `stream_options.include_usage` (on by default only for api.openai.com).
    llm = chat_model(stack, temperature=0, max_tokens=24, stream_usage=True)
    question = [HumanMessage("What is the capital of France?")]
    answer = llm.invoke(question)
    assert isinstance(answer, AIMessage)
    assert "Paris" in answer.content
    assert answer.response_metadata["model_name"] == MODEL
    assert answer.usage_metadata["output_tokens"] > 0

    chunks = list(llm.stream(question))
    assert len(chunks) > 1 and all(isinstance(c, AIMessageChunk) for c in chunks)
    whole = sum(chunks[1:], chunks[0])
    assert whole.content == answer.content
    assert whole.usage_metadata is not None
    assert whole.usage_metadata["output_tokens"] == answer.usage_metadata["output_tokens"]


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
    """The current weather in a city."""
    return f"21 degrees {unit} in {city}"


def test_bind_tools_gives_tool_calls(stack):
    llm = chat_model(stack).bind_tools([get_weather])
    answer = llm.invoke("What is the weather in Paris?")
    assert answer.tool_calls, answer
    (call,) = answer.tool_calls
    assert call["name"] == "get_weather" and call["id"]
    assert set(call["args"]) == {"city", "unit"} and call["args"]["unit"] in ("celsius", "fahrenheit")
    # The tool runs on the call as LangChain hands it over.
    assert "degrees" in get_weather.invoke(call).content

    streamed = list(llm.stream("What is the weather in Lyon?"))
    whole = sum(streamed[1:], streamed[0])
    assert [c["name"] for c in whole.tool_calls] == ["get_weather"]
    assert set(whole.tool_calls[0]["args"]) == {"city", "unit"}


class Person(BaseModel):
    """Someone mentioned in the text."""

    name: str = Field(description="the person's name")
    age: int
    role: Literal["author", "reader"]
    tags: list[str]


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output(stack, method):
    llm = chat_model(stack).with_structured_output(Person, method=method)
    person = llm.invoke("Ada, 36, wrote the first program.")
    assert isinstance(person, Person), person
    assert person.role in ("author", "reader")
