"""deploy/ against the real thing: the alerting rules through promtool (syntax and unit tests),
every metric name of the rules and the Grafana dashboard against what the running demo's
/metrics serves, the dashboard's queries through promtool's parser, and the settings of the
Kubernetes and systemd examples through leakguard's own configuration parser (the demo is
started with them).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Set, Tuple

import pytest
import yaml
from leakguard_e2e import REPO_ROOT, Demo, http

DEPLOY = REPO_ROOT / "deploy"
RULES = DEPLOY / "leakguard.rules.yml"
RULES_TESTS = DEPLOY / "leakguard.rules.test.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
KUBERNETES = DEPLOY / "kubernetes.yaml"
PODMONITOR = DEPLOY / "kubernetes-podmonitor.yaml"
SYSTEMD = DEPLOY / "systemd" / "shop.service"

# Families the demo cannot show on every machine, and why. Each must still be one that
# leakguard's exposition code renders.
CONDITIONAL = {
    "leakguard_cgroup_oom_kills_total": "served only when the process is in a memory cgroup",
}

PROMQL_KEYWORDS = {
    "and", "or", "unless", "on", "ignoring", "by", "without", "group_left", "group_right",
    "offset", "bool", "inf", "nan",
}  # fmt: skip


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH (`make test` installs it from Debian's prometheus package)")
    return path


def metric_names(expr: str) -> Set[str]:
    """The metric names a PromQL expression reads (Grafana's $variables allowed)."""
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)  # label lists
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end() :].lstrip().startswith("("):
            continue  # a function
        if m.group(0).lower() not in PROMQL_KEYWORDS:
            names.add(m.group(0))
    return names


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        'sum by (instance, kind) (rate(leakguard_handles_opened_total{job=~"$job"}[$__rate_interval]))'
        ' / on (job) group_left (x) process_max_fds offset 50m > 1e6 and leakguard_info'
    )
    assert metric_names(expr) == {"leakguard_handles_opened_total", "process_max_fds", "leakguard_info"}


@pytest.fixture(scope="module")
def served(leaking_demo: Demo) -> Set[str]:
    """The metric names the running demo serves (with a leak suspected, so the OOM ETA too)."""
    status, _, body = http("GET", f"{leaking_demo.base_url}/metrics")
    assert status == 200
    names = {re.split(r"[{ ]", line, maxsplit=1)[0] for line in body.decode().splitlines() if line and not line.startswith("#")}
    assert "leakguard_memory_oom_eta_seconds" in names, "the demo's leak is flagged, so the OOM ETA is served"
    return names


def check_served(names: Set[str], served: Set[str], where: str) -> None:
    exposition = "\n".join(
        p.read_text() for p in (REPO_ROOT / "leakguard" / "src").rglob("*.rs")
    )
    missing = []
    for name in sorted(names - served):
        if name in CONDITIONAL and f'"{name}"' in exposition:
            continue
        missing.append(name)
    assert not missing, f"{where} reads metrics that leakguard does not serve: {missing}; served: {sorted(served)}"


def rules() -> List[Dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for group in doc["groups"] for r in group["rules"]]


def test_rules_pass_promtool_check() -> None:
    proc = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules())} rules found" in proc.stdout, proc.stdout


