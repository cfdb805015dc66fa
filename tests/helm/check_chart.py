#!/usr/bin/env python3
"""Checks of the Helm chart (helm/) and the Grafana dashboard
(docs/observability/grafana-tailscale-discovery.json), run by
tests/helm_chart.rs.

    check_chart.py chart       render the chart with a real Helm (v4, the
                               helm-python-sdk library) for the guide's three
                               regions, validate every object with
                               kubernetes-validate, check every pod against
                               the "restricted" Pod Security Standard and the
                               chart's own promises
    check_chart.py binary EXE  the config files (ConfigMap) and environment
                               (container env) the chart renders for the
                               guide's three regions and some variants, given
                               to the real binary: `EXE <role> --config FILE
                               --check` must exit 0 and its effective
                               configuration match the values (run by
                               crates/inferadb-mesh/tests/config.rs, which
                               has the binary)
    check_chart.py dashboard   every metric the dashboard queries is one the
                               binary registers (names from the crates' source;
                               the live /metrics comparison is in
                               crates/inferadb-mesh/tests/roles_processes.rs)

Exit 0 on success; on failure, one line per problem on stderr and exit 1.
When a package is missing: with TAILNET_SKIP_INTEROP=1 it prints
"SKIP: ..." and exits 0, otherwise it fails naming
scripts/install-test-deps.sh.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm"
EXAMPLES = CHART / "examples"
DASHBOARD = ROOT / "docs" / "observability" / "grafana-tailscale-discovery.json"
REGIONS = ["us-west-1", "eu-west-1", "ap-southeast-1"]
# The chart says kubeVersion >=1.25; validate against the oldest schema
# set kubernetes-validate has from there, and its newest.
KUBE_VERSIONS = ["1.25.0", None]  # None: kubernetes_validate.latest_version()

problems: list[str] = []


def problem(msg: str) -> None:
    problems.append(msg)


def need(modules: list[str]) -> dict:
    """Imports `modules`, or skips / fails with a clear message."""
    got = {}
    missing = []
    for m in modules:
        try:
            got[m] = __import__(m)
        except ImportError as e:  # also a libhelm_c that does not load
            missing.append(f"{m} ({e})")
    if missing:
        msg = (
            "missing Python packages: " + ", ".join(missing)
            + " — run scripts/install-test-deps.sh (pip: helm-python-sdk, kubernetes-validate)"
        )
        if os.environ.get("TAILNET_SKIP_INTEROP") == "1":
            print(f"SKIP: {msg} (TAILNET_SKIP_INTEROP=1)")
            sys.exit(0)
        print(f"FAIL: {msg}", file=sys.stderr)
        sys.exit(1)
    return got


# ---------------------------------------------------------------------------
# Rendering


def render(helm, yaml, values: dict, release: str = "inferadb", namespace: str = "inferadb") -> list[dict]:
    """The chart rendered by Helm v4 (offline, as `helm template`): every
    non-empty YAML document."""
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(values)
    out = chart.render(values, name=release, namespace=namespace, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                d.setdefault("__template__", path)
                docs.append(d)
    return docs


def region_values(yaml, region: str) -> dict:
    return yaml.safe_load((EXAMPLES / f"values-{region}.yaml").read_text())


# ---------------------------------------------------------------------------
# The "restricted" Pod Security Standard, written out
# (https://kubernetes.io/docs/concepts/security/pod-security-standards/,
# policy version latest: the baseline controls plus the restricted ones).

RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(pod: dict) -> list[str]:
    """Every way `pod` (a PodSpec) breaks the restricted standard."""
    v: list[str] = []
    psc = pod.get("securityContext") or {}
    containers = (
        [("containers", c) for c in pod.get("containers") or []]
        + [("initContainers", c) for c in pod.get("initContainers") or []]
        + [("ephemeralContainers", c) for c in pod.get("ephemeralContainers") or []]
    )
    # --- baseline
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(f):
            v.append(f"{f} is true")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        v.append("securityContext.windowsOptions.hostProcess is true")
    for vol in pod.get("volumes") or []:
        if "hostPath" in vol:
            v.append(f"volume {vol.get('name')} is a hostPath")
        kinds = [k for k in vol if k != "name"]
        for k in kinds:
            if k not in RESTRICTED_VOLUME_TYPES:
                v.append(f"volume {vol.get('name')} has type {k}, not allowed by restricted")
    for s in psc.get("sysctls") or []:
        if s.get("name") not in SAFE_SYSCTLS:
            v.append(f"sysctl {s.get('name')} is not in the safe set")
    if (psc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
        v.append("pod appArmorProfile is not RuntimeDefault/Localhost")
    se = psc.get("seLinuxOptions") or {}
    if se.get("type") not in SELINUX_TYPES or se.get("user") or se.get("role"):
        v.append("pod seLinuxOptions not allowed")
    # --- restricted, pod level
    pod_nonroot = psc.get("runAsNonRoot") is True
    if psc.get("runAsUser") == 0:
        v.append("securityContext.runAsUser is 0")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        v.append(f"pod seccompProfile.type is {pod_seccomp}")
    for kind, c in containers:
        name = f"{kind}[{c.get('name')}]"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            v.append(f"{name}: privileged")
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                v.append(f"{name}: hostPort {p.get('hostPort')}")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            v.append(f"{name}: hostProcess")
        if sc.get("procMount") not in (None, "Default"):
            v.append(f"{name}: procMount {sc.get('procMount')}")
        if (sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            v.append(f"{name}: appArmorProfile")
        cse = sc.get("seLinuxOptions") or {}
        if cse.get("type") not in SELINUX_TYPES or cse.get("user") or cse.get("role"):
            v.append(f"{name}: seLinuxOptions")
        # restricted
        if sc.get("allowPrivilegeEscalation") is not False:
            v.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot") is False or not (pod_nonroot or sc.get("runAsNonRoot") is True):
            v.append(f"{name}: runAsNonRoot is not true (pod or container)")
        if sc.get("runAsUser") == 0:
            v.append(f"{name}: runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp is None:
            seccomp = pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            v.append(f"{name}: seccompProfile is {seccomp}, not RuntimeDefault/Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            v.append(f"{name}: capabilities.drop does not include ALL")
        extra = [a for a in caps.get("add") or [] if a != "NET_BIND_SERVICE"]
        if extra:
            v.append(f"{name}: capabilities.add {extra}")
    return v


def chart_promises(pod: dict, sts: dict, values: dict, cfg: dict) -> list[str]:
    """What the chart promises beyond the standard (issue 7 / the brief)."""
    v: list[str] = []
    containers = pod.get("containers") or []
    if len(containers) != 1 or pod.get("initContainers"):
        v.append(f"{len(containers)} containers (and initContainers {bool(pod.get('initContainers'))}); one is promised")
        return v
    c = containers[0]
    sc = c.get("securityContext") or {}
    if sc.get("readOnlyRootFilesystem") is not True:
        v.append("readOnlyRootFilesystem is not true")
    caps = sc.get("capabilities") or {}
    if caps.get("add"):
        v.append(f"capabilities added: {caps['add']} (no NET_ADMIN, nothing)")
    env = {e.get("name"): e.get("value") for e in c.get("env") or []}
    if env.get("INFERADB_MESH_LOG_FORMAT") != values.get("logFormat", "text"):
        v.append(f"INFERADB_MESH_LOG_FORMAT is {env.get('INFERADB_MESH_LOG_FORMAT')!r}, "
                 f"not the chart's logFormat {values.get('logFormat', 'text')!r}")
    ports = {p.get("name"): p for p in c.get("ports") or []}
    if "metrics" not in ports or ports["metrics"].get("protocol", "TCP") != "TCP":
        v.append("no TCP container port named metrics")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        hg = (c.get(probe) or {}).get("httpGet") or {}
        if hg.get("path") != path or hg.get("port") != "metrics":
            v.append(f"{probe} is not GET {path} on port metrics: {hg}")
    role = c.get("args", [None])[0]
    if role not in ("engine", "control"):
        v.append(f"args do not start with a role: {c.get('args')}")
    if c.get("args", [])[1:2] != ["--config"]:
        v.append(f"args do not pass --config: {c.get('args')}")
    # Auth key: a file from the existing Secret, never an env variable.
    ak = values["discovery"]["tailscale"]["authKey"]
    vols = {vol["name"]: vol for vol in pod.get("volumes") or []}
    mounts = {m["name"]: m for m in c.get("volumeMounts") or []}
    secret_vols = [n for n, vol in vols.items() if (vol.get("secret") or {}).get("secretName") == ak["existingSecret"]]
    if len(secret_vols) != 1 or secret_vols[0] not in mounts or not mounts[secret_vols[0]].get("readOnly"):
        v.append(f"auth key Secret {ak['existingSecret']} is not mounted read-only exactly once")
    else:
        path = mounts[secret_vols[0]]["mountPath"].rstrip("/") + "/" + ak["key"]
        if cfg.get("mesh", {}).get("auth_key_file") != path:
            v.append(f"config mesh.auth_key_file {cfg.get('mesh', {}).get('auth_key_file')} is not the mounted {path}")
    for e in c.get("env") or []:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref and ref.get("name") == ak["existingSecret"]:
            v.append(f"auth key passed as env {e['name']}")
    # Per-replica identity: the hostname is the pod name, and the state is
    # per pod: a volumeClaimTemplate, or an emptyDir with an ephemeral node.
    prefix = "INFERADB_CTRL__" if role == "control" else "INFERADB__"
    env = {e["name"]: e for e in c.get("env") or []}
    host = env.get(prefix + "MESH__HOSTNAME", {})
    if ((host.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") != "metadata.name":
        v.append(f"{prefix}MESH__HOSTNAME is not the pod name")
    state_dir = cfg.get("mesh", {}).get("state_dir")
    state_mounts = [m for m in c.get("volumeMounts") or [] if m.get("mountPath") == state_dir]
    if len(state_mounts) != 1:
        v.append(f"state_dir {state_dir} is not a mount")
    else:
        name = state_mounts[0]["name"]
        claims = [t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates") or []]
        if name in claims:
            if name in vols:
                v.append(f"state volume {name} is both a pod volume and a claim template")
            if cfg["mesh"].get("ephemeral"):
                v.append("persistent state but an ephemeral node")
        elif "emptyDir" in vols.get(name, {}):
            if not cfg["mesh"].get("ephemeral"):
                v.append("emptyDir state but the node is not ephemeral (a restart would register a second node of the same name)")
        else:
            v.append(f"state volume {name} is shared (neither a claim template nor an emptyDir)")
    if sts["kind"] != "StatefulSet":
        v.append(f"{sts['kind']}, not a StatefulSet (stable per-replica host names)")
    return v


def self_check_mutations(kv, version: str, by: dict, merged: dict, yaml) -> None:
    """The checks catch each way of breaking a rendered pod (mutations of
    the real output), and kubernetes-validate rejects an unknown field."""
    sts = by[("StatefulSet", "inferadb-engine")]
    cfg = yaml.safe_load(by[("ConfigMap", "inferadb-config")]["data"]["engine.yaml"])
    assert not restricted_violations(sts["spec"]["template"]["spec"])
    assert not chart_promises(sts["spec"]["template"]["spec"], sts, merged, cfg)

    def mutated(f):
        s = json.loads(json.dumps(sts))
        c = json.loads(json.dumps(cfg))
        f(s, s["spec"]["template"]["spec"], s["spec"]["template"]["spec"]["containers"][0], c)
        pod = s["spec"]["template"]["spec"]
        return restricted_violations(pod) + chart_promises(pod, s, merged, c)

    cases = {
        "readOnlyRootFilesystem": lambda s, p, c, g: c["securityContext"].update(readOnlyRootFilesystem=False),
        "NET_ADMIN": lambda s, p, c, g: c["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
        "allowPrivilegeEscalation": lambda s, p, c, g: c["securityContext"].pop("allowPrivilegeEscalation"),
        "runAsNonRoot": lambda s, p, c, g: (p["securityContext"].pop("runAsNonRoot"), c["securityContext"].pop("runAsNonRoot")),
        "seccomp": lambda s, p, c, g: (p["securityContext"].pop("seccompProfile"), c["securityContext"].pop("seccompProfile")),
        "drop ALL": lambda s, p, c, g: c["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
        "sidecar": lambda s, p, c, g: p["containers"].append(json.loads(json.dumps(c))),
        "readyz": lambda s, p, c, g: c["readinessProbe"]["httpGet"].update(path="/healthz"),
        "shared state": lambda s, p, c, g: (s["spec"].pop("volumeClaimTemplates"),
                                             p["volumes"].append({"name": "state", "persistentVolumeClaim": {"claimName": "shared"}})),
        "emptyDir, not ephemeral": lambda s, p, c, g: (s["spec"].pop("volumeClaimTemplates"),
                                                        p["volumes"].append({"name": "state", "emptyDir": {}})),
        "hostname": lambda s, p, c, g: c.update(env=[e for e in c["env"] if not e["name"].endswith("MESH__HOSTNAME")]),
        "auth key env": lambda s, p, c, g: c["env"].append({"name": "TS_AUTHKEY", "valueFrom": {"secretKeyRef": {
            "name": merged["discovery"]["tailscale"]["authKey"]["existingSecret"], "key": "authkey"}}}),
        "hostNetwork": lambda s, p, c, g: p.update(hostNetwork=True),
    }
    for what, f in cases.items():
        if not mutated(f):
            problem(f"self-check: breaking {what!r} in the rendered engine pod goes unnoticed")
    bogus = json.loads(json.dumps(sts))
    bogus["spec"]["template"]["spec"]["containers"][0]["sidecarImage"] = "tailscale/tailscale"
    try:
        kv.validate(bogus, version, strict=True)
        problem("self-check: kubernetes-validate accepts an unknown container field")
    except kv.ValidationError:
        pass


# ---------------------------------------------------------------------------


def cmd_chart() -> None:
    mods = need(["yaml", "helm_python", "kubernetes_validate"])
    yaml, helm, kv = mods["yaml"], mods["helm_python"], mods["kubernetes_validate"]
    print(f"helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
          f"kubernetes-validate {kv.version.__version__ if hasattr(kv, 'version') and hasattr(kv.version, '__version__') else ''}".rstrip())
    versions = [x or kv.latest_version() for x in KUBE_VERSIONS]

    # The checker itself catches what it should (no vacuous pass).
    bad = {"hostNetwork": True, "securityContext": {"runAsNonRoot": True},
           "containers": [{"name": "x", "securityContext": {
               "privileged": True, "capabilities": {"add": ["NET_ADMIN"]}}}],
           "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}
    found = restricted_violations(bad)
    for want in ("hostNetwork", "privileged", "hostPath", "allowPrivilegeEscalation", "seccompProfile", "capabilities.drop", "capabilities.add"):
        if not any(want in f for f in found):
            problem(f"self-check: restricted_violations misses {want} in a bad pod: {found}")

    lint = helm.lint(str(CHART), region_values(yaml, "us-west-1"), strict=True)
    for m in lint.get("messages") or []:
        if m.get("severity", 0) >= 2:
            problem(f"helm lint: {m.get('path')}: {m.get('error')}")
    for e in lint.get("errors") or []:
        problem(f"helm lint: {e}")

    for region in REGIONS:
        values = region_values(yaml, region)
        merged = helm.Chart.load(str(CHART)).merge_values(values)
        docs = render(helm, yaml, values)
        kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
        print(f"{region}: {len(docs)} objects: {', '.join(kinds)}")
        for d in docs:
            d.pop("__template__")
            where = f"{region}: {d.get('kind')}/{d.get('metadata', {}).get('name')}"
            if d.get("apiVersion") == "monitoring.coreos.com/v1":
                # A CRD: kubernetes-validate has no schema for it.
                ep = (d.get("spec") or {}).get("endpoints") or []
                if d["kind"] != "ServiceMonitor" or not ep or ep[0].get("port") != "metrics":
                    problem(f"{where}: not a ServiceMonitor of port metrics")
                continue
            for ver in versions:
                try:
                    kv.validate(d, ver, strict=True)
                except kv.ValidationError as e:
                    problem(f"{where}: kubernetes {ver}: {e.message} at {'.'.join(str(p) for p in e.path)}")
                except Exception as e:  # schema not found and the like
                    problem(f"{where}: kubernetes {ver}: {type(e).__name__}: {e}")

        by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        if region == REGIONS[0]:
            self_check_mutations(kv, versions[-1], by, merged, yaml)
        cm = by.get(("ConfigMap", "inferadb-config"))
        if not cm:
            problem(f"{region}: no ConfigMap inferadb-config")
            continue
        configs = {k: yaml.safe_load(v) for k, v in cm["data"].items()}
        t = merged["discovery"]["tailscale"]
        roles = ["engine"] + (["control"] if merged["control"]["enabled"] else [])
        workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "Pod")]
        if sorted(w["metadata"]["name"] for w in workloads) != sorted(f"inferadb-{r}" for r in roles):
            problem(f"{region}: workloads {[w['metadata']['name'] for w in workloads]}, expected {roles}")
        for w in workloads:
            pod = w["spec"]["template"]["spec"] if w["kind"] != "Pod" else w["spec"]
            role = w["metadata"]["name"].removeprefix("inferadb-")
            cfg = configs.get(f"{role}.yaml") or {}
            for f in restricted_violations(pod):
                problem(f"{region}: {w['kind']}/{w['metadata']['name']}: restricted: {f}")
            for f in chart_promises(pod, w, merged, cfg):
                problem(f"{region}: {w['kind']}/{w['metadata']['name']}: {f}")
            if f"{role}.yaml" not in pod["containers"][0].get("args", [""])[-1]:
                problem(f"{region}: {role} does not read {role}.yaml")
            want = region_values(yaml, region).get(role, {}).get("replicas")
            if want is not None and w["spec"]["replicas"] != want:
                problem(f"{region}: {role} replicas {w['spec']['replicas']} != {want}")
            svc = by.get(("Service", f"inferadb-{role}"))
            if not svc or w["spec"].get("serviceName") != f"inferadb-{role}":
                problem(f"{region}: {role}: no governing Service inferadb-{role}")
            elif not any(p.get("name") == "metrics" and p.get("targetPort") == "metrics" for p in svc["spec"]["ports"]):
                problem(f"{region}: Service inferadb-{role} has no port metrics")
            elif not all(w["spec"]["template"]["metadata"]["labels"].get(k) == val for k, val in svc["spec"]["selector"].items()):
                problem(f"{region}: Service inferadb-{role} does not select its pods")

        # The config files carry the guide's keys and the values given.
        def check_mode(mode: dict, at: str, service: str, port: int) -> None:
            if mode.get("type") != "tailscale" or mode.get("local_cluster") != region:
                problem(f"{region}: {at}: type/local_cluster {mode.get('type')}/{mode.get('local_cluster')}")
            got = [(c["name"], c["tailscale_domain"], c["service_name"], c["port"]) for c in mode.get("remote_clusters") or []]
            exp = [(c["name"], c["tailscaleDomain"], service or c["serviceName"], port or c["port"]) for c in t["remoteClusters"]]
            if got != exp:
                problem(f"{region}: {at}.remote_clusters {got} != {exp}")
        eng = configs.get("engine.yaml") or {}
        check_mode(((eng.get("auth") or {}).get("discovery") or {}).get("mode") or {}, "engine auth.discovery.mode", None, None)
        if eng.get("mesh", {}).get("tags") != [f"tag:inferadb-{region}"]:
            problem(f"{region}: engine mesh.tags {eng.get('mesh', {}).get('tags')}")
        if merged["control"]["enabled"]:
            ctl = configs.get("control.yaml") or {}
            ci = ctl.get("cache_invalidation") or {}
            check_mode((ci.get("discovery") or {}).get("mode") or {}, "control cache_invalidation.discovery.mode", "inferadb-engine", 8080)
            for k, exp in (("http_endpoints", []), ("timeout_ms", 5000), ("retry_attempts", 2)):
                if ci.get(k) != exp:
                    problem(f"{region}: control cache_invalidation.{k} {ci.get(k)!r} != {exp!r}")

    # The sidecar-only keys fail the render with a message naming them,
    # and so does a missing localCluster.
    base = region_values(yaml, "us-west-1")
    for key, val, want in (
        ("image", {"repository": "tailscale/tailscale", "tag": "v1.56.1"}, "discovery.tailscale.image"),
        ("extraArgs", "--accept-routes", "discovery.tailscale.extraArgs"),
        ("localCluster", "", "discovery.tailscale.localCluster"),
    ):
        vals = json.loads(json.dumps(base))
        vals["discovery"]["tailscale"][key] = val
        try:
            render(helm, yaml, vals)
            problem(f"render with discovery.tailscale.{key}={val!r} did not fail")
        except helm.HelmError as e:
            if want not in str(e):
                problem(f"render with discovery.tailscale.{key}: message does not name {want}: {e}")
    # Values the roles could not start with fail the render too (the binary
    # would refuse the rendered config: `check_chart.py binary`).
    for path, val, want in (
        ("cacheInvalidation.webhookSecret.existingSecret", "", "cacheInvalidation.webhookSecret"),
        ("control.api.existingSecret", "", "control.api"),
        ("discovery.healthCheck", {"enabled": True, "path": "healthz"}, "discovery.healthCheck.path"),
        ("discovery.healthCheck", {"enabled": True, "intervalMs": 0}, "discovery.healthCheck.intervalMs"),
    ):
        vals = json.loads(json.dumps(base))
        node = vals
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = val
        try:
            render(helm, yaml, vals)
            problem(f"render with {path}={val!r} did not fail")
        except helm.HelmError as e:
            if want not in str(e):
                problem(f"render with {path}={val!r}: message does not name {want}: {e}")
    vals = json.loads(json.dumps(region_values(yaml, "ap-southeast-1")))
    vals["discovery"]["tailscale"]["remoteClusters"] = []
    try:
        render(helm, yaml, vals)
        problem("ap-southeast-1 without remoteClusters (no control anywhere) did not fail")
    except helm.HelmError as e:
        if "discovery.tailscale.remoteClusters" not in str(e):
            problem(f"no remoteClusters and no control: message does not name the key: {e}")

    check_coordinator_and_policies(helm, yaml, kv, versions)

    # kubernetes mode: RBAC to read endpoints, and the token mounted.
    vals = json.loads(json.dumps(base))
    vals["discovery"]["mode"] = "kubernetes"
    docs = render(helm, yaml, vals)
    if not any(d["kind"] == "Role" for d in docs):
        problem("kubernetes mode: no Role")
    for d in docs:
        if d["kind"] == "StatefulSet" and d["spec"]["template"]["spec"].get("automountServiceAccountToken") is not True:
            problem(f"kubernetes mode: {d['metadata']['name']} does not mount the service account token")


def render_notes(helm, values: dict) -> str:
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values, name="inferadb", namespace="inferadb", is_install=True)
    return next((t for p, t in out.items() if p.endswith("NOTES.txt")), "")


def check_coordinator_and_policies(helm, yaml, kv, versions: list) -> None:
    """Issue 17: the coordinator (StatefulSet, PVC, TLS Secret, HTTPS + UDP
    STUN Service, --derp-host), NetworkPolicies, PodDisruptionBudgets, the
    values schema and NOTES.txt."""
    base = region_values(yaml, "us-west-1")
    vals = json.loads(json.dumps(base))
    host = "coord.us-west-1.example.com"
    vals["coordinator"] = {"enabled": True, "host": host, "tls": {"existingSecret": "coord-tls"},
                           "policy": {"existingConfigMap": "coord-policy"}}
    vals["networkPolicy"] = {"enabled": True}
    vals.setdefault("metrics", {})["serviceMonitor"] = {"enabled": True}
    docs = render(helm, yaml, vals)
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    print("with the coordinator: " + ", ".join(sorted(f"{k}/{n}" for k, n in by)))
    for d in docs:
        d.pop("__template__", None)
        if d.get("apiVersion") == "monitoring.coreos.com/v1":
            continue
        for ver in versions:
            try:
                kv.validate(d, ver, strict=True)
            except kv.ValidationError as e:
                problem(f"coordinator values: {d['kind']}/{d['metadata']['name']}: kubernetes {ver}: {e.message}")
    sts = by.get(("StatefulSet", "inferadb-coordinator"))
    svc = by.get(("Service", "inferadb-coordinator"))
    if not sts or not svc:
        problem(f"coordinator.enabled: no StatefulSet/Service inferadb-coordinator in {sorted(by)}")
        return
    pod = sts["spec"]["template"]["spec"]
    for f in restricted_violations(pod):
        problem(f"coordinator: restricted: {f}")
    c = pod["containers"][0]
    args = c["args"]
    if args[:2] != ["coordinator", "serve"] or sts["spec"]["replicas"] != 1:
        problem(f"coordinator: not one `coordinator serve`: replicas {sts['spec']['replicas']} args {args}")

    def arg(flag):
        return args[args.index(flag) + 1] if flag in args else None
    if arg("--derp-host") != host:
        problem(f"coordinator: --derp-host {arg('--derp-host')} != {host}")
    if arg("--listen") != "0.0.0.0:443" or arg("--base-domain") != "us-west-1.ts.net":
        problem(f"coordinator: --listen/--base-domain {arg('--listen')}/{arg('--base-domain')}")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    for flag, key in (("--tls-cert", "tls.crt"), ("--tls-key", "tls.key")):
        path = arg(flag) or ""
        m = mounts.get(path.rsplit("/", 1)[0])
        sec = (vols.get(m["name"]) or {}).get("secret") if m else None
        if not sec or sec.get("secretName") != "coord-tls" or not m.get("readOnly") or path.rsplit("/", 1)[1] != key:
            problem(f"coordinator: {flag} {path} is not {key} of the Secret coord-tls mounted read-only")
    pol = arg("--policy") or ""
    m = mounts.get(pol.rsplit("/", 1)[0])
    if not m or (vols.get(m["name"]) or {}).get("configMap", {}).get("name") != "coord-policy":
        problem(f"coordinator: --policy {pol} is not from the ConfigMap coord-policy")
    state = arg("--state-dir") or ""
    claims = [t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates") or []]
    smount = [m for p, m in mounts.items() if state.startswith(p.rstrip("/") + "/") or state == p]
    if not smount or smount[0]["name"] not in claims:
        problem(f"coordinator: --state-dir {state} is not on a volumeClaimTemplate ({claims})")
    sysctls = {x["name"]: x["value"] for x in pod["securityContext"].get("sysctls") or []}
    if sysctls.get("net.ipv4.ip_unprivileged_port_start") != "443":
        problem(f"coordinator: port 443 without ip_unprivileged_port_start: {sysctls}")
    for probe in ("readinessProbe", "livenessProbe"):
        hg = (c.get(probe) or {}).get("httpGet") or {}
        if hg.get("path") != "/healthz" or hg.get("port") != "metrics":
            problem(f"coordinator: {probe} is not /healthz on metrics: {hg}")
    if arg("--metrics-listen") != f"0.0.0.0:{[p for p in c['ports'] if p['name'] == 'metrics'][0]['containerPort']}":
        problem(f"coordinator: --metrics-listen {arg('--metrics-listen')} is not the metrics port")
    engine = by[("StatefulSet", "inferadb-engine")]["spec"]["template"]["spec"]["containers"][0]
    if c["image"] != engine["image"]:
        problem(f"coordinator image {c['image']} != the roles' {engine['image']}")
    ports = {(p["protocol"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    if ports != {("TCP", 443, "https"), ("UDP", 443, "stun")}:
        problem(f"coordinator Service ports {ports}: want HTTPS and STUN on 443")
    if svc["spec"].get("externalTrafficPolicy") != "Local":
        problem("coordinator Service does not keep client addresses (STUN would answer the SNAT address)")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    if not all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()):
        problem("coordinator Service does not select its pod")
    cports = {(p["protocol"], p["containerPort"], p["name"]) for p in c["ports"]}
    if not {("TCP", 443, "https"), ("UDP", 443, "stun")} <= cports:
        problem(f"coordinator container ports {cports}")
    if ("ServiceMonitor", "inferadb-coordinator") not in by:
        problem("no ServiceMonitor for the coordinator")

    # NetworkPolicies: one per workload, selecting its pods, admitting its
    # metrics port and its tailnet-facing port.
    for role, want in (("engine", ("UDP", "wireguard")), ("control", ("UDP", "wireguard")),
                       ("coordinator", ("UDP", "stun"))):
        np = by.get(("NetworkPolicy", f"inferadb-{role}"))
        w = by[("StatefulSet", f"inferadb-{role}")]
        if not np:
            problem(f"networkPolicy.enabled: no NetworkPolicy for {role}")
            continue
        sel = np["spec"]["podSelector"]["matchLabels"]
        if not all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items()):
            problem(f"NetworkPolicy {role} does not select its pods")
        allowed = {(p.get("protocol"), p.get("port")) for r in np["spec"]["ingress"] for p in r.get("ports") or []}
        named = {p["name"] for p in w["spec"]["template"]["spec"]["containers"][0]["ports"]}
        if want not in allowed or ("TCP", "metrics") not in allowed or not {p for _, p in allowed} <= named:
            problem(f"NetworkPolicy {role} admits {allowed}; want {want} and metrics, named ports of the pod {named}")
    # PodDisruptionBudgets for the roles.
    for role in ("engine", "control"):
        pdb = by.get(("PodDisruptionBudget", f"inferadb-{role}"))
        w = by[("StatefulSet", f"inferadb-{role}")]
        if not pdb or pdb["spec"].get("maxUnavailable") != 1 or not all(
                w["spec"]["template"]["metadata"]["labels"].get(k) == v
                for k, v in pdb["spec"]["selector"]["matchLabels"].items()):
            problem(f"no PodDisruptionBudget selecting the {role} pods with maxUnavailable 1")

    # NOTES.txt prints the guide's verification commands.
    notes = render_notes(helm, vals)
    for want in ('kubectl logs inferadb-engine-0 --namespace=inferadb | grep "Discovered Tailscale endpoints"',
                 "inferadb-mesh dns query inferadb-control.us-west-1.ts.net --state-dir /var/lib/inferadb-mesh",
                 "inferadb-mesh status --state-dir /var/lib/inferadb-mesh",
                 "coordinator authkey create --state-dir /var/lib/inferadb-mesh/coordinator",
                 'controlUrl: "https://coord.us-west-1.example.com"'):
        if want not in notes:
            problem(f"NOTES.txt lacks {want!r}:\n{notes}")

    # The image the chart names is the one scripts/build-image.sh builds:
    # same repository, tag = appVersion = the crate version.
    script = (ROOT / "scripts" / "build-image.sh").read_text()
    m = re.search(r"^IMAGE_NAME=(\S+)$", script, re.M)
    version = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M)
    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    want_image = f"{m.group(1) if m else '?'}:{version.group(1) if version else '?'}"
    if c["image"] != want_image or chart_meta.get("appVersion") != (version.group(1) if version else None):
        problem(f"chart image {c['image']} (appVersion {chart_meta.get('appVersion')}) is not what "
                f"scripts/build-image.sh builds: {want_image}")

    # Typos fail the render naming the key (values.schema.json), and so do
    # a coordinator without host or TLS.
    for path, val, want in (
        ("discovery.tailscale.controlURL", "https://x", "'controlURL'"),
        ("coordinater", {"enabled": True}, "'coordinater'"),
        ("coordinator.tls.secret", "x", "'secret'"),
        ("discovery.tailscale.udpPort", "41641", "/discovery/tailscale/udpPort"),
        ("coordinator.host", "", "coordinator.host"),
        ("coordinator.tls.existingSecret", "", "coordinator.tls.existingSecret"),
        ("logFormat", "xml", "/logFormat"),
    ):
        v = json.loads(json.dumps(vals))
        node = v
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = val
        try:
            render(helm, yaml, v)
            problem(f"render with {path}={val!r} did not fail")
        except helm.HelmError as e:
            if want not in str(e):
                problem(f"render with {path}={val!r}: message does not name {want}: {e}")


# ---------------------------------------------------------------------------
# The rendered configuration, read by the real binary


def binary_cases(yaml) -> list[tuple[str, str, dict]]:
    """(what, release, values): the guide's three regions, and variants that
    render differently: a single cluster (no remoteClusters), another
    release name, health checks on, control's clusters given, the
    kubernetes and none modes."""
    cases = [(f"{r}", "inferadb", region_values(yaml, r)) for r in REGIONS]
    us = region_values(yaml, "us-west-1")

    def variant(what: str, release: str = "inferadb", **f) -> None:
        v = json.loads(json.dumps(us))
        for path, val in f.items():
            node = v
            keys = path.split("__")
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = val
        cases.append((f"us-west-1 {what}", release, v))

    variant("single cluster", discovery__tailscale__remoteClusters=[])
    variant("release db", release="db")
    variant("health checks", discovery__healthCheck={
        "enabled": True, "path": "/readyz", "intervalMs": 1500, "timeoutMs": 700,
        "healthyThreshold": 1, "unhealthyThreshold": 4})
    variant("control clusters", control__remoteClusters=[
        {"name": "eu-west-1", "tailscaleDomain": "eu-west-1.ts.net", "serviceName": "engines", "port": 18080}])
    variant("own domain, ttl", discovery__tailscale__tailscaleDomain="us-west-1.example.ts.net",
            discovery__cacheTtlSeconds=60)
    variant("kubernetes", discovery__mode="kubernetes")
    variant("none", discovery__mode="none", control__cacheInvalidation={
        "httpEndpoints": ["http://10.0.0.5:8080", "10.0.0.6:8080"], "timeoutMs": 900, "retryAttempts": 0})
    variant("ephemeral", discovery__tailscale__state={"persistence": {"enabled": False}})
    variant("chart defaults", discovery={"tailscale": {"localCluster": "us-west-1"}},
            engine={}, control={}, cacheInvalidation={})
    return cases


def pod_env(container: dict, pod_name: str, namespace: str, where: str) -> dict:
    """The container's environment as the kubelet would set it."""
    env = {}
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
            continue
        ref = (e.get("valueFrom") or {}).get("fieldRef") or {}
        path = ref.get("fieldPath")
        if path == "metadata.name":
            env[e["name"]] = pod_name
        elif path == "metadata.namespace":
            env[e["name"]] = namespace
        else:
            problem(f"{where}: env {e['name']}: cannot resolve {e.get('valueFrom')}")
    return env


