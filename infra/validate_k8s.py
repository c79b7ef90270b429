"""Validate infra/k8s offline: every object against the Kubernetes schemas (strict: unknown
fields are errors), KEDA's objects against infra/k8s/schemas, and the kustomization's list of
resources against the files present.

    .venv-tools/bin/python infra/validate_k8s.py    (part of `make lint-infra`)

Runs in the tools virtualenv (kubernetes-validate, jsonschema, PyYAML); prints one line per
object and exits 1 on any problem. A kind without a schema is an error, not a warning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

K8S = Path(__file__).resolve().parent / "k8s"
KEDA_SCHEMAS = K8S / "schemas" / "keda.sh-v1alpha1.json"
# The oldest Kubernetes release the manifests promise to run on.
KUBERNETES_VERSION = "1.29.0"


def keda_validators() -> dict[str, jsonschema.Draft202012Validator]:
    root = json.loads(KEDA_SCHEMAS.read_text(encoding="utf-8"))
    return {
        kind: jsonschema.Draft202012Validator({**schema, "$defs": root["$defs"]})
        for kind, schema in root.items()
        if not kind.startswith("$")
    }


def check_kustomization() -> list[str]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization.get("resources", []))
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    problems = [
        f"kustomization.yaml lists {name}, which does not exist" for name in listed - present
    ]
    problems += [f"{name} is not in kustomization.yaml's resources" for name in present - listed]
    return problems


def check_object(path: Path, obj: dict[str, Any], keda: dict[str, Any]) -> str | None:
    name = f"{path.name}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    if str(obj.get("apiVersion", "")).startswith("keda.sh/"):
        validator = keda.get(str(obj.get("kind")))
        if validator is None:
            return f"{name}: no schema for this KEDA kind"
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
        if errors:
            where = ".".join(str(p) for p in errors[0].path)
            return f"{name}: {where}: {errors[0].message}"
        return None
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        return f"{name}: {where}: {exc.message}"
    except SchemaNotFoundError as exc:
        return f"{name}: {exc.message}"
    return None


def main() -> int:
    keda = keda_validators()
    problems = check_kustomization()
    count = 0
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for obj in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if obj is None:
                continue
            count += 1
            problem = check_object(path, obj, keda)
            if problem:
                problems.append(problem)
    for problem in problems:
        print(f"ERROR {problem}")
    print(
        f"{count} objects checked against Kubernetes {KUBERNETES_VERSION} and KEDA schemas: "
        f"{len(problems)} problem(s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
