"""The embedded lab: a Kubernetes API on loopback with a real Linux data plane.

Nodes and pods are network namespaces the lab creates (all named with :data:`layout.PREFIX`),
wired by the real CNI plugin binaries; the root namespace never gets a route to lab addresses.
"""
