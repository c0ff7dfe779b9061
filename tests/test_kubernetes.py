"""The Kubernetes backend (`sandbox.backend = "kubernetes"`), end to end through the official client.

Each scenario runs twice: against the stand-in API server (tests/kube_standin: the API at its HTTP and
websocket boundary, Pods run as real containers on the local Docker engine, images pulled by digest from a
local registry), and against a real cluster when POCKET_TEST_KUBECONFIG names one (skipped otherwise; see
docs/kubernetes.md for the one command that runs it on a machine with kind). The stand-in-only tests at the
end assert on exactly what the runner sent.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runner.invocation import Outcome
from runner.sandbox import Sandbox
from runner.settings import KubernetesSettings, SandboxSettings, ToolLimits
from tests.helpers import HELLO, REPO, TOOLS
from tests.kube_standin import V4, V5, KubeStandin, Registry

CLUSTER_VARIABLE = "POCKET_TEST_KUBECONFIG"
TOKEN = "xoxb-k8s-secret-0123456789abcdef"  # must reach the tool, and never any object of the cluster


@dataclass
class Cluster:
    """Where the scenarios run: its kubeconfig, namespace and the registry its nodes pull from."""

    kubeconfig: Path
    namespace: str
    registry: str
    standin: KubeStandin | None = None

    def settings(self, **overrides: Any) -> SandboxSettings:
        kubernetes = KubernetesSettings(**{"namespace": self.namespace, "kubeconfig": self.kubeconfig,
                                           **overrides.pop("kubernetes", {})})  # fmt: skip
        return SandboxSettings(backend="kubernetes", registry=self.registry, kubernetes=kubernetes, **overrides)

    def list(self, kind: str, selector: str = "pocket-runner=1") -> list[dict[str, Any]]:
        """Objects of `kind` (pods, events, services, deployments, network_policies) in the namespace, as JSON."""
        from kubernetes import client, config

        api = client.ApiClient(configuration=_configuration(self.kubeconfig, config, client))
        group = {"deployment": client.AppsV1Api, "network_policy": client.NetworkingV1Api}.get(kind, client.CoreV1Api)
        listing = getattr(group(api), f"list_namespaced_{kind}")
        items = listing(self.namespace, label_selector=selector).items
        return [api.sanitize_for_serialization(item) for item in items]


def _configuration(kubeconfig: Path, config: Any, client: Any) -> Any:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return configuration


@pytest.fixture(scope="module")
def standin(docker_api: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeStandin]:
    server = KubeStandin(docker_api, tmp_path_factory.mktemp("standin")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    local = Registry(tmp_path_factory.mktemp("registry")).start()
    yield local
    local.stop()


@pytest.fixture(scope="module", params=["standin", "cluster"])
def cluster(request: pytest.FixtureRequest) -> Cluster:
    if request.param == "cluster":
        kubeconfig = os.environ.get(CLUSTER_VARIABLE)
        if not kubeconfig:
            pytest.skip(f"no Kubernetes cluster can run here: set {CLUSTER_VARIABLE} (and POCKET_TEST_REGISTRY) "
                        "to run these scenarios on one, e.g. kind (docs/kubernetes.md)")  # fmt: skip
        registry = os.environ.get("POCKET_TEST_REGISTRY")
        if not registry:
            pytest.fail(f"{CLUSTER_VARIABLE} is set: POCKET_TEST_REGISTRY must name the registry its nodes pull from")
        return Cluster(Path(kubeconfig), os.environ.get("POCKET_TEST_NAMESPACE", "default"), registry)
    standin = request.getfixturevalue("standin")
    return Cluster(standin.kubeconfig, standin.namespace, request.getfixturevalue("registry").address, standin)


@pytest.fixture(scope="module")
def box(cluster: Cluster) -> Iterator[Sandbox]:
    """One sandbox per cluster for the scenarios (images built and pushed once), a pool of one Pod per tool."""
    limits = {"sleeper": ToolLimits(timeout_seconds=3), "printer": ToolLimits(output_limit_bytes=64 * 1024)}
    sandbox = Sandbox(cluster.settings(pool_size=1, tools=limits))
    yield sandbox
    sandbox.close()


def _manifest(name: str) -> Any:
    from runner.manifest import load_manifest

    return load_manifest(HELLO if name == "hello" else TOOLS / name)


def _wait_for_pool(box: Sandbox, tool: str, size: int = 1) -> list[str]:
    """The names of the Pods waiting in the tool's pool, once there are `size`."""
    (pool,) = box._pools.of_tool(tool)
    deadline = time.monotonic() + 120
    while len(pool.idle) < size and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pool.idle) >= size, "the pool did not fill in 120 s"
    return [started.id for started in pool.idle]


