"""A stand-in Kubernetes API server for the tests of the Kubernetes backend (no cluster can run here): the
API at its HTTP and websocket boundary (`server`), objects and watches (`store`), Pods run as real hardened
containers on the local Docker engine (`pods`), and a local image registry (`registry`)."""

from tests.kube_standin.registry import Registry
from tests.kube_standin.server import V4, V5, KubeStandin

__all__ = ["V4", "V5", "KubeStandin", "Registry"]
