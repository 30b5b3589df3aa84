"""Run the fuzz targets under atheris: `python -m fuzz.run [--seconds 60] [target ...]` (`make fuzz`).

Each target runs in its own process (atheris calls libFuzzer, which exits when done) for `--seconds`, starting
from its seed corpus in fuzz/corpus/<target>/; new interesting inputs go to fuzz/work/<target>/ (not committed).
A crash leaves `crash-*` files in fuzz/work/<target>/ and a non-zero exit: copy the file into the seed corpus and
write the regression test beside the parser's own tests.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def command(target: str, seconds: float, work: Path, runs: int | None = None) -> list[str]:
    """The command line that fuzzes `target` for `seconds` with its seed corpus, writing into `work`."""
    work.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "fuzz.run", "--child", target, "--", f"-max_total_time={max(1, int(seconds))}",
            "-rss_limit_mb=2048", "-timeout=10", f"-artifact_prefix={work}/", "-max_len=65536",
            str(work), str(HERE / "corpus" / target)]
    if runs is not None:
        args.insert(-2, f"-runs={runs}")
    return args


def _child(target: str, argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["bastion", "fuzz"]):
        from fuzz.targets import TARGETS, everything
    atheris.Setup([sys.argv[0], *argv], everything if target == "all" else TARGETS[target])
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", help="default: all (see fuzz/targets.py)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time per target")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    if args.child:
        _child(args.child, argv[split + 1:])
        return 0
    from fuzz.targets import TARGETS  # not before the child: atheris instruments what it imports

    failed = []
    for target in args.targets or list(TARGETS):
        print(f"== fuzz {target} for {args.seconds:.0f} s", flush=True)
        done = subprocess.run(command(target, args.seconds, HERE / "work" / target), cwd=ROOT, check=False)
        if done.returncode:
            failed.append(target)
    if failed:
        print(f"FAILED: {', '.join(failed)} (crash files in fuzz/work/<target>/)")
        return 1
    print("all targets ran without a crash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
