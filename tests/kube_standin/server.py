"""The stand-in's HTTP and websocket face: the paths, verbs, bodies and errors of the Kubernetes API for the
objects the runner uses, served by uvicorn on 127.0.0.1 with a bearer token, and a kubeconfig pointing at it.

- `/api/v1/namespaces/NS/{pods,services,events}`, `/apis/apps/v1/namespaces/NS/deployments`,
  `/apis/networking.k8s.io/v1/namespaces/NS/networkpolicies`: create (POST), get, list (labelSelector,
  fieldSelector, limit), delete, and watch (`?watch=true`: one JSON event per line, from `resourceVersion`,
  ending after `timeoutSeconds`), as the API reference describes them.
- `/api/v1/namespaces/NS/pods/NAME/attach`: the websocket attach subresource, `v5.channel.k8s.io` and
  `v4.channel.k8s.io` (which the stand-in offers is configurable, so both paths are tested): one channel byte
  per message, stdin relayed to the container, stdout and stderr back, 255 closing stdin on v5, a Status on
  the error channel when the stream ends, and the end of the session closing stdin (`stdinOnce`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
import socket
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.kube_standin.pods import Node
from tests.kube_standin.store import ApiError, Store, Watcher, now, parse_selector, status

V4, V5 = "v4.channel.k8s.io", "v5.channel.k8s.io"
KINDS = {"pods": "Pod", "services": "Service", "events": "Event", "deployments": "Deployment",
         "networkpolicies": "NetworkPolicy"}  # fmt: skip
GROUPS = {"pods": "v1", "services": "v1", "events": "v1", "deployments": "apps/v1",
          "networkpolicies": "networking.k8s.io/v1"}  # fmt: skip
SERVICE_RANGE = ipaddress.ip_network("10.96.0.0/16")


class KubeStandin:
    """A stand-in API server with one node (the local Docker engine). `start()`, then use `kubeconfig`."""

    def __init__(self, docker_api: Any, folder: Path, *, protocols: tuple[str, ...] = (V5, V4),
                 runtime_classes: dict[str, str] | None = None, namespace: str = "pocket"):  # fmt: skip
        self.id = uuid.uuid4().hex[:8]
        self.store = Store()
        self.node = Node(self.store, docker_api, self.id, runtime_classes or {})
        self.folder = folder
        self.protocols = protocols
        self.namespace = namespace
        self.token = secrets.token_urlsafe(24)
        self.sent: list[dict[str, Any]] = []  # every object body the client sent, as it sent it
        self.attach_protocols: list[str] = []  # the subprotocol of each attach session
        self.attached: list[str] = []  # the Pod of each attach session
        self.requests: list[tuple[str, str]] = []  # (method, path) of each request
        self._services = iter(SERVICE_RANGE.hosts())
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.kubeconfig = folder / "kubeconfig"

    # -- lifetime ------------------------------------------------------------------------------------

    def start(self) -> KubeStandin:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app(), log_level="warning", ws="websockets-sansio", lifespan="off",
                                ws_ping_interval=None)  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stand-in API server did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "runner", "user": {"token": self.token}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "runner",
                                                         "namespace": self.namespace}}],
        }))  # fmt: skip
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.node.close()

    # -- what tests look at ---------------------------------------------------------------------------

    def objects(self, resource: str) -> list[dict[str, Any]]:
        return self.store.list(resource, self.namespace)[0]

    def sent_pods(self) -> list[dict[str, Any]]:
        return [body for body in self.sent if body.get("kind") == "Pod"]

    # -- the API ---------------------------------------------------------------------------------------

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.routing import Route, WebSocketRoute

        collection, item = ["GET", "POST"], ["GET", "DELETE"]
        return Starlette(routes=[
            Route("/version", self.version),
            WebSocketRoute("/api/v1/namespaces/{namespace}/pods/{name}/attach", self.attach),
            Route("/api/v1/namespaces/{namespace}/{resource}", self.collection, methods=collection),
            Route("/api/v1/namespaces/{namespace}/{resource}/{name}", self.item, methods=item),
            Route("/apis/{group}/{version}/namespaces/{namespace}/{resource}", self.collection, methods=collection),
            Route("/apis/{group}/{version}/namespaces/{namespace}/{resource}/{name}", self.item, methods=item),
        ])  # fmt: skip

    def _authorized(self, headers: Any) -> bool:
        return secrets.compare_digest(headers.get("authorization", ""), f"Bearer {self.token}")

    async def version(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse({"major": "1", "minor": "33", "gitVersion": "v1.33.0-pocket-standin"})

    async def collection(self, request: Any) -> Any:
        return await self._answer(request, self._collection)

    async def item(self, request: Any) -> Any:
        return await self._answer(request, self._item)

    async def _answer(self, request: Any, handler: Any) -> Any:
        from starlette.responses import JSONResponse

        self.requests.append((request.method, request.url.path))
        if not self._authorized(request.headers):
            return JSONResponse(status(401, "Unauthorized", "Unauthorized"), status_code=401)
        resource = request.path_params["resource"]
        if resource not in KINDS:
            return JSONResponse(status(404, "NotFound", "the server could not find the requested resource"), 404)
        try:
            return await handler(request, resource, request.path_params["namespace"])
        except ApiError as exc:
            return JSONResponse(exc.body, status_code=exc.code)

    async def _collection(self, request: Any, resource: str, namespace: str) -> Any:
        from starlette.responses import JSONResponse, StreamingResponse

        query = request.query_params
        if request.method == "POST":
            body = await request.json()
            self.sent.append(json.loads(json.dumps(body)))
            if body.get("kind") != KINDS[resource]:
                raise ApiError(400, "BadRequest", f"the body's kind {body.get('kind')!r} is not {KINDS[resource]}")
            await self._admit(resource, namespace, body)
            created = self.store.create(resource, namespace, body)
            if resource == "pods":
                self.node.start(namespace, created["metadata"]["name"])
            return JSONResponse(created, status_code=201)
        if query.get("watch") in ("true", "1", "True"):
            return StreamingResponse(self._watch(request, resource, namespace), media_type="application/json")
        items, version = self.store.list(resource, namespace, query.get("labelSelector", ""),
                                         query.get("fieldSelector", ""))  # fmt: skip
        if query.get("limit"):
            items = items[: int(query["limit"])]
        return JSONResponse({"kind": f"{KINDS[resource]}List", "apiVersion": GROUPS[resource],
                             "metadata": {"resourceVersion": version}, "items": items})  # fmt: skip

    async def _admit(self, resource: str, namespace: str, body: dict[str, Any]) -> None:
        from starlette.concurrency import run_in_threadpool

        if resource == "pods":
            self.node.admit(namespace, body)
        elif resource == "services":
            # A Deployment's Pod is the Service's address here: no kube-proxy translates a virtual one
            address = self.node.service_address(namespace, body["spec"].get("selector") or {})
            body["spec"]["clusterIP"] = address or str(next(self._services))
            body["spec"]["clusterIPs"] = [body["spec"]["clusterIP"]]
        elif resource == "deployments":
            # No controllers: the one replica runs now, before the Deployment is returned
            self.node.admit(namespace, {"metadata": body["metadata"], "spec": body["spec"]["template"]["spec"]})
            body["status"] = await run_in_threadpool(self.node.run_deployment, namespace, body)

    async def _watch(self, request: Any, resource: str, namespace: str) -> AsyncIterator[bytes]:
        query = request.query_params
        watcher = Watcher(resource, namespace, parse_selector(query.get("labelSelector", "")),
                          parse_selector(query.get("fieldSelector", "")), asyncio.get_running_loop())  # fmt: skip
        self.store.watch(watcher, query.get("resourceVersion") or None)
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        try:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), left)
                except TimeoutError:
                    break
                yield json.dumps(event).encode() + b"\n"
        finally:
            self.store.unwatch(watcher)

    async def _item(self, request: Any, resource: str, namespace: str) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        name = request.path_params["name"]
        if request.method == "GET":
            return JSONResponse(self.store.get(resource, namespace, name))
        if resource != "pods":
            if resource == "deployments":
                await run_in_threadpool(self.node.stop_deployment, namespace, name)
            removed = self.store.remove(resource, namespace, name)
            if removed is None:
                raise ApiError(404, "NotFound", f'{resource} "{name}" not found', name=name, kind=resource)
            return JSONResponse(removed)

        def deleting(pod: dict[str, Any]) -> None:
            pod["metadata"].setdefault("deletionTimestamp", now())
            pod["metadata"]["deletionGracePeriodSeconds"] = int(request.query_params.get("gracePeriodSeconds") or 30)

        if not self.store.update(resource, namespace, name, deleting):
            raise ApiError(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
        self.node.delete(namespace, name)
        return JSONResponse(self.store.get(resource, namespace, name) if self._exists(namespace, name) else {})

    def _exists(self, namespace: str, name: str) -> bool:
        try:
            self.store.get("pods", namespace, name)
            return True
        except ApiError:
            return False

    def _containers(self, namespace: str, name: str) -> set[str]:
        """The names an attach may ask for: the Pod's containers, or none named when it has only one."""
        try:
            names = {c["name"] for c in self.store.get("pods", namespace, name)["spec"]["containers"]}
        except ApiError:
            return set()
        return names | ({""} if len(names) == 1 else set())

    # -- attach -----------------------------------------------------------------------------------------

    async def attach(self, ws: Any) -> None:
        from starlette.responses import JSONResponse

        self.requests.append(("GET", ws.url.path))
        namespace, name = ws.path_params["namespace"], ws.path_params["name"]
        offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
        chosen = next((p for p in self.protocols if p in offered), None)
        record = self.node.record(namespace, name)
        denial = None
        if not self._authorized(ws.headers):
            denial = status(401, "Unauthorized", "Unauthorized")
        elif record is None or record.sock is None or record.deleted:
            denial = status(400, "BadRequest", f'container "tool" in pod "{name}" is waiting to start or gone')
        elif chosen is None:
            denial = status(400, "BadRequest", f"none of the offered subprotocols {offered} is served")
        elif ws.query_params.get("container", "") not in self._containers(namespace, name):
            container = ws.query_params.get("container", "")
            denial = status(400, "BadRequest", f"container {container} is not valid for pod {name}")
        elif ws.query_params.get("stdin", "").lower() not in ("true", "1"):
            denial = status(400, "BadRequest", "this stand-in serves attach sessions with stdin only")
        elif record.attached:
            denial = status(400, "BadRequest", f'pod "{name}": stdin was attached once already (stdinOnce)')
        if denial is not None:
            await ws.send_denial_response(JSONResponse(denial, status_code=denial["code"]))
            return
        record.attached = True
        self.attach_protocols.append(chosen)
        self.attached.append(name)
        await ws.accept(subprotocol=chosen)
        sock = record.sock
        sock.setblocking(False)
        loop = asyncio.get_running_loop()

        async def output() -> None:
            pending = bytearray()
            with contextlib.suppress(Exception):
                while chunk := await loop.sock_recv(sock, 65536):
                    pending += chunk
                    while len(pending) >= 8:
                        kind, size = struct.unpack_from(">BxxxL", pending)
                        if len(pending) < 8 + size:
                            break
                        await ws.send_bytes(bytes([kind]) + bytes(pending[8 : 8 + size]))
                        del pending[: 8 + size]

        async def stdin() -> None:
            with contextlib.suppress(Exception):
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    data = message.get("bytes") or (message.get("text") or "").encode()
                    if data[:1] == b"\x00":
                        await loop.sock_sendall(sock, data[1:])
                    elif data[:2] == b"\xff\x00" and chosen == V5:
                        sock.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)  # stdinOnce: the end of the session closes stdin

        reader, writer = asyncio.create_task(output()), asyncio.create_task(stdin())
        await asyncio.wait([reader, writer], return_when=asyncio.FIRST_COMPLETED)
        if writer.done():  # the client left: nothing more to send it
            reader.cancel()
            return
        with contextlib.suppress(Exception):  # the kubelet's attach ends with a Success Status
            await ws.send_bytes(b"\x03" + json.dumps({"metadata": {}, "status": "Success"}).encode())
            await ws.close()
        writer.cancel()