def run_check(exe: str, role: str, config_text: str, env: dict, where: str):
    """`exe role --config FILE --check` with only `env` (and PATH): the
    effective configuration, or None after recording the problem."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{role}.yaml"
        path.write_text(config_text)
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        try:
            out = subprocess.run([exe, role, "--config", str(path), "--check"],
                                 env=full_env, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            problem(f"{where}: {exe} {role} --check: {e}")
            return None
    if out.returncode != 0:
        problem(f"{where}: {role} --check exited {out.returncode}: {out.stderr.strip()}")
        return None
    try:
        return json.loads(out.stdout)
    except ValueError as e:
        problem(f"{where}: {role} --check printed no JSON ({e}): {out.stdout[:200]}")
        return None


def expected_discovery(merged: dict, role: str, full: str) -> dict:
    """What the role's effective discovery must be, from the values alone
    (the shape of DiscoveryConfig::to_value)."""
    d = merged["discovery"]
    t = d["tailscale"]
    hc = d.get("healthCheck") or {}
    health = None
    if hc.get("enabled"):
        health = {"path": hc["path"], "interval_ms": hc["intervalMs"], "timeout_ms": hc["timeoutMs"],
                  "healthy_threshold": hc["healthyThreshold"], "unhealthy_threshold": hc["unhealthyThreshold"]}
    other = "control" if role == "engine" else "engine"
    other_port = merged[other]["tailnetPort"]
    if role == "engine":
        clusters = t["remoteClusters"]
    else:
        clusters = merged["control"]["remoteClusters"] or [
            {"name": c["name"], "tailscaleDomain": c["tailscaleDomain"],
             "serviceName": f"{full}-engine", "port": merged["engine"]["tailnetPort"]}
            for c in t["remoteClusters"]]
    if d["mode"] == "tailscale":
        local = ({"type": "tailscale", "tailscale_domain": t.get("tailscaleDomain") or f"{t['localCluster']}.ts.net",
                  "service_name": f"{full}-{other}", "port": other_port}
                 if merged[other]["enabled"] else {"type": "none"})
        mode = {"type": "tailscale", "local_cluster": t["localCluster"], "local": local,
                "remote_clusters": [{"name": c["name"], "tailscale_domain": c["tailscaleDomain"],
                                     "service_name": c["serviceName"], "port": c["port"]} for c in clusters]}
    elif d["mode"] == "kubernetes":
        mode = {"type": "kubernetes", "service_name": f"{full}-{other}", "namespace": None,
                "port": merged["metrics"]["port"], "api_url": None, "token_file": None, "ca_file": None,
                "local_cluster": "local"}
    else:
        mode = {"type": "none"}
    endpoints = []
    if role == "control":
        for e in merged["control"]["cacheInvalidation"]["httpEndpoints"] or []:
            endpoints.append(e.removeprefix("http://").split("/")[0])
    return {"mode": mode, "http_endpoints": endpoints, "cache_ttl_seconds": d["cacheTtlSeconds"],
            "health_check": health}


def cmd_binary(exe: str) -> None:
    mods = need(["yaml", "helm_python"])
    yaml, helm = mods["yaml"], mods["helm_python"]
    if not Path(exe).is_file():
        problem(f"binary {exe} does not exist")
        return
    checked = 0
    for what, release, values in binary_cases(yaml):
        namespace = "inferadb"
        try:
            docs = render(helm, yaml, values, release=release, namespace=namespace)
        except helm.HelmError as e:
            problem(f"{what}: render failed: {e}")
            continue
        merged = helm.Chart.load(str(CHART)).merge_values(values)
        cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")]
        if len(cms) != 1:
            problem(f"{what}: {len(cms)} config ConfigMaps")
            continue
        cm = cms[0]
        full = cm["metadata"]["name"].removesuffix("-config")
        t = merged["discovery"]["tailscale"]
        for sts in (d for d in docs if d["kind"] == "StatefulSet"):
            name = sts["metadata"]["name"]
            role = name.removeprefix(f"{full}-")
            where = f"{what}: {name}"
            pod = sts["spec"]["template"]["spec"]
            c = pod["containers"][0]
            args = c.get("args") or []
            if args[:2] != [role, "--config"] or len(args) != 3:
                problem(f"{where}: args {args}")
                continue
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
            cfg_dir, cfg_file = args[2].rsplit("/", 1)
            vol = {v["name"]: v for v in pod.get("volumes") or []}.get(mounts.get(cfg_dir), {})
            if (vol.get("configMap") or {}).get("name") != cm["metadata"]["name"] or cfg_file not in cm["data"]:
                problem(f"{where}: {args[2]} is not a key of ConfigMap {cm['metadata']['name']}")
                continue
            pod_name = f"{name}-0"
            env = pod_env(c, pod_name, namespace, where)
            eff = run_check(exe, role, cm["data"][cfg_file], env, where)
            if eff is None:
                continue
            checked += 1
            # The node.
            mesh = eff.get("mesh") or {}
            want_tags = t.get("tags") or [f"tag:inferadb-{t['localCluster']}"]
            for key, got, want in (
                ("mesh.hostname", mesh.get("hostname"), pod_name),
                ("mesh.control_url", mesh.get("control_url"), t["controlUrl"]),
                ("mesh.tags", mesh.get("tags"), want_tags),
                ("mesh.ephemeral", mesh.get("ephemeral"), not t["state"]["persistence"]["enabled"]),
                ("mesh.auth_key_file", mesh.get("auth_key_file"), f"/var/run/secrets/tailscale/{t['authKey']['key']}"),
                ("mesh.listen", mesh.get("listen"), f"0.0.0.0:{t['udpPort']}"),
                ("http.listen", (eff.get("http") or {}).get("listen"), f"0.0.0.0:{merged['metrics']['port']}"),
                ("http.tailnet_port", (eff.get("http") or {}).get("tailnet_port"), merged[role]["tailnetPort"]),
            ):
                if got != want:
                    problem(f"{where}: effective {key} {got!r} != {want!r}")
            if mesh.get("state_dir") not in mounts:
                problem(f"{where}: effective mesh.state_dir {mesh.get('state_dir')} is not a mount")
            # Discovery: the values' clusters, the local one, TTL, health checks.
            disc = (eff.get("auth") or {}).get("discovery") if role == "engine" \
                else (eff.get("cache_invalidation") or {}).get("discovery")
            want = expected_discovery(merged, role, full)
            for key in ("mode", "http_endpoints", "cache_ttl_seconds", "health_check"):
                got = (disc or {}).get(key)
                if got != want[key]:
                    problem(f"{where}: effective discovery.{key} {json.dumps(got)} != {json.dumps(want[key])}")
            if role == "control":
                ci = eff["cache_invalidation"]
                cv = merged["control"]["cacheInvalidation"]
                if (ci["timeout_ms"], ci["retry_attempts"]) != (cv["timeoutMs"], cv["retryAttempts"]):
                    problem(f"{where}: timeout_ms/retry_attempts {ci['timeout_ms']}/{ci['retry_attempts']}")
                api = merged["control"]["api"]
                want_token = f"/var/run/secrets/inferadb/api/{api['key']}" if api["existingSecret"] else None
                if eff["api"]["token_file"] != want_token:
                    problem(f"{where}: api.token_file {eff['api']['token_file']} != {want_token}")
    print(f"binary: {checked} rendered role configs accepted by {exe} --check")
    if checked < 2 * len(REGIONS):
        problem(f"binary: only {checked} configs checked")


# ---------------------------------------------------------------------------
# The dashboard

METRIC_RE = re.compile(r"\b(inferadb_[a-z0-9_]+)\b")
LITERAL_RE = re.compile(r'"(inferadb_[a-z0-9_]+)"')
HISTOGRAM_RE = re.compile(r'Histogram(?:Opts)?::new\(\s*"(inferadb_[a-z0-9_]+)"', re.S)


def registered_metrics() -> tuple[set[str], set[str]]:
    """Metric names the crates register: every "inferadb_…" string literal
    outside comments in crates/*/src, and which of them are histograms."""
    names: set[str] = set()
    histograms: set[str] = set()
    for f in sorted((ROOT / "crates").glob("*/src/**/*.rs")):
        code = "\n".join(
            line for line in f.read_text().splitlines() if not line.lstrip().startswith("//")
        )
        names |= set(LITERAL_RE.findall(code))
        histograms |= set(HISTOGRAM_RE.findall(code))
    return names, histograms


