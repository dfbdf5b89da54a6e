"""What the notebooks share: where the service, Kafka, the config, the
binary and the data are (from the environment, defaulting to what
`deploy/quickstart.sh` starts), and small helpers around them.

Environment (all optional):
  STREAMFIT_NB_URL        the service's HTTP API (http://127.0.0.1:8080)
  STREAMFIT_NB_TOKEN      a bearer token, when the service has tokens (admin for model detail)
  STREAMFIT_CONFIG     the service's config (deploy/streamfit.toml)
  STREAMFIT_NB_BIN        the streamfit binary (the release build in ~/.cache/streamfit/target)
  STREAMFIT_DATA       the shared data folder (../shared/data beside the repo)
  STREAMFIT_NB_WORK       where exported files go (a temporary folder)
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import tempfile
import tomllib
import urllib.error
import urllib.request

REPO = pathlib.Path(__file__).resolve().parent.parent
URL = os.environ.get("STREAMFIT_NB_URL", "http://127.0.0.1:8080").rstrip("/")
TOKEN = os.environ.get("STREAMFIT_NB_TOKEN", "")
CONFIG = pathlib.Path(os.environ.get("STREAMFIT_CONFIG", REPO / "deploy" / "streamfit.toml"))
_target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache" / "streamfit" / "target"))
BIN = pathlib.Path(os.environ.get("STREAMFIT_NB_BIN", _target / "release" / "streamfit"))
DATA = pathlib.Path(os.environ.get("STREAMFIT_DATA", REPO.parent / "shared" / "data"))
WORK = pathlib.Path(os.environ.get("STREAMFIT_NB_WORK") or tempfile.mkdtemp(prefix="streamfit-nb-"))


def config() -> dict:
    """The service's config, as TOML."""
    with open(CONFIG, "rb") as f:
        return tomllib.load(f)


def kafka_props() -> dict:
    """The librdkafka properties of the config's [kafka] table."""
    return {k: str(v) for k, v in config().get("kafka", {}).items()}


def model_config(name: str) -> dict:
    """The config's [[model]] named `name`."""
    for m in config().get("model", []):
        if m["name"] == name:
            return m
    raise KeyError(f"no model {name!r} in {CONFIG}")


def output_topic(name: str) -> str:
    m = model_config(name)
    return m.get("output_topic", f"{name}.predictions")


class ApiError(Exception):
    """An error answer of the API: its status and JSON message."""

    def __init__(self, status: int, body: dict):
        super().__init__(f"HTTP {status}: {body.get('error', body)}")
        self.status = status
        self.body = body


def api(method: str, path: str, body=None, timeout: float = 30.0):
    """Calls the service's API; returns the JSON answer or raises ApiError."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    if TOKEN:
        req.add_header("authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = {"error": raw.decode(errors="replace")}
        raise ApiError(e.code, parsed) from None


def streamfit(*args: str) -> str:
    """Runs a streamfit subcommand with the config; returns its stdout, or
    raises with its stderr."""
    return streamfit_with(CONFIG, *args)


def streamfit_with(config_file: pathlib.Path, *args: str) -> str:
    """Runs a streamfit subcommand with another config file."""
    if not BIN.exists():
        raise FileNotFoundError(f"{BIN} is missing: build it (cargo build --release -p streamfit) or set STREAMFIT_NB_BIN")
    cmd = [str(BIN), *args, "--config", str(config_file)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "STREAMFIT_LOG": "warn"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout


def export_predictions(model: str) -> pathlib.Path:
    """Every committed prediction of `model` to a Parquet file (`streamfit
    predictions export`); returns its path."""
    out = WORK / f"{model}.predictions.parquet"
    streamfit("predictions", "export", "--model", model, "--out", str(out))
    return out
