"""The stand-in API server answers the official client as the Kubernetes API reference says the real one does:
created objects get a uid, a resource version and a creation time; a second create is 409 AlreadyExists; a
missing object is 404 NotFound (a Status body); label selectors (=, !=, exists, !exists) filter lists; a watch
from a resource version replays what came after it; a Pod a `restricted` namespace refuses is 403 Forbidden;
a wrong token is 401. What the runner relies on, checked here apart from the runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.kube_standin import KubeStandin


@pytest.fixture(scope="module")
def standin(docker_api: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeStandin]:
    server = KubeStandin(docker_api, tmp_path_factory.mktemp("standin-api")).start()
    yield server
    server.stop()


def _core(kubeconfig: Path) -> client.CoreV1Api:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.CoreV1Api(client.ApiClient(configuration))


def _service(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}  # fmt: skip


def test_create_get_and_the_errors_of_a_second_create_and_a_missing_object(standin: KubeStandin):
    core = _core(standin.kubeconfig)
    created = core.create_namespaced_service(standin.namespace, _service("first"))
    assert created.metadata.uid and int(created.metadata.resource_version) > 0 and created.metadata.creation_timestamp
    assert created.spec.cluster_ip
    assert core.read_namespaced_service("first", standin.namespace).metadata.uid == created.metadata.uid
    with pytest.raises(ApiException) as again:
        core.create_namespaced_service(standin.namespace, _service("first"))
    assert again.value.status == 409 and json.loads(again.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_service("nothing", standin.namespace)
    body = json.loads(missing.value.body)
    assert missing.value.status == 404 and body["kind"] == "Status" and body["reason"] == "NotFound"
    assert body["details"] == {"name": "nothing", "kind": "services"}


def test_label_selectors_filter_lists(standin: KubeStandin):
    core = _core(standin.kubeconfig)
    core.create_namespaced_service(standin.namespace, _service("tier-a", tier="a", team="x"))
    core.create_namespaced_service(standin.namespace, _service("tier-b", tier="b"))

    def names(selector: str) -> set[str]:
        items = core.list_namespaced_service(standin.namespace, label_selector=selector).items
        return {item.metadata.name for item in items} & {"tier-a", "tier-b"}

    assert names("tier=a") == {"tier-a"} and names("tier==b") == {"tier-b"}
    assert names("tier!=a") == {"tier-b"} and names("team") == {"tier-a"} and names("!team") == {"tier-b"}
    assert names("tier,team=x") == {"tier-a"}


def test_a_watch_from_a_resource_version_replays_what_came_after_it(standin: KubeStandin):
    core = _core(standin.kubeconfig)
    version = core.list_namespaced_service(standin.namespace).metadata.resource_version
    core.create_namespaced_service(standin.namespace, _service("watched", watch="me"))
    core.delete_namespaced_service("watched", standin.namespace)
    events = watch.Watch().stream(core.list_namespaced_service, standin.namespace, label_selector="watch=me",
                                  resource_version=version, timeout_seconds=2)  # fmt: skip
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "watched"), ("DELETED", "watched")]


def test_a_pod_the_restricted_profile_forbids_is_refused(standin: KubeStandin):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"},
           "spec": {"containers": [{"name": "c", "image": "python:3.11-slim", "securityContext": {"privileged": True}}],
                    "volumes": [{"name": "host", "hostPath": {"path": "/"}}]}}  # fmt: skip
    with pytest.raises(ApiException) as refused:
        _core(standin.kubeconfig).create_namespaced_pod(standin.namespace, pod)
    message = json.loads(refused.value.body)["message"]
    assert refused.value.status == 403 and 'violates PodSecurity "restricted:latest"' in message
    assert "hostPath" in message and "privileged" in message and "runAsNonRoot" in message


def test_a_wrong_token_is_unauthorized(standin: KubeStandin, tmp_path: Path):
    kubeconfig = json.loads(standin.kubeconfig.read_text())
    kubeconfig["users"][0]["user"]["token"] = "wrong"
    (tmp_path / "kubeconfig").write_text(json.dumps(kubeconfig))
    with pytest.raises(ApiException) as refused:
        _core(tmp_path / "kubeconfig").list_namespaced_pod(standin.namespace)
    assert refused.value.status == 401
