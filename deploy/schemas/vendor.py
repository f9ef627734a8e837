#!/usr/bin/env python3
"""Regenerates the vendored CRD JSON schemas in this folder (maintenance only).

Not run by validate.sh: its output is committed. Needs `npm` (the npm
registry is reachable; GitHub is not). Run from anywhere:

    python3 deploy/schemas/vendor.py

Where the schemas come from: the `@kubernetes-models/*` npm packages
(https://github.com/tommy351/kubernetes-models-ts, MIT) generate TypeScript
models from upstream CRDs and, in the versions pinned below, embed each
CRD's `openAPIV3Schema` verbatim as a JSON literal (`const schema = {...}`).
Later versions ship precompiled ajv validators instead, from which the
schema cannot be read back, hence these versions. The upstream CRD each
package was generated from is recorded in its package.json
(`crd-generate.input`) and copied into the output's `description`.

What this script changes, and nothing else:
- `$ref`s to Kubernetes' ObjectMeta (and what it refers to) are resolved
  from `@kubernetes-models/apimachinery` into `definitions`;
- kubernetes-models' `nullable: true` markers are dropped (not JSON Schema);
- strict mode, like kubeconform's `openapi2jsonschema --strict`: every
  object schema that lists `properties` and says nothing about other
  properties gets `additionalProperties: false`, so a misspelled field
  fails validation (the API server would silently prune it, or reject it
  with `kubectl apply --validate=strict`).
"""

import json
import pathlib
import re
import subprocess
import sys
import tarfile
import tempfile

HERE = pathlib.Path(__file__).resolve().parent

PACKAGES = {
    "keda": "@kubernetes-models/keda@0.3.2",
    "prometheus-operator": "@kubernetes-models/prometheus-operator@4.0.0",
    # The last version that embeds schema literals; its cert-manager.io/v1
    # kinds come from the cert-manager v1.11.2 CRDs.
    "cert-manager": "@kubernetes-models/cert-manager@4.3.1",
    "apimachinery": "@kubernetes-models/apimachinery@1.2.2",
}

# (package, file inside the package, output path[, which of the package's
# `crd-generate.input` URLs the kind comes from; default: those naming it])
OUTPUTS = [
    ("keda", "keda.sh/v1alpha1/ScaledObject.js",
     "keda/scaledobject_v1alpha1.json"),
    ("keda", "keda.sh/v1alpha1/TriggerAuthentication.js",
     "keda/triggerauthentication_v1alpha1.json"),
    ("prometheus-operator", "monitoring.coreos.com/v1/ServiceMonitor.js",
     "prometheus-operator/servicemonitor_v1.json"),
    ("cert-manager", "cert-manager.io/v1/Certificate.js",
     "cert-manager/certificate_v1.json", "v1.11.2/cert-manager.crds.yaml"),
]

SCHEMA_LITERAL = re.compile(r"^const schema = (\{.*?^\});$", re.S | re.M)


def npm_pack(spec, into):
    out = subprocess.run(
        ["npm", "pack", "--json", spec], cwd=into, check=True,
        capture_output=True, text=True).stdout
    info = json.loads(out)[0]
    root = into / spec.rsplit("@", 1)[0].replace("/", "_")
    with tarfile.open(into / info["filename"]) as tar:
        tar.extractall(root, filter="data")
    return root / "package", info


def schema_literal(path):
    match = SCHEMA_LITERAL.search(path.read_text())
    if not match:
        sys.exit(f"no `const schema = {{...}};` literal in {path}")
    return json.loads(match.group(1))


def ref_file(ref):
    # "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta#" -> IoK8s...ObjectMeta.js
    name = ref.rstrip("#")
    return "_schemas/" + "".join(p[:1].upper() + p[1:] for p in name.split(".")) + ".js", name


def transform(node, apimachinery, definitions):
    if isinstance(node, list):
        return [transform(n, apimachinery, definitions) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "nullable":
            continue
        if key == "$ref":
            rel, name = ref_file(value)
            if name not in definitions:
                definitions[name] = None  # cycle guard
                definitions[name] = transform(
                    schema_literal(apimachinery / rel), apimachinery, definitions)
            out[key] = f"#/definitions/{name}"
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: transform(v, apimachinery, definitions) for k, v in value.items()}
        else:
            out[key] = transform(value, apimachinery, definitions)
    # `{"oneOf": [{"$ref": X}, {"type": "null"}]}` (kubernetes-models' way
    # of saying "optional") is kept: null is simply also accepted.
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        roots, infos = {}, {}
        for key, spec in PACKAGES.items():
            roots[key], infos[key] = npm_pack(spec, tmp)
        for package, rel, output, *source in OUTPUTS:
            definitions = {}
            schema = transform(schema_literal(roots[package] / rel),
                               roots["apimachinery"], definitions)
            manifest = json.loads((roots[package] / "package.json").read_text())
            inputs = manifest.get("crd-generate", {}).get("input", [])
            kind = pathlib.Path(rel).stem.lower()
            named = [i for i in inputs if (source[0] in i if source else kind in i.lower())]
            upstream = ", ".join(named or inputs)
            document = {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "description": (
                    f"Vendored by deploy/schemas/vendor.py from npm "
                    f"{PACKAGES[package]} ({infos[package]['integrity']}), "
                    f"generated from {upstream}; ObjectMeta from "
                    f"{PACKAGES['apimachinery']}. Strict: additionalProperties false."),
                **schema,
            }
            if definitions:
                document["definitions"] = definitions
            target = HERE / output
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
            print(f"wrote {target.relative_to(HERE.parent.parent)}  <- {PACKAGES[package]} ({upstream})")


if __name__ == "__main__":
    main()
