"""Pseudonymous user keys: a keyed HMAC-SHA256 of the raw user id.

The key comes from configuration (``OSRECO_HMAC_KEY``, read at the edge by
:meth:`PrivacyConfig.from_env`) and is never written next to the data, so a stored
``user_key`` cannot be turned back into a user id without it. The same key must be
used by training, the sidecar and ``osreco users forget``. A pseudonym is never accepted as a
user id from outside (the sidecar answers 400, ``osreco users forget`` exits 2): it would
address the user it was made from without knowing their id.

Example:
    >>> cfg = PrivacyConfig(key=b"a-long-secret-key-of-32-bytes-or-more!")
    >>> pseudonymize("alice", cfg.key)[:2]
    'u_'
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from osreco.ingest.errors import ConfigError

KEY_ENV = "OSRECO_HMAC_KEY"
MIN_KEY_BYTES = 16
PSEUDONYM_PREFIX = "u_"
_PSEUDONYM_RE = re.compile(r"^u_[0-9a-f]{64}$")


@dataclass(frozen=True)
class PrivacyConfig:
    """The secret that turns user ids into pseudonyms.

    Args:
        key: HMAC key, at least 16 bytes (32 random bytes recommended).

    Raises:
        ConfigError: the key is missing or too short.
    """

    key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) < MIN_KEY_BYTES:
            raise ConfigError(f"the HMAC key must be at least {MIN_KEY_BYTES} bytes",
                              field=KEY_ENV,
                              fix=f"export {KEY_ENV}=$(python -c 'import secrets; print(secrets.token_hex(32))')")

    def __repr__(self) -> str:  # never print the secret in logs or tracebacks
        return "PrivacyConfig(key=<hidden>)"

    @classmethod
    def from_env(cls, key: str | None = None) -> PrivacyConfig:
        """Build from ``key`` or the ``OSRECO_HMAC_KEY`` environment variable.

        Raises:
            ConfigError: neither is set, or the key is too short.
        """
        raw = key if key is not None else os.environ.get(KEY_ENV)
        if not raw:
            raise ConfigError(f"{KEY_ENV} is not set: user ids cannot be pseudonymized",
                              field=KEY_ENV,
                              fix=f"export {KEY_ENV}=$(python -c 'import secrets; print(secrets.token_hex(32))')")
        return cls(key=raw.encode("utf-8"))

    def pseudonymize(self, user_id: str) -> str:
        """The pseudonym of ``user_id`` under this key (see :func:`pseudonymize`)."""
        return pseudonymize(user_id, self.key)


def pseudonymize(user_id: str, key: bytes | str) -> str:
    """Keyed pseudonym of a user id: ``"u_" + hex(HMAC-SHA256(key, user_id))``.

    Idempotent on pseudonyms: a value that already is one is returned unchanged, so
    events that arrive already pseudonymized (for example from the events index) are
    not hashed twice.

    Args:
        user_id: the raw user id (non-empty).
        key: the HMAC key (bytes, or str encoded as UTF-8).

    Returns:
        ``u_`` followed by 64 lowercase hex digits.

    Raises:
        ConfigError: empty user id or key.
    """
    if not user_id:
        raise ConfigError("empty user id cannot be pseudonymized", field="user_id")
    if is_pseudonym(user_id):
        return user_id
    key_bytes = key.encode("utf-8") if isinstance(key, str) else key
    if not key_bytes:
        raise ConfigError("empty HMAC key", field=KEY_ENV)
    digest = hmac.new(key_bytes, str(user_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest


def is_pseudonym(value: str) -> bool:
    """True when ``value`` has the shape of a pseudonym made by :func:`pseudonymize`."""
    return bool(_PSEUDONYM_RE.match(str(value)))
