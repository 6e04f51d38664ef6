"""Where a run came from: the git commit of the spec's repository and the versions that ran it.

MLflow tags the git commit of the repository holding `sys.argv[0]`: for the `rnnflow` command
that is the virtual environment's script (no tags), for `python -m rnnflow` rnnflow's own source,
never the user's project. rnnflow asks git about the spec file's directory instead. Nothing here
imports TensorFlow; the versions are read from the modules a run has already imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

GIT_TIMEOUT = 5.0  # seconds per git call: a hung network file system must not hold a run


def git_tags(spec_file: Path) -> dict[str, str]:
    """MLflow's git tags for the repository holding `spec_file`, plus `rnnflow.git_dirty`.

    `rnnflow.git_dirty` is "true" when tracked files differ from the commit, or the spec file
    itself is not committed as it is (then the commit alone does not reproduce the run).
    Empty when git is not installed or the file is not in a repository.
    """
    directory = spec_file.resolve().parent
    if shutil.which("git") is None or not directory.is_dir():
        return {}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "--no-optional-locks", "-C", str(directory), *args], capture_output=True,
                                  text=True, timeout=GIT_TIMEOUT, stdin=subprocess.DEVNULL,
                                  env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"})
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "-q", "HEAD")
    if not commit:
        return {}  # not a repository, or one without a commit yet
    changed = git("status", "--porcelain", "--untracked-files=no")
    spec_state = git("status", "--porcelain", "--untracked-files=all", "--ignored", "--", spec_file.resolve().name)
    tags = {"mlflow.source.git.commit": commit}
    if changed is not None and spec_state is not None:  # else git could not tell
        tags["rnnflow.git_dirty"] = "true" if changed or spec_state else "false"
    branch = git("symbolic-ref", "--short", "-q", "HEAD")
    if branch:
        tags["mlflow.source.git.branch"] = branch
    url = git("remote", "get-url", "origin")
    if url:
        tags["mlflow.source.git.repoURL"] = without_credentials(url)
    return tags


def without_credentials(url: str) -> str:
    """A remote URL without the user and password an https remote may carry."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme in ("http", "https") and ("@" in parsed.netloc):
        host = parsed.netloc.rsplit("@", 1)[1]
        return urllib.parse.urlunsplit(parsed._replace(netloc=host))
    return url


def version_tags() -> dict[str, str]:
    """The versions of rnnflow, Python and the libraries a run used, as `rnnflow.*_version` tags."""
    from rnnflow import __version__

    tags = {"rnnflow.version": __version__, "rnnflow.python_version": sys.version.split()[0]}
    for module in ("tensorflow", "keras", "mlflow"):
        loaded = sys.modules.get(module)
        version = getattr(loaded, "__version__", None) if loaded is not None else None
        if version is None:
            from importlib import metadata

            try:
                version = metadata.version(module)
            except metadata.PackageNotFoundError:
                continue
        tags[f"rnnflow.{module}_version"] = str(version)
    return tags
