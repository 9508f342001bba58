"""The client's sub-commands of ``gazelle`` (the parser is in ``gazelle.cli``).

Output is for people: tables and short lines on stdout. Errors are raised as ``GazelleError`` and
printed by ``gazelle.cli.main`` as one line on stderr with exit status 1. ``gazelle deploy MODEL.pkl``
unpickles the file given: it is the user's own model, loaded on the user's own machine. Its
``--sample`` file holds JSON rows; rows that are objects become a pandas DataFrame, as the model
was presumably trained on one.
"""
from __future__ import annotations

import argparse
import json
import math
import tarfile
from pathlib import Path
from typing import Any, Iterable, Sequence

from gazelle.client.config import resolve
from gazelle.client.deployment import deploy_bundle
from gazelle.client.endpoints import delete as delete_model
from gazelle.client.endpoints import endpoint
from gazelle.client.endpoints import rollback as rollback_to
from gazelle.client.http import Client
from gazelle.client.progress import TerminalProgress
from gazelle.errors import BadRequest, GazelleError
from gazelle.names import validate_name


def _client(args: argparse.Namespace) -> Client:
    return Client(resolve(getattr(args, "server", None), getattr(args, "token", None)))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain text table, columns padded to their widest cell."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _not_json(constant: str) -> Any:
    # Python's json reads NaN and Infinity; JSON (and so the server) does not.
    raise ValueError(f"{constant} is not a JSON value (send null for a missing number)")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is too large for a JSON number")
    return value


def _read_json(text: str, what: str) -> Any:
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise BadRequest(f"cannot read {what} file {str(path)!r}: {exc.strerror}") from None
    try:
        return json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None


def _is_pickle(path: Path) -> bool:
    """True if the file starts like a pickle (protocol 2 and later begin with PROTO)."""
    try:
        with path.open("rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _load_bundle(path: Path, name: str | None, sample_file: str | None) -> Any:
    from gazelle import bundle as bundles

    if path.suffix == ".tar" or (path.suffix not in (".pkl", ".pickle") and tarfile.is_tarfile(path)):
        if sample_file:
            raise BadRequest("--sample applies to a pickled model; a bundle already carries its sample")
        packed = bundles.read(path)
        if name and name != packed.name:
            raise BadRequest(f"{path.name} holds model {packed.name!r}, not {name!r}",
                             hint="leave out --name, or save the bundle again under that name")
        return packed
    if path.suffix not in (".pkl", ".pickle") and not _is_pickle(path):
        raise BadRequest(f"{path} is neither a bundle (a tar written by gazelle.save) nor a pickled model",
                         hint="save one in the notebook with gazelle.save(model, 'model.tar', name=...)")
    if not name:
        raise BadRequest("--name is required to deploy a pickled model")
    validate_name(name)
    import cloudpickle

    with path.open("rb") as f:
        model = cloudpickle.load(f)
    sample = None
    if sample_file:
        sample = _read_json("@" + sample_file, "--sample")
        if isinstance(sample, dict) and "instances" in sample:
            sample = sample["instances"]
        if isinstance(sample, list) and sample and all(isinstance(row, dict) for row in sample):
            import pandas as pd   # rows keyed by column: the model was trained on a DataFrame

            sample = pd.DataFrame(sample)
    return bundles.pack(model, name=name, sample=sample)


def deploy(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        raise BadRequest(f"no such file: {args.path}")
    packed = _load_bundle(path, args.name, args.sample)
    ep = deploy_bundle(packed, server=args.server, token=args.token, public=args.public, wait=args.wait)
    if not args.wait:
        print(f"accepted: {ep.name} version {ep.version}" + (f" (job {ep.job})" if ep.job else ""))
        return 0
    print(f"try it: {ep.url}/")
    print(ep.curl())
    return 0


def list_models(args: argparse.Namespace) -> int:
    with _client(args) as client:
        answer = client.api("GET", "/models")
    models = answer.get("models", []) if isinstance(answer, dict) else answer
    if not models:
        print("no models")
        return 0
    print(table(["NAME", "LIVE", "VERSIONS", "PUBLIC", "URL"],
                ([m["name"], m.get("live_version") or "-", len(m.get("versions") or []),
                  "yes" if m.get("public") else "no", m.get("url", "")] for m in models)))
    return 0


def status(args: argparse.Namespace) -> int:
    name = validate_name(args.name)
    with _client(args) as client:
        model = client.api("GET", f"/models/{name}")
    print(f"name:    {model['name']}")
    print(f"url:     {model.get('url', '')}")
    if model.get("gateway_url") and model.get("gateway_url") != model.get("url"):
        print(f"gateway: {model['gateway_url']}")
    print(f"public:  {'yes' if model.get('public') else 'no'}")
    print(f"live:    {model.get('live_version') or 'none'}")
    versions = model.get("versions") or []
    if versions:
        print()
        print(table(["VERSION", "STATUS", "CREATED", "DIGEST"],
                    ([v.get("version"), v.get("status"), v.get("created", ""), str(v.get("digest", ""))[:19]]
                     for v in versions)))
    return 0


def logs(args: argparse.Namespace) -> int:
    name = validate_name(args.name)
    with _client(args) as client:
        params = {"tail": str(args.tail)}
        if args.version is not None:
            params["version"] = str(args.version)
        answer = client.api("GET", f"/models/{name}/logs", params=params)
    for line in answer.get("lines", []):
        print(line)
    return 0


def rollback(args: argparse.Namespace) -> int:
    name = validate_name(args.name)
    ep = rollback_to(name, args.version, server=args.server, token=args.token, progress=TerminalProgress())
    print(f"{name}: version {ep.version} is live")
    return 0


def delete(args: argparse.Namespace) -> int:
    name = validate_name(args.name)
    delete_model(name, server=args.server, token=args.token, progress=TerminalProgress())
    print(f"deleted {name}")
    return 0


def predict(args: argparse.Namespace) -> int:
    body = _read_json(args.body, "the request body")
    if isinstance(body, list):
        body = {"instances": body}
    if not isinstance(body, dict):
        raise BadRequest('the request body must be an object like {"instances": [...]}')
    ep = endpoint(args.name, server=args.server, token=args.token)
    try:
        answer = ep.predict_json(body)
    finally:
        ep.close()
    print(json.dumps(answer, indent=2, ensure_ascii=False))
    return 0


def token_create(args: argparse.Namespace) -> int:
    payload = {"scope": args.scope}
    if args.name:
        payload["name"] = args.name
    with _client(args) as client:
        answer = client.api("POST", "/tokens", json_body=payload)
    token = answer.get("token") if isinstance(answer, dict) else None
    if not token:
        raise GazelleError("the server answered without a token")
    print(token)
    return 0


def token_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        answer = client.api("GET", "/tokens")
    tokens = answer.get("tokens", []) if isinstance(answer, dict) else []
    print(table(["ID", "SCOPE", "NAME", "CREATED", "LAST USED"],
                ([t.get("id"), t.get("scope"), t.get("name"), t.get("created"), t.get("last_used") or "never"]
                 for t in tokens)))
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    with _client(args) as client:
        answer = client.api("DELETE", f"/tokens/{args.id}")
    revoked = answer.get("revoked", {}) if isinstance(answer, dict) else {}
    print(f"revoked token {args.id} ({revoked.get('name', '')}); every server refuses it within 5 s")
    return 0


def token_from_file(path: str) -> str:
    """The token in file ``path`` (``--token-file``): its first line, stripped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRequest(f"--token-file: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise BadRequest(f"--token-file: {path} is empty")
    return token
