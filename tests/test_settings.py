"""The sidecar's settings are listed once, in ``osreco.plugin.config.SETTINGS``: ``from_env`` reads
exactly them, and the README table and ``osreco serve --help`` are generated from them."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from osreco.ingest.connection import OpenSearchConfig
from osreco.plugin import config as sidecar_config
from osreco.plugin.config import SETTINGS, SidecarConfig, settings_help, with_settings_table

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "python -m osreco.plugin.config --write README.md"
NODE = OpenSearchConfig(url="http://127.0.0.1:9200")


def test_readme_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert with_settings_table(readme) == readme, (
        f"README's 'Sidecar settings' table differs from osreco.plugin.config.SETTINGS: run `{REGENERATE}`")


def test_serve_help_lists_every_setting():
    from osreco.plugin.cli import serve

    result = CliRunner().invoke(serve, ["--help"])
    assert result.exit_code == 0, result.output
    text = "".join(result.output.split())  # wrapped lines, maybe broken at hyphens
    for name, meaning in settings_help():
        assert "".join(f"{name} {meaning}".split()) in text, f"{name} is missing from `osreco serve --help`"


def test_from_env_reads_exactly_the_listed_settings(monkeypatch):
    read: list[str] = []
    text = sidecar_config._text

    def recording(env: dict[str, str], name: str) -> str:
        read.append(name)
        return text(env, name)

    monkeypatch.setattr(sidecar_config, "_text", recording)
    SidecarConfig.from_env({"OSRECO_DEV_MODE": "1"}, opensearch=NODE)
    assert sorted(read) == sorted(s.name for s in SETTINGS)
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)


def test_listed_defaults_are_the_config_defaults():
    built = SidecarConfig.from_env({"OSRECO_DEV_MODE": "1"}, opensearch=NODE)
    assert built == SidecarConfig(opensearch=NODE, alias="osreco-items", dev_mode=True)


def test_an_empty_variable_means_its_default():
    built = SidecarConfig.from_env({"OSRECO_DEV_MODE": "1", "OSRECO_INDEX": "", "OSRECO_CANDIDATES": ""},
                                   opensearch=NODE)
    assert (built.alias, built.fusion.candidates) == ("osreco-items", 50)


def test_on_off_settings_are_strict():
    import pytest

    from osreco.plugin.config import SidecarConfig
    from osreco.plugin.errors import ConfigError

    env = {"OPENSEARCH_URL": "http://127.0.0.1:9", "OSRECO_INDEX": "items", "OSRECO_DEV_MODE": "Yes"}
    config = SidecarConfig.from_env(env)
    assert config.dev_mode is True and config.fusion.demote_seen is True and config.playground is False
    off = SidecarConfig.from_env({**env, "OSRECO_DEMOTE_SEEN": "FALSE", "OSRECO_EMBED_VOCABULARY": "0"})
    assert off.fusion.demote_seen is False and off.embed_vocabulary is False
    for name in ("OSRECO_DEV_MODE", "OSRECO_DEMOTE_SEEN", "OSRECO_PLAYGROUND"):
        with pytest.raises(ConfigError) as e:
            SidecarConfig.from_env({**env, name: "ture"})  # a typo is never silently on or off
        assert e.value.field == name
