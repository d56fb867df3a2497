#!/usr/bin/env bash
# Static checks of the deployment files, for machines without a container engine:
#   - docker-compose.yml and deploy/kubernetes/*.yaml parse as YAML and hold what
#     pgshard needs (ports, probes, mounts, the map's slots);
#   - the shard maps (deploy/compose/shardmap.toml, the one inside the ConfigMap) parse
#     as TOML and assign every slot exactly once;
#   - docs/grafana-dashboard.json is valid JSON and its queries name only pgshard's
#     metrics (the list below; see the metrics section of the README);
#   - the Dockerfile runs `pgshard serve` as a non-root user;
#   - `kubectl kustomize deploy/kubernetes` builds, when kubectl is installed;
#   - with a pgshard binary as $1: `pgshard check` accepts both maps (it only validates
#     the file; no shard is contacted, so the compose host names need not resolve).
#
# Usage: scripts/lint-deploy.sh [PATH/TO/pgshard]     exit 0 when every check passes
set -euo pipefail
cd "$(dirname "$0")/.."

pgshard_bin="${1:-}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# PyYAML: the system python3's if it has one, else a throwaway venv
py=python3
if ! python3 -c 'import yaml' 2>/dev/null; then
    echo "lint-deploy: PyYAML missing, installing it into a temporary venv"
    python3 -m venv "$tmp/venv"
    "$tmp/venv/bin/pip" install --quiet pyyaml
    py="$tmp/venv/bin/python"
fi

"$py" - "$tmp" <<'PY'
import json
import pathlib
import re
import sys
import tomllib

import yaml

TMP = pathlib.Path(sys.argv[1])
problems = []


def fail(where, msg):
    problems.append(f"{where}: {msg}")


# --- metric names (every name pgshard exports; histogram series get their suffixes)
METRICS = {
    "pgshard_up", "pgshard_draining", "pgshard_map_epoch", "pgshard_reloads_total",
    "pgshard_clients", "pgshard_clients_accepted_total", "pgshard_queries_total",
    "pgshard_query_errors_total", "pgshard_bytes_total", "pgshard_pool_connections",
    "pgshard_pool_max_connections", "pgshard_pool_waiting", "pgshard_pool_max_wait_seconds",
    "pgshard_breaker_state", "pgshard_breaker_opened_total", "pgshard_shard_paused",
}
HISTOGRAMS = {"pgshard_query_duration_seconds"}
for h in HISTOGRAMS:
    METRICS |= {h + "_bucket", h + "_sum", h + "_count"}

PROMQL_FUNCS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "group", "rate", "irate", "increase", "delta", "idelta",
    "deriv", "histogram_quantile", "abs", "ceil", "floor", "round", "clamp", "clamp_min",
    "clamp_max", "vector", "scalar", "time", "label_replace", "label_join", "sort",
    "sort_desc", "absent", "absent_over_time", "changes", "resets", "avg_over_time",
    "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "last_over_time", "quantile_over_time", "predict_linear", "timestamp",
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "offset", "and", "or", "unless", "inf", "nan"}


