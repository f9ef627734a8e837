#!/usr/bin/env python3
"""Offline checks of rendered Kubernetes manifests (used by deploy/validate.sh).

    check_manifests.py validate --out DIR --kube-version V [--kube-version V…] FILE…
    check_manifests.py compare CHART.yaml KUSTOMIZE.yaml
    check_manifests.py security DEFAULT.yaml [RENDERED.yaml…]

`validate` splits every multi-document FILE into one file per resource and
- checks each built-in resource with `kubernetes-validate --strict` for every
  Kubernetes version given (unknown fields, wrong types, missing required);
- checks each custom resource with `check-jsonschema` against the vendored
  CRD schema in deploy/schemas/ (strict: unknown fields fail). A kind with
  neither a built-in nor a vendored schema is an error, not a skip;
- checks what schemas cannot see, across resources: unique names, selectors
  that select pods, named ports that exist, `$(VAR)` references defined
  earlier in the same env list, envFrom ConfigMaps that exist, autoscaler
  targets that exist and leave `replicas` out, workers' --coordinator
  pointing at a Service port, the worker's grace period covering its
  preStop sleep plus its drain timeout, every file a `volley` flag names
  (`--admin-token-file`, `--token-file`, `--tls-*`, `--redis-*-file`…)
  lying in a volume of the pod that holds that file, Secrets and
  Certificates the chart renders matching the volumes that use them, and
  NetworkPolicies selecting rendered pods and naming their ports.

`security` checks the chart's secure defaults in DEFAULT.yaml (the
coordinator gets --admin-token-file, the worker --token-file, the generated
admin token Secret holds 48 random characters and is kept on uninstall,
NetworkPolicies are rendered) and, in every file, that no container runs
with `--auth none` and no Redis URL carries a password.

`compare` checks that the plain manifests (deploy/k8s) match the chart's
rendering, once Helm's own labels, annotations and test hooks are dropped.

Tools are run from the directory of this Python interpreter (the venv).
"""

import argparse
import base64
import difflib
import json
import pathlib
import re
import subprocess
import sys

import yaml

BIN = pathlib.Path(sys.executable).parent
SCHEMAS = pathlib.Path(__file__).resolve().parent.parent / "schemas"

# Custom resources and the vendored schema each is checked against.
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda/scaledobject_v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda/triggerauthentication_v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "prometheus-operator/servicemonitor_v1.json",
    ("cert-manager.io/v1", "Certificate"): "cert-manager/certificate_v1.json",
}
# Groups whose kinds kubernetes-validate bundles schemas for.
BUILTIN_GROUPS = {"v1", "apps/v1", "policy/v1", "autoscaling/v2", "batch/v1",
                  "networking.k8s.io/v1", "rbac.authorization.k8s.io/v1"}

ENV_REF = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def load(path):
    with open(path) as handle:
        return [d for d in yaml.safe_load_all(handle) if d is not None]


