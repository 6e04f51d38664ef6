"""What a run records about itself in MLflow: provenance tags, metrics linked to the model, a
model that serves, and a tracking server that goes away mid-run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rnnflow.provenance import git_tags, without_credentials


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_git_tags_of_the_spec_repository(tmp_path):
    repo = tmp_path / "project"
    (repo / "specs").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "remote", "add", "origin", "https://someone:secret@example.com/team/project.git")
    spec = repo / "specs" / "a.yaml"
    spec.write_text("name: a\n")
    assert git_tags(spec) == {}  # a repository without a commit: nothing to point at
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    head = git(repo, "rev-parse", "HEAD")
    assert git_tags(spec) == {"mlflow.source.git.commit": head, "mlflow.source.git.branch": "main",
                              "mlflow.source.git.repoURL": "https://example.com/team/project.git",
                              "rnnflow.git_dirty": "false"}
    spec.write_text("name: b\n")  # the spec differs from the commit
    assert git_tags(spec)["rnnflow.git_dirty"] == "true"
    git(repo, "commit", "-q", "-am", "second")
    new = repo / "specs" / "new.yaml"  # never committed: the commit does not hold it
    new.write_text("name: n\n")
    assert git_tags(new)["rnnflow.git_dirty"] == "true" and git_tags(spec)["rnnflow.git_dirty"] == "false"
    (repo / "notes.txt").write_text("x")  # an untracked file elsewhere changes nothing the run used
    assert git_tags(spec)["rnnflow.git_dirty"] == "false"
    outside = tmp_path / "loose.yaml"
    outside.write_text("name: c\n")
    assert git_tags(outside) == {}


def test_git_tags_without_git(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable
    assert git_tags(Path(__file__)) == {}


def test_credentials_are_left_out_of_the_repository_url():
    assert without_credentials("https://u:p@github.com/a/b.git") == "https://github.com/a/b.git"
    assert without_credentials("git@github.com:a/b.git") == "git@github.com:a/b.git"
