"""What the Kubernetes backend creates, as the API's JSON: the hardened tool Pod, the NetworkPolicies that
deny its egress (or allow only the egress proxy), and the proxy's Deployment and Service.

Pure functions of their inputs, so tests assert on exactly what the runner sends. Nothing secret is ever
in them: a call's environment and body travel on the attach stream only.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from runner.sandbox.egress import EGRESS_PORT
from runner.sandbox.engine import TMPFS, Spec
from runner.sandbox.labels import LABEL, LABEL_MODE, LABEL_OWNER, LABEL_SANDBOX, LABEL_TOOL
from runner.settings import KubernetesSettings

NOBODY = 65534
CONTAINER = "tool"
LABEL_EGRESS = "pocket-runner.egress"  # on tool Pods: "none", "open", or the egress proxy they may reach
LABEL_PROXY = "pocket-runner.proxy"  # on egress proxy Pods: the host list they serve (a hash)
TMP_SIZE = re.search(r"size=(\d+)m", next(iter(TMPFS.values()))).group(1) + "Mi"  # type: ignore[union-attr]
PROXY_MODE = "egress-proxy"


def label_value(text: str) -> str:
    """A label value from any text: at most 63 of [a-z0-9-_.], starting and ending alphanumeric."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", text.lower())[:63].strip("-_.")
    return cleaned or "x"


def hosts_key(hosts: tuple[str, ...]) -> str:
    """A short name for a host list (a label value and part of object names)."""
    return hashlib.sha256("\n".join(hosts).encode()).hexdigest()[:10]


def quantity_memory(mb: int) -> str:
    return f"{mb}Mi"


def quantity_cpu(cpus: float) -> str:
    return f"{max(round(cpus * 1000), 1)}m"


