"""Which lab program runs for a container image: the lab's image store.

The lab has no registry and no image layers, so an image reference names a program we wrote.
One table row per image repository keeps adding an image (CoreDNS, kube-proxy, the CNI agent,
the ingress controller) a one-line change. An image without a row fails the way a real pull
fails (``ErrImagePull`` then ``ImagePullBackOff``), so a typo in a manifest looks the same in
the lab as on kind.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Argv = tuple[str, ...]
ProgramBuilder = Callable[[Sequence[str], Sequence[str]], Argv]
"""(container.command, container.args) → the argv the lab runs."""


class ImagePullError(Exception):
    """The lab cannot run this image; ``str(err)`` is the containerd-style pull error."""


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference, normalised like containerd does (``docker.io/library/...``)."""

    repository: str
    tag: str
    digest: str

    @property
    def normalized(self) -> str:
        tagged = f"{self.repository}:{self.tag}" if self.tag else self.repository
        return f"{tagged}@{self.digest}" if self.digest else tagged

    @property
    def image_id(self) -> str:
        """The ``imageID`` kubelet reports: ``repo@sha256:…``; ours is derived from the name."""
        digest = self.digest or "sha256:" + hashlib.sha256(self.normalized.encode()).hexdigest()
        return f"{self.repository}@{digest}"


def parse_image(image: str) -> ImageRef:
    """Split and normalise ``image`` as the docker reference grammar does."""
    rest, _, digest = image.partition("@")
    name, tag = rest, ""
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1 :]
    first, _, remainder = name.partition("/")
    if not remainder:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    if not tag and not digest:
        tag = "latest"
    return ImageRef(repository=name, tag=tag, digest=digest)


def _lab_program(module: str, default: Sequence[str], entrypoint: str) -> ProgramBuilder:
    """A Python lab program run as ``python -m <module>``; ``entrypoint`` is the image's
    ENTRYPOINT path, dropped when a manifest repeats it in ``command`` (``/agnhost netexec``)."""

    def build(command: Sequence[str], args: Sequence[str]) -> Argv:
        words = list(command)
        if words and words[0] in (entrypoint, entrypoint.rsplit("/", 1)[-1]):
            words = words[1:]
        words += list(args)
        if not command and not args:
            words = list(default)
        return (sys.executable, "-m", module, *words)

    return build


def _agnhost_pause(command: Sequence[str], args: Sequence[str]) -> Argv:
    return (sys.executable, "-m", "clusters.lab.programs.agnhost", "pause")


IMAGES: dict[str, ProgramBuilder] = {
    "registry.k8s.io/e2e-test-images/agnhost": _lab_program(
        "clusters.lab.programs.agnhost", ["pause"], "/agnhost"
    ),
    "registry.k8s.io/pause": _agnhost_pause,
    "knetcheck.local/lab-cni-agent": _lab_program("clusters.lab.programs.cniagent", [], "/lab-cni-agent"),
    "registry.k8s.io/kube-proxy": _lab_program(
        "clusters.lab.programs.kubeproxy", [], "/usr/local/bin/kube-proxy"
    ),
    "registry.k8s.io/coredns/coredns": _lab_program("clusters.lab.programs.coredns", [], "/coredns"),
    "registry.k8s.io/ingress-nginx/controller": _lab_program(
        "clusters.lab.programs.ingress", [], "/nginx-ingress-controller"
    ),
}
"""Image repository (normalised, without tag) → program. Add a lab image here."""


def resolve(image: str, command: Sequence[str], args: Sequence[str]) -> Argv:
    """The argv for a container, or :class:`ImagePullError` naming the image and what we run."""
    ref = parse_image(image)
    builder = IMAGES.get(ref.repository)
    if builder is None:
        known = ", ".join(sorted(IMAGES))
        raise ImagePullError(
            f'failed to pull and unpack image "{ref.normalized}": the lab cannot run this image; '
            f"images it runs: {known}"
        )
    return builder(command, args)


def is_known(image: str) -> bool:
    return parse_image(image).repository in IMAGES


def command_argv(command: Sequence[str]) -> Argv:
    """An argv for ``exec`` (probes): ``/agnhost …`` runs the lab agnhost; anything else runs
    as a node binary (a documented lab difference: no image filesystem)."""
    if command and command[0] in ("/agnhost", "agnhost"):
        return (sys.executable, "-m", "clusters.lab.programs.agnhost", *command[1:])
    return tuple(command)
