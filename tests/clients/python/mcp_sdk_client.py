"""The Python `mcp` SDK's machine-to-machine OAuth, unmodified, against an MCP URL: lists the
tools, then makes each `--call` in order, printing what happened (see report.py).

With `--client-secret-env VAR` it uses `ClientCredentialsOAuthProvider` (the secret is read
from that variable, `--auth-method` picks `client_secret_basic` or `client_secret_post`);
with `--private-key FILE` it uses `PrivateKeyJWTOAuthProvider` with the SDK's own
`SignedJWTParameters` assertion signer (`--alg`, PKCS#8 PEM), and with `--assertion-env VAR`
the same provider with the SDK's `static_assertion_provider` (one pre-built assertion, read
from that variable, for every token request). The SDK does the rest: the
first request gets 401, it discovers the protected-resource and authorization-server
metadata, gets a token and retries; a 403 `insufficient_scope` makes it re-authorise with the
union of the scopes.

usage: mcp_sdk_client.py URL --client-id ID --issuer URL
           (--client-secret-env VAR [--auth-method M] | --private-key FILE [--alg ALG]
            | --assertion-env VAR)
           [--scope S] [--call NAME[=JSON]]...
"""

import os

import httpx2
from mcp import Client
from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
    static_assertion_provider,
)
from mcp.client.streamable_http import streamable_http_client

from report import arguments, describe, emit, log_response, run_to_end


class MemoryStorage:
    """The SDK's `TokenStorage`, in memory: one run, one client."""

    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


def provider(args):
    common = dict(
        server_url=args.url,
        storage=MemoryStorage(),
        client_id=args.client_id,
        scope=args.scope,
        issuer=args.issuer,
    )
    if args.assertion_env:
        assertions = static_assertion_provider(os.environ[args.assertion_env])
        return PrivateKeyJWTOAuthProvider(assertion_provider=assertions, **common)
    if args.private_key:
        with open(args.private_key, encoding="utf-8") as key:
            signer = SignedJWTParameters(
                issuer=args.client_id,
                subject=args.client_id,
                signing_key=key.read(),
                signing_algorithm=args.alg,
            )
        return PrivateKeyJWTOAuthProvider(
            assertion_provider=signer.create_assertion_provider(), **common
        )
    return ClientCredentialsOAuthProvider(
        client_secret=os.environ[args.client_secret_env],
        token_endpoint_auth_method=args.auth_method,
        **common,
    )


async def run(args):
    auth = provider(args)
    async with httpx2.AsyncClient(
        auth=auth, event_hooks={"response": [log_response]}, timeout=30
    ) as http:
        async with Client(streamable_http_client(args.url, http_client=http)) as client:
            listed = await client.list_tools()
            emit("tools", names=[tool.name for tool in listed.tools])
            for name, arguments in args.calls:
                try:
                    result = await client.call_tool(name, arguments)
                except Exception as error:  # the SDK's own refusal, reported as such
                    emit("call", tool=name, ok=False, error=describe(error))
                    continue
                text = "".join(getattr(part, "text", "") for part in result.content)
                emit("call", tool=name, ok=not result.is_error, text=text)


def main():
    parser = arguments(__doc__)
    parser.add_argument("--issuer", required=True)
    credential = parser.add_mutually_exclusive_group(required=True)
    credential.add_argument("--client-secret-env")
    credential.add_argument("--private-key")
    credential.add_argument("--assertion-env")
    parser.add_argument(
        "--auth-method",
        choices=["client_secret_basic", "client_secret_post"],
        default="client_secret_basic",
    )
    parser.add_argument("--alg", default="EdDSA")
    parser.add_argument("--scope")
    run_to_end(run, parser.parse_args())


if __name__ == "__main__":
    main()
