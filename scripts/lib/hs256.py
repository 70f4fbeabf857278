"""An HS256 JWT for the scripts' gateways (benchmarks, the deploy check): `jwt(secret, claims)`, or from
the shell `python3 scripts/lib/hs256.py SECRET SUBJECT [TTL_SECONDS]` prints one for `{"sub": SUBJECT}`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import time


def jwt(secret: str, claims: dict, ttl: int = 3600) -> str:
    """`claims` signed with `secret`, expiring in `ttl` seconds."""
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({**claims, "exp": int(time.time()) + ttl}).encode())
    sig = b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


if __name__ == "__main__":
    print(jwt(sys.argv[1], {"sub": sys.argv[2]}, int(sys.argv[3]) if len(sys.argv) > 3 else 3600))
