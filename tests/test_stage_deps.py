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
    dvc_yaml["stages"]["split"]["deps"].append("pipeline/stages/download.py")
    assert drift(dvc_yaml) == {
        "export": {"missing": ["pipeline/presets.py"], "unused": []},
        "split": {"missing": [], "unused": ["pipeline/stages/download.py"]},
    }


def test_presets_are_a_dependency_of_every_stage(dvc_yaml):
    for name in STAGES:
        assert "pipeline/presets.py" in dvc_yaml["stages"][name]["deps"], name


def test_stages_never_import_another_stage():
    for name in STAGES:
        others = {f"pipeline/stages/{o}.py" for o in STAGES if o != name}
        assert not others & set(relative(project_files(f"pipeline.stages.{name}"))), name


def test_the_stages_folder_holds_the_stages_and_nothing_else():
    assert sorted(p.stem for p in (ROOT / "pipeline/stages").glob("*.py") if p.name != "__init__.py") == sorted(STAGES)


def test_no_stage_runs_operations_or_tracking_code_it_does_not_call():
    """Only what a stage's behaviour needs: never the flows, the page or the stack; MLflow's
    registry and pyfunc only in export; the dvclive history and training callback only in train;
    download and split never load torch or MLflow."""
    allowed_tracking = {
        "download": set(),
        "split": set(),
        "train": {"run", "callback", "history"},
        "evaluate": {"run"},
        "export": {"run", "registry", "serving"},
    }
    for name in STAGES:
        files = set(relative(project_files(f"pipeline.stages.{name}")))
        assert not {f for f in files if f.startswith("pipeline/ops/")}, name
        tracking = {
            f.removeprefix("pipeline/tracking/").removesuffix(".py")
            for f in files
            if f.startswith("pipeline/tracking/")
        }
        assert tracking == allowed_tracking[name], name
    for name in ("download", "split"):
        files = set(relative(project_files(f"pipeline.stages.{name}")))
        assert not {"pix2pix/checkpoint.py", "pix2pix/data.py", "pix2pix/networks.py"} & files, name


def test_the_stages_kit_and_presets_never_load_torch():
    import subprocess
    import sys

    code = (
        "import sys; import pipeline.stages.download, pipeline.stages.split, pipeline.ops.presets; "
        "print(sorted(m for m in ('torch', 'mlflow', 'prefect') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def test_function_level_and_relative_imports_are_followed():
    # pix2pix.cli imports its commands' modules inside functions.
    files = set(relative(project_files("pix2pix.cli")))
    assert {"pix2pix/train.py", "pix2pix/export.py", "pix2pix/loading.py", "pix2pix/model.py"} <= files


def test_package_inits_hold_no_code():
    """project_files leaves __init__.py out; that is only right while they run nothing."""
    inits = [p for package in PACKAGES for p in (ROOT / package).rglob("__init__.py")]
    assert len(inits) >= 6
    for path in inits:
        tree = ast.parse(path.read_text())
        kinds = {type(node).__name__ for node in tree.body}
        assert kinds <= {"Expr", "Assign"}, (path, kinds)


def test_the_library_never_imports_the_pipeline():
    for path in sorted((ROOT / "pix2pix").glob("*.py")):
        if path.name == "__init__.py":
            continue
        assert not any(p.startswith("pipeline/") for p in relative(project_files(f"pix2pix.{path.stem}"))), path.name


def test_errors_module_is_torch_free():
    tree = ast.parse((ROOT / "pix2pix/errors.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
