"""How a cluster is obtained and reached.

Everything above this package (``suites``, ``faults``) talks to a cluster only through
:class:`clusters.handle.Cluster`; nothing above it may ask which provider made the cluster.
"""
