"""Pods as real containers on the local Docker engine: what a kubelet with a container runtime would do.

Admission first, as a namespace labelled `pod-security.kubernetes.io/enforce: restricted` does (the Pod
Security Standards' restricted profile), and RuntimeClass lookup. Then, per Pod, a thread: the image pulled by
the reference the Pod names (from the test registry, by digest), a container created from the Pod's spec
(user, capabilities, no-new-privileges, seccomp, read-only root, memory-medium emptyDirs as tmpfs with their
size limits, CPU and memory limits, the node's pids limit, no network when a NetworkPolicy denies egress), its
stdio attached before it starts, and the Pod's status kept as the kubelet reports it: Pending with a waiting
reason, Running, then Succeeded or Failed with the container's `terminated` state (`OOMKilled` when the kernel
killed for memory). Deletion kills the container, then the Pod object goes (watchers see DELETED).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.kube_standin.store import ApiError, Store, now

NODE = "standin-node"
NODE_PIDS_LIMIT = 1024  # the kubelet's podPidsLimit on this node
LABEL_CONTAINER = "pocket-standin"  # on the containers the stand-in makes: its id
LABEL_DEPLOYMENT = "pocket-standin.deployment"


def quantity_bytes(text: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 1000, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(text))
    if not match or match.group(2) not in ("", *units):
        raise ApiError(422, "Invalid", f"quantities must match the regular expression: {text!r}")
    return int(float(match.group(1)) * units.get(match.group(2), 1))


def quantity_nano_cpus(text: str) -> int:
    text = str(text)
    return int(text[:-1]) * 1_000_000 if text.endswith("m") else int(float(text) * 1e9)


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What the Pod Security Standards' restricted profile forbids in `pod` (their wording, shortened)."""
    spec = pod.get("spec") or {}
    pod_context = spec.get("securityContext") or {}
    found = []
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        found.append("host namespaces (hostNetwork=true, hostPID=true or hostIPC=true)")
    host_paths = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if host_paths:
        found.append(f"restricted volume types (volumes {', '.join(host_paths)} use restricted volume type hostPath)")
    for container in spec.get("containers") or []:
        context = container.get("securityContext") or {}
        name = container.get("name")
        if context.get("privileged"):
            found.append(f'privileged (container "{name}" must not set securityContext.privileged=true)')
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f'allowPrivilegeEscalation != false (container "{name}")')
        if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
            found.append(f'unrestricted capabilities (container "{name}" must set capabilities.drop=["ALL"])')
        if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
            found.append(f'runAsNonRoot != true (container "{name}")')
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f'seccompProfile (container "{name}" must set seccompProfile.type to RuntimeDefault)')
    return found


@dataclass
class PodRecord:
    """What the node holds for one Pod: its container and the attach socket opened before it started."""

    namespace: str
    name: str
    container: str | None = None
    sock: socket.socket | None = None
    attached: bool = False  # stdinOnce: one attach session writes stdin
    exit_code: int | None = None
    exited: threading.Event = field(default_factory=threading.Event)
    deleted: bool = False


