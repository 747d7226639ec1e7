"""Publishing a retrain's outputs: `dvc push` to the workspace's default remote, then a git
commit (and push, where the branch has an upstream) of what DVC keeps in git, so another
machine needs only `git pull && dvc pull`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prefect import get_run_logger, task

# Absolute imports: Prefect workers load flows.py, which imports this, as a script.
from pipeline.ops.env import tool_env, tool_error
from pipeline.ops.states import one_line_errors
from pix2pix.errors import Pix2PixError


class PublishFailed(Pix2PixError, RuntimeError):
    """The outputs could not be pushed; the message is one line naming the cause and the fix."""


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, env=tool_env(), capture_output=True, text=True
    )


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def git_tracked_outputs(root: Path) -> list[str]:
    """dvc.lock, params.yaml and the outputs dvc.yaml keeps out of DVC's cache (cache: false)."""
    import yaml

    files = ["dvc.lock", "params.yaml"]
    for stage in (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {}).values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []) or []:
                if isinstance(entry, dict):
                    files += [
                        path for path, opts in entry.items() if isinstance(opts, dict) and opts.get("cache") is False
                    ]
    return [f for f in files if (root / f).exists()]


@task
@one_line_errors
def publish(root: str, model: dict | None, commit: bool = True) -> str:
    """dvc push to the default remote, then commit (and git push) what DVC keeps in git.
    `commit=False` for experiment runs: DVC keeps those as experiments of the current commit
    (`dvc exp show`; share one with `dvc exp push`), committing would move them out of view."""
    rootp = Path(root)
    logger = get_run_logger()
    notes = []
    remote = _dvc(rootp, "config", "core.remote").stdout.strip()  # the default remote, "" when none
    if remote:
        r = _dvc(rootp, "push")
        if r.returncode != 0:
            kept = f"model version {model['version']} of {model['name']} stays registered; " if model else ""
            raise PublishFailed(
                f"dvc push to remote '{remote}' failed: {tool_error(r.stdout + r.stderr)}; {kept}"
                "the next retrain pushes again once the object store is reachable"
            )
        notes.append(f"pushed outputs to DVC remote '{remote}'")
    else:
        notes.append("no default DVC remote: outputs stay in this workspace")
    if commit and (rootp / ".git").exists():
        files = git_tracked_outputs(rootp)
        _git(rootp, "add", "--", *files)
        if _git(rootp, "diff", "--cached", "--quiet").returncode != 0:
            ident = (
                []
                if _git(rootp, "config", "user.email").stdout.strip()
                else ["-c", "user.name=pix2pix retrain", "-c", "user.email=retrain@localhost"]
            )
            what = f"{model['name']} v{model['version']}" if model else "outputs"
            r = _git(rootp, *ident, "commit", "-q", "-m", f"retrain: {what}", "--", *files)
            if r.returncode != 0:
                raise PublishFailed(f"git commit in {rootp} failed: {tool_error(r.stderr + r.stdout)}")
            notes.append("committed " + ", ".join(files))
        if _git(rootp, "rev-parse", "--abbrev-ref", "@{upstream}").returncode == 0:
            r = _git(rootp, "push", "-q")
            if r.returncode != 0:
                raise PublishFailed(
                    f"git push from {rootp} failed: {tool_error(r.stderr + r.stdout)}; the next retrain pushes again"
                )
            notes.append("git push")
    logger.info("publish: %s", "; ".join(notes))
    return "; ".join(notes)
