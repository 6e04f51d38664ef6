"""Looking at runs: the MLflow UI on rnnflow's tracking store."""

from __future__ import annotations

import shutil
import subprocess
import sys

import click


def serve_ui(host: str, port: int, tracking_uri: str | None = None) -> None:
    """Start the MLflow UI on the store rnnflow logs to (blocks until Ctrl-C).

    Args:
        host: address to listen on.
        port: port to listen on.
        tracking_uri: the store; default: the one runs go to ($MLFLOW_TRACKING_URI or sqlite:///mlflow.db).
    """
    from rnnflow.tracking import tracking_uri as resolve

    uri = resolve(tracking_uri)
    if uri.startswith(("http://", "https://")):
        click.echo(f"runs are recorded on the tracking server {uri}: open it in a browser")
        return
    mlflow_cli = shutil.which("mlflow")
    command = [mlflow_cli] if mlflow_cli else [sys.executable, "-m", "mlflow"]
    command += ["ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    click.echo(f"MLflow UI for {uri} at http://{host}:{port} (Ctrl-C to stop)")
    try:
        subprocess.run(command, check=False)
    except KeyboardInterrupt:
        pass