def name_of(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def duration_seconds(text):
    total, units = 0.0, {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for number, unit in re.findall(r"([0-9.]+)\s*(ms|s|m|h)", text):
        total += float(number) * units[unit]
    return total


def pod_spec(doc):
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"], doc["spec"]["template"]["metadata"].get("labels", {})
    if doc["kind"] == "Pod":
        return doc["spec"], doc["metadata"].get("labels", {})
    return None, None


def consistency(docs):
    errors = []
    by_kind = {}
    seen = set()
    for doc in docs:
        key = (doc.get("kind"), doc.get("metadata", {}).get("name"))
        if not key[1]:
            errors.append(f"{name_of(doc)}: no metadata.name")
        if key in seen:
            errors.append(f"{name_of(doc)}: defined twice")
        seen.add(key)
        by_kind.setdefault(doc.get("kind"), {})[key[1]] = doc

    pods = []  # (owner, labels, spec)
    for doc in docs:
        spec, labels = pod_spec(doc)
        if spec is not None:
            pods.append((doc, labels, spec))

    def selects(selector, labels):
        return all(labels.get(k) == v for k, v in selector.items())

    def selected_pods(selector):
        return [p for p in pods if selects(selector, p[1])]

    def container_ports(spec):
        return {p.get("name"): p["containerPort"] for c in spec.get("containers", [])
                for p in c.get("ports", [])}

    configmaps = by_kind.get("ConfigMap", {})

    for owner, labels, spec in pods:
        where = name_of(owner)
        if owner["kind"] == "Deployment":
            match = owner["spec"]["selector"].get("matchLabels", {})
            if not selects(match, labels):
                errors.append(f"{where}: selector {match} does not match its pod labels {labels}")
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            cwhere = f"{where} container {container['name']}"
            ports = {p.get("name") for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                for handler in ("tcpSocket", "httpGet"):
                    port = container.get(probe, {}).get(handler, {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        errors.append(f"{cwhere}: {probe} uses port {port!r}, not a port of the container")
            defined = set()
            for env in container.get("env", []):
                for ref in ENV_REF.findall(str(env.get("value", ""))):
                    if ref not in defined:
                        errors.append(f"{cwhere}: env {env['name']} refers to $({ref}), "
                                      "which is not defined before it (Kubernetes leaves it unexpanded)")
                defined.add(env["name"])
            env_values = {}
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                if ref is not None:
                    if ref not in configmaps:
                        errors.append(f"{cwhere}: envFrom ConfigMap {ref!r} is not defined")
                    else:
                        env_values.update(configmaps[ref].get("data", {}))
            env_values.update({e["name"]: e.get("value") for e in container.get("env", [])})
            args = [str(a) for a in container.get("args", [])]
            commands = [args]
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                command = container.get(probe, {}).get("exec", {}).get("command")
                if command:
                    commands.append([str(a) for a in command])
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for command in commands:
                for flag, path in zip(command, command[1:]):
                    if flag in FILE_FLAGS:
                        problem = file_problem(path, container, volumes, by_kind)
                        if problem:
                            errors.append(f"{cwhere}: {flag} {path}: {problem}")
            if args[:1] == ["worker"]:
                if "--coordinator" in args:
                    url = args[args.index("--coordinator") + 1]
                    m = re.match(r"^https?://([^:/]+):(\d+)$", url)
                    service = by_kind.get("Service", {}).get(m.group(1)) if m else None
                    if not service or int(m.group(2)) not in [p["port"] for p in service["spec"]["ports"]]:
                        errors.append(f"{cwhere}: --coordinator {url} is not a port of a rendered Service")
                drain = duration_seconds(env_values.get("VOLLEY_DRAIN_TIMEOUT") or "30s")
                sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
                grace = spec.get("terminationGracePeriodSeconds", 30)
                if grace < sleep + drain:
                    errors.append(f"{where}: terminationGracePeriodSeconds {grace} < preStop sleep {sleep}"
                                  f" + drain timeout {drain:g}: running ops would be killed")

    for service in by_kind.get("Service", {}).values():
        selector = service["spec"].get("selector", {})
        targets = selected_pods(selector)
        if not targets:
            errors.append(f"{name_of(service)}: selector {selector} selects no rendered pod")
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for owner, _, spec in targets:
                known = container_ports(spec)
                if (isinstance(target, str) and target not in known) or \
                   (isinstance(target, int) and target not in known.values()):
                    errors.append(f"{name_of(service)}: targetPort {target!r} is not a port of {name_of(owner)}")

    for policy in by_kind.get("NetworkPolicy", {}).values():
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if selector.get("app.kubernetes.io/component") not in ("coordinator", "worker"):
            continue  # e.g. the Redis policy: its pods are not the chart's
        targets = selected_pods(selector)
        if not targets:
            errors.append(f"{name_of(policy)}: podSelector {selector} selects no rendered pod")
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                for owner, _, spec in targets:
                    named = port.get("port")
                    if isinstance(named, str) and named not in container_ports(spec):
                        errors.append(f"{name_of(policy)}: port {named!r} is not a port of {name_of(owner)}")
            for peer in rule.get("from", []):
                labels = peer.get("podSelector", {}).get("matchLabels", {})
                component = labels.get("app.kubernetes.io/component")
                if component in ("coordinator", "worker") and "namespaceSelector" not in peer \
                        and not selected_pods(labels):
                    errors.append(f"{name_of(policy)}: peer podSelector {labels} selects no rendered pod")

    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        selector = pdb["spec"]["selector"].get("matchLabels", {})
        if not selected_pods(selector):
            errors.append(f"{name_of(pdb)}: selector {selector} selects no rendered pod")

    scalers = list(by_kind.get("HorizontalPodAutoscaler", {}).values()) + \
        list(by_kind.get("ScaledObject", {}).values())
    targets = {}
    for scaler in scalers:
        ref = scaler["spec"]["scaleTargetRef"]
        target = by_kind.get(ref.get("kind", "Deployment"), {}).get(ref["name"])
        if target is None:
            errors.append(f"{name_of(scaler)}: scaleTargetRef {ref} is not rendered")
            continue
        if "replicas" in target["spec"]:
            errors.append(f"{name_of(target)}: sets replicas although {name_of(scaler)} scales it")
        targets.setdefault(ref["name"], []).append(name_of(scaler))
        for trigger in scaler["spec"].get("triggers", []):
            auth = trigger.get("authenticationRef", {}).get("name")
            if auth and auth not in by_kind.get("TriggerAuthentication", {}):
                errors.append(f"{name_of(scaler)}: authenticationRef {auth!r} is not rendered")
    for name, owners in targets.items():
        if len(owners) > 1:
            errors.append(f"Deployment/{name} is scaled by several autoscalers: {owners}")

    for monitor in by_kind.get("ServiceMonitor", {}).values():
        selector = monitor["spec"]["selector"]
        services = [s for s in by_kind.get("Service", {}).values()
                    if selects(selector.get("matchLabels", {}), s["metadata"].get("labels", {}))
                    and all(s["metadata"].get("labels", {}).get(e["key"]) in e.get("values", [])
                            for e in selector.get("matchExpressions", []) if e["operator"] == "In")]
        if not services:
            errors.append(f"{name_of(monitor)}: selects no rendered Service")
        for endpoint in monitor["spec"].get("endpoints", []):
            for service in services:
                if endpoint.get("port") not in [p.get("name") for p in service["spec"]["ports"]]:
                    errors.append(f"{name_of(monitor)}: {name_of(service)} has no port {endpoint.get('port')!r}")
    return errors


# `volley` flags whose value is a file the container must find in a volume.
FILE_FLAGS = {"--admin-token-file", "--token-file", "--tls-cert", "--tls-key", "--tls-ca",
              "--tls-client-ca", "--redis-password-file", "--redis-tls-ca",
              "--redis-tls-cert", "--redis-tls-key"}


def volume_files(volume):
    """(kind, source name, {file path in the volume: key}) of a Secret,
    ConfigMap or projected volume; None for other volumes."""
    def items(source):
        return {i["path"]: i["key"] for i in source.get("items", [])} or None
    if "secret" in volume:
        return [("Secret", volume["secret"].get("secretName"), items(volume["secret"]))]
    if "configMap" in volume:
        return [("ConfigMap", volume["configMap"].get("name"), items(volume["configMap"]))]
    if "projected" in volume:
        found = []
        for source in volume["projected"].get("sources", []):
            for kind, key in (("Secret", "secret"), ("ConfigMap", "configMap")):
                if key in source:
                    found.append((kind, source[key].get("name"), items(source[key])))
        return found
    return None


def file_problem(path, container, volumes, by_kind):
    """Why `path` is not a file of a mounted Secret/ConfigMap (None: it is)."""
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        volume = volumes.get(mount["name"])
        if volume is None:
            return f"volume {mount['name']!r} is not a volume of the pod"
        sources = volume_files(volume)
        if sources is None:
            return None  # an emptyDir or PVC: nothing to check
        relative = path[len(prefix):]
        for kind, name, files in sources:
            if files is not None and relative not in files:
                continue
            rendered = by_kind.get(kind, {}).get(name)
            if rendered is not None and files is not None and files[relative] not in rendered.get("data", {}):
                return f"key {files[relative]!r} is not in the rendered {kind}/{name}"
            return None
        return f"no file {relative!r} in volume {mount['name']!r}"
    return "not under any volumeMount of the container"


def run(command):
    result = subprocess.run(command, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    return result.returncode, output


def validate(args):
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.yaml"):
        stale.unlink()
    failed = False
    builtin, custom = [], {}
    docs = []
    for source in args.files:
        for index, doc in enumerate(load(source)):
            docs.append(doc)
            api, kind = doc.get("apiVersion"), doc.get("kind")
            target = out / f"{len(docs):02d}-{str(kind).lower()}-{doc.get('metadata', {}).get('name')}.yaml"
            target.write_text(yaml.safe_dump(doc, sort_keys=False))
            if (api, kind) in CRD_SCHEMAS:
                custom.setdefault(CRD_SCHEMAS[(api, kind)], []).append(str(target))
            elif api in BUILTIN_GROUPS:
                builtin.append(str(target))
            else:
                print(f"  FAIL {name_of(doc)} ({api}): no schema to check it against")
                failed = True
    kinds = sorted({d["kind"] for d in docs})
    print(f"  {len(docs)} resources: {', '.join(kinds)}")
    for version in args.kube_version:
        if not builtin:
            break
        code, output = run([str(BIN / "kubernetes-validate"), "--strict", "--quiet",
                            "--kubernetes-version", version, *builtin])
        if code != 0 or "ERROR" in output or "WARN" in output:
            print(f"  FAIL kubernetes-validate --strict -k {version}:\n" + _indent(output))
            failed = True
        else:
            print(f"  ok   kubernetes-validate --strict -k {version}: {len(builtin)} built-in resources")
    for schema, files in sorted(custom.items()):
        code, output = run([str(BIN / "check-jsonschema"), "--schemafile", str(SCHEMAS / schema), *files])
        if code != 0:
            print(f"  FAIL check-jsonschema {schema}:\n" + _indent(output))
            failed = True
        else:
            print(f"  ok   check-jsonschema {schema}: {len(files)} resource(s)")
    errors = consistency(docs)
    if errors:
        failed = True
        print("  FAIL consistency:\n" + _indent("\n".join(errors)))
    else:
        print("  ok   consistency (names, selectors, ports, env refs, autoscaler targets, grace period)")
    return 1 if failed else 0


HELM_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"}


def normalize(doc):
    def walk(node, path=()):
        if isinstance(node, dict):
            result = {}
            for key, value in node.items():
                if path[-1:] == ("labels",) and key in HELM_ONLY_LABELS:
                    continue
                if path[-1:] == ("annotations",) and key.startswith("checksum/"):
                    continue
                value = walk(value, path + (key,))
                if key in ("labels", "annotations") and value == {}:
                    continue
                result[key] = value
            return result
        if isinstance(node, list):
            return [walk(item, path) for item in node]
        return node
    return walk(doc)


def compare(args):
    chart = {name_of(d): normalize(d) for d in load(args.chart)
             if "helm.sh/hook" not in d.get("metadata", {}).get("annotations", {})}
    plain = {name_of(d): normalize(d) for d in load(args.plain)}
    failed = False
    for key in sorted(set(chart) | set(plain)):
        if key not in plain:
            print(f"  FAIL {key}: rendered by the chart, missing from the plain manifests")
            failed = True
        elif key not in chart:
            print(f"  FAIL {key}: in the plain manifests, not rendered by the chart")
            failed = True
        elif chart[key] != plain[key]:
            a = json.dumps(chart[key], indent=1, sort_keys=True).splitlines()
            b = json.dumps(plain[key], indent=1, sort_keys=True).splitlines()
            print(f"  FAIL {key} differs (- chart, + plain):\n" +
                  _indent("\n".join(difflib.unified_diff(a, b, lineterm="", n=2))))
            failed = True
    if not failed:
        print(f"  ok   {len(plain)} resources identical to the chart's (Helm-only labels aside)")
    return 1 if failed else 0


def _indent(text):
    return "\n".join("       " + line for line in text.splitlines())


def security(args):
    problems = []
    docs = {(d["kind"], d["metadata"]["name"]): d for d in load(args.default)}

    def container(kind, name):
        doc = docs.get((kind, name))
        return doc["spec"]["template"]["spec"]["containers"][0] if doc else {}

    if "--admin-token-file" not in container("Deployment", "volley-coordinator").get("args", []):
        problems.append("the coordinator has no --admin-token-file by default")
    if "--token-file" not in container("Deployment", "volley-worker").get("args", []):
        problems.append("the worker has no --token-file by default")
    secret = docs.get(("Secret", "volley-admin-token"))
    if secret is None:
        problems.append("no generated Secret volley-admin-token by default")
    else:
        if secret["metadata"].get("annotations", {}).get("helm.sh/resource-policy") != "keep":
            problems.append("the generated admin token Secret is not annotated helm.sh/resource-policy: keep")
        token = base64.b64decode(secret["data"]["token"]).decode()
        if len(token) != 48 or not token.isalnum():
            problems.append(f"the generated admin token is not 48 random alphanumerics ({len(token)} chars)")
    if not any(kind == "NetworkPolicy" for kind, _ in docs):
        problems.append("no NetworkPolicy by default")
    for path in [args.default, *args.files]:
        for doc in load(path):
            spec, _ = pod_spec(doc) if doc.get("kind") in ("Deployment", "Pod") else (None, None)
            for c in (spec or {}).get("containers", []):
                where = f"{path}: {name_of(doc)} container {c['name']}"
                argv = [str(a) for a in c.get("args", [])]
                env = {e["name"]: str(e.get("value")) for e in c.get("env", [])}
                if "--auth=none" in argv or ["--auth", "none"] in [argv[i:i + 2] for i in range(len(argv))] \
                        or env.get("VOLLEY_AUTH") == "none":
                    problems.append(f"{where}: runs with --auth none")
                url = env.get("VOLLEY_REDIS", "")
                authority = url.split("//", 1)[-1].split("/", 1)[0]
                if "@" in authority and ":" in authority.rsplit("@", 1)[0]:
                    problems.append(f"{where}: a password in VOLLEY_REDIS (use --redis-password-file)")
    for problem in problems:
        print("  FAIL " + problem)
    return 1 if problems else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate")
    v.add_argument("--out", required=True, help="folder for the one-resource-per-file split")
    v.add_argument("--kube-version", action="append", required=True)
    v.add_argument("files", nargs="+")
    c = sub.add_parser("compare")
    c.add_argument("chart")
    c.add_argument("plain")
    s = sub.add_parser("security")
    s.add_argument("default")
    s.add_argument("files", nargs="*")
    args = parser.parse_args()
    commands = {"validate": validate, "compare": compare, "security": security}
    sys.exit(commands[args.command](args))


if __name__ == "__main__":
    main()
