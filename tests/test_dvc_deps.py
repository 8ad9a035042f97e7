"""dvc.yaml's code deps are the stages' import closures: no module missing, none extra.

A stage's entry is the module its ``cmd`` runs (``python -m stages.X`` -> stages.X.__main__,
``python -m stages.X.y`` -> stages.X.y);
a family stage also runs ``stages.families.<item>.<role>`` (the registry imports it by name:
train and hpo the train role, evaluate the evaluate role), and the params stage every
family's ``core.config``. A declared folder counts as every
.py file below it.
"""
from __future__ import annotations

import json
import re

import pytest
import yaml

from import_graph import ROOT, all_modules, closure_files, cycles, module_path

FAMILY_ROLE = {"train": "train", "hpo": "train", "evaluate": "evaluate"}


def _families() -> list[str]:
    return yaml.safe_load((ROOT / "params.yaml").read_text())["families"]


def _all_families() -> list[str]:
    return sorted(p.name for p in (ROOT / "stages/families").iterdir()
                  if p.is_dir() and not p.name.startswith(("_", ".")))


def _expand(dep: str) -> set[str]:
    path = ROOT / dep
    if path.is_dir():
        return {p.relative_to(ROOT).as_posix() for p in path.rglob("*.py") if "__pycache__" not in p.parts}
    return {dep} if dep.endswith(".py") else set()


def stage_instances() -> dict[str, dict]:
    """stage name (foreach expanded) -> {entries, code deps as declared, group}."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for group, body in stages.items():
        items = _families() if "foreach" in body else [None]
        spec = body.get("do", body)
        for item in items:
            text = lambda s: s.replace("${item}", item) if item else s   # noqa: E731
            module = re.search(r"python -m (stages[\w.]+)", spec["cmd"]).group(1)
            entries = [f"{module}.__main__" if module_path(f"{module}.__main__") else module]
            if item:
                entries.append(f"stages.families.{item}.{FAMILY_ROLE[group]}")
            if group == "params":   # it validates every family's sections with its config
                entries += [f"stages.families.{f}.core.config" for f in _all_families()]
            deps = [text(d) for d in spec.get("deps", []) if d.startswith("stages")]
            name = f"{group}@{item}" if item else group
            out[name] = {"entries": entries, "deps": deps, "group": group}
    return out


INSTANCES = stage_instances()


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_every_imported_module_is_a_declared_dep(name):
    stage = INSTANCES[name]
    declared = set().union(*(_expand(d) for d in stage["deps"]))
    missing = sorted(closure_files(stage["entries"]) - declared)
    assert not missing, f"{name} imports {missing} but dvc.yaml does not list them"


@pytest.mark.parametrize("name", sorted(n for n, s in INSTANCES.items() if "@" not in n))
def test_a_plain_stage_declares_nothing_it_does_not_import(name):
    stage = INSTANCES[name]
    imported = closure_files(stage["entries"])
    for dep in stage["deps"]:
        extra = sorted(_expand(dep) - imported)
        assert _expand(dep), f"{name}: dep {dep} holds no Python module"
        assert not extra, f"{name}: dep {dep} covers {extra}, which the stage never imports"


@pytest.mark.parametrize("group", sorted(FAMILY_ROLE))
def test_a_family_stage_declares_only_what_some_family_imports(group):
    """foreach gives every family one dep list: each dep must be imported by some family's
    instance, and the family's own folders (``${item}``) by that family itself."""
    instances = {n: s for n, s in INSTANCES.items() if s["group"] == group}
    union = set().union(*(closure_files(s["entries"]) for s in instances.values()))
    for name, stage in instances.items():
        imported = closure_files(stage["entries"])
        for dep in stage["deps"]:
            family = name.split("@")[1]
            own = dep.startswith(f"stages/families/{family}/")
            extra = sorted(_expand(dep) - (imported if own else union))
            assert _expand(dep) and not extra, f"{name}: dep {dep} covers {extra}, imported by no family here"


def test_no_import_cycles():
    assert cycles() == []


def test_every_module_is_reachable_from_a_stage_or_tool():
    """Dead modules would hide from every dep check."""
    tools = [m for m in all_modules() if m.startswith("stages.tools.")]
    reached = set().union(*(closure_files(s["entries"]) for s in INSTANCES.values()), closure_files(tools))
    every = {module_path(m).relative_to(ROOT).as_posix() for m in all_modules()}
    assert sorted(every - reached) == []


def test_dvcignore_keeps_bytecode_and_editor_files_out_of_hashes():
    patterns = (ROOT / ".dvcignore").read_text().split()
    for needed in ("__pycache__/", "*.pyc", "*.swp", "*~"):
        assert needed in patterns


def test_only_the_uses_file_carries_other_models_into_an_evaluation():
    """evaluate@<family> depends on its own model and data/uses/<family>.json, never on another
    family's model: a new classifier must not rerun evaluate@vae."""
    evaluate = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["evaluate"]["do"]
    models = [d for d in evaluate["deps"] if d.startswith("models/")]
    assert models == ["models/${item}"] and "data/uses/${item}.json" in evaluate["deps"]
    assert "--uses data/uses/${item}.json" in evaluate["cmd"]


def test_the_uses_stage_hashes_what_each_evaluation_reads(tmp_path, monkeypatch):
    from stages.common.errors import StageError
    from stages.evaluate.uses import check_uses, main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models/classifier").mkdir(parents=True)
    (tmp_path / "models/classifier/model.pt").write_bytes(b"weights")
    evaluate = {"classifier": {"misclassified": 8}, "dcgan": {"classifier": "classifier"}, "vae": {}}
    params = tmp_path / "uses.json"
    params.write_text(json.dumps({"families": ["classifier", "dcgan", "vae"], "evaluate": evaluate}))
    main(["--params", str(params), "--models", "models", "--out", "uses"])
    assert json.loads((tmp_path / "uses/vae.json").read_text()) == {}
    assert json.loads((tmp_path / "uses/classifier.json").read_text()) == {}
    dcgan = json.loads((tmp_path / "uses/dcgan.json").read_text())
    assert list(dcgan) == ["models/classifier/model.pt"]
    check_uses(tmp_path / "uses/dcgan.json")
    (tmp_path / "models/classifier/model.pt").write_bytes(b"retrained")   # changed after uses ran
    with pytest.raises(StageError, match="changed since"):
        check_uses(tmp_path / "uses/dcgan.json")
    params.write_text(json.dumps({"families": ["dcgan"], "evaluate": evaluate}))
    with pytest.raises(StageError, match="'classifier' is not in families"):
        main(["--params", str(params), "--models", "models", "--out", "uses"])
