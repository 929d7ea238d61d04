"""API keys and per-client rate limits of ``unifashion serve``.

Keys live in a JSON file (by default ``api-keys.json`` in the catalog folder), each as its name, the
SHA-256 of the key (the key itself is shown once, when it is made, and never stored), its own
requests-per-minute limit (or none: the service's default) and when it was made. A key is a random
256-bit token, so a plain hash is as hard to reverse as the key is to guess; lookups compare hashes.

Clients send ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``. Rate limits are token buckets
per key (per client address when the service runs without keys): ``per_minute`` requests a minute
on average, bursts up to that many; beyond it the answer is 429 with ``Retry-After`` in seconds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import math
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from unifashion.utils.errors import UniFashionError
from unifashion.utils.io import atomic_write_json

KEYS_FILE = "api-keys.json"
_FORMAT = "unifashion-api-keys"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ApiKeyError(UniFashionError):
    """A key file is unreadable or a key operation is refused."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    per_minute: float | None
    created: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStore:
    """The keys of one file; :meth:`add` and :meth:`revoke` rewrite it atomically."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.keys: list[ApiKey] = self._read()

    def _read(self) -> list[ApiKey]:
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise ApiKeyError(f"{self.path}: unreadable API key file ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("keys"), list):
            raise ApiKeyError(f"{self.path}: not an API key file (expected format {_FORMAT!r} and a 'keys' list)")
        out = []
        for i, entry in enumerate(data["keys"]):
            try:
                per_minute = entry.get("per_minute")
                if per_minute is not None and not (isinstance(per_minute, int | float) and per_minute > 0):
                    raise ValueError("per_minute must be a number > 0 or null")
                if not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
                    raise ValueError("sha256 must be 64 hex digits")
                out.append(ApiKey(str(entry["name"]), entry["sha256"], per_minute, str(entry.get("created", ""))))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ApiKeyError(f"{self.path}: keys[{i}]: {exc}") from None
        return out

    def _write(self) -> None:
        atomic_write_json(
            self.path,
            {"format": _FORMAT, "keys": [k.__dict__ for k in self.keys]},
        )

    def add(self, name: str, per_minute: float | None = None) -> str:
        """Make a key called ``name``; returns the key (the only time it is seen)."""
        if not _NAME.match(name):
            raise ApiKeyError(f"name: {name!r}; expected 1-64 letters, digits, '.', '_' or '-'")
        if any(k.name == name for k in self.keys):
            raise ApiKeyError(f"name: a key called {name!r} exists already in {self.path} (revoke it first)")
        if per_minute is not None and not per_minute > 0:
            raise ApiKeyError(f"per_minute: expected a number > 0, got {per_minute}")
        key = "uf_" + secrets.token_urlsafe(32)
        created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.keys.append(ApiKey(name, hash_key(key), per_minute, created))
        self._write()
        return key

    def revoke(self, name: str) -> None:
        if not any(k.name == name for k in self.keys):
            raise ApiKeyError(f"name: no key called {name!r} in {self.path}")
        self.keys = [k for k in self.keys if k.name != name]
        self._write()

    def find(self, key: str) -> ApiKey | None:
        digest = hash_key(key)
        found = None
        for k in self.keys:  # every entry compared, in constant time each
            if secrets.compare_digest(k.sha256, digest):
                found = k
        return found


def key_from_headers(headers) -> str | None:
    """The key a request carries: ``X-API-Key`` or ``Authorization: Bearer``."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RateLimiter:
    """Token buckets per client: ``take(client, per_minute)`` is 0 when the request may go, else the
    seconds to wait (for ``Retry-After``)."""

    def __init__(self, clock=time.monotonic, max_clients: int = 100_000):
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, last time)
        self._lock = threading.Lock()
        self._max_clients = max_clients

    def take(self, client: str, per_minute: float) -> int:
        now = self._clock()
        rate = per_minute / 60.0
        with self._lock:
            tokens, last = self._buckets.get(client, (per_minute, now))
            tokens = min(per_minute, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                wait = 0
            else:
                self._buckets[client] = (tokens, now)
                wait = max(1, math.ceil((1.0 - tokens) / rate))
            if len(self._buckets) > self._max_clients:  # forget full buckets of clients gone quiet
                full = [c for c, (t, at) in self._buckets.items() if t + (now - at) * rate >= per_minute]
                for c in full[: len(self._buckets) - self._max_clients // 2]:
                    del self._buckets[c]
        return wait
