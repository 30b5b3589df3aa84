"""Compile the hot-path modules listed in bastion/native.py with mypyc, in place, or remove the compiled files.

    python scripts/build_compiled.py            # build if any listed source changed since the last build
    python scripts/build_compiled.py --force    # build anyway
    python scripts/build_compiled.py --clean    # remove every compiled file: the pure Python build

Each listed module gets a `.so` beside its `.py` (git-ignored), and the group's shared library goes to
`bastion/_native__mypyc.*.so`. `make install` runs this; `make install-pure` runs `--clean`. Needs a C compiler
and the Python headers (gcc, python3-dev); the C sources and objects go to build/mypyc/.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bastion import native  # noqa: E402  (the source tree's list, whatever the venv has installed)

BUILD_DIR = ROOT / "build" / "mypyc"


def compiled_files() -> list[Path]:
    """Every extension module the build leaves in the package (shims and the shared library)."""
    return sorted(path for path in (ROOT / "bastion").rglob("*.so"))


def clean() -> None:
    removed = compiled_files()
    for path in removed:
        path.unlink()
    native.MANIFEST.unlink(missing_ok=True)
    print(f"removed {len(removed)} compiled files: pure Python build")


def manifest() -> str:
    rows = [f"{module} {native.digest(module)}\n" for module in native.MODULES]
    rows += [f"{name} {hashlib.sha256((ROOT / source).read_bytes()).hexdigest()}\n"
             for name, source in native.C_EXTENSIONS]
    return "".join(rows)


def up_to_date() -> bool:
    """The manifest matches every listed source and each listed module has its extension."""
    try:
        recorded = native.MANIFEST.read_text()
    except OSError:
        return False
    return recorded == manifest() and all(native.is_compiled(module) for module in native.MODULES) \
        and all(native.is_compiled(name) for name, _ in native.C_EXTENSIONS)


def toolchain_missing() -> str | None:
    """What the C build lacks, in words an operator can act on; None when gcc and Python.h are there."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    if not Path(sysconfig.get_paths()["include"], "Python.h").is_file():
        return f"no Python headers ({sysconfig.get_paths()['include']}/Python.h)"
    return None


def build() -> None:
    missing = toolchain_missing()
    if missing:  # fail loudly: a silently pure build would be measured and tested as the compiled one
        sys.exit(f"mypyc build: {missing}; install build-essential and python3-dev (make system-deps), "
                 "or keep pure Python with `make install-pure`")
    from mypyc.build import mypycify  # the mypy package ships mypyc; imported here so --clean needs neither
    from setuptools import Extension, setup

    for path in compiled_files():  # a module dropped from the list must not keep running compiled
        path.unlink()
    native.MANIFEST.unlink(missing_ok=True)
    os.chdir(ROOT)  # mypyc reads [tool.mypy] from pyproject.toml and takes paths relative to the root
    sources = [str(native.source_path(module).relative_to(ROOT)) for module in native.MODULES]
    extensions = mypycify(sources, opt_level="3", group_name=native.GROUP, target_dir=str(BUILD_DIR))
    extensions += [Extension(name, sources=[source], extra_compile_args=["-O2"])
                   for name, source in native.C_EXTENSIONS]
    setup(name="bastion-native", ext_modules=extensions, script_args=[
        "-q", "build_ext", "--inplace", "--parallel", str(os.cpu_count() or 1), "--build-temp", str(BUILD_DIR)])
    native.MANIFEST.write_text(manifest())
    print(f"compiled {len(native.MODULES)} modules with mypyc and {len(native.C_EXTENSIONS)} C extension(s) "
          "(bastion/native.py)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clean", action="store_true", help="remove the compiled files (pure Python build)")
    parser.add_argument("--force", action="store_true", help="build even if nothing changed")
    args = parser.parse_args()
    if args.clean:
        clean()
    elif args.force or not up_to_date():
        build()
    else:
        print("compiled modules up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
