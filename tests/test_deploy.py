"""deploy/: the Kubernetes manifests pass the API schemas (kubernetes-validate, strict), wire the probes, the
ConfigMap and the Secret as the runbook says, and carry a valid Bastion config; the systemd unit is hardened."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from bastion.compile import compile_config
from bastion.config.loader import load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))


def resources() -> list[dict]:
    yaml = YAML(typ="safe")
    return [doc for path in MANIFESTS for doc in yaml.load_all(path.read_text()) if doc]


@pytest.mark.parametrize("resource", resources(), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}")
def test_manifest_passes_the_kubernetes_schema(resource):
    kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)


def test_deployment_probes_config_and_secrets():
    by_kind = {r["kind"]: r for r in resources()}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["envFrom"] == [{"secretRef": {"name": by_kind["Secret"]["metadata"]["name"]}}]
    [config] = [v for v in pod["volumes"] if "configMap" in v]
    assert config["configMap"]["name"] == by_kind["ConfigMap"]["metadata"]["name"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert by_kind["PodDisruptionBudget"]["spec"]["selector"] == by_kind["Deployment"]["spec"]["selector"]
    assert pod["terminationGracePeriodSeconds"] > 20  # above the config's drain_timeout


def test_the_configmap_holds_a_valid_config(tmp_path, monkeypatch):
    configmap = next(r for r in resources() if r["kind"] == "ConfigMap")
    text = configmap["data"]["bastion.yaml"].replace("REPLACE_WITH_SHA256_OF_THE_ADMIN_TOKEN",
                                                     hashlib.sha256(b"test").hexdigest())
    (tmp_path / "bastion.yaml").write_text(text)
    monkeypatch.setenv("SIEM_TOKEN", "test")
    compiled = compile_config(load_config(tmp_path / "bastion.yaml"))
    gateway = compiled.config.model.gateway
    assert gateway.state.startswith("redis://") and gateway.admin.port == 9901


def test_systemd_unit_is_hardened():
    unit = (DEPLOY / "systemd" / "bastion.service").read_text()
    settings = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in unit.splitlines()
                if "=" in line and not line.startswith("#")}
    assert settings["User"] == "bastion" and settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectSystem"] == "strict" and settings["ReadOnlyPaths"] == "/etc/bastion"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"  # all workers or none
    assert settings["CapabilityBoundingSet"] == ""


def test_systemd_accepts_the_unit_and_rates_its_exposure_low(tmp_path):
    unit = tmp_path / "bastion.service"  # the binary's path as installed on this machine
    unit.write_text((DEPLOY / "systemd" / "bastion.service").read_text().replace("/usr/local/bin/bastion", "/bin/true"))
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True,
                              text=True, timeout=60)
    exposure = float(re.search(r"Overall exposure level for bastion.service: ([0-9.]+)", security.stdout)[1])
    assert exposure <= 2.0  # systemd's scale: 0 (locked down) to 10 (exposed); "OK" is below 2
