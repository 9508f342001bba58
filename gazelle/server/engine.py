"""What the parts that talk to a Docker engine (``DockerBuilder``, ``EnginePublisher``, ``DockerTarget``)
share: how to say why the engine refused a request."""
from __future__ import annotations


def engine_message(err: Exception) -> str:
    """The engine's own explanation of a refused request (docker's ``APIError``), else the error's text."""
    explanation = getattr(err, "explanation", None)
    return str(explanation or err).strip() or type(err).__name__
