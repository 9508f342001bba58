"""Where a model is reached: the URL the server reports for it, and its gateway URL.

The gateway (``{base_url}/m/{name}``) forwards to the live version whatever the target. On the
kubernetes target with an Ingress host template (``GAZELLE_K8S_INGRESS_HOST``) every model also has
its own Ingress ``gazelle-M`` to its stable Service, and the URL reported for it (the deploy job's
``url``, the model record's ``url``, hence ``Endpoint.url``) is that Ingress, ``{scheme}://{host}``:
requests sent there never pass the build server, and the runtime behind it checks predict tokens
itself (``runtime_access``). The scheme is https when the Ingress carries a certificate
(``GAZELLE_K8S_INGRESS_TLS_SECRET``), else http. The gateway keeps answering as before: the API shows
it as ``gateway_url`` beside ``url``, the fallback for a client that cannot reach the Ingress.
"""
from __future__ import annotations

from dataclasses import dataclass

from gazelle.server.settings import Settings
from gazelle.server.targets._k8s_objects import ingress_host


@dataclass(frozen=True)
class ModelUrls:
    base_url: str                      # the server's own address (``Settings.base_url``)
    ingress_host: str | None = None    # the host template, "{name}.models.example.com"
    ingress_tls: bool = False

    @classmethod
    def of(cls, settings: Settings) -> "ModelUrls":
        """The URLs ``settings`` give: the Ingress only on the kubernetes target, which makes it."""
        if settings.target != "kubernetes" or not settings.k8s_ingress_host:
            return cls(settings.base_url)
        return cls(settings.base_url, settings.k8s_ingress_host, bool(settings.k8s_ingress_tls_secret))

    def gateway(self, name: str) -> str:
        return f"{self.base_url}/m/{name}"

    def model(self, name: str) -> str:
        """The URL reported for model ``name``: its Ingress when there is one, else the gateway."""
        if not self.ingress_host:
            return self.gateway(name)
        return f"{'https' if self.ingress_tls else 'http'}://{ingress_host(self.ingress_host, name)}"

    def of_model(self, name: str) -> dict[str, str]:
        """The two fields the API's answers carry for a model."""
        return {"url": self.model(name), "gateway_url": self.gateway(name)}