def _wait_gone(cluster: Cluster, names: set[str], timeout: float = 30) -> set[str]:
    """Which of the Pods `names` still exist after they had `timeout` seconds to go."""
    deadline = time.monotonic() + timeout
    while (left := names & {p["metadata"]["name"] for p in cluster.list("pod")}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


# -- the scenarios, on the stand-in and on a real cluster --------------------------------------------------


def test_a_call_runs_in_a_pod_and_answers(box: Sandbox, cluster: Cluster):
    result = box.run(_manifest("hello"), {"name": "Kubernetes"}, {})
    assert result.outcome is Outcome.OK, result
    assert result.value == {"greeting": "Hello, Kubernetes!"}


def test_the_token_reaches_the_tool_on_the_attach_stream_and_no_object_of_the_cluster(box: Sandbox, cluster: Cluster):
    result = box.run(_manifest("dumpenv"), {}, {"SLACK_BOT_TOKEN": TOKEN})
    assert result.outcome is Outcome.OK, result
    assert result.value["env"]["SLACK_BOT_TOKEN"] == TOKEN
    assert result.value["uid"] == 65534 and result.value["status"]["CapEff"] == "0000000000000000"
    assert result.value["no_new_privs"] == 1
    seen = [cluster.list(kind, "") for kind in ("pod", "event", "service", "deployment", "network_policy")]
    if cluster.standin is not None:
        seen.append(cluster.standin.sent)  # every body the runner sent, deleted objects' too
    assert TOKEN not in json.dumps(seen)


def test_each_call_gets_a_fresh_pod_also_when_calls_run_at_once(box: Sandbox, cluster: Cluster):
    manifest = _manifest("hello")
    with concurrent.futures.ThreadPoolExecutor(8) as threads:
        results = list(threads.map(lambda i: box.run(manifest, {"name": f"n{i}"}, {}), range(8)))
    assert [r.value for r in results] == [{"greeting": f"Hello, n{i}!"} for i in range(8)], results
    if cluster.standin is not None:  # and the stand-in refuses a second attach of a Pod (stdinOnce)
        attached = cluster.standin.attached
        assert len(attached) == len(set(attached)), attached


def test_a_timeout_answers_within_a_second_of_the_limit_and_deletes_the_pod(box: Sandbox, cluster: Cluster):
    manifest = _manifest("sleeper")
    box.prepare(manifest)
    (waiting,) = _wait_for_pool(box, "sleeper")
    started = time.monotonic()
    result = box.run(manifest, {}, {})
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.TOOL_FAILED and result.error == "timed out after 3 s", result
    assert 3.0 <= elapsed < 4.0, elapsed
    assert "going to sleep" in result.stdout
    assert not _wait_gone(cluster, {waiting}), f"the timed-out Pod {waiting} was not deleted"


def test_a_tool_over_its_memory_limit_is_reported_out_of_memory(box: Sandbox, cluster: Cluster):
    result = box.run(_manifest("memhog"), {}, {})
    assert result.outcome is Outcome.TOOL_FAILED
    assert result.error == "killed: out of memory (limit 64 MiB)", result


def test_output_past_the_cap_is_cut_and_a_flood_stopped(box: Sandbox, cluster: Cluster):
    result = box.run(_manifest("printer"), {}, {})
    assert result.outcome is Outcome.TOOL_FAILED and result.truncated, result
    assert result.error.startswith("the tool printed more than 17 times the output limit (65536 bytes)"), result
    assert len(result.value or "") <= 64 * 1024


def test_a_tool_without_network_reaches_nothing_under_a_deny_all_policy(box: Sandbox, cluster: Cluster):
    result = box.run(_manifest("network"), {}, {})
    assert result.outcome is Outcome.OK, result
    assert result.value["resolved"] is not True, result  # under the policy not even DNS gets out
    (policy,) = [p for p in cluster.list("network_policy") if p["metadata"]["name"] == f"pocket-{box.id}-isolate"]
    assert policy["spec"]["podSelector"]["matchLabels"]["pocket-runner.egress"] == "none"
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and policy["spec"]["egress"] == []


def test_a_dead_runners_pods_are_deleted_by_the_next_runner(cluster: Cluster, tmp_path: Path):
    script = (
        "import sys, time\n"
        "from runner.manifest import load_manifest\nfrom runner.sandbox import Sandbox\n"
        "from runner.settings import SandboxSettings\n"
        "box = Sandbox(SandboxSettings.model_validate_json(sys.argv[1]))\n"
        "box.prepare(load_manifest(sys.argv[2]))\n"
        "(pool,) = box._pools.of_tool('hello')\n"
        "while not pool.idle: time.sleep(0.05)\n"
        "print(pool.idle[0].id, flush=True)\ntime.sleep(600)\n"
    )
    settings = cluster.settings(pool_size=1).model_dump_json()
    runner = subprocess.Popen([sys.executable, "-c", script, settings, str(HELLO)], stdout=subprocess.PIPE,
                              cwd=REPO, text=True)  # fmt: skip
    try:
        left = runner.stdout.readline().strip()
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    assert left in {p["metadata"]["name"] for p in cluster.list("pod")}, "the dead runner left no Pod to clean"
    with Sandbox(cluster.settings(pool_size=0)) as later:
        removed = later.cleanup_stale()
    assert left in removed
    assert not _wait_gone(cluster, {left})


def test_close_removes_every_pod_and_policy_of_the_sandbox(cluster: Cluster):
    box = Sandbox(cluster.settings(pool_size=2))
    box.prepare(_manifest("hello"))
    pods = set(_wait_for_pool(box, "hello", 2))
    assert box.run(_manifest("hello"), {"name": "x"}, {}).ok
    selector = f"pocket-runner.sandbox={box.id}"
    assert cluster.list("network_policy", selector)
    box.close()
    assert not cluster.list("pod", selector) and not _wait_gone(cluster, pods, timeout=0), "Pods left"
    assert not cluster.list("network_policy", selector)


# -- what the runner sends, seen by the stand-in -----------------------------------------------------------


@pytest.fixture(scope="module")
def standin_cluster(standin: KubeStandin, registry: Registry) -> Cluster:
    return Cluster(standin.kubeconfig, standin.namespace, registry.address, standin)


def test_the_pod_spec_is_hardened_and_pulls_by_digest(standin_cluster: Cluster):
    with Sandbox(standin_cluster.settings(pool_size=0)) as box:
        assert box.run(_manifest("hello"), {"name": "spec"}, {"SECRET_NAME": TOKEN}).ok
        pod = standin_cluster.standin.sent_pods()[-1]
        assert pod["metadata"]["labels"]["pocket-runner.sandbox"] == box.id
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert spec["restartPolicy"] == "Never" and "runtimeClassName" not in spec
    assert not any("hostPath" in volume for volume in spec["volumes"])
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                                       "fsGroup": 65534, "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip
    assert container["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    assert spec["volumes"] == [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert container["resources"]["limits"] == {"memory": "512Mi", "cpu": "1000m"}
    assert container["env"] == [{"name": "HOME", "value": "/tmp"}]  # the call's environment is not here
    assert container["stdin"] is True and container["stdinOnce"] is True and container["tty"] is False
    registry = standin_cluster.registry
    assert container["image"].startswith(f"{registry}/pocket-tool/hello@sha256:"), container["image"]
    content_hash = box._engine.images.image(_manifest("hello")).rsplit(":", 1)[1]  # the local build's tag
    with urllib.request.urlopen(f"http://{registry}/v2/pocket-tool/hello/tags/list") as answer:
        assert content_hash in json.load(answer)["tags"]
    assert set(pod["metadata"]["annotations"]) == {"pocket-runner.owner"}
    assert TOKEN not in json.dumps(standin_cluster.standin.sent)


def test_the_tool_really_runs_read_only_except_tmp(standin_cluster: Cluster):
    with Sandbox(standin_cluster.settings(pool_size=0)) as box:
        result = box.run(_manifest("writer"), {}, {})
    assert result.outcome is Outcome.OK, result
    assert result.value["/tmp/ok.txt"] == "written"
    assert all(result.value[path] != "written" for path in ("/tool/owned.txt", "/etc/owned.txt", "/owned.txt"))


def test_a_runtime_class_the_cluster_has_runs_the_pod_under_its_runtime(docker_api: Any, registry: Registry,
                                                                       tmp_path: Path):  # fmt: skip
    if "runsc" not in (docker_api.info().get("Runtimes") or {}):
        pytest.fail("the Docker engine has no runtime runsc: run `bash scripts/setup.sh --gvisor`")
    server = KubeStandin(docker_api, tmp_path, runtime_classes={"gvisor": "runsc"}).start()
    try:
        cluster = Cluster(server.kubeconfig, server.namespace, registry.address, server)
        with Sandbox(cluster.settings(pool_size=0, kubernetes={"runtime_class_name": "gvisor"})) as box:
            result = box.run(_manifest("network"), {}, {})
    finally:
        server.stop()
    assert server.sent_pods()[-1]["spec"]["runtimeClassName"] == "gvisor"
    assert result.ok, result
    assert result.value["resolved"] is not True


def test_runtime_class_pull_secrets_and_runner_pod_owner_are_configurable(standin_cluster: Cluster):
    uid = "0b6a2f4e-1c1d-4f6e-9a53-3f7d2b0c9e11"
    kubernetes = {"runtime_class_name": "gvisor", "image_pull_secrets": ("registry-login",),
                  "runner_pod_name": "agent-7d9f", "runner_pod_uid": uid}  # fmt: skip
    with Sandbox(standin_cluster.settings(pool_size=0, kubernetes=kubernetes)) as box:
        result = box.run(_manifest("hello"), {"name": "x"}, {})
    pod = standin_cluster.standin.sent_pods()[-1]
    assert pod["spec"]["runtimeClassName"] == "gvisor"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry-login"}]
    owner = {"apiVersion": "v1", "kind": "Pod", "name": "agent-7d9f", "uid": uid}
    assert pod["metadata"]["ownerReferences"] == [owner]
    assert result.outcome is Outcome.TOOL_FAILED
    assert 'RuntimeClass "gvisor" not found' in result.error and "403" in result.error, result.error


@pytest.mark.parametrize("protocol", [V5, V4])
def test_both_channel_protocols_carry_a_call(docker_api: Any, registry: Registry, tmp_path: Path, protocol: str):
    server = KubeStandin(docker_api, tmp_path, protocols=(protocol,)).start()
    try:
        cluster = Cluster(server.kubeconfig, server.namespace, registry.address, server)
        with Sandbox(cluster.settings(pool_size=0, timeout_seconds=20)) as box:
            result = box.run(_manifest("hello"), {"name": protocol}, {})
    finally:
        server.stop()
    assert server.attach_protocols == [protocol]
    assert result.outcome is Outcome.OK and result.value == {"greeting": f"Hello, {protocol}!"}, result


def test_the_egress_proxy_is_a_deployment_and_service_the_tool_alone_may_reach(standin_cluster: Cluster):
    with Sandbox(standin_cluster.settings(pool_size=0, timeout_seconds=30)) as box:
        result = box.run(_manifest("egress"), {}, {})
        pod = standin_cluster.standin.sent_pods()[-1]
        key = pod["metadata"]["labels"]["pocket-runner.egress"]
        selector = f"pocket-runner.sandbox={box.id}"
        (deployment,) = standin_cluster.list("deployment", selector)
        (service,) = standin_cluster.list("service", selector)
        policies = {p["metadata"]["name"]: p["spec"] for p in standin_cluster.list("network_policy", selector)}
    assert not standin_cluster.list("deployment", selector) and not standin_cluster.list("service", selector)
    proxy_labels = {"pocket-runner.sandbox": box.id, "pocket-runner.proxy": key}
    assert deployment["spec"]["selector"]["matchLabels"] == proxy_labels
    assert service["spec"]["selector"] == proxy_labels and service["spec"]["ports"][0]["port"] == 3128
    proxy = f"http://{service['spec']['clusterIP']}:3128"
    assert {"name": "HTTPS_PROXY", "value": proxy} in pod["spec"]["containers"][0]["env"]
    egress = policies[f"pocket-{box.id}-egress-{key}"]
    assert egress["egress"] == [{"to": [{"podSelector": {"matchLabels": proxy_labels}}],
                                 "ports": [{"protocol": "TCP", "port": 3128}]}]  # fmt: skip
    ingress = policies[f"pocket-{box.id}-proxy-{key}"]["ingress"][0]
    assert ingress["from"] == [{"podSelector": {"matchLabels": {"pocket-runner.sandbox": box.id,
                                                                "pocket-runner.egress": key}}}]  # fmt: skip
    # and the proxy, running as the Deployment's Pod, is the tool's only way out (as on the Docker backend)
    assert result.ok, result
    let_through = ("HTTP/1.1 200 Connection established", "HTTP/1.1 403 Forbidden pocket egress proxy: pypi.org "
                   "resolves only to local addresses")  # fmt: skip
    assert result.value["allowed"] in let_through and result.value["after_flood"] in let_through, result.value
    assert result.value["denied"] == (
        "HTTP/1.1 403 Forbidden pocket egress proxy: example.com:443 is not in the tool's allow-list"
    )
    assert (
        result.value["private"]
        == "HTTP/1.1 403 Forbidden pocket egress proxy: localhost resolves only to local addresses"
    )
    assert result.value["dns"] == "gaierror" and result.value["flood"] == "HTTP/1.1 503 Service Unavailable"
    assert "reachable" not in (result.value["gateway"], result.value["docker0"]), result.value


def test_without_a_registry_the_call_says_what_to_set(standin_cluster: Cluster):
    settings = standin_cluster.settings(pool_size=0).model_copy(update={"registry": None})
    with Sandbox(settings) as box:
        result = box.run(_manifest("hello"), {"name": "x"}, {})
    assert result.outcome is Outcome.TOOL_FAILED
    assert "needs sandbox.registry" in result.error, result.error


def test_a_prebuilt_image_reference_is_pinned_to_its_digest(standin_cluster: Cluster, docker_api: Any):
    with Sandbox(standin_cluster.settings(pool_size=0)) as box:
        built = box.image(_manifest("hello"))  # pushed by digest
    repository, digest = built.split("@")
    tagged = f"{repository}:prebuilt"
    docker_api.tag(built, repository, "prebuilt")
    for _ in docker_api.push(repository, tag="prebuilt", stream=True, decode=True):
        pass
    settings = standin_cluster.settings(pool_size=0, kubernetes={"images": {"hello": tagged}})
    with Sandbox(settings) as box:
        assert box.image(_manifest("hello")) == f"{repository}@{digest}"
        assert box.run(_manifest("hello"), {"name": "prebuilt"}, {}).ok
    assert standin_cluster.standin.sent_pods()[-1]["spec"]["containers"][0]["image"] == f"{repository}@{digest}"


def test_a_pod_that_cannot_pull_its_image_fails_the_call_at_once_saying_why(standin_cluster: Cluster):
    missing = f"{standin_cluster.registry}/pocket-tool/nothing@sha256:{'0' * 64}"
    settings = standin_cluster.settings(pool_size=0, kubernetes={"images": {"hello": missing}})
    with Sandbox(settings) as box:
        result = box.run(_manifest("hello"), {"name": "x"}, {})
    assert result.outcome is Outcome.TOOL_FAILED
    assert "cannot start" in result.error and "ErrImagePull" in result.error and missing in result.error, result
    assert not standin_cluster.list("pod", f"pocket-runner.sandbox={box.id}")


def test_warm_mode_serves_calls_from_a_long_lived_pod(standin_cluster: Cluster):
    with Sandbox(standin_cluster.settings(pool_size=0, warm_tools=("dumpenv",))) as box:
        first = box.run(_manifest("dumpenv"), {}, {"SLACK_BOT_TOKEN": TOKEN})
        second = box.run(_manifest("dumpenv"), {}, {"SLACK_BOT_TOKEN": TOKEN + "2"})
        pods = standin_cluster.list("pod", f"pocket-runner.sandbox={box.id},pocket-runner.mode=warm")
    assert first.ok and second.ok, (first, second)
    assert first.value["env"]["SLACK_BOT_TOKEN"] == TOKEN and second.value["env"]["SLACK_BOT_TOKEN"] == TOKEN + "2"
    assert len(pods) == 1
    assert TOKEN not in json.dumps(standin_cluster.standin.sent)


def test_a_cluster_that_refuses_the_runners_credentials_is_a_clear_error(standin_cluster: Cluster, tmp_path: Path):
    kubeconfig = json.loads(standin_cluster.kubeconfig.read_text())
    kubeconfig["users"][0]["user"]["token"] = "not-the-token"
    wrong = tmp_path / "kubeconfig"
    wrong.write_text(json.dumps(kubeconfig))
    settings = standin_cluster.settings(pool_size=0, kubernetes={"kubeconfig": wrong})
    with Sandbox(settings) as box:
        result = box.run(_manifest("hello"), {"name": "x"}, {})
    assert result.outcome is Outcome.TOOL_FAILED
    assert result.error == "the Kubernetes API refused: 401 Unauthorized: Unauthorized", result.error
    assert "not-the-token" not in result.error


def test_an_api_server_that_does_not_answer_is_named_in_the_error(standin_cluster: Cluster, tmp_path: Path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        server = f"http://127.0.0.1:{probe.getsockname()[1]}"
    kubeconfig = json.loads(standin_cluster.kubeconfig.read_text())
    kubeconfig["clusters"][0]["cluster"]["server"] = server
    (tmp_path / "kubeconfig").write_text(json.dumps(kubeconfig))
    settings = standin_cluster.settings(pool_size=0, kubernetes={"kubeconfig": tmp_path / "kubeconfig"})
    with Sandbox(settings) as box:
        result = box.run(_manifest("hello"), {"name": "x"}, {})
    assert result.outcome is Outcome.TOOL_FAILED
    assert result.error.startswith(f"the Kubernetes API at {server} does not answer"), result.error
