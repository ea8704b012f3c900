"""datagrout-conduit's agent identity, unmodified, against the gateway's identity CA.

One step per run, the identity kept in `--dir` between runs (conduit's own `save_identity`
layout: identity.pem, identity_key.pem, ca.pem):
- `register`: `generate_keypair`, then `register_identity` with the bearer token read from the
  variable named by `--token-env`, then `save_identity`;
- `register-oauth`: the same with a token conduit fetches itself (`OAuthTokenProvider`,
  client credentials at the endpoint it derives from `--url`, the secret read from the
  variable named by `--client-secret-env`), as `Client.bootstrap_identity_oauth` means to;
- `rotate`: `rotate_identity` with the saved identity over mTLS (no token), then `save_identity`;
- `call`: a `Client(url, identity=…)` over mTLS with the saved identity, no token: lists the
  tools and makes each `--call` in order.

Prints one JSON object a line (see report.py): `{"event": "identity", "id", "fingerprint",
"name", "valid_until"}` after a registration or rotation, then `tools` and `call` events.

usage: conduit_identity.py STEP --endpoint URL --dir DIR [--name NAME] [--token-env VAR]
           [--client-id ID] [--client-secret-env VAR] [--url MCP_URL] [--call NAME[=JSON]]...
"""

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import httpx

from datagrout.conduit import Client
from datagrout.conduit.identity import ConduitIdentity
from datagrout.conduit.oauth import OAuthTokenProvider, derive_token_endpoint
from datagrout.conduit.registration import (
    generate_keypair,
    register_identity,
    rotate_identity,
    save_identity,
)

from report import describe, emit


def saved(directory):
    return ConduitIdentity.from_paths(
        directory / "identity.pem", directory / "identity_key.pem", directory / "ca.pem"
    )


def result_text(result):
    if isinstance(result, dict) and set(result) == {"text"}:
        return result["text"]
    return json.dumps(result)


async def run(args):
    directory = Path(args.dir)
    if args.step in ("register", "register-oauth"):
        if args.step == "register":
            token = os.environ[args.token_env]
        else:
            provider = OAuthTokenProvider(
                args.client_id,
                os.environ[args.client_secret_env],
                derive_token_endpoint(args.url),
            )
            # conduit 0.8.1's own `bootstrap_identity_oauth` calls `get_token()` without the
            # HTTP client it requires (a TypeError); this is its flow with the client given.
            async with httpx.AsyncClient() as http_client:
                token = await provider.get_token(http_client)
        keypair = generate_keypair(args.name)
        identity, response = await register_identity(
            keypair, endpoint=args.endpoint, auth_token=token, name=args.name
        )
    elif args.step == "rotate":
        identity, response = await rotate_identity(
            saved(directory), endpoint=args.endpoint, name=args.name
        )
    else:
        client = Client(args.url, identity=saved(directory))
        async with client:
            tools = await client.list_tools()
            emit("tools", names=[tool["name"] for tool in tools])
            for call in args.call:
                name, _, raw = call.partition("=")
                try:
                    result = await client.call_tool(name, json.loads(raw) if raw else {})
                    emit("call", tool=name, ok=True, text=result_text(result))
                except Exception as error:  # noqa: BLE001 - reported to the test
                    emit("call", tool=name, ok=False, error=describe(error))
        return
    save_identity(identity, directory)
    emit(
        "identity",
        id=response.id,
        fingerprint=response.fingerprint,
        name=response.name,
        valid_until=response.valid_until,
        registered_at=response.registered_at,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["register", "register-oauth", "rotate", "call"])
    parser.add_argument("--client-id")
    parser.add_argument("--client-secret-env", default="CLIENT_SECRET")
    parser.add_argument("--endpoint")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--name", default="test-agent")
    parser.add_argument("--token-env", default="REGISTRATION_TOKEN")
    parser.add_argument("--url")
    parser.add_argument("--call", action="append", default=[])
    args = parser.parse_args()
    try:
        asyncio.run(run(args))
    except Exception as error:  # noqa: BLE001 - reported to the test
        emit("error", error=describe(error))
        sys.exit(1)


if __name__ == "__main__":
    main()
