"""The deploy/ files, checked without building or running anything: they parse, the configs
they ship are valid fastgw configs, and their pieces agree (ports, probes, grace periods,
secrets, images). Building the image and running compose or Kubernetes is not done here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from fastgw.config import parse_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ENV = {"FASTGW_MASTER_KEY": "sk-m", "FASTGW_STORE_URL": "postgresql://u@h/db", "FASTGW_REDIS_URL": "redis://r:6379/0"}


def load(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text())


def k8s() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_dockerfile_is_small_non_root_and_pinned():
    text = (DEPLOY / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f.endswith("-slim") for f in froms)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("root", "0"))
    assert "-c requirements.lock" in text and "--no-cache-dir" in text
    assert "'.[postgres,redis]'" in text
    assert re.search(r"^EXPOSE 4000$", text, re.M)
    assert '"fastgw", "serve"' in text
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for src in copied.split():
            assert (DEPLOY.parent / src).exists(), src


def test_the_shipped_configs_are_valid_and_the_same():
    file_config = parse_config((DEPLOY / "config.yaml").read_text(), ENV)
    cm_text = k8s()["ConfigMap"]["data"]["config.yaml"]
    cm_config = parse_config(cm_text, ENV)
    assert file_config == cm_config
    assert file_config.server.host == "0.0.0.0" and file_config.server.port == 4000
    assert file_config.redis.url == ENV["FASTGW_REDIS_URL"]
    assert file_config.store_url.startswith("postgresql://")


def test_compose_runs_two_instances_behind_nginx_with_redis_and_postgres():
    compose = load("docker-compose.yml")
    services = compose["services"]
    assert {"fastgw-a", "fastgw-b", "redis", "postgres", "nginx"} <= set(services)
    for name in ("fastgw-a", "fastgw-b"):
        svc = services[name]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        env = svc["environment"]
        assert env["FASTGW_REDIS_URL"].startswith("redis://redis:")
        assert env["FASTGW_STORE_URL"].startswith("postgresql://") and "@postgres:" in env["FASTGW_STORE_URL"]
        assert set(svc["depends_on"]) == {"redis", "postgres"}
        grace = int(svc["stop_grace_period"].rstrip("s"))
        assert grace > parse_config((DEPLOY / "config.yaml").read_text(), ENV).server.grace_period
    nginx = services["nginx"]
    assert any(v.startswith("./nginx.conf:") for v in nginx["volumes"])
    published = nginx["ports"][0].split(":")[-1]
    conf = (DEPLOY / "nginx.conf").read_text()
    assert re.search(rf"listen {published};", conf)
    servers = re.findall(r"server (fastgw-[ab]):(\d+)", conf)
    assert sorted(servers) == [("fastgw-a", "4000"), ("fastgw-b", "4000")]
    assert "proxy_buffering off;" in conf  # streams flow as they arrive
    assert conf.count("{") == conf.count("}")


def test_kubernetes_manifests_agree():
    docs = k8s()
    assert set(docs) == {"ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler"}
    config = parse_config(docs["ConfigMap"]["data"]["config.yaml"], ENV)
    dep = docs["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["selector"]["matchLabels"] == dep["spec"]["template"]["metadata"]["labels"]
    [container] = pod["containers"]
    port = container["ports"][0]
    assert port["containerPort"] == config.server.port
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    # Termination: the preStop pause plus the gateway's grace period fit in the pod's.
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert config.server.grace_period + pre_stop <= pod["terminationGracePeriodSeconds"]
    assert pod["terminationGracePeriodSeconds"] <= config.server.grace_period + pre_stop + 10
    assert pod["securityContext"]["runAsNonRoot"] is True
    # Workers per core: the CPU request matches server.workers.
    assert int(container["resources"]["requests"]["cpu"]) == config.server.workers
    # The secrets the config interpolates all come from the Secret.
    secret = docs["Secret"]
    assert container["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"]
    needed = set(re.findall(r"\$\{([A-Z_]+)", docs["ConfigMap"]["data"]["config.yaml"]))
    assert needed <= set(secret["stringData"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/fastgw")
    assert volumes[mount["name"]]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert container["args"] == ["--config", "/etc/fastgw/config.yaml"]
    svc = docs["Service"]
    assert svc["spec"]["selector"] == dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["ports"][0]["targetPort"] == port["name"]
    hpa = docs["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
