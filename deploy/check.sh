#!/usr/bin/env bash
# Static checks of deploy/ (no Docker engine or cluster needed):
#   yamllint             style/syntax of every YAML file under deploy/
#   kustomize render     base/ and overlays/production/ through `kubectl kustomize`
#                        (or a standalone `kustomize build`), if one is installed
#   kubernetes-validate  strict schema validation of the rendered objects against
#                        Kubernetes ${K8S_MIN_VERSION} and the newest bundled schema (offline)
#   check_policy.py      what a schema cannot see (deploy/check_policy.py)
#   hadolint             deploy/Dockerfile
#   ShellCheck           deploy/check.sh and .ci/run
#
# Without a kustomize renderer, each object file of base/ is validated as it is
# (overlay patches are then only linted). A tool that is not installed is
# skipped with a note, except when CI=true (or RENDERMART_CHECK_REQUIRE_ALL=true):
# then a missing checker is a failure. The renderer is never required.
#
# Tools: pip install -r deploy/requirements-check.txt; apt-get install shellcheck.
# Usage: deploy/check.sh        (from anywhere; exits non-zero on any finding)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
K8S_MIN_VERSION=${K8S_MIN_VERSION:-1.30.0}
REQUIRE_ALL=${RENDERMART_CHECK_REQUIRE_ALL:-${CI:-false}}
K8S=deploy/k8s
OVERLAYS=(base overlays/production)

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

failures=0
passed=0
skipped=()

have() { command -v "$1" >/dev/null 2>&1; }

fail() {
    echo "FAIL $*"
    failures=$((failures + 1))
}

skip() {
    echo "SKIP $1: $2"
    skipped+=("$1")
    if [[ $REQUIRE_ALL == true ]]; then
        fail "$1 is required when CI=true"
    fi
}

# check LABEL CMD...: run one check, count it, keep going on failure;
# LAST_OK tells whether it passed.
LAST_OK=false
check() {
    local label=$1
    shift
    echo "--- $label"
    if "$@"; then
        passed=$((passed + 1))
        LAST_OK=true
    else
        fail "$label"
        LAST_OK=false
    fi
}

# kubernetes-validate, strict; a missing schema (WARN) is a finding too.
kvalidate() {
    local out rc=0 version
    for version in "$K8S_MIN_VERSION" latest; do
        local args=(--strict --quiet)
        [[ $version == latest ]] || args+=(-k "$version")
        out=$(kubernetes-validate "${args[@]}" "$@" 2>&1) || rc=1
        [[ -z $out ]] || printf '%s\n' "$out"
        if grep -q '^WARN' <<<"$out"; then rc=1; fi
    done
    return "$rc"
}

# Each resource listed by a kustomization must exist (used when nothing renders).
resources_exist() {
    "$PY" - "$@" <<'PYEOF'
import os, sys, yaml
rc = 0
for k in sys.argv[1:]:
    base = os.path.dirname(k)
    doc = yaml.safe_load(open(k, encoding="utf-8")) or {}
    for r in doc.get("resources", []):
        if not os.path.exists(os.path.join(base, r)):
            print(f"{k}: resource {r!r} not found"); rc = 1
    for g in doc.get("configMapGenerator", []) + doc.get("secretGenerator", []):
        for f in g.get("envs", []) + [x.split("=")[-1] for x in g.get("files", [])]:
            if not os.path.exists(os.path.join(base, f)):
                print(f"{k}: generator file {f!r} not found"); rc = 1
sys.exit(rc)
PYEOF
}

# --- which tools are here
RENDER=()
if have kubectl && kubectl kustomize --help >/dev/null 2>&1; then
    RENDER=(kubectl kustomize)
elif have kustomize; then
    RENDER=(kustomize build)
fi
PY=
if have python3 && python3 -c 'import yaml' 2>/dev/null; then PY=python3; fi

# --- YAML lint
if have yamllint; then
    check "yamllint deploy/" yamllint --strict -c deploy/.yamllint.yaml deploy
else
    skip yamllint "not installed"
fi

# --- render + schema + policy
if ((${#RENDER[@]})); then
    for o in "${OVERLAYS[@]}"; do
        out="$WORK/${o//\//_}.yaml"
        check "render $K8S/$o (${RENDER[*]})" "${RENDER[@]}" "$K8S/$o" -o "$out"
        if [[ $LAST_OK == true ]]; then
            echo "    $(grep -c '^kind:' "$out") objects"
            if have kubernetes-validate; then
                check "kubernetes-validate $K8S/$o (rendered)" kvalidate "$out"
            fi
            if [[ -n $PY ]]; then
                pin=()
                [[ $o == overlays/* ]] && pin=(--pinned-images)
                check "policy $K8S/$o (rendered)" "$PY" deploy/check_policy.py "${pin[@]}" "$out"
            fi
        fi
    done
else
    echo "NOTE no kustomize renderer (kubectl or kustomize): validating base/ files as they are"
    mapfile -t base_files < <(find "$K8S/base" -name '*.yaml' ! -name kustomization.yaml | sort)
    if have kubernetes-validate; then
        check "kubernetes-validate $K8S/base/*.yaml" kvalidate "${base_files[@]}"
    fi
    if [[ -n $PY ]]; then
        check "kustomization references" resources_exist "$K8S/base/kustomization.yaml" \
            "$K8S/overlays/production/kustomization.yaml"
        check "policy $K8S/base/*.yaml" "$PY" deploy/check_policy.py "${base_files[@]}"
    fi
fi
have kubernetes-validate || skip kubernetes-validate "not installed"
[[ -n $PY ]] || skip "python3 yaml" "python3 with PyYAML not found (policy checks)"

# The optional ServiceMonitor is a CRD: no bundled schema, lint only (above).

# --- Dockerfile
if have hadolint; then
    check "hadolint deploy/Dockerfile" hadolint --no-color deploy/Dockerfile
else
    skip hadolint "not installed"
fi

# --- shell scripts
if have shellcheck; then
    check "shellcheck" shellcheck deploy/check.sh .ci/run
else
    skip shellcheck "not installed"
fi

echo
if ((failures)); then
    echo "deploy checks: FAILED ($failures failing, $passed ok${skipped:+, skipped: ${skipped[*]}})"
    exit 1
fi
echo "deploy checks: ok ($passed run${skipped:+, skipped: ${skipped[*]}})"