@dataclass(frozen=True)
class Objects:
    """The objects of one sandbox in `[sandbox.kubernetes] namespace`."""

    sandbox_id: str
    owner: str  # labels.owner_label(): an annotation (it holds ':' and may be long, which label values may not)
    settings: KubernetesSettings

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    def metadata(self, name: str, **labels: str) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": {LABEL: "1", LABEL_SANDBOX: self.sandbox_id, **labels},
            "annotations": {LABEL_OWNER: self.owner},
        }
        runner_pod = (self.settings.runner_pod_name, self.settings.runner_pod_uid)
        if all(runner_pod):
            metadata["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Pod", "name": runner_pod[0], "uid": runner_pod[1]}
            ]
        return metadata

    def pod(self, name: str, spec: Spec, egress: str, proxy: str | None = None) -> dict[str, Any]:
        """A Pod that runs one call: `spec`'s command waiting on stdin (attached once: `stdinOnce`).

        `egress` is its egress label (see LABEL_EGRESS); `proxy` the egress proxy's URL when it has one.
        """
        memory_mb, cpus, _pids, _network = spec.limits_key  # pids: a node-level setting (kubelet podPidsLimit)
        env = [{"name": "HOME", "value": "/tmp"}]  # noqa: S108 - the container's own /tmp
        if proxy:
            env += [{"name": n, "value": proxy} for n in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")]
        resources = {"memory": quantity_memory(memory_mb), "cpu": quantity_cpu(cpus)}
        container = {
            "name": CONTAINER,
            "image": spec.image,
            "imagePullPolicy": "IfNotPresent",  # by digest: the node's copy is exactly this image
            "command": list(spec.command),
            "workingDir": "/tool",
            "env": env,
            "stdin": True,
            "stdinOnce": True,  # the attach session that writes the call's stdin is the only one
            "tty": False,
            "resources": {"limits": resources, "requests": resources},  # Guaranteed QoS: never evicted first
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": NOBODY,
                "runAsGroup": NOBODY,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "privileged": False,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
            "terminationMessagePolicy": "File",
        }
        pod_spec: dict[str, Any] = {
            "containers": [container],
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "hostNetwork": False,
            "hostPID": False,
            "hostIPC": False,
            "hostname": "pocket-sandbox",
            "terminationGracePeriodSeconds": 0,  # a call's Pod is killed, never asked to stop
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": NOBODY,
                "runAsGroup": NOBODY,
                "fsGroup": NOBODY,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": TMP_SIZE}}],
        }
        if self.settings.runtime_class_name:
            pod_spec["runtimeClassName"] = self.settings.runtime_class_name
        if self.settings.image_pull_secrets:
            pod_spec["imagePullSecrets"] = [{"name": name} for name in self.settings.image_pull_secrets]
        labels = {LABEL_TOOL: label_value(spec.tool), LABEL_MODE: spec.mode, LABEL_EGRESS: egress}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": self.metadata(name, **labels), "spec": pod_spec}

    def isolation_policy(self) -> dict[str, Any]:
        """Tool Pods without network: no egress, no ingress (attach goes through the kubelet, not the network)."""
        return self._policy(f"pocket-{self.sandbox_id}-isolate", {LABEL_EGRESS: "none"}, egress=[], ingress=[])

    def egress_policy(self, key: str) -> dict[str, Any]:
        """Tool Pods of host list `key`: their only egress is the proxy serving that list, on its port."""
        to_proxy = {
            "to": [{"podSelector": {"matchLabels": {LABEL_SANDBOX: self.sandbox_id, LABEL_PROXY: key}}}],
            "ports": [{"protocol": "TCP", "port": EGRESS_PORT}],
        }
        name = f"pocket-{self.sandbox_id}-egress-{key}"
        return self._policy(name, {LABEL_EGRESS: key}, egress=[to_proxy], ingress=[])

    def proxy_policy(self, key: str) -> dict[str, Any]:
        """The proxy of host list `key` takes connections only from the tool Pods allowed to use it."""
        from_tools = {
            "from": [{"podSelector": {"matchLabels": {LABEL_SANDBOX: self.sandbox_id, LABEL_EGRESS: key}}}],
            "ports": [{"protocol": "TCP", "port": EGRESS_PORT}],
        }
        return self._policy(f"pocket-{self.sandbox_id}-proxy-{key}", {LABEL_PROXY: key}, ingress=[from_tools])

    def _policy(
        self, name: str, selector: dict[str, str], *, ingress: list[Any], egress: list[Any] | None = None
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "podSelector": {"matchLabels": {LABEL_SANDBOX: self.sandbox_id, **selector}},
            "policyTypes": ["Ingress"] + (["Egress"] if egress is not None else []),
            "ingress": ingress,
        }
        if egress is not None:
            spec["egress"] = egress
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": self.metadata(name),
            "spec": spec,
        }

    def proxy_deployment(self, key: str, image: str, command: list[str]) -> dict[str, Any]:
        """The egress proxy of host list `key`: one hardened replica running `command` (egress_proxy.py)."""
        name = f"pocket-{self.sandbox_id}-proxy-{key}"
        labels = {LABEL_SANDBOX: self.sandbox_id, LABEL_PROXY: key}
        pod = self.pod(name, Spec(image, PROXY_MODE, (64, 0.5, 256, True), tuple(command), PROXY_MODE), "open")
        pod_spec = pod["spec"]
        pod_spec["restartPolicy"] = "Always"
        pod_spec["terminationGracePeriodSeconds"] = 5
        container = pod_spec["containers"][0]
        for key_ in ("stdin", "stdinOnce"):
            container.pop(key_)
        container["ports"] = [{"containerPort": EGRESS_PORT, "protocol": "TCP"}]
        container["readinessProbe"] = {"tcpSocket": {"port": EGRESS_PORT}, "periodSeconds": 1}
        template_labels = {**pod["metadata"]["labels"], LABEL_MODE: PROXY_MODE, **labels}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self.metadata(name, **{LABEL_MODE: PROXY_MODE, LABEL_PROXY: key}),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": template_labels}, "spec": pod_spec},
            },
        }

    def proxy_service(self, key: str) -> dict[str, Any]:
        name = f"pocket-{self.sandbox_id}-proxy-{key}"
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self.metadata(name, **{LABEL_MODE: PROXY_MODE, LABEL_PROXY: key}),
            "spec": {
                "type": "ClusterIP",
                "selector": {LABEL_SANDBOX: self.sandbox_id, LABEL_PROXY: key},
                "ports": [{"name": "proxy", "protocol": "TCP", "port": EGRESS_PORT, "targetPort": EGRESS_PORT}],
            },
        }
