"""A differential-suite upstream: the Python MCP SDK's high-level server (`MCPServer`, called
`FastMCP` before mcp 2) over Streamable HTTP, stateless with JSON responses so that a plain
POST is a whole exchange.

Every HTTP request it receives appends a `kind: "http"` line to the file named by
`PORTCULLIS_EXECUTED_LOG`, and every tool, resource and prompt that runs appends one more
before it answers: what ran (`kind`, `name`), what the request asked for (`requested`), the
JSON-RPC id as this SDK parsed it (`id`) and the `Mcp-Method` / `Mcp-Name` headers it saw. The test compares those lines with what the gateway authorized.

Listens on 127.0.0.1, port 0, and prints `listening <port>` once it accepts connections;
over TLS when `PORTCULLIS_TLS_CERT` and `PORTCULLIS_TLS_KEY` name a PEM certificate and key.
"""

import contextvars
import json
import os
import socket
import sys

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer

LOG = os.environ["PORTCULLIS_EXECUTED_LOG"]

# The raw request as the SDK dispatched it, set by `Recorder` for the handler it wraps
# (static resources and prompts get no context argument of their own).
CURRENT = contextvars.ContextVar("current", default=None)


def append(line):
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")
        log.flush()


def record(kind, name):
    ctx = CURRENT.get()
    params = (ctx.params if ctx is not None else None) or {}
    headers = getattr(getattr(ctx, "request", None), "headers", None) or {}
    line = {
        "server": "python",
        "kind": kind,
        "name": name,
        "requested": params.get("uri", params.get("name")),
        "id": ctx.request_id if ctx is not None else None,
        "mcp_method": headers.get("mcp-method"),
        "mcp_name": headers.get("mcp-name"),
    }
    append(line)


def reached(app):
    """ASGI wrapper: one `http` line per request received, so the test can tell a refusal
    by the gateway (nothing arrives here) from one by this server."""

    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            append(
                {
                    "server": "python",
                    "kind": "http",
                    "name": scope["method"],
                    "requested": headers.get(b"content-type", b"").decode("latin-1"),
                    "id": None,
                    "mcp_method": None,
                    "mcp_name": None,
                }
            )
        await app(scope, receive, send)

    return wrapped


class Recorder:
    """Middleware that makes the dispatched request visible to the handlers."""

    async def __call__(self, ctx, call_next):
        token = CURRENT.set(ctx)
        try:
            return await call_next(ctx)
        finally:
            CURRENT.reset(token)


mcp = MCPServer("portcullis-differential", middleware=[Recorder()])


@mcp.tool()
def echo(text: str) -> str:
    """Echo the given text back."""
    record("tool", "echo")
    return text


@mcp.tool()
def admin_reset() -> str:
    """Reset everything (admin only)."""
    record("tool", "admin_reset")
    return "reset"


@mcp.resource("file:///public/x")
def public_x() -> str:
    record("resource", "file:///public/x")
    return "public"


@mcp.resource("file:///secret/x")
def secret_x() -> str:
    record("resource", "file:///secret/x")
    return "secret"


@mcp.prompt()
def greeting() -> str:
    """A harmless prompt."""
    record("prompt", "greeting")
    return "hello"


@mcp.prompt()
def admin_prompt() -> str:
    """A prompt only admins may get."""
    record("prompt", "admin_prompt")
    return "the admin prompt"


async def main():
    app = mcp.streamable_http_app(stateless_http=True, json_response=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    tls = {}
    if os.environ.get("PORTCULLIS_TLS_CERT"):
        tls = {
            "ssl_certfile": os.environ["PORTCULLIS_TLS_CERT"],
            "ssl_keyfile": os.environ["PORTCULLIS_TLS_KEY"],
        }
    config = uvicorn.Config(reached(app), log_level="warning", lifespan="on", **tls)
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(lambda: server.serve(sockets=[sock]))
        while not server.started:
            await anyio.sleep(0.01)
        print(f"listening {sock.getsockname()[1]}", flush=True)


if __name__ == "__main__":
    try:
        anyio.run(main)
    except KeyboardInterrupt:
        sys.exit(0)
