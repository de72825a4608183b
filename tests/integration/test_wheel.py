"""genq's wheel, installed into a fresh virtual environment: everything lands under `genq.`,
nothing named `common`, `producer` or `workers` reaches site-packages, and the console script
and the documented import names work from there.

The fresh environment borrows the test environment's dependencies (celery, redis, pydantic…)
through a path entry after its own site-packages, so genq itself comes from the wheel alone."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL_FOLDERS = ("common", "producer", "workers")
# The fresh environment's processes see neither the checkout nor a PYTHONPATH pointing at it.
FRESH_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("genq-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = tmp_path_factory.mktemp("venv")
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # pip of the test environment installs into the fresh one (`--target` its site-packages).
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # The dependencies, after the fresh site-packages: a path line, not a site directory, so
    # the test environment's own editable genq (a .pth of its site-packages) does not come too.
    (Path(site) / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env


def test_wheel_has_one_top_level_package_genq(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names} - {"genq"}
    assert len(tops) == 1
    assert tops.pop().endswith(".dist-info")
    for folder in TOP_LEVEL_FOLDERS:
        assert f"genq/{folder}/__init__.py" in names
    assert "genq/workers/relay/service.py" in names  # sub-packages come whole


def test_fresh_site_packages_has_no_common_producer_or_workers(fresh_venv: Path) -> None:
    site = next((fresh_venv / "lib").glob("python*/site-packages"))
    present = {path.name for path in site.iterdir()}
    assert "genq" in present
    assert not present & set(TOP_LEVEL_FOLDERS), present


def test_documented_import_names_work_from_the_wheel(fresh_venv: Path) -> None:
    probe = (
        "import importlib.util, genq, genq.workers.app as a; "
        "print(genq.__file__); print(a.app.main); print(type(genq.Client).__name__); "
        "print([importlib.util.find_spec(n) for n in ('common', 'producer', 'workers')])"
    )
    out = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c", probe],
        check=True,
        capture_output=True,
        text=True,
        cwd=fresh_venv,  # not the checkout: its folders must not be what is imported
        env=FRESH_ENV,
        timeout=120,
    ).stdout.splitlines()
    assert out[0].startswith(str(fresh_venv)), out
    assert out[1] == "genq"  # the Celery app's name
    assert out[3] == "[None, None, None]"


def test_console_script_runs_from_the_wheel(fresh_venv: Path) -> None:
    script = fresh_venv / "bin" / "genq"
    if not script.exists():  # `pip --target` writes scripts to <target>/bin
        script = next((fresh_venv / "lib").glob("python*/site-packages/bin/genq"))
    done = subprocess.run(
        [str(fresh_venv / "bin" / "python"), str(script), "--help"],
        check=False,
        capture_output=True,
        text=True,
        cwd=fresh_venv,
        env=FRESH_ENV,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "worker" in done.stdout


def _top_level_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_no_module_imports_a_top_level_folder_name() -> None:
    """In the checkout the folders are importable by their bare names too (its root is on
    sys.path): a bare `import common` would work here and break on an installed wheel."""
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("common", "producer", "workers", "ops", "tests")
        for path in [*(ROOT / folder).rglob("*.py"), ROOT / "genq" / "__init__.py"]
        if _top_level_imports(path) & set(TOP_LEVEL_FOLDERS)
    ]
    assert offenders == []
