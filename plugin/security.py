"""API keys hashed at rest (request limits live in ``schemas`` and the app's body cap).

A key looks like ``osr_<key_id>_<secret>``: ``key_id`` finds the record, the secret is
checked against ``sha256(salt || secret)`` in constant time. The secrets are 32 random
bytes, so a fast salted hash is enough (a slow KDF protects low-entropy passwords, not
random tokens) and keeps authentication off the latency budget. The file never holds a key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from osreco.plugin.errors import AuthError, ConfigError

KEY_PREFIX = "osr"


@dataclass(frozen=True)
class KeyRecord:
    """One stored key: its public id, a name, the salt and the salted hash."""

    key_id: str
    name: str
    salt: str
    digest: str
    created_at: float


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def create_key(name: str) -> tuple[str, KeyRecord]:
    """A new random key and the record to store for it.

    Args:
        name: who the key is for (shown in listings, never secret).

    Returns:
        ``(key, record)``: the key is shown once; only the record is stored.
    """
    key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
    return (f"{KEY_PREFIX}_{key_id}_{secret}",
            KeyRecord(key_id=key_id, name=name, salt=salt, digest=_digest(salt, secret),
                      created_at=time.time()))


def load_keys(path: str | os.PathLike[str]) -> dict[str, KeyRecord]:
    """Read a keys file (``{"keys": [record, ...]}``).

    Raises:
        ConfigError: the file is missing or malformed (names the file).
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return {r["key_id"]: KeyRecord(**r) for r in raw["keys"]}
    except FileNotFoundError as e:
        raise ConfigError(f"API keys file {path} does not exist", field="OSRECO_API_KEYS_FILE",
                          fix="create it with `osreco apikey create --file PATH --name NAME`") from e
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"API keys file {path} is malformed: {e}", field="OSRECO_API_KEYS_FILE",
                          fix="recreate it with `osreco apikey create`") from e


def append_key(path: str | os.PathLike[str], record: KeyRecord) -> None:
    """Add ``record`` to the keys file (created with mode 0600 when missing)."""
    p = Path(path)
    records = list(load_keys(p).values()) if p.exists() else []
    records.append(record)
    tmp = p.with_suffix(p.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"keys": [r.__dict__ for r in records]}, f, indent=1)
    os.replace(tmp, p)


class KeyChecker:
    """Checks ``Authorization: Bearer <key>`` or ``X-API-Key`` against stored records."""

    def __init__(self, records: dict[str, KeyRecord]):
        self._records = records

    def check(self, presented: str | None) -> KeyRecord:
        """The record of a valid key.

        Raises:
            AuthError: no key, a malformed key, or an unknown/invalid key.
        """
        if not presented:
            raise AuthError("an API key is required", fix="send `Authorization: Bearer <key>` or `X-API-Key`")
        parts = presented.split("_", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX:
            raise AuthError("the API key is malformed", fix="keys look like osr_<id>_<secret>")
        record = self._records.get(parts[1])
        expected = record.digest if record else "0" * 64
        actual = _digest(record.salt if record else "00", parts[2])
        if not hmac.compare_digest(expected, actual) or record is None:
            raise AuthError("the API key is not valid", fix="ask for a key with `osreco apikey create`")
        return record


class HeaderLookup(Protocol):
    """What :func:`presented_key` needs of the headers: a dict or Flask's ``request.headers``."""

    def get(self, key: str, /) -> str | None: ...


def presented_key(headers: HeaderLookup) -> str | None:
    """The key sent in ``Authorization: Bearer`` or ``X-API-Key`` (``None`` when absent)."""
    auth = headers.get("Authorization") or ""
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("X-API-Key")
