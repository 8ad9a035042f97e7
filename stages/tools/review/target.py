"""Which filter a review feeds, which folder its decisions go to, and what to tell the person.

params.yaml is never edited: when ``filter.filters.<name>.labels.folder`` is null (or names
another folder than ``--folder``), the review says which folder it writes and the exact
line to set, on the page and in one line at start.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from stages.common.errors import StageError
from stages.common.params import load_params
from stages.filter.config import Filter

DEFAULT_FOLDER = "labels/{name}"     # relative to the repo root, beside data/ and models/


@dataclass(frozen=True)
class ReviewTarget:
    filter_name: str
    folder: Path            # absolute
    folder_text: str        # as params.yaml should name it (relative to the repo root when inside it)
    params_key: str         # filter.filters.<name>.labels.folder
    configured: bool        # params.yaml already names this folder: the filter trains on it
    in_cascade: bool
    params_value: str | None = None   # what params.yaml has at params_key (None: null)

    @property
    def params_line(self) -> str:
        return f"{self.params_key}: {self.folder_text}"

    def note(self) -> str | None:
        """The one line the person must act on, or None when the filter already reads the folder."""
        if not self.configured:
            has = "is null" if self.params_value is None else f"is {self.params_value}"
            return (f"{self.params_key} {has} in params.yaml: decisions are saved in {self.folder_text}, which "
                    f"the filter reads once params.yaml sets `{self.params_line}`")
        if not self.in_cascade:
            return f"filter {self.filter_name!r} is not in filter.cascade: add it there to train it"
        return None


def as_params_text(folder: Path, repo_root: Path) -> str:
    folder = folder.absolute()
    return folder.relative_to(repo_root).as_posix() if folder.is_relative_to(repo_root) else str(folder)


def choose_target(params_path: Path, repo_root: Path, filter_name: str | None = None,
                  folder: str | Path | None = None) -> ReviewTarget:
    """The filter (``filter_name``, else the first of the cascade, else the first defined) and its folder
    (``folder``, else the one params.yaml names, else labels/<name>)."""
    repo_root = Path(repo_root).absolute()
    cfg = load_params(repo_root / params_path, {"filter": Filter}).filter
    name = filter_name or (cfg.cascade[0] if cfg.cascade else next(iter(cfg.filters), None))
    if name not in cfg.filters:
        known = ", ".join(cfg.filters) or "none"
        raise StageError(f"no filter named {name!r} under filter.filters in {params_path} (defined: {known})")
    configured = cfg.filters[name].labels.folder
    chosen = Path(folder) if folder is not None else Path(configured or DEFAULT_FOLDER.format(name=name))
    chosen = chosen if chosen.is_absolute() else repo_root / chosen
    same = configured is not None and _resolved(repo_root, configured) == chosen.resolve()
    return ReviewTarget(name, chosen, as_params_text(chosen, repo_root), f"filter.filters.{name}.labels.folder",
                        same, name in cfg.cascade, configured)


def _resolved(repo_root: Path, text: str) -> Path:
    path = Path(text)
    return (path if path.is_absolute() else repo_root / path).resolve()


def retrain_hint(repo_root: Path, target: ReviewTarget) -> str:
    """How to retrain on the decisions. DVC reruns the filter when one of its deps changes: its
    params file does when labels.folder is first set, but the folder's content is a dep only when
    dvc.yaml lists it (or a folder above it) under the filter stage."""
    if _dvc_tracks(repo_root, target.folder):
        return "run `dvc repro`: the filter stage retrains the ensemble on the decisions"
    return ("run `dvc repro` once params.yaml names the folder; after later decisions run "
            "`dvc repro --force --single-item filter` and then `dvc repro` (dvc.yaml does not list "
            f"{target.folder_text} as a dependency of the filter stage, so DVC cannot see new decisions)")


def _dvc_tracks(repo_root: Path, folder: Path) -> bool:
    try:
        stages = yaml.safe_load((repo_root / "dvc.yaml").read_text()).get("stages", {})
        deps = stages.get("filter", {}).get("deps", [])
    except (OSError, AttributeError, yaml.YAMLError):
        return False
    folder = folder.resolve()
    return any(isinstance(dep, str) and folder.is_relative_to((repo_root / dep).resolve()) for dep in deps)