def check_expr(where, expr):
    """Every identifier in `expr` is a known metric, a PromQL function or keyword."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)      # string literals
    s = re.sub(r"\{[^}]*\}", "", s)                     # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)                    # range selectors ($__rate_interval)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", s)
    s = re.sub(r"\$\w+", "", s)                         # dashboard variables
    used = 0
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        name = m.group(0)
        if re.fullmatch(r"[0-9.eE+-]+", name):
            continue
        rest = s[m.end():].lstrip()
        if rest.startswith("("):
            if name not in PROMQL_FUNCS:
                fail(where, f"unknown function {name}() in {expr!r}")
        elif name in PROMQL_WORDS:
            continue
        elif name in METRICS:
            used += 1
        else:
            fail(where, f"{name} is not a pgshard metric (in {expr!r})")
    if used == 0:
        fail(where, f"query names no pgshard metric: {expr!r}")


def load_yaml(path):
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        fail(path, f"not valid YAML: {e}")
        return []


def check_slot_map(where, text):
    """Parse a shard map and check that [slot_map] names known shards and covers every
    slot exactly once (`pgshard check` does all of this and more, given a binary)."""
    try:
        m = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(where, f"not valid TOML: {e}")
        return None
    slots = m.get("sharding", {}).get("slots")
    shards = [s.get("name") for s in m.get("shards", [])]
    owner = {}
    for shard, ranges in m.get("slot_map", {}).items():
        if shard not in shards:
            fail(where, f"[slot_map] names unknown shard {shard!r}")
        for r in ranges:
            a, _, b = r.partition("-")
            for slot in range(int(a), int(b or a) + 1):
                if slot in owner:
                    fail(where, f"slot {slot} assigned twice")
                owner[slot] = shard
    if not isinstance(slots, int) or sorted(owner) != list(range(slots)):
        fail(where, f"[slot_map] does not cover every slot of 0..{slots} exactly once")
    listen = m.get("server", {}).get("listen", "")
    if not listen.startswith("0.0.0.0:"):
        fail(where, f"listen = {listen!r}: must bind 0.0.0.0 to be reachable in a container")
    if not m.get("server", {}).get("metrics_listen", "").startswith("0.0.0.0:9930"):
        fail(where, "[server] metrics_listen must be 0.0.0.0:9930 (probes, scraping)")
    return m


root = pathlib.Path(".")

# --- docker-compose.yml
compose_path = root / "docker-compose.yml"
docs = load_yaml(compose_path)
if docs:
    services = docs[0].get("services", {})
    for s in ("s0", "s1", "s2", "pgshard"):
        if s not in services:
            fail(compose_path, f"service {s} missing")
    for s in ("s0", "s1", "s2"):
        svc = services.get(s, {})
        if "max_prepared_transactions" not in " ".join(svc.get("command", [])):
            fail(compose_path, f"{s}: max_prepared_transactions not set")
        if "healthcheck" not in svc:
            fail(compose_path, f"{s}: no healthcheck")
    p = services.get("pgshard", {})
    for s in ("s0", "s1", "s2"):
        if p.get("depends_on", {}).get(s, {}).get("condition") != "service_healthy":
            fail(compose_path, f"pgshard must depend on {s} being healthy")
    for svc_name, svc in services.items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith(".") and not (root / src).exists():
                fail(compose_path, f"{svc_name}: mounted file {src} does not exist")
    mounts = [v.split(":")[1] for v in p.get("volumes", [])]
    if "/etc/pgshard/shardmap.toml" not in mounts:
        fail(compose_path, "pgshard: the map is not mounted at /etc/pgshard/shardmap.toml")
    for port in ("6432:6432", "9930:9930"):
        if port not in p.get("ports", []):
            fail(compose_path, f"pgshard: port {port} not published")

compose_map = root / "deploy/compose/shardmap.toml"
check_slot_map(compose_map, compose_map.read_text())

# --- deploy/kubernetes
k8s = root / "deploy/kubernetes"
objects = {}
for path in sorted(k8s.glob("*.yaml")):
    for d in load_yaml(path):
        kind = d.get("kind")
        if not d.get("apiVersion") or not kind:
            fail(path, "document without apiVersion/kind")
            continue
        if kind != "Kustomization" and not d.get("metadata", {}).get("name"):
            fail(path, f"{kind} without metadata.name")
        objects[kind] = (path, d)

if "Kustomization" in objects:
    path, kz = objects["Kustomization"]
    for r in kz.get("resources", []):
        if not (k8s / r).exists():
            fail(path, f"resource {r} does not exist")
    listed = set(kz.get("resources", []))
    for f in k8s.glob("*.yaml"):
        if f.name != "kustomization.yaml" and f.name not in listed:
            fail(path, f"{f.name} is not listed in resources")
else:
    fail(k8s, "no kustomization.yaml")

for kind in ("ConfigMap", "Deployment", "Service"):
    if kind not in objects:
        fail(k8s, f"no {kind}")

if "ConfigMap" in objects:
    path, cm = objects["ConfigMap"]
    text = cm.get("data", {}).get("shardmap.toml")
    if text is None:
        fail(path, "data.shardmap.toml missing")
    else:
        (TMP / "k8s-shardmap.toml").write_text(text)
        m = check_slot_map(f"{path} (data.shardmap.toml)", text)
        if m is not None and m.get("transactions", {}).get("two_phase", True):
            fail(path, "replicas share one node name: the map must set two_phase = false")

if "Deployment" in objects and "ConfigMap" in objects:
    path, dep = objects["Deployment"]
    pod = dep["spec"]["template"]
    ann = pod["metadata"].get("annotations", {})
    for k, v in {"prometheus.io/scrape": "true", "prometheus.io/port": "9930",
                 "prometheus.io/path": "/metrics"}.items():
        if ann.get(k) != v:
            fail(path, f"annotation {k} should be {v!r}")
    if dep["spec"]["selector"]["matchLabels"].items() - pod["metadata"]["labels"].items():
        fail(path, "selector does not match the pod labels")
    spec = pod["spec"]
    if spec.get("terminationGracePeriodSeconds", 30) <= 30:
        fail(path, "terminationGracePeriodSeconds must exceed the 30 s drain")
    c = spec["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports != {"postgres": 6432, "metrics": 9930}:
        fail(path, f"container ports {ports}")
    ready = c.get("readinessProbe", {}).get("httpGet", {})
    if ready.get("path") != "/health" or ports.get(ready.get("port"), ready.get("port")) != 9930:
        fail(path, "readinessProbe must GET /health on the metrics port")
    live = c.get("livenessProbe", {})
    if "httpGet" in live:
        fail(path, "livenessProbe must not use /health (503 while draining)")
    if not spec.get("securityContext", {}).get("runAsNonRoot"):
        fail(path, "runAsNonRoot not set")
    if not c.get("securityContext", {}).get("readOnlyRootFilesystem"):
        fail(path, "readOnlyRootFilesystem not set")
    if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits"):
        fail(path, "resources requests/limits missing")
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    cm_name = objects["ConfigMap"][1]["metadata"]["name"]
    mount = [m for m in c.get("volumeMounts", []) if m.get("mountPath") == "/etc/pgshard"]
    if not mount or vols.get(mount[0]["name"], {}).get("configMap", {}).get("name") != cm_name:
        fail(path, f"ConfigMap {cm_name} is not mounted at /etc/pgshard")
    elif "subPath" in mount[0]:
        fail(path, "the map mount uses subPath: ConfigMap updates would not reach it")
    if c.get("args") != ["-c", "/etc/pgshard/shardmap.toml"]:
        fail(path, "args must be -c /etc/pgshard/shardmap.toml")

if "Service" in objects and "Deployment" in objects:
    path, svc = objects["Service"]
    labels = objects["Deployment"][1]["spec"]["template"]["metadata"]["labels"]
    if svc["spec"]["selector"].items() - labels.items():
        fail(path, "selector does not match the Deployment's pods")
    ports = {p.get("name"): p.get("port") for p in svc["spec"].get("ports", [])}
    if ports.get("postgres") != 6432 or ports.get("metrics") != 9930:
        fail(path, f"ports {ports}: want postgres 6432 and metrics 9930")

# --- Dockerfile
dockerfile = (root / "Dockerfile").read_text()
for needle in ('ENTRYPOINT ["pgshard", "serve"]',
               'CMD ["-c", "/etc/pgshard/shardmap.toml"]',
               "cargo build --release --locked --bin pgshard",
               "FROM debian:bookworm-slim", "EXPOSE 6432 9930"):
    if needle not in dockerfile:
        fail("Dockerfile", f"missing {needle!r}")
users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
if not users or users[-1].split(":")[0] in ("root", "0"):
    fail("Dockerfile", "the final stage must run as a non-root USER")
ignore = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()
          if line.strip() and not line.strip().startswith("#")]
for needed in ("src", "benches", "integration", "Cargo.toml", "Cargo.lock"):
    if any(i.strip("/") == needed for i in ignore):
        fail(".dockerignore", f"excludes {needed}, which the build needs")

# --- Grafana dashboard
dash_path = root / "docs/grafana-dashboard.json"
try:
    dash = json.loads(dash_path.read_text())
except (OSError, json.JSONDecodeError) as e:
    fail(dash_path, f"not valid JSON: {e}")
    dash = {"panels": []}
ids = set()
exprs = 0
for panel in dash.get("panels", []):
    title = panel.get("title", "?")
    if panel.get("id") in ids:
        fail(dash_path, f"panel id {panel.get('id')} used twice")
    ids.add(panel.get("id"))
    if panel.get("type") != "row" and "gridPos" not in panel:
        fail(dash_path, f"panel {title!r} has no gridPos")
    for t in panel.get("targets", []):
        exprs += 1
        check_expr(f"{dash_path} panel {title!r}", t.get("expr", ""))
for v in dash.get("templating", {}).get("list", []):
    if v.get("type") == "query":
        check_expr(f"{dash_path} variable {v.get('name')}",
                   re.sub(r"label_values\((\w+),\s*\w+\)", r"\1", v.get("query", "")))
if exprs == 0:
    fail(dash_path, "no queries")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"lint-deploy: YAML, shard maps, Dockerfile and dashboard ({exprs} queries) ok")
PY

if command -v kubectl >/dev/null; then
    kubectl kustomize deploy/kubernetes >/dev/null
    echo "lint-deploy: kubectl kustomize deploy/kubernetes ok"
else
    echo "lint-deploy: kubectl not installed, kustomize build skipped"
fi

if [[ -n "$pgshard_bin" ]]; then
    "$pgshard_bin" check -c deploy/compose/shardmap.toml
    "$pgshard_bin" check -c "$tmp/k8s-shardmap.toml"
else
    echo "lint-deploy: no pgshard binary given, \`pgshard check\` of the maps skipped"
fi
echo "lint-deploy: all checks passed"
