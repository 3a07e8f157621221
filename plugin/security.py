"""API keys hashed at rest, re-read when the keys file changes, and the dev-mode warning.

A key looks like ``osr_<key_id>_<secret>``: ``key_id`` finds the record, the secret is
checked against ``sha256(salt || secret)`` in constant time. The secrets are 32 random
bytes, so a fast salted hash is enough (a slow KDF protects low-entropy passwords, not
random tokens) and keeps authentication off the latency budget. The file never holds a key.

The keys file is rewritten atomically (a temp file in the same folder, then ``os.replace``)
under an advisory lock, so ``osreco apikey create``/``revoke`` never leave a half-written
file. A running sidecar's :class:`KeyChecker` stats the file at most once per
``check_every_s`` and re-reads it when it changed, so a revoked key stops working in every
worker without a restart; a malformed new file keeps the old keys and logs an error.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from osreco.plugin.errors import AuthError, ConfigError, NotFoundError

KEY_PREFIX = "osr"
RELOAD_EVERY_S = 1.0
"""How often a running sidecar stats the keys file for changes (each worker, at most)."""
log = logging.getLogger("osreco.plugin")
_HEX = re.compile(r"^[0-9a-f]*$")


@dataclass(frozen=True)
class KeyRecord:
    """One stored key: its public id, a name, the salt, the salted hash and when it was revoked."""

    key_id: str
    name: str
    salt: str
    digest: str
    created_at: float
    revoked_at: float | None = None

    def public(self) -> dict[str, object]:
        """What may be shown: id, name, created_at, revoked state (never the salt or hash)."""
        return {"key_id": self.key_id, "name": self.name, "created_at": self.created_at,
                "revoked": self.revoked_at is not None, "revoked_at": self.revoked_at}


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


def _record(raw: object, i: int) -> KeyRecord:
    """One entry of the file, checked field by field (a bad entry names its position)."""
    if not isinstance(raw, dict):
        raise ValueError(f"keys[{i}] is not an object")
    rec = KeyRecord(**raw)
    for name in ("key_id", "name", "salt", "digest"):
        if not isinstance(getattr(rec, name), str) or not getattr(rec, name):
            raise ValueError(f"keys[{i}].{name} must be a non-empty string")
    if "_" in rec.key_id:
        raise ValueError(f"keys[{i}].key_id must not contain '_'")
    if len(rec.salt) % 2 or not _HEX.match(rec.salt) or len(rec.digest) != 64 or not _HEX.match(rec.digest):
        raise ValueError(f"keys[{i}]: salt and digest must be lowercase hex (digest: 64 characters)")
    for name in ("created_at", "revoked_at"):
        value = getattr(rec, name)
        if (value is not None or name == "created_at") and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"keys[{i}].{name} must be a number")
    return rec


def load_keys(path: str | os.PathLike[str]) -> dict[str, KeyRecord]:
    """Read a keys file (``{"keys": [record, ...]}``), revoked records included.

    Raises:
        ConfigError: the file is missing or malformed (names the file and the entry).
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or not isinstance(raw.get("keys"), list):
            raise ValueError('expected {"keys": [...]}')
        records = [_record(r, i) for i, r in enumerate(raw["keys"])]
    except FileNotFoundError as e:
        raise ConfigError(f"API keys file {path} does not exist", field="OSRECO_API_KEYS_FILE",
                          fix="create it with `osreco apikey create --file PATH --name NAME`") from e
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"API keys file {path} is malformed: {e}", field="OSRECO_API_KEYS_FILE",
                          fix="restore the file, or recreate it with `osreco apikey create`") from e
    except OSError as e:
        raise ConfigError(f"API keys file {path} cannot be read: {e}", field="OSRECO_API_KEYS_FILE",
                          fix="make the file readable by the sidecar's user") from e
    by_id = {r.key_id: r for r in records}
    if len(by_id) != len(records):
        raise ConfigError(f"API keys file {path} is malformed: a key_id appears twice",
                          field="OSRECO_API_KEYS_FILE", fix="remove the duplicate entry")
    return by_id


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock beside the keys file, held for one read-modify-write."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_keys(path: Path, records: list[KeyRecord]) -> None:
    """Replace the keys file atomically (mode 0600): readers see the old or the new file, whole."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump({"keys": [asdict(r) for r in records]}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_key(path: str | os.PathLike[str], record: KeyRecord) -> None:
    """Add ``record`` to the keys file (created with mode 0600 when missing)."""
    p = Path(path)
    with _locked(p):
        records = list(load_keys(p).values()) if p.exists() else []
        _write_keys(p, [*records, record])


def list_keys(path: str | os.PathLike[str]) -> list[KeyRecord]:
    """The records of the keys file, oldest first.

    Raises:
        ConfigError: the file is missing or malformed.
    """
    return sorted(load_keys(path).values(), key=lambda r: r.created_at)


def revoke_key(path: str | os.PathLike[str], key: str) -> tuple[KeyRecord, bool]:
    """Mark the key with id or name ``key`` revoked (the record stays, for listings).

    Returns:
        ``(record, changed)``: ``changed`` is False when it was already revoked.

    Raises:
        NotFoundError: no key has that id or name.
        ConfigError: the name is shared by several live keys (use the id), or the file is bad.
    """
    p = Path(path)
    with _locked(p):
        records = load_keys(p)
        match = records.get(key)
        if match is None:
            named = [r for r in records.values() if r.name == key]
            live = [r for r in named if r.revoked_at is None]
            if len(live) > 1:
                raise ConfigError(f"{len(live)} keys in {path} are named {key!r}: "
                                  f"{', '.join(r.key_id for r in live)}", field="KEY_ID_OR_NAME",
                                  fix="revoke them one at a time by key id")
            candidates = live or named
            match = candidates[0] if candidates else None
        if match is None:
            raise NotFoundError(f"no API key with id or name {key!r} in {path}", field="KEY_ID_OR_NAME",
                                fix=f"see the keys with `osreco apikey list --file {path}`")
        if match.revoked_at is not None:
            return match, False
        revoked = KeyRecord(**{**asdict(match), "revoked_at": time.time()})
        records[match.key_id] = revoked
        _write_keys(p, list(records.values()))
        return revoked, True


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class KeyChecker:
    """Checks ``Authorization: Bearer <key>`` or ``X-API-Key`` against stored records.

    Args:
        records: the keys (``load_keys``).
        path: the keys file to watch; ``None`` = the records never change.
        check_every_s: the file is stat'ed at most this often (by any request thread).
    """

    def __init__(self, records: dict[str, KeyRecord], path: str | None = None, check_every_s: float = 1.0):
        self._records = records
        self._path = path
        self._every = check_every_s
        self._seen = _signature(path) if path else None
        self._next = time.monotonic() + check_every_s
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str, check_every_s: float | None = None) -> KeyChecker:
        """A checker over ``path`` that follows its changes (stat'ed every ``RELOAD_EVERY_S``).

        Raises:
            ConfigError: the file is missing or malformed now (the sidecar does not start).
        """
        seen = _signature(path)
        checker = cls(load_keys(path), path, RELOAD_EVERY_S if check_every_s is None else check_every_s)
        checker._seen = seen    # the state read, even if the file changed meanwhile
        return checker

    def refresh(self, force: bool = False) -> None:
        """Re-read the file when its inode, mtime or size changed (at most once per interval).

        A missing or malformed file keeps the current keys and logs one error per change.
        """
        if self._path is None or (not force and time.monotonic() < self._next):
            return
        if not self._lock.acquire(blocking=False):
            return     # another thread is checking right now
        try:
            self._next = time.monotonic() + self._every
            seen = _signature(self._path)
            if seen == self._seen:
                return
            self._seen = seen
            try:
                records = load_keys(self._path)
            except ConfigError as e:
                log.error("API keys file changed but was not loaded; keeping the %d keys read before: %s",
                          len(self._records), e)
                return
            self._records = records
            log.info("API keys reloaded from %s: %d keys (%d revoked)", self._path, len(records),
                     sum(r.revoked_at is not None for r in records.values()))
        finally:
            self._lock.release()

    def check(self, presented: str | None) -> KeyRecord:
        """The record of a valid, unrevoked key.

        Raises:
            AuthError: no key, a malformed key, an unknown/invalid key or a revoked key.
        """
        if not presented:
            raise AuthError("an API key is required", fix="send `Authorization: Bearer <key>` or `X-API-Key`")
        parts = presented.split("_", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX:
            raise AuthError("the API key is malformed", fix="keys look like osr_<id>_<secret>")
        self.refresh()
        record = self._records.get(parts[1])
        expected = record.digest if record else "0" * 64
        actual = _digest(record.salt if record else "00", parts[2])
        if not hmac.compare_digest(expected, actual) or record is None:
            raise AuthError("the API key is not valid", fix="ask for a key with `osreco apikey create`")
        if record.revoked_at is not None:
            raise AuthError("the API key was revoked", fix="ask for a new key with `osreco apikey create`")
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


# ---- dev mode ---------------------------------------------------------------------------------

_warned_pids: set[int] = set()


def ensure_log_handler(logger: logging.Logger = log) -> None:
    """Give ``logger`` a stderr handler when nothing above it has one (gunicorn configures only
    its own loggers), so warnings and reload errors reach the server's stderr."""
    if logger.hasHandlers():
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def dev_mode_warning(hmac_key: str | None, dev_hmac_key: str) -> str:
    """The warning for dev mode; it names the fixed HMAC key when that key is the one in use."""
    text = "DEV MODE: API keys are OFF — every request is accepted. Never use dev mode in production."
    if not hmac_key or hmac_key == dev_hmac_key:
        text += (f" User ids are pseudonymized with the fixed, public HMAC key {dev_hmac_key!r}: "
                 "pseudonyms are not secret. Set OSRECO_HMAC_KEY and OSRECO_API_KEYS_FILE instead.")
    return text


def warn_dev_mode(hmac_key: str | None, dev_hmac_key: str) -> None:
    """Log :func:`dev_mode_warning` once per process (a gunicorn worker, ``osreco serve``, an eval)."""
    if os.getpid() in _warned_pids:
        return
    _warned_pids.add(os.getpid())
    ensure_log_handler()
    log.warning(dev_mode_warning(hmac_key, dev_hmac_key))
