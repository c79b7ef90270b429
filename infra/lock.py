"""Lock files: compile them from pyproject.toml with uv, and tell when they are out of date.

    python3 infra/lock.py check            # exit 1 (and say what to run) when a lock is stale
    python3 infra/lock.py compile --uv UV  # `make lock`: pins that still fit are kept
    python3 infra/lock.py compile --uv UV --upgrade  # `make lock-upgrade`: newest versions
    python3 infra/lock.py requirement NAME # NAME's pinned lines from the tools lock (bootstrap)

Three locks, all with hashes, all for Python 3.11 on any platform (`--universal`):

* requirements/dev.lock: the runtime and dev dependencies, plus setuptools to build pagemill
  itself without fetching anything unpinned; the Makefile installs it into .venv (tests, CI).
* requirements/runtime.lock: the runtime dependencies only, at the versions of dev.lock (it is
  compiled with dev.lock as constraints); the container image installs it.
* requirements/tools.lock: the infrastructure linters (checkov, hadolint, yamllint,
  kubernetes-validate) and uv, from requirements/tools.in, in a virtualenv of their own
  (.venv-tools): checkov pins versions that conflict with the pipeline's dependencies.

Each lock starts with a fingerprint of its inputs (the dependency tables of pyproject.toml and
the .in files), so `check` notices a dependency added to pyproject.toml without a new lock,
whatever the files' modification times (a git checkout sets those arbitrarily). Standard
library only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
REQUIREMENTS = REPO / "requirements"
BUILD_IN = REQUIREMENTS / "build.in"
TOOLS_IN = REQUIREMENTS / "tools.in"
DEV_LOCK = REQUIREMENTS / "dev.lock"
RUNTIME_LOCK = REQUIREMENTS / "runtime.lock"
TOOLS_LOCK = REQUIREMENTS / "tools.lock"
PYTHON_VERSION = "3.11"
MARKER = "# inputs-sha256: "


def _project_inputs() -> dict[str, object]:
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    project = data.get("project", {})
    return {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "build-system": data.get("build-system", {}).get("requires", []),
        "build.in": BUILD_IN.read_text(encoding="utf-8"),
        "python": PYTHON_VERSION,
    }


def fingerprint(lock: Path) -> str:
    """What the lock was compiled from, as a hash; formatting-only edits do not change it."""
    inputs: dict[str, object]
    if lock == TOOLS_LOCK:
        inputs = {"tools.in": TOOLS_IN.read_text(encoding="utf-8"), "python": PYTHON_VERSION}
    else:
        inputs = _project_inputs()
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def recorded(lock: Path) -> str | None:
    if not lock.is_file():
        return None
    for line in lock.read_text(encoding="utf-8").splitlines()[:5]:
        if line.startswith(MARKER):
            return line.removeprefix(MARKER).strip()
    return None


def stale(locks: list[Path]) -> list[Path]:
    return [lock for lock in locks if recorded(lock) != fingerprint(lock)]


def check(locks: list[Path]) -> int:
    out_of_date = stale(locks)
    if not out_of_date:
        return 0
    names = ", ".join(str(lock.relative_to(REPO)) for lock in out_of_date)
    print(
        f"error: {names} out of date: pyproject.toml's dependencies (or requirements/*.in) "
        "changed since the lock was compiled.\n"
        "       Run `make lock` (keeps the pins that still fit) and commit requirements/.",
        file=sys.stderr,
    )
    return 1


def _uv_compile(uv: str, output: Path, *inputs: str) -> None:
    subprocess.run(
        [
            uv,
            "pip",
            "compile",
            *inputs,
            "--universal",
            "--generate-hashes",
            "--python-version",
            PYTHON_VERSION,
            "--quiet",
            "--output-file",
            str(output.relative_to(REPO)),
        ],
        cwd=REPO,
        check=True,
    )
    text = output.read_text(encoding="utf-8")
    output.write_text(f"{MARKER}{fingerprint(output)}\n{text}", encoding="utf-8")


def compile_locks(uv: str, upgrade: bool) -> None:
    # Without --upgrade uv keeps the versions the existing lock pins where they still fit, so
    # adding a dependency changes only what it needs.
    extra = ["--upgrade"] if upgrade else []
    _uv_compile(uv, DEV_LOCK, "pyproject.toml", "requirements/build.in", "--extra", "dev", *extra)
    # The image's lock: the same versions as the tests ran with, minus the dev tools.
    _uv_compile(
        uv,
        RUNTIME_LOCK,
        "pyproject.toml",
        "requirements/build.in",
        "--constraint",
        "requirements/dev.lock",
        *extra,
    )
    _uv_compile(uv, TOOLS_LOCK, "requirements/tools.in", *extra)


def requirement(name: str, lock: Path = TOOLS_LOCK) -> str:
    """The pinned requirement of `name` with its hashes, as lines for `pip --require-hashes`."""
    lines = lock.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.lower().startswith(f"{name.lower()}=="):
            block = [line]
            for follow in lines[i + 1 :]:
                if not follow.startswith("    --hash="):
                    break
                block.append(follow)
            return "\n".join(block).rstrip(" \\") + "\n"
    raise SystemExit(f"error: {name} is not in {lock.relative_to(REPO)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    checker = sub.add_parser("check", help="exit 1 when a lock is out of date")
    checker.add_argument("which", nargs="*", help="dev, runtime, tools (default: all)")
    compiler = sub.add_parser("compile", help="compile every lock with uv")
    compiler.add_argument("--uv", default="uv", help="the uv executable")
    compiler.add_argument(
        "--upgrade", action="store_true", help="newest versions (default: keep what still fits)"
    )
    req = sub.add_parser("requirement", help="one package's pinned lines from the tools lock")
    req.add_argument("name")
    args = parser.parse_args(argv)

    if args.command == "check":
        by_name = {"dev": DEV_LOCK, "runtime": RUNTIME_LOCK, "tools": TOOLS_LOCK}
        unknown = sorted(set(args.which) - set(by_name))
        if unknown:
            parser.error(f"unknown lock {', '.join(unknown)}: choose from {', '.join(by_name)}")
        return check([by_name[n] for n in args.which] or list(by_name.values()))
    if args.command == "compile":
        compile_locks(args.uv, upgrade=args.upgrade)
        return 0
    sys.stdout.write(requirement(args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
