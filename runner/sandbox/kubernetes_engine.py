"""`KubernetesEngine`: the `Engine` seam on a Kubernetes cluster (`sandbox.backend = "kubernetes"`), through the
official `kubernetes` client (the optional extra `kubernetes`).

A "container" here is a Pod of one hardened container (`kubernetes_objects`), created ahead by the pools like a
Docker container, watched until it runs, and attached with stdin (`kubernetes_attach`): a call's environment and
body travel on that stream only, never in the Pod's spec, env, annotations or events. Killing is deleting with
no grace period. Images are built locally and pushed to `sandbox.registry` (`kubernetes_images`).

Egress: tool Pods without network are selected by a NetworkPolicy denying all egress and ingress; a tool with a
host list reaches only the egress proxy (`container/egress_proxy.py`) serving that list, run as a Deployment and
Service of this sandbox, through its own policy. Everything carries the sandbox's labels and the owner annotation,
so a later runner removes what a dead one left (`cleanup_stale`), and `close()` removes it all.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

from runner.errors import SandboxError
from runner.invocation import NetworkReceipt
from runner.manifest import Manifest
from runner.sandbox.egress import EGRESS_PORT
from runner.sandbox.engine import DockerEngine, Spec, Started
from runner.sandbox.images import image_repository
from runner.sandbox.kubernetes_attach import AttachStream
from runner.sandbox.kubernetes_images import RegistryImages
from runner.sandbox.kubernetes_objects import CONTAINER, Objects, hosts_key
from runner.sandbox.labels import LABEL, LABEL_OWNER, LABEL_SANDBOX, owner_alive
from runner.sandbox.limits import Limits
from runner.settings import SandboxSettings

EXIT_WAIT = 10.0  # how long a Pod whose stream ended may take to report its container's exit
GONE_WAIT = 30.0  # how long close() waits for its Pods to be gone
PROXY_POLL = 0.25  # how often a starting egress proxy's Deployment is read (once per host list)
# Waiting reasons after which a Pod will not run without someone changing something
HOPELESS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
            "CreateContainerError", "RunContainerError", "ErrImageNeverPull"}  # fmt: skip


class KubernetesEngine:
    """Tool Pods in one namespace. Thread-safe."""

    def __init__(self, settings: SandboxSettings, sandbox_id: str, owner: str, say: Callable[[str], None]):
        self.settings = settings
        self.sandbox_id = sandbox_id
        self.owner = owner
        self.namespace = settings.kubernetes.namespace
        self.objects = Objects(sandbox_id, owner, settings.kubernetes)
        self._builder = DockerEngine(settings, sandbox_id, owner, say)  # builds and pushes images
        self.registry = RegistryImages(self._builder, settings, say)
        self._say = say
        self._lock = threading.Lock()
        self._client: Any = None
        self._stale_removed: list[str] = []
        self._live: set[str] = set()  # Pods created and not yet deleted
        self._proxies: dict[str, str] = {}  # host list key -> proxy URL
        self._proxy_lock = threading.Lock()
        self._closed = False

    # -- the client ---------------------------------------------------------------------------------

    @property
    def api(self) -> Any:
        """The client's CoreV1Api, connected (and the namespace's stale objects cleaned) on first use."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    client = self._connect()
                    self._stale_removed = self._cleanup_stale(client)
                    self._ensure(client, "network_policy", self.objects.isolation_policy())
                    self._client = client
        return self._client.core

    def _connect(self) -> _Clients:
        try:
            from kubernetes import client, config
        except ImportError:
            raise SandboxError(
                "sandbox.backend = 'kubernetes' needs the kubernetes client: pip install 'pocket-runner[kubernetes]'"
            ) from None
        configuration = client.Configuration()
        kube = self.settings.kubernetes
        try:
            if kube.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=configuration)
            else:
                config.load_kube_config(
                    config_file=str(kube.kubeconfig) if kube.kubeconfig else None,
                    context=kube.context,
                    client_configuration=configuration,
                )
        except Exception as exc:
            where = kube.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise SandboxError(f"cannot load the Kubernetes configuration ({where}): {exc}") from None
        configuration.connection_pool_maxsize = 32  # concurrent calls each create, watch and delete
        clients = _Clients(client.ApiClient(configuration))
        try:
            clients.core.list_namespaced_pod(self.namespace, label_selector=LABEL, limit=1)
        except Exception as exc:
            raise SandboxError(self.failure(exc, configuration.host)) from None
        return clients

    def failure(self, exc: Exception, host: str | None = None) -> str:
        """What to tell a person about an API call that raised `exc`."""
        from kubernetes.client.exceptions import ApiException

        if isinstance(exc, ApiException) and exc.status:
            return f"the Kubernetes API refused: {exc.status} {exc.reason}: {_message(exc)}"
        host = host or (self._client.api.configuration.host if self._client else "the configured cluster")
        return f"the Kubernetes API at {host} does not answer ({type(exc).__name__}: {exc})"

    def why_died(self, exit_code: int | None, limits: Limits) -> str | None:
        return None

    def receipt(self, hosts: tuple[str, ...], started: Started) -> NetworkReceipt | None:
        """None: nobody can tell yet. The proxy runs as a Deployment here, with no attached stream to ask it
        for a Pod's receipt as the Docker backend does."""
        return None

    # -- images ----------------------------------------------------------------------------------------

    @property
    def images(self) -> Any:
        """The local image builder (base images, builds): `Sandbox.base_image` asks it."""
        return self._builder.images

    def image(self, manifest: Manifest) -> str:
        """The tool's image by digest in sandbox.registry (built and pushed first when needed)."""
        return self.registry.image(manifest)

    # -- Pods ------------------------------------------------------------------------------------------

    def start(self, spec: Spec) -> Started:
        """Create one Pod of `spec`, wait until it runs, and attach to it."""
        core = self.api
        name = f"pocket-{image_repository(spec.tool).split('/', 1)[1][:40].strip('-')}-{uuid.uuid4().hex[:10]}"
        network = spec.limits_key[3]
        egress, proxy = ("open", None) if network is True else ("none", None)
        if isinstance(network, tuple):
            egress, proxy = hosts_key(network), self._proxy(network)
        try:
            core.create_namespaced_pod(self.namespace, self.objects.pod(name, spec, egress, proxy))
        except BaseException:  # the API may have made it though its answer never came
            self._delete_pod(name)
            raise
        with self._lock:
            self._live.add(name)
        try:
            self._wait_running(name)
            client = self._clients.attach(name, self.namespace)
        except BaseException:
            self.remove(name)
            raise
        attached = AttachStream(client)
        if self._closed:  # closed while this one started: close() may have missed it
            attached.close()
            self.remove(name)
            raise SandboxError("the sandbox is closed")
        return Started(name, attached)  # type: ignore[arg-type] # the Stream interface

    def _watch(self, name: str, timeout: float) -> Iterator[tuple[str, Any]]:
        """(event type, pod) for Pod `name`: its state now, then each change, for at most `timeout` seconds."""
        from kubernetes import watch

        core = self.api
        pod = core.read_namespaced_pod(name, self.namespace)
        yield "MODIFIED", pod
        deadline = time.monotonic() + timeout
        version = pod.metadata.resource_version
        while (left := deadline - time.monotonic()) > 0:
            events = watch.Watch().stream(
                core.list_namespaced_pod, self.namespace, field_selector=f"metadata.name={name}",
                resource_version=version, timeout_seconds=max(int(left), 1), _request_timeout=left + 5,
            )  # fmt: skip
            for event in events:
                version = event["object"].metadata.resource_version or version
                yield event["type"], event["object"]

    def _wait_running(self, name: str) -> None:
        timeout = self.settings.kubernetes.start_timeout_seconds
        last = "it was not scheduled"
        for kind, pod in self._watch(name, timeout):
            if kind == "DELETED" or pod.metadata.deletion_timestamp:
                raise SandboxError(f"the Pod {name} was deleted before it ran")
            state = _container_state(pod)
            if pod.status.phase == "Running" and state and state.running:
                return
            if pod.status.phase in ("Succeeded", "Failed"):
                raise SandboxError(f"the Pod {name} ended before its call: {_describe(pod)}")
            if state and state.waiting and state.waiting.reason in HOPELESS:
                raise SandboxError(f"the Pod {name} cannot start: {_describe(pod)}")
            last = _describe(pod)
        raise SandboxError(
            f"the Pod {name} did not run within {timeout:g} s (sandbox.kubernetes.start_timeout_seconds): {last}"
        )

    def kill(self, cid: str) -> None:
        self._delete_pod(cid)

    def remove(self, cid: str) -> None:
        """Delete a Pod (gone already counts); one whose deletion failed is tried again at close."""
        if self._delete_pod(cid):
            with self._lock:
                self._live.discard(cid)

    def _delete_pod(self, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
        except ApiException as exc:
            return exc.status == 404
        except Exception:
            return False
        return True

    def exit_code(self, cid: str) -> int | None:
        terminated = self._terminated(cid)
        return None if terminated is None else int(terminated.exit_code)

    def oom_killed(self, cid: str, *, wait: bool = False) -> bool:
        """Whether the kernel killed the container for memory: the kubelet's `OOMKilled` reason."""
        terminated = self._terminated(cid)
        return terminated is not None and terminated.reason == "OOMKilled"

    def _terminated(self, name: str) -> Any:
        """The container's `terminated` state, awaited a little (the kubelet reports the exit after it)."""
        with contextlib.suppress(Exception):
            for kind, pod in self._watch(name, EXIT_WAIT):
                state = _container_state(pod)
                if state and state.terminated:
                    return state.terminated
                if kind == "DELETED":
                    return None
        return None

    def containers(self) -> set[str]:
        """Names of the Pods this engine created and has not deleted yet."""
        with self._lock:
            return set(self._live)

    # -- egress --------------------------------------------------------------------------------------

    def _proxy(self, hosts: tuple[str, ...]) -> str:
        """The URL of the egress proxy allowing `hosts` (its Deployment, Service and policies made once)."""
        key = hosts_key(hosts)
        with self._proxy_lock:
            known = self._proxies.get(key)
            if known:
                return known
            clients = self._clients
            image = self.registry.push(self.settings.python_image)
            source = resources.files("runner.sandbox.container").joinpath("egress_proxy.py").read_text()
            # Clients are limited by the proxy's NetworkPolicy: the proxy itself serves any source address
            command = ["python3", "-c", source, str(EGRESS_PORT), "0.0.0.0/0", *hosts]
            self._ensure(clients, "network_policy", self.objects.egress_policy(key))
            self._ensure(clients, "network_policy", self.objects.proxy_policy(key))
            deployment = self._ensure(clients, "deployment", self.objects.proxy_deployment(key, image, command))
            service = self._ensure(clients, "service", self.objects.proxy_service(key))
            self._wait_ready(clients, deployment["metadata"]["name"], hosts)
            address = (service.get("spec") or {}).get("clusterIP")
            if not address:
                raise SandboxError(f"the egress proxy's Service for {', '.join(hosts)} has no cluster IP")
            url = f"http://{address}:{EGRESS_PORT}"  # an address: the tool Pod needs no DNS
            self._proxies[key] = url
            return url

    def _wait_ready(self, clients: _Clients, name: str, hosts: tuple[str, ...]) -> None:
        """Until the proxy's Deployment has a ready replica (its readiness probe connects to the port)."""
        timeout = self.settings.kubernetes.start_timeout_seconds
        deadline = time.monotonic() + timeout
        while True:
            deployment = clients.apps.read_namespaced_deployment(name, self.namespace)
            if deployment.status and (deployment.status.ready_replicas or 0) >= 1:
                return
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"the egress proxy for {', '.join(hosts)} (Deployment {name}) was not ready within {timeout:g} s "
                    "(sandbox.kubernetes.start_timeout_seconds)"
                )
            time.sleep(PROXY_POLL)

    @property
    def _clients(self) -> _Clients:
        self.api  # noqa: B018 - connects
        return self._client

    def _ensure(self, clients: _Clients, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object (one of ours existing already is kept); returns it as the API does."""
        from kubernetes.client.exceptions import ApiException

        create, read, _ = clients.methods(kind)
        try:
            return clients.dict(create(self.namespace, body))
        except ApiException as exc:
            if exc.status != 409:
                what = f"{body['kind']} {body['metadata']['name']}"
                raise SandboxError(f"cannot create {what}: {self.failure(exc)}") from None
        return clients.dict(read(body["metadata"]["name"], self.namespace))

    # -- cleanup and lifetime ----------------------------------------------------------------------

    def cleanup_stale(self) -> list[str]:
        """Delete the objects whose owner annotation names a runner process on this host that no longer runs.
        Runs once by itself when the engine is first used; returns every name deleted so far."""
        first_use = self._client is None
        self.api  # noqa: B018 - connects
        if not first_use:
            self._stale_removed += self._cleanup_stale(self._client)
        return list(self._stale_removed)  # a dead runner's build containers: the builder's first use removes them

    def _cleanup_stale(self, clients: _Clients) -> list[str]:
        removed = []
        for kind in _Clients.KINDS:
            _, _, listing = clients.methods(kind)
            with contextlib.suppress(Exception):
                for item in listing(self.namespace, label_selector=LABEL).items:
                    owner = (item.metadata.annotations or {}).get(LABEL_OWNER, "")
                    if owner and owner != self.owner and not owner_alive(owner):
                        with contextlib.suppress(Exception):
                            clients.delete(kind, item.metadata.name, self.namespace)
                            removed.append(item.metadata.name)
        return removed

    def close(self) -> None:
        """Delete every Pod, proxy and policy of this sandbox, wait (a bounded time) for the Pods to be gone,
        and close the client and the image builder."""
        self._closed = True
        if self._client is not None:
            for name in self.containers():
                self.remove(name)
            clients, selector = self._client, f"{LABEL_SANDBOX}={self.sandbox_id}"
            for kind in _Clients.KINDS:
                _, _, listing = clients.methods(kind)
                with contextlib.suppress(Exception):
                    for item in listing(self.namespace, label_selector=selector).items:
                        with contextlib.suppress(Exception):
                            clients.delete(kind, item.metadata.name, self.namespace)
            self._wait_gone(selector)
            with contextlib.suppress(Exception):
                self._client.api.close()
        self._builder.close()

    def _wait_gone(self, selector: str) -> None:
        deadline = time.monotonic() + GONE_WAIT
        with contextlib.suppress(Exception):
            while time.monotonic() < deadline:
                if not self._client.core.list_namespaced_pod(self.namespace, label_selector=selector).items:
                    return
                time.sleep(0.1)


class _Clients:
    """The API groups the engine uses, over one ApiClient, and their methods by kind."""

    KINDS = ("pod", "deployment", "service", "network_policy")

    def __init__(self, api: Any):
        from kubernetes import client

        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.networking = client.NetworkingV1Api(api)

    def attach(self, name: str, namespace: str) -> Any:
        """The attach session of Pod `name` (the client's WSClient).

        On an ApiClient of its own: the client's `stream()` swaps the `call_api` of the ApiClient it is given
        for the duration of the call, so other threads' requests on a shared one would go out as websockets."""
        from kubernetes import client
        from kubernetes.stream import stream

        api = client.ApiClient(self.api.configuration)
        try:
            return stream(
                client.CoreV1Api(api).connect_get_namespaced_pod_attach, name, namespace, container=CONTAINER,
                stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False, binary=True,
            )  # fmt: skip
        finally:
            api.close()  # its connection pool; the websocket is the session's own

    def methods(self, kind: str) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        """create, read and list of `kind` in a namespace."""
        group = {"pod": self.core, "service": self.core, "deployment": self.apps, "network_policy": self.networking}
        api = group[kind]
        return (
            getattr(api, f"create_namespaced_{kind}"),
            getattr(api, f"read_namespaced_{kind}"),
            getattr(api, f"list_namespaced_{kind}"),
        )

    def delete(self, kind: str, name: str, namespace: str) -> None:
        group = {"pod": self.core, "service": self.core, "deployment": self.apps, "network_policy": self.networking}
        options = {"grace_period_seconds": 0} if kind == "pod" else {"propagation_policy": "Background"}
        getattr(group[kind], f"delete_namespaced_{kind}")(name, namespace, **options)

    def dict(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else self.api.sanitize_for_serialization(obj)


def _container_state(pod: Any) -> Any:
    statuses = (pod.status and pod.status.container_statuses) or []
    return statuses[0].state if statuses else None


def _describe(pod: Any) -> str:
    """A Pod's state in a person's words: phase, and the container's reason and message."""
    parts = [f"phase {pod.status.phase if pod.status else 'unknown'}"]
    state = _container_state(pod)
    for detail in (state and (state.waiting or state.terminated)), pod.status:
        if detail is not None and getattr(detail, "reason", None):
            parts.append(f"{detail.reason}: {detail.message or ''}".rstrip(": "))
    return ", ".join(parts)


def _message(exc: Any) -> str:
    import json

    with contextlib.suppress(Exception):
        return str(json.loads(exc.body).get("message") or exc.body)
    return str(exc.body or exc.reason)
