"""The lab kubelet: pods on a lab node, driven through the API server like a real kubelet.

``Kubelet(node, api_client, runtime, layout).start()``; the API server's log and proxy hook is
:class:`clusters.lab.kubelet.podio.LabPodIO`.
"""
