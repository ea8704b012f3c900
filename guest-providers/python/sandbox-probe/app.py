"""sandbox-probe: a Python component that tries to leave the sandbox on every call and
reports what happened. A test fixture, not a provider: see README.md.

Each attempt runs inside the guest, through CPython's own `open`, `os` and `socket`, which
reach the host's WASI. The host grants nothing (no preopened directory, no environment, every
socket address and name lookup denied), so every attempt must fail with an error here.
"""

import os
import socket

from wit_world import WitWorld as _World
from wit_world.imports import types


def _read_passwd():
    with open("/etc/passwd", "rb") as f:
        return f"read {len(f.read())} bytes of /etc/passwd"


def _list_root():
    return f"listed / ({len(os.listdir('/'))} entries)"


def _list_cwd():
    return f"listed . ({len(os.listdir('.'))} entries)"


def _tcp_connect():
    with socket.create_connection(("127.0.0.1", 80), timeout=0.5):
        return "connected to 127.0.0.1:80"


def _udp_send():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"x", ("127.0.0.1", 53))
        return "sent a UDP datagram to 127.0.0.1:53"


def _resolve():
    found = socket.getaddrinfo("localhost", 80)
    return f"resolved localhost ({len(found)} addresses)"


def _environment():
    if os.environ:
        return f"read {len(os.environ)} environment variables"
    raise LookupError("the environment is empty")


_ATTEMPTS = [
    ("open /etc/passwd", _read_passwd),
    ("list /", _list_root),
    ("list .", _list_cwd),
    ("tcp connect 127.0.0.1:80", _tcp_connect),
    ("udp send 127.0.0.1:53", _udp_send),
    ("resolve localhost", _resolve),
    ("environment", _environment),
]


class WitWorld(_World):
    def configure(self, config: str) -> None:
        pass

    def authenticate(self, req: types.Request) -> types.Verdict:
        failures = []
        for what, attempt in _ATTEMPTS:
            try:
                done = attempt()
            except Exception as e:  # noqa: BLE001 -- every failure is the expected outcome
                failures.append(f"{what}: {type(e).__name__}: {e}")
                continue
            return types.Verdict_Allow(
                types.Identity(subject=f"ESCAPED:{what}", scopes=[], claims=[("done", done)])
            )
        return types.Verdict_Deny(
            types.Denial(status=403, code="sandbox_held", reason="; ".join(failures))
        )
