"""What the client scripts share: their common arguments, and what they print: one JSON
object a line on stdout, read by tests/tests/it/oauth_clients.rs.

- `{"event": "http", "method", "url", "status", "authorization"?, "form"?, "www_authenticate"?,
  "token"?}`: one HTTP exchange as the client library made it. `authorization` is the scheme
  only; `form` is the form body with secrets replaced by `<redacted>` and a
  `client_assertion` replaced by its decoded header and claims; `token` is the decoded header
  and claims of an `access_token` the response carried.
- `{"event": "tools", "names": [...]}`: the tools the client listed.
- `{"event": "call", "tool", "ok", "text"? | "error"?}`: one tool call.
- `{"event": "token", "token": {...}}`: a token the client library holds, decoded.
- `{"event": "error", "error"}`: the client failed; the script then exits with status 1.

Tokens are decoded without verification: this is what the client saw, and the gateway is
what verifies them.
"""

import argparse
import base64
import json
import sys
import urllib.parse

import anyio

SECRET_FIELDS = ("client_secret", "subject_token", "actor_token")


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def fail(error):
    emit("error", error=describe(error))
    sys.exit(1)


def describe(error):
    """The message of an exception, and of every exception grouped in it (anyio raises
    groups), so the test sees the library's own words."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(describe(e) for e in error.exceptions)
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text}"


def decode_jwt(token):
    """`{"header", "claims"}` of a JWT, or `None` when it is not one."""
    try:
        header, claims, _ = token.split(".")
        return {"header": _b64_json(header), "claims": _b64_json(claims)}
    except (ValueError, json.JSONDecodeError):
        return None


def _b64_json(part):
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def describe_form(content):
    form = dict(urllib.parse.parse_qsl(content.decode("utf-8", "replace")))
    for name in SECRET_FIELDS:
        if name in form:
            form[name] = "<redacted>"
    if "client_assertion" in form:
        form["client_assertion"] = decode_jwt(form["client_assertion"])
    return form


async def log_response(response):
    """An httpx/httpx2 `response` event hook: emits the exchange. Only token responses are
    read here (a JSON body); an MCP response may be a stream the client reads itself."""
    request = response.request
    entry = {
        "method": request.method,
        "url": str(request.url),
        "status": response.status_code,
    }
    authorization = request.headers.get("authorization")
    if authorization:
        entry["authorization"] = authorization.split(" ", 1)[0]
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        entry["form"] = describe_form(request.content)
        if response.headers.get("content-type", "").startswith("application/json"):
            await response.aread()
            try:
                body = response.json()
            except json.JSONDecodeError:
                body = None
            if isinstance(body, dict):
                entry["body"] = {k: v for k, v in body.items() if k != "access_token"}
                if isinstance(body.get("access_token"), str):
                    entry["token"] = decode_jwt(body["access_token"])
    challenge = response.headers.get("www-authenticate")
    if challenge:
        entry["www_authenticate"] = challenge
    emit("http", **entry)


def parse_call(spec):
    """`NAME` or `NAME=JSON` (the arguments)."""
    name, _, arguments = spec.partition("=")
    return name, json.loads(arguments) if arguments else {}


def arguments(doc):
    """A parser for what every script takes (the MCP URL, `--client-id`, `--call`)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--call", dest="calls", action="append", type=parse_call, default=[])
    return parser


def run_to_end(run, args):
    """Runs `run(args)`; a failure is printed as the `error` event, with exit status 1."""
    try:
        anyio.run(run, args)
    except Exception as error:
        fail(error)
