#!/usr/bin/env python3
"""Offline checks of deploy/: run by scripts/check-deploy.sh (which installs the tools and builds the
binaries), not on its own.

  manifests   kustomize render of every overlay -> Kubernetes schemas (kubernetes-validate, strict)
              and the Istio CRD schemas shipped in deploy/schemas (unknown fields refused)
  configs     every config a manifest or the compose file mounts passes its binary's check
  flags       every r1-* container's command line is accepted by its binary (run with a check flag)
  compose     deploy/compose/compose.yaml against the Compose spec schema
  images      the Dockerfiles, statically (multi-stage, non-root user, health check, labels)
  scrape      the real gateway, r1-edge and r1-center (the Kubernetes ConfigMap configs, addresses
              moved to loopback) with real Kafka and Redis; traffic through edge, cache and center;
              every metric name in the alert rules, the dashboard, the HPA and the adapter rules
              must be in their /metrics
  reload      the ConfigMap symlink swap the kubelet does, against that running gateway

Each check prints what it proved; any failure exits 1 at the end with every problem listed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import yaml
from kubernetes_validate import utils as kv

from hs256 import jwt  # scripts/lib, beside this file

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Oldest Kubernetes the manifests target (pod-index label: 1.28; preStop sleep: 1.30) and newest known.
KUBE_VERSIONS = ["1.30.0", "1.37.0"]
OVERLAYS = [
    "deploy/k8s/overlays/dev",
    "deploy/k8s/overlays/prod",
    "deploy/k8s/overlays/istio-weighted",
    "deploy/k8s/overlays/with-operators",
]
# The guide's edge flags, which must appear verbatim (joined) in the edge container's args.
EDGE_GUIDE_FLAGS = "--batch_size_dynamic true --max_batch_size 32"
# Families a scrape here cannot show, and why; each must still be declared in the named sources.
EVENT_ONLY = {
    "r1_center_gpu_utilization_percent": ("center-node/src", "registered only where NVML answers (a GPU node)"),
    "r1_center_gpu_memory_used_bytes": ("center-node/src", "registered only where NVML answers (a GPU node)"),
    "r1_center_gpu_memory_total_bytes": ("center-node/src", "registered only where NVML answers (a GPU node)"),
    "r1_upstream_errors_total": ("gateway/src", "a labelled counter: appears after the first upstream failure"),
    "r1_kafka_produce_errors_total": ("gateway/src", "a labelled counter: appears after the first refused hand-off"),
}
# Landing in the gateway now: tolerated (reported) while absent from its sources.
PENDING = {"r1_limit_fallback_active"}

problems: list[str] = []
notes: list[str] = []


def say(msg: str) -> None:
    print(f"check-deploy: {msg}", flush=True)


def fail(msg: str) -> None:
    problems.append(msg)
    print(f"check-deploy: FAIL {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# manifests
# ---------------------------------------------------------------------------------------------


def render(path: str) -> list[dict]:
    out = subprocess.run(
        [os.environ["R1_KUSTOMIZE"], "build", str(ROOT / path)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        fail(f"kustomize build {path}: {out.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def closed(schema):
    """A CRD's structural schema with unknown fields refused (as the API server prunes/refuses them)."""
    if isinstance(schema, dict):
        schema = {k: closed(v) for k, v in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


def crd_schemas() -> dict[tuple[str, str], dict]:
    found = {}
    for f in sorted((DEPLOY / "schemas").rglob("*.yaml")):
        for crd in yaml.safe_load_all(f.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for v in crd["spec"]["versions"]:
                found[(f"{group}/{v['name']}", kind)] = closed(v["schema"]["openAPIV3Schema"])
    return found


def validate_doc(doc: dict, crds: dict) -> str | None:
    """None if valid, else the reason."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in crds:
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
        try:
            jsonschema.validate(body, crds[key])
        except jsonschema.ValidationError as e:
            where = ".".join(str(p) for p in e.absolute_path)
            return f"{where}: {e.message}"
        if not doc.get("metadata", {}).get("name"):
            return "metadata.name missing"
        return None
    for version in KUBE_VERSIONS:
        try:
            kv.validate(doc, version, strict=True)
        except kv.SchemaNotFoundError:
            return f"no schema for {key[0]} {key[1]} (ship its CRD under deploy/schemas)"
        except kv.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            return f"Kubernetes {version}: {where}: {e.message}"
    return None


def check_manifests(crds: dict) -> dict[str, list[dict]]:
    # The validators must catch a mistake, or a pass proves nothing.
    bad_pod = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "x", "image": "x", "readinessProbe": {"httpGet": {"paht": "/"}}}]},
            },
        },
    }
    bad_vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "x"},
        "spec": {"hosts": ["x"], "http": [{"route": [{"destination": {"host": "x"}, "wieght": 70}]}]},
    }
    for bad in (bad_pod, bad_vs):
        if validate_doc(bad, crds) is None:
            fail(f"the validator accepted a broken {bad['kind']}: the manifest check proves nothing")
    renders = {}
    for path in OVERLAYS + ["deploy/istio"]:
        docs = render(path)
        renders[path] = docs
        kinds: dict[str, int] = {}
        for doc in docs:
            reason = validate_doc(doc, crds)
            name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            if reason:
                fail(f"{path}: {name}: {reason}")
            kinds[doc["kind"]] = kinds.get(doc["kind"], 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        say(f"{path}: {len(docs)} resources valid (Kubernetes {' and '.join(KUBE_VERSIONS)} strict; CRDs from deploy/schemas): {summary}")
    return renders


def check_istio_semantics(docs: list[dict]) -> None:
    """What the guide asks of the mesh, beyond the schema."""
    vs = [d for d in docs if d["kind"] == "VirtualService"]
    dr = [d for d in docs if d["kind"] == "DestinationRule"]
    if len(vs) != 1 or len(dr) != 1:
        fail("deploy/istio: expected one VirtualService and one DestinationRule")
        return
    subsets = {s["name"] for s in dr[0]["spec"]["subsets"]}
    if subsets != {"edge", "center"} or "outlierDetection" not in dr[0]["spec"].get("trafficPolicy", {}):
        fail("deploy/istio: the DestinationRule needs subsets edge and center and outlier detection")
    weights = {}
    for route in vs[0]["spec"]["http"]:
        for dest in route["route"]:
            weights.setdefault(route.get("name"), {})[dest["destination"].get("subset")] = dest.get("weight", 100)
        retry = route.get("retries", {}).get("retryOn", "")
        replaying = {"5xx", "gateway-error", "reset", "retriable-4xx", "unavailable", "cancelled", "deadline-exceeded"}
        if replaying & set(retry.split(",")):
            fail(f"deploy/istio: route {route.get('name')} retries on {retry}: a POST could be replayed")
        if int(str(route.get("timeout", "0s")).rstrip("s") or 0) < 600:
            fail(f"deploy/istio: route {route.get('name')} timeout {route.get('timeout')} cuts reasoning streams")
    if {"edge": 70, "center": 30} not in weights.values():
        fail(f"deploy/istio: no route splits edge 70 / center 30 ({weights})")
    else:
        say("deploy/istio: 70/30 split on edge/center subsets, outlier detection, retries only before the request is sent, 30 min timeouts")


# ---------------------------------------------------------------------------------------------
# configs and flags
# ---------------------------------------------------------------------------------------------


BIN = {}


def run_check(argv: list[str], what: str, env: dict | None = None) -> bool:
    out = subprocess.run(argv, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}, cwd=ROOT)
    if out.returncode != 0:
        fail(f"{what}: `{' '.join(argv)}` exited {out.returncode}: {(out.stderr or out.stdout).strip()[-800:]}")
        return False
    return True


def local_paths(text: str) -> str:
    """Container paths -> this checkout (the shipped models live in /models in the images)."""
    return text.replace("/models/", f"{ROOT}/models/")


def binary_of(image: str) -> str | None:
    m = re.search(r"r1-(gateway|edge|center)(?::|@|$)", image)
    return f"r1-{m.group(1)}" if m else None


def check_config_file(binary: str, path: Path, what: str) -> bool:
    if binary == "r1-gateway":
        return run_check([BIN[binary], "--config", str(path), "--check-config"], what, {"R1_JWT_SECRET": "x" * 32})
    if binary == "r1-center":
        return run_check([BIN[binary], "--config", str(path), "--check-config"], what)
    return run_check([BIN[binary], "--config", str(path), "--model", f"{ROOT}/models/r1-edge-mini", "--check"], what)


def check_workloads(path: str, docs: list[dict], tmp: Path) -> None:
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    checked_flags = 0
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            # The schemas do not see references: every mount must name a volume of the pod.
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    fail(f"{path}: {doc['metadata']['name']}/{c['name']} mounts volume {m['name']}, which the pod lacks")
            binary = binary_of(c["image"])
            if not binary:
                notes.append(f"{path}: {doc['metadata']['name']}/{c['name']} runs {c['image']}, not ours: its flags are its own")
                continue
            # Materialize the ConfigMap mounts under tmp, and map container paths onto them.
            mapping = {}
            for m in c.get("volumeMounts", []):
                cm = volumes.get(m["name"], {}).get("configMap")
                if not cm:
                    continue
                if cm["name"] not in configmaps:
                    fail(f"{path}: {doc['metadata']['name']} mounts ConfigMap {cm['name']}, which the render lacks")
                    continue
                d = tmp / path.replace("/", "_") / cm["name"]
                d.mkdir(parents=True, exist_ok=True)
                for key, text in configmaps[cm["name"]].items():
                    (d / key).write_text(local_paths(text))
                    if key.endswith(".toml"):
                        if check_config_file(binary, d / key, f"{path}: ConfigMap {cm['name']}/{key}"):
                            say(f"{path}: ConfigMap {cm['name']}/{key} passes {binary}'s check")
                mapping[m["mountPath"].rstrip("/") + "/"] = f"{d}/"
            args = list(c.get("command", [])[1:] if c.get("command") else []) + list(c.get("args", []))
            mapped = []
            for a in args:
                for prefix, local in mapping.items():
                    a = a.replace(prefix, local)
                mapped.append(local_paths(a))
            if binary == "r1-edge":
                if EDGE_GUIDE_FLAGS not in " ".join(args):
                    fail(f"{path}: r1-edge args lack `{EDGE_GUIDE_FLAGS}` verbatim: {args}")
                ok = run_check([BIN[binary], *mapped, "--check"], f"{path}: r1-edge flags")
            else:
                ok = run_check([BIN[binary], *mapped, "--check-config"], f"{path}: {binary} flags", {"R1_JWT_SECRET": "x" * 32})
            if ok:
                checked_flags += 1
                say(f"{path}: {binary} accepts its container args {args}")
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    fail(f"{path}: {doc['metadata']['name']}/{c['name']} has no {probe}")
            if c.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
                fail(f"{path}: {c['name']} may escalate privileges")
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            fail(f"{path}: {doc['metadata']['name']} does not require a non-root user")
    if checked_flags < 3:
        fail(f"{path}: only {checked_flags} r1-* containers found (expected gateway, edge, center)")


def check_scheme_configs() -> None:
    for name in ("api-direct", "local", "hybrid"):
        f = DEPLOY / "config" / f"{name}.toml"
        if not f.exists():
            fail(f"deploy/config/{name}.toml is missing")
        elif check_config_file("r1-gateway", f, f"deploy/config/{name}.toml"):
            say(f"deploy/config/{name}.toml passes r1-gateway --check-config")


def check_compose(tmp: Path) -> None:
    f = DEPLOY / "compose" / "compose.yaml"
    doc = yaml.safe_load(f.read_text())
    schema = json.loads((DEPLOY / "schemas" / "compose" / "compose-spec.json").read_text())
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError as e:
        fail(f"deploy/compose/compose.yaml: {'.'.join(map(str, e.absolute_path))}: {e.message}")
        return
    wanted = {"kafka", "redis", "gateway", "edge-0", "edge-1", "center", "prometheus", "grafana"}
    if missing := wanted - set(doc["services"]):
        fail(f"deploy/compose/compose.yaml lacks services {sorted(missing)}")
    for name, svc in doc["services"].items():
        binary = binary_of(svc.get("image", ""))
        if not binary:
            continue
        mapping = {}
        for v in svc.get("volumes", []):
            src, dst = v.split(":")[:2]
            local = tmp / "compose" / name / Path(dst).name
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(local_paths((f.parent / src).read_text()))
            mapping[dst] = str(local)
        # The check flag makes each binary validate the config its command names, then exit.
        args = [local_paths(mapping.get(a, a)) for a in svc.get("command", [])]
        flag = "--check" if binary == "r1-edge" else "--check-config"
        if run_check([BIN[binary], *args, flag], f"compose {name} command", {"R1_JWT_SECRET": "x" * 32}):
            say(f"deploy/compose: {name} ({binary}) accepts {svc.get('command')}")
    say("deploy/compose/compose.yaml is valid against the Compose spec")


def check_dockerfiles() -> None:
    files = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
    if {f.name for f in files} != {"gateway.Dockerfile", "edge.Dockerfile", "center.Dockerfile"}:
        fail(f"deploy/docker: expected gateway, edge and center Dockerfiles, found {[f.name for f in files]}")
    for f in files:
        text = f.read_text()
        lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines() if l.strip() and not l.strip().startswith("#")]
        froms = [l for l in lines if l.upper().startswith("FROM ")]
        users = [l.split(None, 1)[1] for l in lines if l.upper().startswith("USER ")]
        checks = {
            "multi-stage (a build stage and a runtime stage)": len(froms) >= 2,
            "a non-root USER": bool(users) and all(not u.split(":")[0] in ("0", "root") for u in users),
            "a HEALTHCHECK": any(l.upper().startswith("HEALTHCHECK ") for l in lines),
            "OCI labels (title, source, licenses)": all(
                f"org.opencontainers.image.{k}" in text for k in ("title", "source", "licenses")
            ),
            "an ENTRYPOINT in exec form": any(re.match(r"ENTRYPOINT \[", l) for l in lines),
        }
        for what, ok in checks.items():
            if not ok:
                fail(f"deploy/docker/{f.name}: needs {what}")
        if all(checks.values()):
            say(f"deploy/docker/{f.name}: {len(froms)} stages, USER {users[-1]}, HEALTHCHECK, OCI labels, exec ENTRYPOINT")


# ---------------------------------------------------------------------------------------------
# scrape and reload
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def toml_dump(doc: dict, prefix: str = "", inline: bool = False) -> str:
    """Enough TOML for our configs: scalars, lists, inline tables, tables and arrays of tables."""
    scalars, tables, arrays = [], [], []
    for k, v in doc.items():
        key = k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)
        if isinstance(v, dict) and not inline:
            tables.append(f"\n[{prefix}{key}]\n" + toml_dump(v, f"{prefix}{key}."))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            arrays.extend(f"\n[[{prefix}{key}]]\n" + toml_dump(item, inline=True) for item in v)
        else:
            scalars.append(f"{key} = {toml_value(v)}\n")
    return "".join(scalars + tables + arrays)


class Stack:
    """The real binaries on loopback; each stopped (SIGINT, then SIGKILL) on close."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = self.tmp / f"{name}.log"
        p = subprocess.Popen(
            argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT
        )
        self.procs.append((name, p, log))
        return p

    def log_tail(self, name: str) -> str:
        for n, _, log in self.procs:
            if n == name:
                return log.read_text()[-2000:]
        return ""

    def wait_http(self, name: str, url: str, timeout: float = 120) -> None:
        proc = next(p for n, p, _ in self.procs if n == name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode} before answering {url}:\n{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f} s:\n{self.log_tail(name)}")

    def close(self) -> None:
        for _, p, _ in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(2)
        for _, p, _ in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def http(method: str, url: str, body=None, headers=None, timeout: float = 60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def families(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            names.add(m.group(1))
            if m.group(2) in ("histogram", "summary"):
                names |= {m.group(1) + s for s in ("_bucket", "_sum", "_count")}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def metric_value(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def used_metric_names() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}

    def add(where: str, text: str) -> None:
        for n in re.findall(r"\b(r1_[a-z0-9_]+)\b", text):
            used.setdefault(n, set()).add(where)

    rules = yaml.safe_load((DEPLOY / "prometheus/rules/r1-alerts.yml").read_text())
    for g in rules["groups"]:
        for r in g["rules"]:
            add(f"alert {r.get('alert') or r.get('record')}", r["expr"])
    dash = json.loads((DEPLOY / "grafana/r1-hybrid.json").read_text())
    for p in dash["panels"]:
        for t in p.get("targets", []):
            add(f"dashboard '{p['title']}'", t["expr"])
    add("prometheus-adapter rules", (DEPLOY / "prometheus/adapter-rules.yaml").read_text())
    for d in yaml.safe_load_all((DEPLOY / "k8s/base/autoscaling.yaml").read_text()):
        for m in d["spec"]["metrics"]:
            if m["type"] in ("Pods", "External"):
                add(f"HPA {d['metadata']['name']}", m[m["type"].lower()]["metric"]["name"])
    return used


def declared_in(name: str, tree: str) -> bool:
    for f in (ROOT / tree).rglob("*.rs"):
        if f'"{name}"' in f.read_text(errors="replace"):
            return True
    return False


def scrape_and_reload(renders: dict[str, list[dict]], tmp: Path) -> None:
    prod = {d["metadata"]["name"]: d.get("data", {}) for d in renders["deploy/k8s/overlays/prod"] if d["kind"] == "ConfigMap"}
    edge_cm = next(v for k, v in prod.items() if k.startswith("r1-edge-config"))
    center_cm = next(v for k, v in prod.items() if k.startswith("r1-center-config"))
    gateway_cm = prod["r1-gateway-config"]
    kafka, redis_url = os.environ["R1_TEST_KAFKA_BROKERS"], os.environ["R1_TEST_REDIS_URL"]
    suffix = secrets.token_hex(4)
    topics = {
        "interactive": f"r1.deploycheck.{suffix}.interactive",
        "batch": f"r1.deploycheck.{suffix}.batch",
        "results": f"r1.deploycheck.{suffix}.results",
        "cancel": f"r1.deploycheck.{suffix}.cancel",
        "dlq": f"r1.deploycheck.{suffix}.dlq",
    }
    ports = {k: free_port() for k in ("mock", "edge", "center", "public", "admin")}
    stack = Stack(tmp)
    try:
        stack.start("mock", [BIN["r1-mock-upstream"], "--listen", f"127.0.0.1:{ports['mock']}", "--chunks", "3"])
        stack.wait_http("mock", f"http://127.0.0.1:{ports['mock']}/healthz")

        # r1-edge with the edge Deployment's own args (paths to this checkout, listen on loopback).
        edge_dir = tmp / "edge"
        edge_dir.mkdir()
        (edge_dir / "edge.toml").write_text(local_paths(edge_cm["edge.toml"]))
        deployment = next(
            d for d in renders["deploy/k8s/overlays/prod"] if d["kind"] == "Deployment" and d["metadata"]["name"] == "r1-edge"
        )
        args = [local_paths(a.replace("/etc/r1/", f"{edge_dir}/")) for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]]
        args[args.index("--listen") + 1] = f"127.0.0.1:{ports['edge']}"
        stack.start("edge", [BIN["r1-edge"], *args])

        # r1-center: the center ConfigMap, Kafka/Redis/backend moved to loopback.
        center = tomllib.loads(center_cm["center.toml"])
        center["node"].update(metrics=f"127.0.0.1:{ports['center']}", shutdown_grace="5s", id=f"deploycheck-{suffix}")
        center["backend"]["base_url"] = f"http://127.0.0.1:{ports['mock']}/v1"
        center["kafka"].update(brokers=kafka, group=f"r1-deploycheck-{suffix}")
        center["topics"] = dict(topics)
        center["redis"]["url"] = redis_url
        (tmp / "center.toml").write_text(toml_dump(center))
        stack.start("center", [BIN["r1-center"], "--config", str(tmp / "center.toml")])

        # r1-gateway: the routing ConfigMap, mounted the way the kubelet mounts a ConfigMap volume
        # (gateway.toml -> ..data/gateway.toml, ..data -> ..<timestamp>), so an edit is a symlink swap.
        gw = tomllib.loads(gateway_cm["gateway.toml"])
        gw["listen"].update(public=f"127.0.0.1:{ports['public']}", admin=f"127.0.0.1:{ports['admin']}")
        gw["redis"]["url"] = redis_url
        gw["edge"]["members"] = [f"127.0.0.1:{ports['edge']}"]
        gw["edge"]["health"]["interval"] = "500ms"
        gw["center"]["kafka"].update(
            brokers=kafka, topics=dict(topics), result_partitions=1, center_group=f"r1-deploycheck-{suffix}"
        )
        mount = tmp / "configmap"
        mount.mkdir()

        def publish(text: str, stamp: str) -> None:
            """What the kubelet's atomic writer does: new dir, new ..data link, renamed over the old."""
            new = mount / f"..{stamp}"
            new.mkdir()
            (new / "gateway.toml").write_text(text)
            old = os.readlink(mount / "..data") if (mount / "..data").is_symlink() else None
            os.symlink(new.name, mount / "..data_tmp")
            os.replace(mount / "..data_tmp", mount / "..data")
            if not (mount / "gateway.toml").is_symlink():
                os.symlink("..data/gateway.toml", mount / "gateway.toml")
            if old:
                shutil.rmtree(mount / old)

        publish(toml_dump(gw), "2026_01_01_00_00_00.000000001")
        secret = secrets.token_hex(32)
        stack.start(
            "gateway",
            [BIN["r1-gateway"], "--config", str(mount / "gateway.toml")],
            {"R1_JWT_SECRET": secret, "R1_RESULTS_PARTITION": "0"},
        )
        stack.wait_http("edge", f"http://127.0.0.1:{ports['edge']}/readyz")
        stack.wait_http("center", f"http://127.0.0.1:{ports['center']}/readyz")
        stack.wait_http("gateway", f"http://127.0.0.1:{ports['public']}/readyz")
        public, admin = f"http://127.0.0.1:{ports['public']}", f"http://127.0.0.1:{ports['admin']}"
        # The center pool counts as healthy once the hand-off is connected and the gateway sees the node in
        # its consumer group (else requests fail over to the edge).
        deadline = time.monotonic() + 60
        while True:
            _, _, body = http("GET", f"{admin}/admin/pools")
            pools = json.loads(body)
            handoff = pools.get("handoff") or {}
            if handoff.get("ready") and handoff.get("consumers"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway's Kafka hand-off did not become ready: {pools}\n{stack.log_tail('gateway')}")
            time.sleep(0.2)
        say("scrape: gateway (prod ConfigMap, Kafka hand-off, Redis), r1-edge (the Deployment's args), r1-center (prod ConfigMap, mock backend) are ready")

        user = {"authorization": f"Bearer {jwt(secret, {'sub': f'deploy-check-{suffix}'})}"}
        premium = {"authorization": f"Bearer {jwt(secret, {'sub': f'deploy-check-premium-{suffix}', 'tier': 'premium'})}"}
        simple = {"model": "deepseek-r1", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}

        status, _, _ = http("POST", f"{public}/v1/chat/completions", simple)
        expect(status == 401, f"no token: {status}, expected 401")
        for attempt, want in (("first", "edge"), ("repeat", "cache")):
            if attempt == "repeat":  # the answer is stored after it was sent: wait for the store
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and metric_value(http("GET", f"{admin}/metrics")[2].decode(), "r1_cache_stores_total") < 1:
                    time.sleep(0.1)
            status, headers, body = http("POST", f"{public}/v1/chat/completions", simple, user)
            route = headers.get("x-r1-route")
            expect(status == 200 and route == want, f"{attempt} simple request: {status} route {route} ({headers.get('x-r1-route-reason')}; expected 200 {want}): {body[:300]!r}")
        status, _, body = http("POST", f"{public}/v1/chat/completions", {**simple, "stream": True, "temperature": 0.7}, user)
        expect(status == 200 and b"[DONE]" in body, f"edge stream: {status} {body[-200:]!r}")
        status, headers, body = http("POST", f"{public}/v1/chat/completions", {**simple, "temperature": 0.7}, premium)
        route = headers.get("x-r1-route")
        expect(status == 200 and route == "center", f"premium request: {status} route {route} ({headers.get('x-r1-route-reason')}; expected 200 center): {body[:300]!r}")
        status, _, body = http("POST", f"{public}/v1/chat/completions", {**simple, "stream": True, "temperature": 0.7}, premium)
        expect(status == 200 and b"[DONE]" in body, f"center stream: {status} {body[-200:]!r}")
        status, _, _ = http("POST", f"{public}/v1/chat/completions", {**simple, "max_tokens": 10_000_000}, user)
        expect(status == 400, f"max_tokens over the cap: {status}, expected 400")

        scrapes = {}
        for name, url in (("r1-gateway", f"{admin}/metrics"), ("r1-edge", f"http://127.0.0.1:{ports['edge']}/metrics"),
                          ("r1-center", f"http://127.0.0.1:{ports['center']}/metrics")):
            _, _, body = http("GET", url)
            scrapes[name] = body.decode()
            (tmp / f"{name}.prom").write_text(scrapes[name])
        seen = set().union(*(families(t) for t in scrapes.values()))
        # The rules and panels select on these label values.
        routes = set(re.findall(r'^r1_requests_total\{[^}]*route="([a-z]+)"', scrapes["r1-gateway"], re.M))
        expect({"edge", "center", "cache"} <= routes, f"r1_requests_total routes {sorted(routes)}: expected edge, center and cache")
        reasons = set(re.findall(r'^r1_route_decisions_total\{[^}]*reason="([a-z_]+)"', scrapes["r1-gateway"], re.M))
        used = used_metric_names()
        missing = []
        for name, where in sorted(used.items()):
            if name in seen:
                continue
            if name in EVENT_ONLY:
                tree, why = EVENT_ONLY[name]
                if declared_in(name, tree):
                    notes.append(f"{name}: not in this scrape ({why}); declared in {tree}")
                else:
                    missing.append(f"{name} (used by {', '.join(sorted(where))}): not declared in {tree}")
            elif name in PENDING and not declared_in(name, "gateway/src"):
                notes.append(f"PENDING {name} (used by {', '.join(sorted(where))}): not exported by the gateway yet")
            else:
                missing.append(f"{name} (used by {', '.join(sorted(where))})")
        for m in missing:
            fail(f"metric not in the binaries' scrape: {m}")
        say(f"scrape: routes seen {sorted(routes)}, decision reasons {sorted(reasons)}")
        say(f"scrape: {len(used)} metric names used by alerts, dashboard and autoscaling; "
            f"{len([n for n in used if n in seen])} seen in the scrape of the running binaries, {len(missing)} missing")

        # Live reload through the symlink swap: routing off, everything to the center.
        # A conversation of its own (the traffic above made "Hi" sticky on the center).
        probe = {**simple, "messages": [{"role": "user", "content": "Good morning"}]}

        def explain() -> dict:
            _, _, body = http("POST", f"{admin}/admin/route/explain", probe)
            return json.loads(body)

        def reloads() -> tuple[float, float]:
            _, _, body = http("GET", f"{admin}/metrics")
            text = body.decode()
            return metric_value(text, "r1_config_reloads_total"), metric_value(text, "r1_config_reload_failures_total")

        problems_before = len(problems)
        before = explain()
        expect(before.get("route") == "edge", f"before the edit, a simple request should go to the edge: {before}")
        edited = json.loads(json.dumps(gw))
        edited["routing"].update(mode="off", weights={"edge": 0, "center": 100})
        applied0, refused0 = reloads()
        publish(toml_dump(edited), "2026_01_01_00_01_00.000000002")
        deadline = time.monotonic() + 30
        while reloads()[0] <= applied0 and time.monotonic() < deadline:
            time.sleep(0.2)
        after = explain()
        expect(reloads()[0] == applied0 + 1 and after.get("route") == "center" and after.get("reason") == "mode_off",
               f"the symlink swap was not reloaded: reloads {reloads()}, decision {after}")
        publish(toml_dump(edited).replace("[routing.weights]", "[routing.weights]\nedge_typo = 1"), "2026_01_01_00_02_00.000000003")
        deadline = time.monotonic() + 30
        while reloads()[1] <= refused0 and time.monotonic() < deadline:
            time.sleep(0.2)
        kept = explain()
        expect(reloads()[1] == refused0 + 1 and kept.get("route") == "center",
               f"an invalid edit was not refused: reloads {reloads()}, decision {kept}")
        if len(problems) == problems_before:
            say("reload: a ConfigMap-style symlink swap reached the running gateway (edge -> center, no restart); "
                "an invalid swap was refused and the previous config kept serving")
    except (RuntimeError, KeyError, StopIteration, json.JSONDecodeError) as e:
        fail(f"scrape/reload: {e}")
    finally:
        stack.close()


def expect(ok: bool, msg: str) -> None:
    if not ok:
        fail(msg)


def main() -> int:
    for b in ("r1-gateway", "r1-edge", "r1-center", "r1-mock-upstream"):
        BIN[b] = os.environ.get("R1_BIN_DIR", str(ROOT / "target/debug")) + f"/{b}"
    crds = crd_schemas()
    with tempfile.TemporaryDirectory(prefix="r1-check-deploy-") as t:
        tmp = Path(t)
        renders = check_manifests(crds)
        check_istio_semantics(renders.get("deploy/istio", []))
        for path in OVERLAYS:
            check_workloads(path, renders.get(path, []), tmp)
        check_scheme_configs()
        check_compose(tmp)
        check_dockerfiles()
        if os.environ.get("R1_TEST_KAFKA_BROKERS") and os.environ.get("R1_TEST_REDIS_URL"):
            scrape_and_reload(renders, tmp)
        else:
            fail("scrape: R1_TEST_KAFKA_BROKERS / R1_TEST_REDIS_URL not set (scripts/check-deploy.sh sets them)")
    for n in notes:
        say(f"note: {n}")
    if problems:
        say(f"{len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        return 1
    say("all deploy checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
