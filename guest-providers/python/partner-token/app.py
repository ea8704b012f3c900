"""partner-token, in Python: authenticates `Authorization: partner-token <id>:<secret>` against
the hashed credentials in the granted secret `credentials`.

A line-for-line port of the Rust provider in `guest-providers/providers/partner-token`: same
config, same secret format, same verdicts and denial texts. See README.md for the contract.
"""

import json
import string

from componentize_py_types import Err
from wit_world import WitWorld as _World
from wit_world.imports import host, types

# The secret that holds the credentials, one client per line.
CREDENTIALS_SECRET = "credentials"

_HEX_DIGITS = frozenset(string.hexdigits)
_ZERO_HASH = bytes(32)


def _deny(status: int, code: str, reason: str) -> types.Verdict:
    return types.Verdict_Deny(types.Denial(status=status, code=code, reason=reason))


def _invalid_token(reason: str) -> types.Verdict:
    return _deny(401, "invalid_token", reason)


def _eq_ignore_ascii_case(a: str, b: str) -> bool:
    # Like Rust's `eq_ignore_ascii_case`: only ASCII letters fold, so `ſ` never matches `s`.
    return a.encode().lower() == b.encode().lower()


def _has_whitespace(text: str) -> bool:
    return any(c.isspace() for c in text)


def _no_duplicate_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate field `{key}`")
        seen[key] = value
    return seen


def _parse_config(text: str) -> str:
    """The scheme from the JSON config; errors read like the Rust provider's."""
    text = text.strip() or "{}"
    try:
        config = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except ValueError as e:
        raise Err(f"invalid config: {e}")
    if not isinstance(config, dict):
        raise Err("invalid config: expected a JSON object")
    for key in config:
        if key != "scheme":
            raise Err(f"invalid config: unknown field `{key}`, expected `scheme`")
    scheme = config.get("scheme", "partner-token")
    if not isinstance(scheme, str):
        raise Err("invalid config: `scheme` must be a string")
    if not scheme or _has_whitespace(scheme):
        raise Err(f"invalid scheme `{scheme}`: must be one word")
    return scheme


def _parse_credentials(text: str) -> dict:
    """`<id>:sha256:<64 hex digits>:<scope>,<scope>…` per line; blank lines and `#` comments
    are skipped. Errors name the line, never its content."""
    clients = {}
    # Split on "\n" only (not `splitlines`, which also splits on \v, \f, U+2028, …), and drop
    # a trailing "\r", as Rust's `str::lines` does.
    for index, line in enumerate(text.split("\n")):
        line = line.strip()
        if not line or line.startswith("#"):
            continue

        def bad(why: str) -> Err:
            return Err(f"secret `{CREDENTIALS_SECRET}`, line {index + 1}: {why}")

        fields = line.split(":", 3)
        client_id = fields[0]
        algorithm = fields[1] if len(fields) > 1 else None
        digest = fields[2] if len(fields) > 2 else None
        scopes = fields[3] if len(fields) > 3 else ""
        if not client_id or _has_whitespace(client_id):
            raise bad("the client id is empty or contains whitespace")
        if algorithm != "sha256":
            raise bad("expected `<id>:sha256:<hex>:<scopes>`")
        # `bytes.fromhex` would accept spaces, so check the digits first.
        if digest is None or len(digest) != 64 or not _HEX_DIGITS.issuperset(digest):
            raise bad("the hash is not 64 hex digits")
        scope_list = [s.strip() for s in scopes.split(",") if s.strip()]
        if client_id in clients:
            raise bad("the client id is listed twice")
        clients[client_id] = (bytes.fromhex(digest), scope_list)
    if not clients:
        raise Err(f"secret `{CREDENTIALS_SECRET}` lists no clients")
    return clients


class _PartnerToken:
    def __init__(self, scheme: str, clients: dict):
        self.scheme = scheme
        self.clients = clients

    def credential_of(self, header_value: str):
        """The credential after our scheme, if the header value uses it."""
        value = header_value.strip()
        scheme, _, credential = value.partition(" ")
        if _eq_ignore_ascii_case(scheme, self.scheme):
            return credential.strip()
        return None

    def check(self, credential: str) -> types.Verdict:
        client_id, colon, secret = credential.partition(":")
        if not colon or not client_id or not secret:
            return _invalid_token("malformed partner token: expected <id>:<secret>")
        # Hash and compare even for an unknown id, so that timing does not tell which ids
        # exist.
        presented = host.sha256(secret.encode())
        client = self.clients.get(client_id)
        expected = client[0] if client else _ZERO_HASH
        matches = host.constant_time_eq(presented, expected)
        if client and matches:
            return types.Verdict_Allow(
                types.Identity(
                    subject=client_id,
                    scopes=list(client[1]),
                    claims=[("client_id", client_id)],
                )
            )
        why = "wrong secret" if client else "unknown client id"
        host.log(host.LogLevel.DEBUG, f"partner `{client_id}` refused: {why}")
        # One reason for both, so the answer does not tell which ids exist either.
        return _invalid_token("unknown partner or wrong secret")


# The configured provider of this instance; `None` until `configure` succeeds.
_provider = None


class WitWorld(_World):
    def configure(self, config: str) -> None:
        global _provider
        scheme = _parse_config(config)
        credentials = host.secret(CREDENTIALS_SECRET)
        if credentials is None:
            raise Err(
                f"the secret `{CREDENTIALS_SECRET}` is not granted to this provider"
            )
        _provider = _PartnerToken(scheme, _parse_credentials(credentials))

    def authenticate(self, req: types.Request) -> types.Verdict:
        if _provider is None:
            # Breaks the contract, so neither 401 nor 403: the host treats it as an error.
            return _deny(500, "server_error", "provider called before configure succeeded")
        for value in req.header_all("authorization"):
            credential = _provider.credential_of(value)
            if credential is not None:
                return _provider.check(credential)
        return types.Verdict_Abstain()
