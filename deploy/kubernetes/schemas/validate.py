"""Validates the Prometheus Operator objects (monitoring.coreos.com/v1) in rendered manifests
against the JSON Schemas beside this file (<kind in lower case>.json). Other objects are
left to kubernetes-validate.

    kubectl kustomize deploy/kubernetes/base | python3 deploy/kubernetes/schemas/validate.py -

Prints one line per object; exits 1 if any object fails or has no schema here.
Needs PyYAML and jsonschema (both come with kubernetes-validate).
"""

import json
import pathlib
import sys

import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource

GROUP = "monitoring.coreos.com/v1"
HERE = pathlib.Path(__file__).resolve().parent


def main(paths):
    schemas = {p.name: json.loads(p.read_text()) for p in HERE.glob("*.json")}
    registry = Registry().with_resources(
        (name, Resource.from_contents(schema)) for name, schema in schemas.items()
    )
    failed = False
    for path in paths:
        text = sys.stdin.read() if path == "-" else pathlib.Path(path).read_text()
        for obj in yaml.safe_load_all(text):
            if not obj or obj.get("apiVersion") != GROUP:
                continue
            kind = obj.get("kind", "?")
            what = f"{kind}/{obj.get('metadata', {}).get('name', '?')}"
            schema = schemas.get(f"{kind.lower()}.json")
            if schema is None:
                print(f"FAIL {what}: no schema {kind.lower()}.json in {HERE}")
                failed = True
                continue
            errors = sorted(
                Draft7Validator(schema, registry=registry).iter_errors(obj), key=str
            )
            for error in errors:
                where = "/".join(str(part) for part in error.absolute_path) or "(root)"
                print(f"FAIL {what}: {where}: {error.message}")
            failed = failed or bool(errors)
            if not errors:
                print(f"ok {what}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["-"]))
