"""datagrout-conduit, unmodified, against a gateway's MCP URL: lists the tools, then makes each
`--call` in order, printing what happened (see report.py).

Three modes, each with the client secret read from the variable named by
`--client-secret-env`:
- `client-credentials`: `Client(url, client_id=…, client_secret=…)`, conduit's own
  client-credentials mode, which posts to the token endpoint it derives from the MCP URL
  (`…/servers/a/mcp` → `…/servers/a/oauth/token`), or to `--token-endpoint` (its
  `token_endpoint=` override);
- `delegation`: its RFC 8693 `DelegatedProvider`, exchanging the user's token (read from the
  variable named by `--subject-token-env`) with the agent's own client-credentials token as
  the actor, at the same derived endpoint; the delegated token it holds is printed at the end;
- `api-key`: `Client(url, auth={"api_key": …})` with the secret as an API key, which conduit
  sends as `X-API-Key` (`--client-id` is not used).

conduit builds its HTTP client itself, so its HTTP exchanges are not printed: what it
reports (errors carry the status and body) is what the test sees.

usage: conduit_client.py URL --client-id ID --client-secret-env VAR
           [--mode client-credentials|delegation|api-key] [--subject-token-env VAR]
           [--token-endpoint URL]
           [--call NAME[=JSON]]...
"""

import json
import os

from datagrout.conduit import (
    Client,
    DelegatedProvider,
    DelegationRequest,
    OAuthTokenProvider,
    TokenSource,
)
from datagrout.conduit.oauth import derive_token_endpoint

from report import arguments, decode_jwt, describe, emit, run_to_end


def result_text(result):
    """conduit unwraps a tool result (structured content, JSON text, or `{"text": …}`); the
    text the tool returned, as the other scripts print it."""
    if isinstance(result, dict) and set(result) == {"text"}:
        return result["text"]
    return json.dumps(result)


async def run(args):
    secret = os.environ[args.client_secret_env]
    delegation = None
    if args.mode == "delegation":
        endpoint = derive_token_endpoint(args.url)
        agent = OAuthTokenProvider(
            client_id=args.client_id, client_secret=secret, token_endpoint=endpoint
        )
        delegation = DelegatedProvider(
            DelegationRequest(
                token_endpoint=endpoint, client_id=args.client_id, client_secret=secret
            ),
            subject=TokenSource.static_token(os.environ[args.subject_token_env]),
            actor=TokenSource.client_credentials(agent),
        )
        client = Client(args.url, auth={"delegation": delegation})
    elif args.mode == "api-key":
        client = Client(args.url, auth={"api_key": secret})
    else:
        client = Client(
            args.url,
            client_id=args.client_id,
            client_secret=secret,
            token_endpoint=args.token_endpoint,
        )
    async with client:
        tools = await client.list_tools()
        emit("tools", names=[tool["name"] for tool in tools])
        for name, arguments in args.calls:
            try:
                result = await client.call_tool(name, arguments)
            except Exception as error:  # conduit's own refusal, reported as such
                emit("call", tool=name, ok=False, error=describe(error))
                continue
            emit("call", tool=name, ok=True, text=result_text(result))
    if delegation is not None and delegation.token() is not None:
        emit("token", token=decode_jwt(delegation.token().access_token))


def main():
    parser = arguments(__doc__)
    parser.add_argument("--client-secret-env", required=True)
    parser.add_argument(
        "--mode", choices=["client-credentials", "delegation", "api-key"], default="client-credentials"
    )
    parser.add_argument("--subject-token-env")
    parser.add_argument("--token-endpoint")
    args = parser.parse_args()
    if args.mode == "delegation" and not args.subject_token_env:
        parser.error("--mode delegation needs --subject-token-env")
    run_to_end(run, args)


if __name__ == "__main__":
    main()
