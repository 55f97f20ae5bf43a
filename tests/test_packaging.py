"""A plain (non-editable) install ships the callbacks and the demo data inside the package."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy without build outputs: setuptools reuses a stale build/lib, which
    # would still hold modules that were moved or deleted since.
    source = tmp_path_factory.mktemp("source") / "repo"
    everywhere = shutil.ignore_patterns(".venv*", "*.egg-info", ".git", "__pycache__")

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = {"build", "dist", "outputs"} if Path(folder) == ROOT else set()
        return set(everywhere(folder, names)) | (top & set(names))

    shutil.copytree(ROOT, source, ignore=ignore)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (path,) = out.glob("ipr_lightning-*.whl")
    return path


def test_wheel_contains_callbacks_resources_and_entry_point(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "ipr_lightning/callbacks/__init__.py" in names
    assert "ipr_lightning/callbacks/adapter_export.py" in names
    assert "ipr_lightning/resources/demo_trajectories.json" in names
    assert "ipr_lightning/rollout/engine.py" in names
    assert "ipr_lightning/ipr/explore.py" in names
    assert "ipr_lightning/callbacks/ipr_loop.py" in names
    for module in (
        "envs/registry.py",
        "envs/base.py",
        "envs/toy/__init__.py",
        "envs/alfworld/handle.py",
        "envs/intercode_sql/worker.py",
        "envs/webshop/vocab.py",
    ):
        assert f"ipr_lightning/{module}" in names, module
    assert "ipr_lightning/envs/build.py" not in names  # moved modules are not shipped
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for line in (
        "ipr-fit = ipr_lightning.cli:fit_main",
        "ipr-eval = ipr_lightning.eval_cli:main",
        "ipr-data = ipr_lightning.data_cli:main",
    ):
        assert line in scripts


def test_installed_callbacks_import_outside_the_repo(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    code = (
        "import ipr_lightning.callbacks as c, ipr_lightning.lightning.datamodule as d; "
        "print(c.__file__); print(d.resolve_data_file('embedded:demo').is_file())"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    where, has_data = proc.stdout.split()
    assert Path(where).is_relative_to(target) and has_data == "True"
