"""The official `openai` Node SDK (scripts/e2e/node, pinned in its package.json and installed by
scripts/e2e.sh into the cache) against the same stack: chat, a stream with usage, tool calls whole,
streamed and through the SDK's stream helper, and a refused parameter."""

import json
import os
import pathlib
import shutil
import subprocess

import jsonschema
import pytest
from conftest import CENTER_MODEL, EDGE_MODEL, MODEL

SCRIPT = pathlib.Path(__file__).resolve().parent / "node" / "chat.cjs"
PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}


@pytest.fixture(scope="module")
def report(stack):
    modules = os.environ.get("R1_E2E_NODE_MODULES")
    assert modules and pathlib.Path(modules, "openai").is_dir(), (
        "the Node SDK is not installed: run the suite through scripts/e2e.sh (it sets R1_E2E_NODE_MODULES)"
    )
    node = shutil.which("node")
    assert node, "node is not on PATH (scripts/e2e.sh installs it)"
    run = subprocess.run(
        [node, str(SCRIPT)],
        env={**os.environ, "NODE_PATH": modules, "R1_BASE_URL": stack.base_url, "R1_TOKEN": stack.fresh_token()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"node exited {run.returncode}:\n{run.stderr}\n{run.stdout}"
    return json.loads(run.stdout)


def test_node_chat(report):
    chat = report["chat"]
    assert (chat["route"], chat["pool_model"]) == ("edge", EDGE_MODEL), chat
    assert chat["model"] == MODEL
    assert "Paris" in chat["content"]
    assert chat["completion_tokens"] > 0


def test_node_stream_equals_the_answer(report):
    stream, chat = report["stream"], report["chat"]
    assert stream["route"] == "edge"
    assert stream["content"] == chat["content"]
    assert stream["roles"] == ["assistant"]
    assert stream["finish_reasons"] == [chat["finish_reason"]]
    assert len(stream["ids"]) == 1 and stream["models"] == [MODEL]
    assert stream["usage"]["completion_tokens"] == chat["completion_tokens"]


def test_node_tool_calls(report):
    whole = report["tool_call"]
    assert (whole["route"], whole["pool_model"]) == ("center", CENTER_MODEL), whole
    assert whole["reason"] == "edge_cannot_serve_tools"
    assert whole["finish_reason"] == "tool_calls"
    (call,) = whole["tool_calls"]
    assert call["id"] and call["type"] == "function" and call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), PARAMETERS)

    streamed = report["streamed_tool_call"]
    assert list(streamed["calls"]) == ["0"] and streamed["finish_reason"] == "tool_calls"
    call = streamed["calls"]["0"]
    assert call["id"] and call["name"] == "get_weather"
    jsonschema.validate(json.loads(call["arguments"]), PARAMETERS)

    helper = report["stream_helper"]
    (call,) = helper["tool_calls"]
    assert call["function"]["name"] == "get_weather" and helper["finish_reason"] == "tool_calls"
    jsonschema.validate(json.loads(call["function"]["arguments"]), PARAMETERS)


def test_node_refused_parameter(report):
    assert report["refused"] == {
        "refused": True,
        "status": 400,
        "param": "temperature",
        "code": "decimal_above_max_value",
    }