def test_rules_pass_their_promtool_unit_tests() -> None:
    proc = subprocess.run(
        [promtool(), "test", "rules", RULES_TESTS.name], cwd=DEPLOY, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout, proc.stdout


def test_every_alert_has_a_unit_test_and_a_runbook() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    alerts = [r for r in rules() if "alert" in r]
    assert len(alerts) >= 10
    for rule in alerts:
        assert rule["alert"] in tested, f"{rule['alert']} never fires in {RULES_TESTS.name}"
        assert rule["labels"]["severity"] in ("warning", "critical"), rule
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"].get(key), (rule["alert"], key)


def test_rules_read_only_metrics_the_endpoint_serves(served: Set[str]) -> None:
    names: Set[str] = set()
    for rule in rules():
        names |= metric_names(rule["expr"])
    assert {"leakguard_leak_suspected", "leakguard_memory_oom_eta_seconds", "leakguard_restarts_total"} <= names
    check_served(names, served, RULES.name)


def dashboard_queries() -> List[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return exprs


def test_dashboard_is_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "leakguard" and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["definition"].startswith("label_values(leakguard_info"), variables[name]
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            # Every query follows the dashboard's job and instance selection.
            assert 'job=~"$job"' in target["expr"] and 'instance=~"$instance"' in target["expr"], target["expr"]
    assert len(dashboard_queries()) >= 20


def test_dashboard_queries_parse_with_promtool(tmp_path: Path) -> None:
    # promtool parses PromQL in rule files: each query becomes a recording rule, with Grafana's
    # variables replaced by what Grafana sends.
    substituted = [
        q.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$instance", ".*") for q in dashboard_queries()
    ]
    assert not [q for q in substituted if "$" in q], "a variable Grafana would not replace"
    doc = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": q} for i, q in enumerate(substituted)]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_reads_only_metrics_the_endpoint_serves(served: Set[str]) -> None:
    names: Set[str] = set()
    for q in dashboard_queries():
        names |= metric_names(q)
    dash = json.loads(DASHBOARD.read_text())
    for variable in dash["templating"]["list"]:
        m = re.match(r"label_values\((\w+)", variable.get("definition", ""))
        if m:
            names.add(m.group(1))
    expected = {"process_resident_memory_bytes", "leakguard_memory_limit_bytes", "leakguard_handles_open", "leakguard_cache_weight_bytes"}
    assert expected <= names
    check_served(names, served, DASHBOARD.name)


def known_variables() -> Set[str]:
    source = (REPO_ROOT / "leakguard" / "src" / "config.rs").read_text()
    names = set(re.findall(r'lookup\("(LEAKGUARD_[A-Z_]+)"\)', source))
    assert {"LEAKGUARD_ADDR", "LEAKGUARD_LIMIT", "LEAKGUARD_TOKEN"} <= names
    return names


def start_with(start_demo: Callable[..., Demo], settings: Dict[str, str]) -> Demo:
    """The demo started with the example's LEAKGUARD_* settings (its own address and token)."""
    settings = {k: v for k, v in settings.items() if k not in ("LEAKGUARD_ADDR", "LEAKGUARD_TOKEN")}
    return start_demo(DEMO_LEAK_KIB_PER_SEC="0", **settings)


def assert_settings_applied(demo: Demo, settings: Dict[str, str]) -> None:
    report = demo.report()
    thresholds = report["thresholds"]
    for variable, key in (("LEAKGUARD_WARN", "warn"), ("LEAKGUARD_CRITICAL", "critical"), ("LEAKGUARD_RESTART", "restart")):
        if variable in settings:
            assert thresholds[key] == pytest.approx(float(settings[variable])), (variable, thresholds)
    if "LEAKGUARD_INTERVAL" in settings:
        assert report["sampler"]["interval_seconds"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def kubernetes() -> Iterator[List[Dict[str, Any]]]:
    yield [d for d in yaml.safe_load_all(KUBERNETES.read_text()) if d]


def test_kubernetes_example_probes_and_limits(kubernetes: List[Dict[str, Any]]) -> None:
    deployment = next(d for d in kubernetes if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # The endpoint listens where the probes knock.
    assert env["LEAKGUARD_ADDR"]["value"] == f"0.0.0.0:{ports['leakguard']}"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "leakguard"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "leakguard"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    # Readiness notices a restart well within the default drain delay (5 s).
    readiness = container["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] < 5
    # The memory limit leakguard reads from the cgroup.
    limits = container["resources"]["limits"]
    assert re.fullmatch(r"\d+(Mi|Gi)", limits["memory"]), limits
    assert container["resources"]["requests"]["memory"] == limits["memory"]
    assert set(env) <= known_variables(), set(env) - known_variables()
    assert env["LEAKGUARD_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "token"
    monitor = yaml.safe_load(PODMONITOR.read_text())
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "leakguard"
    assert monitor["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_kubernetes_example_settings_are_accepted_by_leakguard(
    kubernetes: List[Dict[str, Any]], start_demo: Callable[..., Demo]
) -> None:
    deployment = next(d for d in kubernetes if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    settings = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    demo = start_with(start_demo, settings)
    assert_settings_applied(demo, settings)


def systemd_unit() -> Tuple[Dict[str, Dict[str, List[str]]], Dict[str, str]]:
    sections: Dict[str, Dict[str, List[str]]] = {}
    current = ""
    for line in SYSTEMD.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = {}
            continue
        key, _, value = line.partition("=")
        sections[current].setdefault(key, []).append(value)
    env = dict(v.split("=", 1) for v in sections["Service"].get("Environment", []))
    return sections, env


def test_systemd_example_is_a_valid_unit_with_leakguard_settings(
    start_demo: Callable[..., Demo], tmp_path: Path
) -> None:
    sections, env = systemd_unit()
    assert sections["Service"]["MemoryMax"] == ["1G"]
    assert set(env) <= known_variables(), set(env) - known_variables()
    assert "LEAKGUARD_TOKEN" not in env, "the token stays out of the unit file"
    demo = start_with(start_demo, env)
    assert_settings_applied(demo, env)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax was not verified by systemd")
    # The example's binary is not installed here: the copies verified start /bin/true instead.
    socket = tmp_path / "shop.socket"
    service = tmp_path / "shop.service"
    shutil.copy(SYSTEMD.with_suffix(".socket"), socket)
    text = SYSTEMD.read_text()
    assert "ExecStart=/usr/local/bin/shop\n" in text
    service.write_text(text.replace("ExecStart=/usr/local/bin/shop\n", "ExecStart=/bin/true\n"))
    proc = subprocess.run([analyze, "verify", str(socket), str(service)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr
