"""How osreco reaches OpenSearch: one frozen config, read from the environment at the edge."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from opensearchpy import OpenSearch

from osreco.ingest.errors import ConfigError


@dataclass(frozen=True)
class OpenSearchConfig:
    """Connection settings.

    Args:
        url: base URL, e.g. ``https://search.internal:9200``.
        username, password: basic auth (both or neither).
        ca_path: CA bundle for TLS verification.
        verify_certs: verify the server's certificate (https only).
        timeout_s: default request timeout.
    """

    url: str
    username: str | None = None
    password: str | None = None
    ca_path: str | None = None
    verify_certs: bool = True
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"OpenSearch url {self.url!r} must start with http:// or https://",
                              field="OPENSEARCH_URL")
        if (self.username is None) != (self.password is None):
            raise ConfigError("set both OPENSEARCH_USERNAME and OPENSEARCH_PASSWORD, or neither",
                              field="OPENSEARCH_USERNAME")
        if self.ca_path and not os.path.exists(self.ca_path):
            raise ConfigError(f"CA file {self.ca_path} does not exist", field="OPENSEARCH_CA_PATH")

    @classmethod
    def from_env(cls, url: str | None = None) -> OpenSearchConfig:
        """From ``OPENSEARCH_URL``, ``OPENSEARCH_USERNAME``, ``OPENSEARCH_PASSWORD``,
        ``OPENSEARCH_CA_PATH``, ``OPENSEARCH_VERIFY_CERTS``.

        The runtime never guesses a node: only the ``osreco`` command line (its edge) falls back
        to the local development node when ``OPENSEARCH_URL`` is unset.
        """
        url = url or os.environ.get("OPENSEARCH_URL")
        if not url:
            raise ConfigError("no OpenSearch: OPENSEARCH_URL is unset", field="OPENSEARCH_URL",
                              fix="set OPENSEARCH_URL, or run `osreco opensearch start` before an osreco command")
        return cls(url=url.rstrip("/"), username=os.environ.get("OPENSEARCH_USERNAME"),
                   password=os.environ.get("OPENSEARCH_PASSWORD"),
                   ca_path=os.environ.get("OPENSEARCH_CA_PATH") or None,
                   verify_certs=os.environ.get("OPENSEARCH_VERIFY_CERTS", "true").lower() != "false")


def connect(config: OpenSearchConfig, **kwargs: Any) -> OpenSearch:
    """An opensearch-py client for ``config`` (extra kwargs go to the client)."""
    auth = (config.username, config.password) if config.username else None
    return OpenSearch(hosts=[config.url], http_auth=auth, use_ssl=config.url.startswith("https"),
                      verify_certs=config.verify_certs, ca_certs=config.ca_path,
                      timeout=config.timeout_s, ssl_show_warn=False, **kwargs)
