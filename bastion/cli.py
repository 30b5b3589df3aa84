"""The `bastion` command: parse arguments, call one function per verb. Exit codes: 0 ok, 1 invalid, 2 usage."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from bastion import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bastion", description="Bastion API security gateway")
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and the build, then exit")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("validate", help="check a config and its OpenAPI files (exit 0 valid, 1 invalid)")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--against", nargs="?", const="running", metavar="ADMIN_URL",
                   help="also ask the running gateway whether a reload applies it live (exit 1: needs a restart)")

    p = verbs.add_parser("serve", help="run the gateway")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--workers", type=_worker_count, default=None,
                   help="worker processes sharing the ports, or `auto` (one per CPU)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)

    p = verbs.add_parser("reload", help="ask a running gateway to reload its config (admin listener)")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--admin", help="admin URL, default from the config (http://127.0.0.1:9901)")

    p = verbs.add_parser("stop", help="stop the gateway on this host: it drains in-flight requests, then exits")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--admin", help="admin URL, default from the config")
    p.add_argument("--timeout", type=float, default=60.0, help="how long to wait for it to exit")

    p = verbs.add_parser("explain", help="show each route's effective policy and where each control comes from")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("route", nargs="?", help="API/route, API name, or a path such as /orders/{id}")
    p.add_argument("--json", action="store_true")
    from bastion.cli_posture import instant

    p.add_argument("--at", type=instant, help="the policy in force at this instant (ISO 8601) instead of now")

    p = verbs.add_parser("demo", help="run the demo: gateway, identity provider and upstream on 127.0.0.1")
    p.add_argument("--port", type=int, default=8080)

    p = verbs.add_parser("keys", help="API keys")
    keys = p.add_subparsers(dest="keys_verb", required=True, metavar="ACTION")
    k = keys.add_parser("new", help="print a fresh API key once, and the config line with its hash")
    k.add_argument("consumer")

    # two verbs of the admin API, alike but for what they list, add or lift
    for verb, help_text, kinds, value, seconds, noun in (
        ("blocks", "list, add or lift blocks of IPs, subjects or consumers (admin API)",
         ["ip", "subject", "consumer"], "key", 3600.0, "block"),
        ("revoke", "list, add or lift revocations of token ids, subjects, consumers",
         ["jti", "sub", "consumer"], "value", 86400.0, "revocation"),
    ):
        p = verbs.add_parser(verb, help=help_text)
        p.add_argument("action", choices=["list", "add", "lift"])
        p.add_argument("kind", nargs="?", choices=kinds)
        p.add_argument(value, nargs="?")
        p.add_argument("--seconds", type=float, default=seconds, help=f"how long an added {noun} lasts")
        p.add_argument("-c", "--config", required=True)
        p.add_argument("--admin", help="admin URL, default from the config")

    verbs.add_parser("version", help="print the version")
    from bastion.cli_posture import add_verbs

    add_verbs(verbs)  # probe, report, inventory, diff
    return parser


class _Version(argparse.Action):
    """`--version`: the build (compiled or pure, bastion/native.py) is found only when asked for."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(_version())
        parser.exit()


def _version() -> str:
    from bastion.native import build_label

    return f"bastion {__version__} ({build_label()})"


def _worker_count(text: str) -> int:
    import os

    count = (os.cpu_count() or 1) if text == "auto" else int(text)
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError("--workers takes 1 to 64, or auto")
    return count


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `bastion report | head`: the reader left; say nothing more, exit like a pipe
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not raise again
        return 141


def _main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    verb = args.verb
    from bastion.cli_posture import dispatch

    posture = dispatch(args)
    if posture is not None:
        return posture
    if verb == "version":
        print(_version())
        return 0
    if verb == "validate":
        from bastion.commands import validate

        return validate(args.config, args.against)
    if verb == "explain":
        from bastion.commands import explain

        return explain(args.config, args.route, as_json=args.json, at=args.at)
    if verb == "serve":
        from bastion.commands import check_files
        from bastion.config.loader import ConfigError
        from bastion.server.serve import serve, worker_main

        if not args.worker and check_files(args.config):  # a missing certificate: say which, at its line
            return 1
        try:
            return worker_main(args.config) if args.worker else serve(args.config, args.workers)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
    if verb == "reload":
        from bastion.commands import reload

        return reload(args.config, args.admin)
    if verb == "stop":
        from bastion.commands import stop

        return stop(args.config, args.admin, args.timeout)
    if verb in ("blocks", "revoke"):
        from bastion import commands

        target = args.key if verb == "blocks" else args.value
        if args.action != "list" and (args.kind is None or target is None):
            print(f"bastion {verb} {args.action}: give KIND and the value", file=sys.stderr)
            return 2
        run = commands.blocks if verb == "blocks" else commands.revocations
        return run(args.config, args.admin, args.action, args.kind, target, args.seconds)
    if verb == "demo":
        from bastion.demo.run import main as demo_main

        return demo_main(args.port)
    if verb == "keys":
        from bastion.commands import new_key

        return new_key(args.consumer)
    print(json.dumps({"error": f"unknown verb {verb}"}), file=sys.stderr)
    return 2
