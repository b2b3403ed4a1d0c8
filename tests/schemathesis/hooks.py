"""Schemathesis hooks for hushd: sign requests with `Authorization: Hush-Sig ...`.

Loaded through `SCHEMATHESIS_HOOKS=<this file>` by the e2e test `schemathesis_passes_clean`
(tests/tests/it/schemathesis.rs), which registers a real account and passes its device here:

- `HUSH_SIG_ACCOUNT`: the account id (hyphenated UUID)
- `HUSH_SIG_DEVICE`: the device id
- `HUSH_SIG_SEED`: the device's ed25519 signing key, 32 bytes as hex
- `HUSH_SCHEMATHESIS_LOG` (optional): a file that gets one JSON line per answer schemathesis
  checked (`{"method", "path", "status"}`, path as in the OpenAPI document), so the test can
  tell that every operation was called and every authenticated one got past authentication.

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
import secrets
import time

import nacl.signing
import requests
import schemathesis

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
    missing = [n for n in ("HUSH_SIG_ACCOUNT", "HUSH_SIG_DEVICE", "HUSH_SIG_SEED") if not os.environ.get(n)]
    if missing:
        raise RuntimeError(
            f"hooks.py needs {', '.join(missing)}: the registered device to sign as (see this file's docstring)"
        )
    seed = bytes.fromhex(os.environ["HUSH_SIG_SEED"])
    if len(seed) != 32:
        raise RuntimeError("HUSH_SIG_SEED must be 32 bytes as hex")
    return HushSig(os.environ["HUSH_SIG_ACCOUNT"], int(os.environ["HUSH_SIG_DEVICE"]), seed)


schemathesis.auth.set_from_requests(_from_env())

_LOG = os.environ.get("HUSH_SCHEMATHESIS_LOG")


@schemathesis.hook
def after_call(ctx, case, response) -> None:
    if _LOG:
        line = {"method": case.method.upper(), "path": case.operation.path, "status": response.status_code}
        with open(_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
