"""The ``gazelle`` command: one parser, each sub-command handled by the part that owns it.

Handlers are imported only when their command runs, so ``gazelle runtime`` works in an image that has
only ``gazelle[runtime]`` installed.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from gazelle import __version__
from gazelle.errors import GazelleError


def _handler(path: str) -> Callable[[argparse.Namespace], int]:
    """``"module:function"`` -> the function, imported now."""
    module, _, func = path.partition(":")

    def run(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), func)(args) or 0)

    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gazelle", description="Deploy models from a notebook to a live endpoint.")
    p.add_argument("--version", action="version", version=f"gazelle {__version__}")
    p.add_argument("--server", help="build server URL (default: $GAZELLE_SERVER, then the local server)")
    p.add_argument("--token-file", metavar="FILE",
                   help="read the API token from FILE (default: $GAZELLE_TOKEN, then the local server's token file)")
    # Kept for old scripts, not shown: a token on the command line is visible to everyone in `ps`.
    p.add_argument("--token", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("server", help="run the build server")
    s.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default 8000)")
    s.add_argument("--data-dir", default=None, help="state directory (default ~/.gazelle)")
    s.add_argument("--workers", type=int, default=None, help="gunicorn workers")
    s.add_argument("--target", choices=["local", "docker", "kubernetes"], default=None)
    s.add_argument("--builder", choices=["venv", "append", "docker"], default=None,
                   help="how bundles become runnable (default: the target's own: venv for local)")
    s.add_argument("--registry", default=None, help="HOST[:PORT]/PREFIX for images")
    s.set_defaults(func=_handler("gazelle.server.cli:serve"))

    d = sub.add_parser("deploy", help="deploy a bundle (or a pickled model)")
    d.add_argument("path", metavar="BUNDLE.tar|MODEL.pkl")
    d.add_argument("--name", required=False, help="model name (required for a .pkl)")
    d.add_argument("--sample", help="JSON file with sample rows")
    d.add_argument("--public", action="store_true", help="serve predictions without a token")
    d.add_argument("--no-wait", dest="wait", action="store_false")
    d.set_defaults(func=_handler("gazelle.client.cli:deploy"))

    sub.add_parser("list", help="list models").set_defaults(func=_handler("gazelle.client.cli:list_models"))
    for cmd, helptext in (("status", "show a model and its versions"), ("logs", "show a model's runtime logs"),
                          ("delete", "delete a model and all its versions")):
        c = sub.add_parser(cmd, help=helptext)
        c.add_argument("name")
        c.set_defaults(func=_handler(f"gazelle.client.cli:{cmd}"))
        if cmd == "logs":
            c.add_argument("--tail", type=int, default=200, metavar="N", help="the last N lines (default 200)")
            c.add_argument("--version", type=int, default=None, metavar="V",
                           help="the version whose runtime wrote them (default: the live one)")

    r = sub.add_parser("rollback", help="make an earlier version live again")
    r.add_argument("name")
    r.add_argument("version", type=int)
    r.set_defaults(func=_handler("gazelle.client.cli:rollback"))

    pr = sub.add_parser("predict", help="send a request to a model's live version")
    pr.add_argument("name")
    pr.add_argument("body", help='JSON, e.g. \'{"instances": [...]}\', or @FILE')
    pr.set_defaults(func=_handler("gazelle.client.cli:predict"))

    t = sub.add_parser("token", help="manage API tokens")
    tsub = t.add_subparsers(dest="token_command", required=True)
    tc = tsub.add_parser("create", help="create a token")
    tc.add_argument("--scope", choices=["deploy", "predict", "admin"], required=True)
    tc.add_argument("--name", default=None, help="a label for the token")
    tc.set_defaults(func=_handler("gazelle.client.cli:token_create"))
    tsub.add_parser("list", help="list the tokens (id, scope, name, created, last used)").set_defaults(
        func=_handler("gazelle.client.cli:token_list"))
    tr = tsub.add_parser("revoke", help="revoke a token: every server refuses it within 5 s")
    tr.add_argument("id", type=int, help="the token's id (from `gazelle token list`)")
    tr.set_defaults(func=_handler("gazelle.client.cli:token_revoke"))

    rt = sub.add_parser("runtime", help="serve one bundle, no server needed")
    rt.add_argument("bundle", metavar="BUNDLE", nargs="?", default=None,
                    help="the bundle (default: $GAZELLE_RUNTIME_BUNDLE)")
    rt.add_argument("--host", default=None, help="bind address (default: $GAZELLE_RUNTIME_HOST, then 127.0.0.1)")
    rt.add_argument("--port", type=int, default=None, help="port (default: $GAZELLE_RUNTIME_PORT, then 8080)")
    rt.add_argument("--socket", default=None, metavar="PATH",
                    help="listen on this unix socket (mode 0600) instead of TCP (default: $GAZELLE_RUNTIME_SOCKET)")
    rt.add_argument("--workers", type=int, default=None,
                    help="gunicorn workers (default: $GAZELLE_RUNTIME_WORKERS, then the CPUs this process may use)")
    rt.set_defaults(func=_handler("gazelle.runtime.serve:main"))

    im = sub.add_parser("image", help="build a bundle's image and push it, no server needed")
    im.add_argument("bundle", metavar="BUNDLE")
    im.add_argument("--registry", required=True, help="HOST[:PORT]/PREFIX to push HOST[:PORT]/PREFIX/NAME to")
    im.add_argument("--builder", choices=["append", "docker"], default=None, help="default: append")
    im.add_argument("--version", type=int, default=0, help="model version for the tag and labels (default 0)")
    im.set_defaults(func=_handler("gazelle.server.imagecmd:main"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "token_file", None):
            from gazelle.client.cli import token_from_file

            args.token = token_from_file(args.token_file)
        elif getattr(args, "token", None):
            print("gazelle: warning: --token shows the token to every user of this machine (ps); "
                  "use GAZELLE_TOKEN or --token-file", file=sys.stderr)
        return args.func(args)
    except GazelleError as err:
        print(f"gazelle: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
