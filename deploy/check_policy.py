#!/usr/bin/env python3
"""Policy checks on RenderMart's Kubernetes manifests (run by deploy/check.sh).

Schema validity is kubernetes-validate's job; this checks what the schema
cannot: the rules docs/deploy.md promises for every Deployment, and that no
Ingress reaches the operations port (/metrics).

usage: check_policy.py [--pinned-images] FILE...   (FILE may be "-" for stdin)
Exit status 1 and one line per finding if anything is wrong.
"""
import sys

import yaml


def load(paths):
    docs = []
    for path in paths:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        docs.extend(d for d in yaml.safe_load_all(text) if isinstance(d, dict))
    return docs


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def services_arg(args):
    args = list(args or [])
    for i, a in enumerate(args):
        if a == "--services" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--services="):
            return a.split("=", 1)[1]
    return None


def check(docs, pinned_images):
    findings = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)

    def bad(obj, msg):
        findings.append(f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}: {msg}")

    for s in by_kind.get("Secret", []):
        if s.get("data") or s.get("stringData"):
            bad(s, "Secret with values in the manifests; create it with kubectl instead")

    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", [])}

    for dep in by_kind.get("Deployment", []):
        name = dep["metadata"]["name"]
        spec = dep.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        pod_labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
        pod_sc = pod.get("securityContext", {})

        if name in hpa_targets and "replicas" in spec:
            bad(dep, "has spec.replicas but is scaled by an HPA (each apply would reset the count)")
        if pod.get("terminationGracePeriodSeconds") is None:
            bad(dep, "terminationGracePeriodSeconds not set")
        if pod_sc.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            bad(dep, "pod seccompProfile is not RuntimeDefault")

        containers = pod.get("containers", [])
        inits = pod.get("initContainers", [])
        for c in inits + containers:
            where = f"container {c.get('name')}"
            sc = c.get("securityContext", {})
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                bad(dep, f"{where}: runAsNonRoot not true")
            if sc.get("readOnlyRootFilesystem") is not True:
                bad(dep, f"{where}: readOnlyRootFilesystem not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                bad(dep, f"{where}: allowPrivilegeEscalation not false")
            if "ALL" not in (sc.get("capabilities", {}).get("drop") or []):
                bad(dep, f"{where}: capabilities do not drop ALL")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(part) or {}):
                        bad(dep, f"{where}: resources.{part}.{r} missing")
            image = c.get("image", "")
            if pinned_images:
                last = image.rsplit("/", 1)[-1]
                if "@" not in last and (":" not in last or last.endswith(":latest")):
                    bad(dep, f"{where}: image {image!r} is not pinned to a tag or digest")

        serve_services = None
        for c in containers:
            args = (c.get("command") or []) + (c.get("args") or [])
            if "serve" in args:
                serve_services = services_arg(args)
                if not serve_services:
                    bad(dep, f"container {c.get('name')}: serve without --services")
                probes = {
                    "readinessProbe": "/readyz",
                    "livenessProbe": "/healthz",
                }
                for probe, path in probes.items():
                    got = (c.get(probe) or {}).get("httpGet", {}).get("path")
                    if got != path:
                        bad(dep, f"container {c.get('name')}: {probe} is not GET {path} (got {got!r})")
        if serve_services is None:
            bad(dep, "no container runs `rendermart serve`")
        elif serve_services != "all":
            # A process running only some services calls the others (or is called by
            # them): every process of the deployment needs the shared secret, from a Secret.
            for c in containers:
                env = {e.get("name"): e for e in c.get("env") or []}
                secret = env.get("RENDERMART_SERVICE_SECRET", {})
                if "secretKeyRef" not in (secret.get("valueFrom") or {}):
                    bad(dep, f"container {c.get('name')}: runs {serve_services!r} without RENDERMART_SERVICE_SECRET from a Secret")
        migrate = [c for c in inits if "migrate" in (c.get("command") or []) + (c.get("args") or [])]
        if not migrate:
            bad(dep, "no migrate initContainer")
        for c in migrate:
            got = services_arg((c.get("command") or []) + (c.get("args") or []))
            if got != serve_services:
                bad(dep, f"migrate initContainer --services {got!r} != serve --services {serve_services!r}")

        if not selects(spec.get("selector", {}).get("matchLabels"), pod_labels):
            bad(dep, "selector does not match the pod template labels")
        if not any(selects(s.get("spec", {}).get("selector"), pod_labels) for s in by_kind.get("Service", [])):
            bad(dep, "no Service selects its pods")
        if not any(selects(p.get("spec", {}).get("selector", {}).get("matchLabels"), pod_labels)
                   for p in by_kind.get("PodDisruptionBudget", [])):
            bad(dep, "no PodDisruptionBudget selects its pods")

    deployments = {d["metadata"]["name"] for d in by_kind.get("Deployment", [])}
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        if h["spec"]["scaleTargetRef"]["name"] not in deployments:
            bad(h, "scales a Deployment that does not exist")

    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    # The operations port (/metrics: per-route counts) must never be public: no
    # Service an Ingress routes to may expose a container port named "ops".
    ops_numbers = set()
    for dep in by_kind.get("Deployment", []):
        for c in dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for port in c.get("ports") or []:
                if port.get("name") == "ops":
                    ops_numbers.add(port.get("containerPort"))
    for ing in by_kind.get("Ingress", []):
        for rule in ing.get("spec", {}).get("rules", []):
            for p in rule.get("http", {}).get("paths", []):
                svc = p.get("backend", {}).get("service", {}).get("name")
                if svc not in services:
                    bad(ing, f"path {p.get('path')} routes to unknown Service {svc!r}")
                    continue
                if "metrics" in (p.get("path") or ""):
                    bad(ing, f"path {p.get('path')} routes /metrics to the public")
                if (p.get("path") or "").startswith("/internal"):
                    bad(ing, f"path {p.get('path')} routes internal service calls to the public")
                for port in services[svc].get("spec", {}).get("ports", []):
                    target = port.get("targetPort", port.get("port"))
                    if port.get("name") == "ops" or target == "ops" or target in ops_numbers:
                        bad(ing, f"path {p.get('path')} routes to Service {svc!r}, which exposes the ops port (metrics)")

    if not by_kind.get("Deployment"):
        findings.append("no Deployment found")
    return findings


def main(argv):
    pinned = "--pinned-images" in argv
    paths = [a for a in argv if a != "--pinned-images"]
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    docs = load(paths)
    findings = check(docs, pinned)
    for f in findings:
        print(f"POLICY {f}")
    if not findings:
        print(f"policy: {len(docs)} objects ok")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
