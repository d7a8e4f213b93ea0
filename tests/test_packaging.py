"""The design card's top level (`gin/`, `tasks/`, `launch/` beside `simvlm_jax/`) survives packaging: a wheel
built from the repository carries them inside the package, and the package installed from it finds its gin
files, tasks and launchers there, from any directory."""

import glob
import json
import os
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import REPO_ROOT

TOP_LEVEL = ("simvlm_jax", "gin", "tasks", "launch", "tests", "setup.py", "README.md")


def test_the_repository_has_the_cards_top_level():
    assert all(os.path.exists(os.path.join(REPO_ROOT, name)) for name in TOP_LEVEL)
    # gin/ holds gin files only: a gin/__init__.py would make `import gin` in the repository root load it
    # instead of gin-config.
    assert not glob.glob(os.path.join(REPO_ROOT, "gin", "**", "*.py"), recursive=True)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", REPO_ROOT, "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (path,) = glob.glob(str(out / "*.whl"))
    return path


def test_the_wheel_carries_gin_tasks_and_launch_inside_the_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    gin_files = {
        os.path.relpath(p, REPO_ROOT) for p in glob.glob(os.path.join(REPO_ROOT, "gin", "**", "*.gin"), recursive=True)
    }
    assert {f"simvlm_jax/{p}" for p in gin_files} <= names
    for folder in ("tasks", "launch"):
        modules = {os.path.basename(p) for p in glob.glob(os.path.join(REPO_ROOT, folder, "*.py"))}
        assert {f"simvlm_jax/{folder}/{m}" for m in modules} <= names, folder
    assert not [n for n in names if n.split("/")[0] in ("gin", "tasks", "launch", "tests", "benchmarks")]


def test_the_package_installed_from_the_wheel_finds_its_parts_from_elsewhere(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), wheel],
        check=True,
        capture_output=True,
        timeout=600,
    )
    probe = (
        "import json, simvlm_jax, simvlm_jax.launch.tpu_vm as launcher\n"
        "from simvlm_jax.cli import gin_flags\n"
        "import simvlm_jax.tasks.vqa_v2 as vqa\n"
        "print(json.dumps([simvlm_jax.__file__, simvlm_jax.GIN_ROOT, vqa.__file__, launcher.__file__,\n"
        "                  gin_flags.resolve_gin_file('gin/simvlm_large.gin')]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    package, gin_root, tasks_module, launcher, large = json.loads(done.stdout.strip().splitlines()[-1])
    installed = str(target / "simvlm_jax")
    assert os.path.dirname(package) == installed and gin_root == installed
    assert tasks_module == os.path.join(installed, "tasks", "vqa_v2.py")
    assert launcher == os.path.join(installed, "launch", "tpu_vm.py")
    assert large == os.path.join(installed, "gin", "simvlm_large.gin")
