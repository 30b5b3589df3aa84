"""The posture verbs of the `bastion` command: probe, report, inventory, diff.

`bastion/cli.py` calls `add_verbs(subparsers)` while building its parser and `dispatch(args)` before its own
verbs; `dispatch` returns None for a verb that is not one of these.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

VERBS = ("probe", "report", "inventory", "diff")


def add_verbs(verbs: Any) -> None:
    """Register the posture verbs on the `bastion` sub-command parser."""
    p = verbs.add_parser("probe", help="attack a running gateway with what each route must refuse (exit 1 on "
                                       "any failure)")
    p.add_argument("-c", "--config", help="the approved config whose effective policies are probed")
    p.add_argument("--target", default="http://127.0.0.1:8080", help="the gateway's data-plane URL")
    p.add_argument("--plain-target", help="a plaintext listener, for the TLS-required check when --target is "
                                          "https")
    p.add_argument("--probe-provider", help="name of the JWT provider that trusts the probe key")
    p.add_argument("--probe-key", help="the probe's private JWK (see --new-key)")
    p.add_argument("--probe-subject", default="bastion-probe")
    p.add_argument("--include-rate-limit", action="store_true", help="also burst past each rate limit "
                                                                     "(spends quota)")
    p.add_argument("--max-burst", type=int, default=1000, help="largest burst sent for a rate limit")
    p.add_argument("--cacert", help="CA bundle to verify an https target")
    p.add_argument("--insecure", action="store_true", help="do not verify the https target's certificate")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--json", action="store_true", help="print the JSON result (input for `report --probe`)")
    p.add_argument("-o", "--output", help="also write the JSON result to this file")
    p.add_argument("--publish", action="store_true", help="send the result to the gateway's admin API (the "
                   "config's admin listener, token from $BASTION_ADMIN_TOKEN): the dashboard and /report show it")
    p.add_argument("--new-key", metavar="DIR", help="write a fresh probe key pair (probe-key.jwk, "
                                                    "probe-jwks.json) to DIR and exit")
    p.add_argument("--admin", help="the admin listener that registers a short-lived probe credential (default: "
                                   "the config's; token from $BASTION_ADMIN_TOKEN)")
    p.add_argument("--credential-ttl", type=float, default=300.0, help="seconds the registered credential is "
                   "trusted (at most the provider's registered_keys.max_ttl)")


    p = verbs.add_parser("report", help="posture report: coverage, exceptions, gaps, OWASP mapping, KPIs")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--audit", help="audit events (JSON lines) for denials by control")
    p.add_argument("--probe", help="a `bastion probe --json` result to include")
    p.add_argument("--previous", help="a previous `report --format json`, for the trend")
    p.add_argument("--at", type=instant, help="report the posture at this instant (ISO 8601, e.g. "
                                               "2027-01-01T00:00:00Z) instead of now")
    _probe_marks(p)
    p.add_argument("--format", choices=("json", "md", "html"), default="md")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")

    p = verbs.add_parser("inventory", help="APIs and routes with consumers and last use; idle routes; "
                                           "undeclared paths still called")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--audit", required=True, help="audit events (JSON lines)")
    p.add_argument("--idle-days", type=int, default=90, help="flag routes without traffic for this long")
    _probe_marks(p)
    p.add_argument("--json", action="store_true")

    p = verbs.add_parser("diff", help="effective-policy changes between a config and another config or the "
                                      "running gateway (exit 1 when they differ)")
    p.add_argument("-c", "--config", required=True, help="the approved config (e.g. the one in git)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--against", help="another config file")
    source.add_argument("--admin", help="a running gateway's admin URL, e.g. http://127.0.0.1:9901")
    p.add_argument("--admin-token-env", default="BASTION_ADMIN_TOKEN",
                   help="environment variable holding the admin bearer token")
    p.add_argument("--json", action="store_true")


def dispatch(args: argparse.Namespace) -> int | None:
    """Run a posture verb; None when `args.verb` is not one."""
    if args.verb == "probe":
        return _probe(args)
    if args.verb == "report":
        return _report(args)
    if args.verb == "inventory":
        return _inventory(args)
    if args.verb == "diff":
        return _diff(args)
    return None


def _compiled(path: str, now: float | None = None) -> Any:
    from bastion.compile import compile_config
    from bastion.config.loader import load_config

    return compile_config(load_config(path), now=now, build_stages=False)


def instant(text: str) -> float:
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 instant: {text}") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _emit(data: str | bytes, output: str | None) -> None:
    if output:
        Path(output).write_bytes(data.encode() if isinstance(data, str) else data)
    elif isinstance(data, bytes):
        sys.stdout.buffer.write(data + b"\n")
    else:
        print(data)


def _report(args: argparse.Namespace) -> int:
    import time

    from bastion.config.loader import ConfigError
    from bastion.posture import auditlog, render
    from bastion.posture.probe import load_probe
    from bastion.posture.report import build

    now = time.time() if args.at is None else args.at
    try:
        compiled = _compiled(args.config, now)
        marks = _marks(args)
        events = list(auditlog.requests(auditlog.read(args.audit), marks)) if args.audit else None
        probe_doc = load_probe(args.probe) if args.probe else None
        previous = json.loads(Path(args.previous).read_text()) if args.previous else None
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        return _usage(str(exc))
    doc = build(compiled, now, events=events, probe=probe_doc, previous=previous)
    if args.format == "json":
        _emit(json.dumps(doc, indent=2), args.output)
    elif args.format == "md":
        _emit(render.markdown(doc), args.output)
    else:
        _emit(render.to_html(doc), args.output)
    return 0


def _probe_marks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--probe-subject", action="append", metavar="SUB",
                   help="leave out events whose verified token subject is SUB: the probe's traffic (default "
                        "bastion-probe; repeat for several)")
    p.add_argument("--probe-source", action="append", default=[], metavar="CIDR",
                   help="also leave out every event from this client network (the CI runner that probes)")
    p.add_argument("--include-probe", action="store_true", help="count the probe's traffic like any other")


def _marks(args: argparse.Namespace) -> Any:
    from bastion.posture.auditlog import NO_MARKS, ProbeMarks
    from bastion.posture.tokens import PROBE_SUBJECT

    if args.include_probe:
        return NO_MARKS
    return ProbeMarks.of(args.probe_subject or [PROBE_SUBJECT], args.probe_source)


def _usage(message: str) -> int:
    print(f"bastion: {message}", file=sys.stderr)
    return 2


def _probe(args: argparse.Namespace) -> int:
    from bastion.config.loader import ConfigError
    from bastion.posture.probe import identity_line, probe, results_of, table
    from bastion.posture.tokens import ProbeIdentityConfig, discover_identity, new_probe_key

    if args.new_key:
        private, public = new_probe_key(Path(args.new_key))
        print(f"probe private key: {private} (keep it secret)\nprobe public JWKS: {public}\n\n"
              "Register the public key in bastion.yaml:\n  providers:\n    jwt:\n"
              "      - {name: bastion-probe, issuer: \"urn:bastion:probe\", audiences: [<your audience>],\n"
              f"         algorithms: [ES256], jwks_file: {public}}}")
        return 0
    if not args.config:
        return _usage("probe needs -c FILE (or --new-key DIR)")
    if bool(args.probe_key) != bool(args.probe_provider):
        return _usage("--probe-key and --probe-provider go together")
    identity = None
    if args.probe_key:
        identity = ProbeIdentityConfig(provider=args.probe_provider, key=Path(args.probe_key),
                                       subject=args.probe_subject, client_id=args.probe_subject)
    else:  # the probe identity the config already trusts (the demo's, or one made with --new-key)
        from bastion.config.loader import load_config as _load

        try:
            loaded = _load(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        identity = discover_identity(loaded.model.providers.jwt, loaded.path.parent)
        if identity is not None:
            print(f"bastion probe: using the probe key {identity.key} (provider {identity.provider})",
                  file=sys.stderr)
    credential = None
    if identity is None:  # no key on disk: a short-lived one, registered through the admin API if the config allows
        try:
            credential = _credential(args)
        except (ConfigError, ValueError) as exc:
            print(f"bastion probe: {exc}", file=sys.stderr)
            return 1
    try:
        doc = asyncio.run(probe(args.config, args.target, identity=identity, credential=credential,
                                plain_url=args.plain_target,
                                include_rate_limit=args.include_rate_limit, max_burst=args.max_burst,
                                cafile=args.cacert, insecure=args.insecure, timeout=args.timeout))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        return _usage(str(exc))
    if args.output:
        Path(args.output).write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2) if args.json else identity_line(doc) + "\n\n" + table(results_of(doc)))
    if args.publish:
        import contextlib
        import io

        from bastion.posture.admin_client import admin_call

        with contextlib.redirect_stdout(io.StringIO()):
            published = admin_call(args.config, None, "/probe", "POST", doc)
        print("bastion probe: result published to the admin API" if published == 0 else
              "bastion probe: the admin API refused the result", file=sys.stderr)
    return 1 if doc["summary"]["fail"] else 0


def _credential(args: argparse.Namespace) -> Any:
    """A probe credential registered at the config's admin listener, when a provider has `registered_keys`."""
    from bastion.config.loader import load_config
    from bastion.posture.admin_client import admin_url
    from bastion.posture.credential import register, registered_provider
    from bastion.posture.report import iso

    provider = registered_provider(load_config(args.config).model.providers.jwt)
    if provider is None:
        return None
    credential = register(admin_url(args.config, args.admin), provider, ttl=args.credential_ttl,
                          cafile=args.cacert)
    print(f"bastion probe: registered a short-lived probe credential through the admin API at "
          f"{credential.admin} (provider {credential.provider}, trusted until {iso(credential.expires)})",
          file=sys.stderr)
    return credential


def _inventory(args: argparse.Namespace) -> int:
    import time

    from bastion.config.loader import ConfigError
    from bastion.posture import auditlog, inventory

    try:
        compiled = _compiled(args.config)
        events = list(auditlog.requests(auditlog.read(args.audit), _marks(args)))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        return _usage(str(exc))
    doc = inventory.build(compiled, events, time.time(), args.idle_days)
    print(json.dumps(doc, indent=2) if args.json else inventory.text(doc))
    return 0


def _diff(args: argparse.Namespace) -> int:
    import os

    from bastion.config.loader import ConfigError
    from bastion.posture import diff

    try:
        approved = diff.effective_policies(_compiled(args.config))
        if args.against:
            other, name = diff.effective_policies(_compiled(args.against)), args.against
        else:
            other, name = diff.fetch(args.admin, os.environ.get(args.admin_token_env)), f"running {args.admin}"
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"bastion diff: {exc}", file=sys.stderr)
        return 2
    changes = diff.compare(approved, other)
    if args.json:
        print(json.dumps(diff.to_json(changes, approved, other), indent=2, default=str))
    else:
        print(diff.text(changes, approved, other, name))
    return 1 if changes else 0
