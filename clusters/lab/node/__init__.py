"""A lab node's data plane: its network namespace on the underlay, its file tree seen at the real
paths, and the containerd role (CNI config selection with containerd's reload rules, CNI ADD/DEL
with the real plugin binaries)."""
