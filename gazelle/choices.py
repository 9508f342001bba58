"""The targets and builders a Gazelle server can be set up with, and which go together.

The one list the settings check, the wiring picks from and the command line offers. A target runs
what its builders make: the local target an environment on this host (``venv``); the image targets
(``docker``, ``kubernetes``) an image (``append`` or ``docker``). It imports nothing, so the command
line can offer the choices without loading the server.
"""
from __future__ import annotations

TARGETS = ("local", "docker", "kubernetes")
BUILDERS = ("venv", "append", "docker")
IMAGE_BUILDERS = ("append", "docker")
DEFAULT_BUILDER = {"local": "venv", "docker": "docker", "kubernetes": "append"}
PAIRS = {"local": ("venv",), "docker": ("docker", "append"), "kubernetes": IMAGE_BUILDERS}
# How the gateway reaches a kubernetes version: "endpoints", its ready pods from an EndpointSlice watch
# (no kube-proxy needed); "service", the version Service's cluster DNS name, balanced by kube-proxy.
K8S_GATEWAYS = ("endpoints", "service")

# What listens on the build server's port (gazelle.server.front): nginx in front of gunicorn, or gunicorn.
FRONTS = ("auto", "nginx", "off")