def cmd_dashboard() -> None:
    dash = json.loads(DASHBOARD.read_text())
    names, histograms = registered_metrics()
    exported = set(names)
    for h in histograms:
        exported |= {h + "_bucket", h + "_sum", h + "_count"}
    exprs = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets") or []:
                if t.get("expr"):
                    exprs.append((p.get("title"), t["expr"]))
            walk(p.get("panels") or [])

    walk(dash.get("panels") or [])
    for v in (dash.get("templating") or {}).get("list") or []:
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and q:
            exprs.append((f"variable {v['name']}", q))
    if "inferadb_tailnet_no_such_metric" in exported or not exported:
        problem("dashboard self-check: the registered names are wrong")
    used = set()
    for title, expr in exprs:
        ms = METRIC_RE.findall(expr)
        if not ms:
            problem(f"dashboard: panel {title!r}: query names no inferadb metric: {expr}")
        for m in ms:
            used.add(m)
            if m not in exported:
                problem(f"dashboard: panel {title!r}: {m} is not a metric the binary registers")
    # The guide's four metrics and its three example queries are there.
    for m in ("inferadb_tailscale_dns_resolutions_total", "inferadb_tailscale_discovered_endpoints",
              "inferadb_tailscale_cluster_discovery_failures_total", "inferadb_tailscale_clusters_total"):
        if m not in used:
            problem(f"dashboard: the guide's metric {m} has no panel")
    flat = [re.sub(r"\s+", "", e) for _, e in exprs]
    for needle in ('rate(inferadb_tailscale_dns_resolutions_total{result="success"',
                   "inferadb_tailscale_discovered_endpoints",
                   "rate(inferadb_tailscale_cluster_discovery_failures_total"):
        if not any(needle.replace('"', '"') in e for e in flat):
            problem(f"dashboard: no query like the guide's {needle}")
    if not any(m.startswith("inferadb_tailnet_") for m in used):
        problem("dashboard: no panel of the node's own inferadb_tailnet_ metrics")
    # The same dashboard against a live scrape (the names the running
    # engine and control really export, histogram suffixes included, and
    # promtool on the scrape): crates/inferadb-mesh/tests/roles_processes.rs.
    # This check stays as the quick one that needs no build.
    # The coordinator's dashboard (control and DERP health): every query
    # names a metric the coordinator registers (live: crates/coordinator/tests/admin.rs).
    coord = json.loads((DASHBOARD.parent / "grafana-coordinator.json").read_text())
    n = 0
    for p in coord.get("panels") or []:
        for t in p.get("targets") or []:
            ms = METRIC_RE.findall(t.get("expr", ""))
            if not ms:
                problem(f"coordinator dashboard: panel {p.get('title')!r} names no metric")
            for m in ms:
                n += 1
                if m not in exported or not m.startswith("inferadb_coordinator_"):
                    problem(f"coordinator dashboard: panel {p.get('title')!r}: {m} is not a coordinator metric")
    if n < 10:
        problem(f"coordinator dashboard: only {n} queries")
    print(f"dashboard: {len(exprs)} queries name {len(used)} metrics; "
          f"{len(names)} names are registered in crates/")


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["binary"] and len(args) == 2:
        cmd_binary(args[1])
    elif len(args) == 1 and args[0] in ("chart", "dashboard"):
        {"chart": cmd_chart, "dashboard": cmd_dashboard}[args[0]]()
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    if problems:
        for p in problems:
            print(f"FAIL: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"{sys.argv[1]}: ok")


if __name__ == "__main__":
    main()
