"""Pseudonymization: keyed, stable, idempotent; the key is validated and never shown."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from osreco.cf.privacy import PrivacyConfig, is_pseudonym, pseudonymize
from osreco.ingest.errors import ConfigError

KEY = b"0123456789abcdef0123456789abcdef"


def test_pseudonym_is_hmac_sha256_of_the_id():
    expected = "u_" + hmac.new(KEY, b"alice", hashlib.sha256).hexdigest()
    assert pseudonymize("alice", KEY) == expected
    assert pseudonymize("alice", KEY.decode()) == expected


def test_pseudonym_depends_on_key_and_id():
    other_key = b"fedcba9876543210fedcba9876543210"
    assert pseudonymize("alice", KEY) != pseudonymize("alice", other_key)
    assert pseudonymize("alice", KEY) != pseudonymize("bob", KEY)


def test_pseudonymizing_a_pseudonym_is_a_no_op():
    key = pseudonymize("alice", KEY)
    assert is_pseudonym(key)
    assert pseudonymize(key, KEY) == key
    assert not is_pseudonym("alice")


def test_config_from_env_and_validation(monkeypatch):
    monkeypatch.setenv("OSRECO_HMAC_KEY", KEY.decode())
    cfg = PrivacyConfig.from_env()
    assert cfg.pseudonymize("alice") == pseudonymize("alice", KEY)
    assert KEY.decode() not in repr(cfg)
    monkeypatch.delenv("OSRECO_HMAC_KEY")
    with pytest.raises(ConfigError, match="OSRECO_HMAC_KEY is not set"):
        PrivacyConfig.from_env()
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        PrivacyConfig(key=b"short")


def test_empty_user_id_is_refused():
    with pytest.raises(ConfigError):
        pseudonymize("", KEY)
