"""The lab's control plane loops (scheduler, deployment/replicaset/daemonset, garbage collector,
namespace), written like kube-scheduler and kube-controller-manager: each reaches the API server
only over HTTP through the kubernetes client, with list + watch informers and work queues."""

from clusters.lab.controllers.events import EventRecorder
from clusters.lab.controllers.manager import ControllerManager

__all__ = ["ControllerManager", "EventRecorder"]
