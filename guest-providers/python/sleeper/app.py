"""sleeper: a Python component that waits in `time.sleep`, for the host's deadline tests.
A test fixture, not a provider: see README.md.

`time.sleep` in CPython on WASI is a `poll` on a monotonic-clock pollable: the guest waits in
the host, runs no code of its own, and so never reaches the epoch check that stops a guest
computing past its deadline. Only a wall-clock bound on the whole call stops it.
"""

import json
import time

from wit_world import WitWorld as _World
from wit_world.imports import types

_sleep_seconds = 0.0


class WitWorld(_World):
    def configure(self, config: str) -> None:
        global _sleep_seconds
        settings = json.loads(config or "{}")
        _sleep_seconds = int(settings.get("ms", 0)) / 1000
        if settings.get("where", "authenticate") == "configure":
            time.sleep(_sleep_seconds)

    def authenticate(self, req: types.Request) -> types.Verdict:
        if req.header("x-sleep") is not None:
            time.sleep(_sleep_seconds)
        return types.Verdict_Allow(types.Identity(subject="py-slept", scopes=[], claims=[]))
