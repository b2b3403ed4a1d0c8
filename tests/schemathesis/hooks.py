"""Schemathesis hooks for hushd: sign requests with `Authorization: Hush-Sig ...`.

Loaded through `SCHEMATHESIS_HOOKS=<this file>` by the e2e test `schemathesis_passes_clean`
(tests/tests/it/schemathesis.rs), which registers a real account and passes its device here:

- `HUSH_ST_ACCOUNT`: the account id (hyphenated UUID)
- `HUSH_ST_DEVICE`: the device id
- `HUSH_ST_KEY`: the device's ed25519 signing key, 32 bytes as hex
- `HUSH_ST_USERNAME` (optional): the account's username
- `HUSH_ST_LOG` (optional): a file that gets one JSON line per answer schemathesis checked
  (`{"method", "path", "status"}`, path as in the OpenAPI document), so the test can tell that
  every operation was called and every authenticated one got past authentication.

Random account ids and usernames almost never exist, so on their own they reach only the 404
branches. Where a generated path parameter is a well-formed account id or username, the
`flatmap_path_parameters` hook lets Hypothesis draw the registered account's instead, half of
the time, so the answers with data (and their schemas) are checked too. Malformed values are
left alone: they are what negative cases are made of.

The signature is the one `hush_keys::auth::RestSigningInput::message` defines (docs/PROTOCOL.md,
"Authentication"): ed25519 over

    "hush-rest-v1\n" METHOD "\n" path_and_query "\n" ts "\n" hex(nonce) "\n" hex(sha256(body))

It is computed in a `requests` auth object, i.e. over the request exactly as it goes on the
wire (percent-encoded path, serialized body). Schemathesis drops that auth object from the
probes its `ignored_auth` check sends without credentials or with made-up ones, so those stay
unsigned and must get a 401.
"""

import hashlib
import json
import os
import re
import secrets
import time

import nacl.signing
import requests
import schemathesis
from hypothesis import strategies as st

REST_PREFIX = "hush-rest-v1\n"


def signing_message(method: str, path_and_query: str, ts: int, nonce: bytes, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"{REST_PREFIX}{method}\n{path_and_query}\n{ts}\n{nonce.hex()}\n{digest}".encode()


class HushSig(requests.auth.AuthBase):
    """Signs each prepared request as one device, with the current time and a fresh nonce."""

    def __init__(self, account: str, device: int, seed: bytes) -> None:
        self.account = account
        self.device = device
        self.key = nacl.signing.SigningKey(seed)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body
        if body is None:
            body = b""
        elif isinstance(body, str):
            # http.client would send a str as Latin-1; sign and send the same UTF-8 bytes.
            body = body.encode("utf-8")
            request.body = body
            request.headers["Content-Length"] = str(len(body))
        elif not isinstance(body, bytes):
            raise TypeError(f"cannot sign a streamed body ({type(body).__name__})")
        ts = int(time.time() * 1000)
        nonce = secrets.token_bytes(16)
        message = signing_message(request.method, request.path_url, ts, nonce, body)
        sig = self.key.sign(message).signature.hex()
        request.headers["Authorization"] = (
            f"Hush-Sig account={self.account},device={self.device},ts={ts},nonce={nonce.hex()},sig={sig}"
        )
        return request


def _from_env() -> HushSig:
    missing = [n for n in ("HUSH_ST_ACCOUNT", "HUSH_ST_DEVICE", "HUSH_ST_KEY") if not os.environ.get(n)]
    if missing:
        raise RuntimeError(
            f"hooks.py needs {', '.join(missing)}: the registered device to sign as (see this file's docstring)"
        )
    seed = bytes.fromhex(os.environ["HUSH_ST_KEY"])
    if len(seed) != 32:
        raise RuntimeError("HUSH_ST_KEY must be 32 bytes as hex")
    return HushSig(os.environ["HUSH_ST_ACCOUNT"], int(os.environ["HUSH_ST_DEVICE"]), seed)


schemathesis.auth.set_from_requests(_from_env())

_LOG = os.environ.get("HUSH_ST_LOG")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_USERNAME = re.compile(r"^[A-Za-z0-9_.]{3,32}$")
_KNOWN = {
    "account_id": (_UUID, os.environ["HUSH_ST_ACCOUNT"]),
    "username": (_USERNAME, os.environ.get("HUSH_ST_USERNAME")),
}


@schemathesis.hook
def flatmap_path_parameters(ctx, parameters):
    if not isinstance(parameters, dict):
        return st.just(parameters)
    known = dict(parameters)
    for name, (shape, value) in _KNOWN.items():
        current = parameters.get(name)
        if value and isinstance(current, str) and shape.match(current):
            known[name] = value
    if known == parameters:
        return st.just(parameters)
    return st.sampled_from([parameters, known])


@schemathesis.hook
def after_call(ctx, case, response) -> None:
    if _LOG:
        line = {"method": case.method.upper(), "path": case.operation.path, "status": response.status_code}
        with open(_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
