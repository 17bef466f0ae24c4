"""Getting a container's image, with the kubelet image manager's events and pull back-off.

The lab has no registry (images.py maps a reference to a lab program), yet an image it cannot run
must fail the way it fails on kind, because people and the doctor read the result: ``Pulling``,
``Failed``/``ErrImagePull``, then ``BackOff``/``ImagePullBackOff`` on the kubelet's schedule,
``ErrImageNeverPull`` for pull policy Never, and the "already present" event otherwise.
"""

from __future__ import annotations

from clusters.lab.controllers.events import NORMAL, WARNING
from clusters.lab.kubelet import images
from clusters.lab.kubelet.backoff import Backoff
from clusters.lab.kubelet.containerstate import Container
from clusters.lab.kubelet.podscope import PodScope
from clusters.lab.kubelet.status import Waiting


class ImagePuller:
    def __init__(self, scope: PodScope) -> None:
        self.scope = scope
        self.backoff = Backoff(scope.ctx.config.image_backoff)
        """Per container name, like the kubelet's per-image back-off."""

    def pull(self, c: Container, now: float) -> bool:
        """Image handling with the kubelet's events; False while the image cannot be had."""
        event, config = self.scope.event, self.scope.ctx.config
        image = str(c.spec.get("image", ""))
        ref = images.parse_image(image)
        policy = str(c.spec.get("imagePullPolicy") or ("Always" if ref.tag == "latest" else "IfNotPresent"))
        if images.is_known(image):
            if policy == "Always":
                event(NORMAL, "Pulling", f'Pulling image "{image}"', c)
                event(
                    NORMAL,
                    "Pulled",
                    f'Successfully pulled image "{image}" in 0s (0s including waiting). Image size: 0 bytes.',
                    c,
                )
            else:
                event(NORMAL, "Pulled", f'Container image "{image}" already present on machine', c)
            c.image_id = ref.image_id
            self.backoff.forget(c.name)
            return True
        if policy == "Never":
            msg = f'Container image "{image}" is not present with pull policy of Never'
            c.state = Waiting("ErrImageNeverPull", msg)
            event(WARNING, "ErrImageNeverPull", msg, c)
            c.retry_at = now + config.image_backoff.base
            return False
        if self.backoff.in_backoff_since_update(c.name, now):
            msg = f'Back-off pulling image "{image}"'
            c.state = Waiting("ImagePullBackOff", f"{msg}: ErrImagePull: {c.pull_error}")
            event(NORMAL, "BackOff", msg, c)
            event(WARNING, "Failed", "Error: ImagePullBackOff", c)
            c.retry_at = now + self.backoff.remaining_since_update(c.name, now)
            return False
        event(NORMAL, "Pulling", f'Pulling image "{image}"', c)
        try:
            images.resolve(image, (), ())
        except images.ImagePullError as err:
            c.pull_error = str(err)
        event(WARNING, "Failed", f'Failed to pull image "{image}": {c.pull_error}', c)
        event(WARNING, "Failed", "Error: ErrImagePull", c)
        c.state = Waiting("ErrImagePull", c.pull_error)
        self.backoff.next(c.name, now, now)
        c.retry_at = now + min(self.backoff.get(c.name), config.sync_period * 4)
        return False
