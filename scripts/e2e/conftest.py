"""Starts the real stack once per session: `r1-gateway demo` (the gateway on Pingora, one r1-edge with
the shipped model, the center through the in-process task hand-off) on free loopback ports, with JWT
authentication on (HS256, the secret in R1_JWT_SECRET), and stops it with SIGINT afterwards.

Clients authenticate as the DeepSeek R1 guide's clients do: a PyJWT HS256 token with `user_id` and
`exp`, sent as `Authorization: Bearer <token>` (the openai SDK's api_key).

A conversation's route is sticky per caller (the JWT subject) and first messages: once one went to the
center, its next turns do too (`x-r1-route-reason: sticky_session`). Tests that check a first routing
decision therefore ask as a caller of their own (`Stack.fresh_token`)."""

import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import jwt
import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SECRET = "e2e-" + os.urandom(24).hex()


def token(user_id: str = "e2e-user", ttl: int = 3600) -> str:
    """An HS256 token the way the DeepSeek R1 guide's client makes one."""
    return jwt.encode({"user_id": user_id, "exp": int(time.time()) + ttl}, SECRET, algorithm="HS256")


# The pools' models in the stack's config (`x-r1-model` names them); clients ask for `MODEL`.
EDGE_MODEL = "r1-edge-mini"
CENTER_MODEL = "deepseek-ai/DeepSeek-R1"
MODEL = "deepseek-r1"


class Stack:
    def __init__(self, public: str, admin: str):
        self.public = public
        self.admin = admin
        self.base_url = f"http://{public}/v1"
        self.token = token()
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def fresh_token(self) -> str:
        """A token for a caller of its own, whose conversations no earlier request made sticky."""
        return token("e2e-" + uuid.uuid4().hex[:12])


def pytest_configure(config):
    # LiteLLM's own pydantic models warn on import; they say nothing about the gateway.
    config.addinivalue_line("filterwarnings", "ignore:.*ReadOnly.*:UserWarning")


@pytest.fixture(scope="session")
def stack():
    binary = os.environ.get("R1_GATEWAY_BIN", str(ROOT / "target" / "debug" / "r1-gateway"))
    # Port 0 members: the demo starts its model servers on free ports.
    public, admin = (f"127.0.0.1:{free_port()}" for _ in range(2))
    edge = center = "127.0.0.1:0"
    config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    config.write(
        f'[listen]\npublic = "{public}"\nadmin = "{admin}"\n'
        f'[edge]\nmodel = "{EDGE_MODEL}"\nmembers = ["{edge}"]\nhealth = {{ interval = "200ms" }}\n'
        f'[center]\ntransport = "embedded"\nmodel = "{CENTER_MODEL}"\nmembers = ["{center}"]\n'
        'health = { interval = "200ms" }\n'
        '[auth]\nenabled = true\n'
        # The route headers are under test: answers come from the models, not the result cache.
        '[cache]\nenabled = false\n'
    )
    config.close()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    process = subprocess.Popen(
        [binary, "demo", "--config", config.name, "--listen", public, "--admin", admin, "--models", str(ROOT / "models")],
        cwd=ROOT,
        env={**os.environ, "R1_JWT_SECRET": SECRET},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, f"r1-gateway demo exited:\n{pathlib.Path(log.name).read_text()}"
        try:
            pools = requests.get(f"http://{admin}/admin/pools", timeout=1).json()
            if all(p["members"] and all(m["ready"] for m in p["members"]) for p in pools["pools"]):
                break
        except (requests.RequestException, ValueError, KeyError):
            pass
        assert time.monotonic() < deadline, f"the stack was not ready in 120 s:\n{pathlib.Path(log.name).read_text()}"
        time.sleep(0.1)
    yield Stack(public, admin)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        os.unlink(config.name)
