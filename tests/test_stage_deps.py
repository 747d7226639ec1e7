"""dvc.yaml's deps are the code each stage runs, derived from its imports, so results cannot go
stale when a module changes; stages import only the library and shared helpers."""

import ast
import copy

import pytest
import yaml

from pipeline.imports import PACKAGES, ROOT, project_files, relative

STAGES = ("download", "split", "train", "evaluate", "export")


def declared_code_deps(stage: dict) -> set[str]:
    return {d for d in stage["deps"] if d.endswith(".py") and d.split("/")[0] in PACKAGES}


def drift(dvc_yaml: dict) -> dict[str, dict[str, list[str]]]:
    """Per stage: project files its module imports but dvc.yaml misses, and listed ones it does not use."""
    out = {}
    for name, stage in dvc_yaml["stages"].items():
        module = stage["cmd"].split(" -m ", 1)[1].split()[0]
        used = set(relative(project_files(module)))
        declared = declared_code_deps(stage)
        missing, unused = sorted(used - declared), sorted(declared - used)
        if missing or unused:
            out[name] = {"missing": missing, "unused": unused}
    return out


@pytest.fixture(scope="module")
def dvc_yaml():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_every_stage_lists_exactly_the_code_it_runs(dvc_yaml):
    assert set(dvc_yaml["stages"]) == set(STAGES)
    assert drift(dvc_yaml) == {}, "dvc.yaml deps drifted from the stages' imports; update dvc.yaml"


def test_a_removed_or_stray_dep_is_caught(dvc_yaml):
    dvc_yaml = copy.deepcopy(dvc_yaml)
    dvc_yaml["stages"]["export"]["deps"].remove("pipeline/presets.py")
    dvc_yaml["stages"]["split"]["deps"].append("pipeline/download.py")
    assert drift(dvc_yaml) == {
        "export": {"missing": ["pipeline/presets.py"], "unused": []},
        "split": {"missing": [], "unused": ["pipeline/download.py"]},
    }


def test_presets_are_a_dependency_of_every_stage(dvc_yaml):
    for name in STAGES:
        assert "pipeline/presets.py" in dvc_yaml["stages"][name]["deps"], name


def test_stages_never_import_another_stage():
    for name in STAGES:
        others = {f"pipeline/{o}.py" for o in STAGES if o != name}
        assert not others & set(relative(project_files(f"pipeline.{name}"))), name


def test_function_level_and_relative_imports_are_followed():
    # pix2pix.cli imports its commands' modules inside functions.
    files = set(relative(project_files("pix2pix.cli")))
    assert {"pix2pix/train.py", "pix2pix/export.py", "pix2pix/loading.py", "pix2pix/model.py"} <= files


def test_package_inits_hold_no_code():
    """project_files leaves __init__.py out; that is only right while they run nothing."""
    for package in PACKAGES:
        tree = ast.parse((ROOT / package / "__init__.py").read_text())
        kinds = {type(node).__name__ for node in tree.body}
        assert kinds <= {"Expr", "Assign"}, (package, kinds)


def test_the_library_never_imports_the_pipeline():
    for path in sorted((ROOT / "pix2pix").glob("*.py")):
        if path.name == "__init__.py":
            continue
        assert not any(p.startswith("pipeline/") for p in relative(project_files(f"pix2pix.{path.stem}"))), path.name


def test_errors_module_is_torch_free():
    tree = ast.parse((ROOT / "pix2pix/errors.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