class Node:
    """Runs the Pods of a `Store` on the Docker engine."""

    def __init__(self, store: Store, docker_api: Any, standin_id: str, runtime_classes: dict[str, str]):
        self.store = store
        self.api = docker_api
        self.id = standin_id
        self.runtime_classes = runtime_classes  # RuntimeClass name -> the engine's runtime (handler)
        self._lock = threading.Lock()
        self.records: dict[tuple[str, str], PodRecord] = {}
        self.pulls: list[str] = []  # every image reference the node pulled
        # Deployments run here (one replica each): (namespace, name) -> (Pod labels, internal network, address)
        self.deployments: dict[tuple[str, str], tuple[dict[str, str], str, str]] = {}

    # -- admission ------------------------------------------------------------------------------------

    def admit(self, namespace: str, pod: dict[str, Any]) -> None:
        name = pod.get("metadata", {}).get("name", "")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name or ""):
            raise ApiError(422, "Invalid", f'Pod "{name}" is invalid: metadata.name: Invalid value: "{name}"')
        violations = restricted_violations(pod)
        if violations:
            raise ApiError(403, "Forbidden",
                           f'pods "{name}" is forbidden: violates PodSecurity "restricted:latest": '
                           + ", ".join(violations))  # fmt: skip
        runtime_class = (pod.get("spec") or {}).get("runtimeClassName")
        if runtime_class and runtime_class not in self.runtime_classes:
            message = f'pods "{name}" is forbidden: pod rejected: RuntimeClass "{runtime_class}" not found'
            raise ApiError(403, "Forbidden", message)
        pod["status"] = {"phase": "Pending", "qosClass": _qos(pod)}

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, namespace: str, name: str) -> None:
        record = PodRecord(namespace, name)
        with self._lock:
            self.records[(namespace, name)] = record
        threading.Thread(target=self._run, args=(record,), daemon=True, name=f"standin-{name}").start()

    def record(self, namespace: str, name: str) -> PodRecord | None:
        with self._lock:
            return self.records.get((namespace, name))

    def _status(self, record: PodRecord, change: Any) -> None:
        self.store.update("pods", record.namespace, record.name, lambda pod: change(pod["status"]))

    def _event(self, record: PodRecord, reason: str, message: str, kind: str = "Normal") -> None:
        self.store.create("events", record.namespace, {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{record.name}.{uuid.uuid4().hex[:16]}"},
            "involvedObject": {"kind": "Pod", "name": record.name, "namespace": record.namespace},
            "reason": reason, "message": message, "type": kind, "source": {"component": "kubelet", "host": NODE},
            "firstTimestamp": now(), "lastTimestamp": now(), "count": 1,
        })  # fmt: skip

    def _run(self, record: PodRecord) -> None:
        try:
            pod = self.store.get("pods", record.namespace, record.name)
        except ApiError:
            return
        spec = pod["spec"]
        container = spec["containers"][0]

        def scheduled(status: dict[str, Any]) -> None:
            status.update(hostIP="127.0.0.1", startTime=now(), conditions=[
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now()},
                {"type": "ContainersReady", "status": "False", "lastTransitionTime": now()},
                {"type": "Ready", "status": "False", "lastTransitionTime": now()},
            ])  # fmt: skip
            status["containerStatuses"] = [_container_status(container, {"waiting": {"reason": "ContainerCreating"}})]

        self._status(record, scheduled)
        self._event(record, "Scheduled", f"Successfully assigned {record.namespace}/{record.name} to {NODE}")
        try:
            self._pull(container["image"])
            self._event(record, "Pulled", f'Container image "{container["image"]}" present on machine')
            self._create(record, pod)
        except Exception as exc:  # the engine refused: the kubelet reports it as the container's waiting reason
            body = exc.body if isinstance(exc, ApiError) else {"reason": "CreateContainerError", "message": str(exc)}
            reason, message = body["reason"], body["message"]
            self._status(
                record,
                lambda s: s.update(
                    containerStatuses=[
                        _container_status(container, {"waiting": {"reason": reason, "message": message}})
                    ]
                ),
            )
            self._event(record, reason, message, "Warning")
            return
        if record.deleted:
            return
        info = self.api.inspect_container(record.container)
        started_at = info["State"].get("StartedAt", "")[:19] + "Z"

        def running(status: dict[str, Any]) -> None:
            status["phase"] = "Running"
            address = next(iter(info["NetworkSettings"]["Networks"].values()), {}).get("IPAddress") or ""
            status.update(podIP=address, podIPs=[{"ip": address}] if address else [])
            for condition in status["conditions"]:
                condition["status"] = "True"
            status["containerStatuses"] = [_container_status(container, {"running": {"startedAt": started_at}},
                                                             ready=True, cid=record.container)]  # fmt: skip

        self._status(record, running)
        self._event(record, "Started", f"Started container {container['name']}")
        try:
            code = int(self.api.wait(record.container)["StatusCode"])
            info = self.api.inspect_container(record.container)
        except Exception:
            return  # removed: the Pod is being deleted
        record.exit_code = code
        oom = bool(info["State"].get("OOMKilled"))
        terminated = {
            "exitCode": code, "reason": "OOMKilled" if oom else ("Completed" if code == 0 else "Error"),
            "startedAt": started_at, "finishedAt": info["State"].get("FinishedAt", "")[:19] + "Z",
            "containerID": f"docker://{record.container}",
        }  # fmt: skip

        def ended(status: dict[str, Any]) -> None:
            status["phase"] = "Succeeded" if code == 0 else "Failed"
            for condition in status["conditions"]:
                if condition["type"] in ("Ready", "ContainersReady"):
                    condition.update(status="False", reason="PodCompleted")
            status["containerStatuses"] = [_container_status(container, {"terminated": terminated},
                                                             cid=record.container)]  # fmt: skip

        self._status(record, ended)
        record.exited.set()

    def _pull(self, image: str) -> None:
        import docker.errors

        try:
            self.api.inspect_image(image)
            return
        except docker.errors.ImageNotFound:
            pass
        repository, _, digest = image.partition("@")
        try:
            if digest:
                self.api.pull(repository, tag=digest)
            else:
                self.api.pull(image)
            self.pulls.append(image)
        except Exception as exc:
            raise ApiError(0, "ErrImagePull", f'failed to pull image "{image}": {exc}') from None

    def _create(self, record: PodRecord, pod: dict[str, Any], deployment: str = "") -> None:
        spec, meta = pod["spec"], pod["metadata"]
        container = spec["containers"][0]
        pod_context, context = spec.get("securityContext") or {}, container.get("securityContext") or {}
        user, group = (context.get("runAsUser", pod_context.get("runAsUser")),
                       context.get("runAsGroup", pod_context.get("runAsGroup")))  # fmt: skip
        if (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")) and not user:
            image_user = (self.api.inspect_image(container["image"]).get("Config") or {}).get("User") or "0"
            if image_user.split(":")[0] in ("", "0", "root"):
                raise ApiError(0, "CreateContainerConfigError", "container has runAsNonRoot and image will run as root")
        env = {}
        for item in container.get("env") or []:
            if "value" not in item:
                raise ApiError(0, "CreateContainerConfigError", f"env {item['name']}: only values are supported here")
            env[item["name"]] = item["value"]
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        tmpfs = {}
        for mount in container.get("volumeMounts") or []:
            empty_dir = volumes[mount["name"]].get("emptyDir")
            if empty_dir is None:
                raise ApiError(0, "CreateContainerConfigError", f"volume {mount['name']}: only emptyDir is supported")
            size = f",size={quantity_bytes(empty_dir['sizeLimit'])}" if empty_dir.get("sizeLimit") else ""
            tmpfs[mount["mountPath"]] = "rw,nosuid,nodev" + size  # medium Memory; a disk emptyDir is one too here
        limits = (container.get("resources") or {}).get("limits") or {}
        security_opt = []
        if context.get("allowPrivilegeEscalation") is False:
            security_opt.append("no-new-privileges")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp in (None, "Unconfined"):  # the kubelet's default is Unconfined
            security_opt.append("seccomp=unconfined")
        network = self.network(record.namespace, meta.get("labels") or {})
        capabilities = context.get("capabilities") or {}
        host_config = self.api.create_host_config(
            cap_drop=capabilities.get("drop") or None, cap_add=capabilities.get("add") or None,
            security_opt=security_opt or None, read_only=bool(context.get("readOnlyRootFilesystem")),
            tmpfs=tmpfs or None, network_mode=network, pids_limit=NODE_PIDS_LIMIT,
            mem_limit=quantity_bytes(limits["memory"]) if "memory" in limits else None,
            memswap_limit=quantity_bytes(limits["memory"]) if "memory" in limits else None,
            nano_cpus=quantity_nano_cpus(limits["cpu"]) if "cpu" in limits else None,
            runtime=self.runtime_classes.get(spec.get("runtimeClassName") or "", None),
            log_config={"type": "none", "config": {}}, privileged=bool(context.get("privileged")),
        )  # fmt: skip
        created = self.api.create_container(
            container["image"], entrypoint=container.get("command"), command=container.get("args"),
            user=f"{user}:{group}" if user is not None and group is not None else (str(user) if user else None),
            working_dir=container.get("workingDir"), environment=env, stdin_open=bool(container.get("stdin")),
            tty=bool(container.get("tty")), hostname=spec.get("hostname") or record.name,
            labels={LABEL_CONTAINER: self.id, LABEL_DEPLOYMENT: deployment}, host_config=host_config,
            name=f"standin-{self.id}-{record.name}"[:120],
        )  # fmt: skip
        record.container = created["Id"]
        if container.get("stdin"):
            raw = self.api.attach_socket(record.container, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            record.sock = raw._sock
        self._event(record, "Created", f"Created container {container['name']}")
        self.api.start(record.container)

    def network(self, namespace: str, labels: dict[str, str]) -> str:
        """The Docker network a Pod with `labels` gets under the namespace's NetworkPolicies.

        No Egress policy selecting it: the bridge. A rule with no `to`: the bridge. Rules naming Pods of a
        Deployment this node runs (the egress proxy): that Deployment's internal network, where its Pod is the
        only other member. Anything else: no network.
        """
        policies = self.store.list("networkpolicies", namespace)[0]
        selecting = [
            p for p in policies
            if "Egress" in (p["spec"].get("policyTypes") or [])
            and (p["spec"]["podSelector"].get("matchLabels") or {}).items() <= labels.items()
        ]  # fmt: skip
        rules = [rule for policy in selecting for rule in policy["spec"].get("egress") or []]
        if not selecting or any(not rule.get("to") for rule in rules):
            return "bridge"
        with self._lock:
            running = list(self.deployments.values())
        for rule in rules:
            for peer in rule["to"]:
                wanted = ((peer.get("podSelector") or {}).get("matchLabels") or {}).items()
                for pod_labels, network, _ in running:
                    if wanted <= pod_labels.items():
                        return network
        return "none"

    def run_deployment(self, namespace: str, deployment: dict[str, Any]) -> dict[str, Any]:
        """Run the Deployment's one replica as a Pod on the bridge, also on an internal network of its own (its
        Service's address there); returns its status once the Pod accepts connections on its ports."""
        name = deployment["metadata"]["name"]
        template = deployment["spec"]["template"]
        labels = template["metadata"]["labels"]
        # The node itself is not on it (no address for the host), as a policy allowing only the proxy leaves it
        network = self.api.create_network(f"standin-{self.id}-{name}"[:60], internal=True,
                                          labels={LABEL_CONTAINER: self.id},
                                          options={"com.docker.network.bridge.inhibit_ipv4": "true"})["Id"]  # fmt: skip
        record = PodRecord(namespace, f"{name}-{uuid.uuid4().hex[:5]}")
        for container in template["spec"]["containers"]:
            self._pull(container["image"])
        self._create(record, {"metadata": {"name": record.name, "labels": labels}, "spec": template["spec"]}, name)
        self.api.connect_container_to_network(record.container, network)
        networks = self.api.inspect_container(record.container)["NetworkSettings"]["Networks"]
        address = next(n["IPAddress"] for n in networks.values() if n.get("NetworkID") == network)
        bridge = networks["bridge"]["IPAddress"]
        ports = [p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports") or []]
        deadline = time.monotonic() + 30
        while ports:
            try:
                socket.create_connection((bridge, ports[0]), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ApiError(500, "InternalError", f"the Deployment {name}'s Pod did not listen") from None
                time.sleep(0.05)
        with self._lock:
            self.deployments[(namespace, name)] = (labels, network, address)
        return {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                "updatedReplicas": 1}  # fmt: skip

    def service_address(self, namespace: str, selector: dict[str, str]) -> str | None:
        """The address a Service selecting `selector` has here: its Deployment's Pod on the internal network."""
        with self._lock:
            for (ns, _), (labels, _, address) in self.deployments.items():
                if ns == namespace and selector.items() <= labels.items():
                    return address
        return None

    def stop_deployment(self, namespace: str, name: str) -> None:
        with self._lock:
            running = self.deployments.pop((namespace, name), None)
        if running is None:
            return
        with contextlib.suppress(Exception):
            for item in self.api.containers(all=True, filters={"label": f"{LABEL_DEPLOYMENT}={name}"}):
                self.api.remove_container(item["Id"], force=True)
            self.api.remove_network(running[1])  # fails while tool Pods are on it: close() removes it then

    def delete(self, namespace: str, name: str) -> None:
        """Kill the Pod's container (no grace here: the runner always asks for 0), then remove the Pod."""
        record = self.record(namespace, name)
        threading.Thread(target=self._delete, args=(namespace, name, record), daemon=True).start()

    def _delete(self, namespace: str, name: str, record: PodRecord | None) -> None:
        if record is not None:
            record.deleted = True
            with contextlib.suppress(Exception):
                self._event(record, "Killing", "Stopping container")
            if record.container:
                with contextlib.suppress(Exception):
                    self.api.remove_container(record.container, force=True, v=True)
            if record.sock is not None:
                with contextlib.suppress(OSError):
                    record.sock.close()
            record.exited.set()
            with self._lock:
                self.records.pop((namespace, name), None)
        self.store.remove("pods", namespace, name)

    def close(self) -> None:
        """Remove every container and network the node made."""
        with contextlib.suppress(Exception):
            for item in self.api.containers(all=True, filters={"label": f"{LABEL_CONTAINER}={self.id}"}):
                with contextlib.suppress(Exception):
                    self.api.remove_container(item["Id"], force=True, v=True)
            for network in self.api.networks(filters={"label": f"{LABEL_CONTAINER}={self.id}"}):
                with contextlib.suppress(Exception):
                    self.api.remove_network(network["Id"])


def _qos(pod: dict[str, Any]) -> str:
    resources = [(c.get("resources") or {}) for c in pod["spec"].get("containers") or []]
    if all(r.get("limits") and r.get("limits") == r.get("requests", r.get("limits")) for r in resources):
        return "Guaranteed"
    return "Burstable" if any(r for r in resources) else "BestEffort"


def _container_status(container: dict[str, Any], state: dict[str, Any], ready: bool = False,
                      cid: str | None = None) -> dict[str, Any]:  # fmt: skip
    status = {
        "name": container["name"], "image": container["image"], "imageID": container["image"], "state": state,
        "lastState": {}, "ready": ready, "restartCount": 0, "started": "running" in state,
    }  # fmt: skip
    if cid:
        status["containerID"] = f"docker://{cid}"
    return status
