"""Regenerate the figures and tables made by the scripts in this folder: those of Parts I and II and
Part III's sparsity-pattern figure. The measured tables and figures of Parts III and IV and of the
benchmarks page are written by the scripts in ``benchmarks/`` (they train models or time long sweeps, so
they are run one by one, not from here); docs/benchmarks/index.md lists which script writes which.

    python docs/figures/scripts/make_all.py            # all of them
    python docs/figures/scripts/make_all.py sqrt_dk    # only the scripts whose name contains a word
    python docs/figures/scripts/make_all.py --list

A figure script is any ``*.py`` file in this folder except this one and files whose name starts with
``_`` (helpers). Each runs in its own process from the repository root with the repository on
PYTHONPATH, writes its PNGs into ``docs/figures/`` (tables into ``docs/figures/tables/``) and must
finish in well under a minute on two CPU cores. The exit status is non-zero if any script failed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def discover() -> list[Path]:
    """Every figure script in this folder, in name order."""
    return sorted(p for p in HERE.glob("*.py")
                  if p.name != Path(__file__).name and not p.name.startswith("_"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="run only scripts whose file name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the scripts and exit")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed per script")
    args = parser.parse_args(argv)

    scripts = [p for p in discover() if not args.names or any(n in p.name for n in args.names)]
    if args.list:
        print("\n".join(p.name for p in scripts))
        return 0
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    failed = []
    for script in scripts:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, timeout=args.timeout,
                                  capture_output=True, text=True)
            ok, log = proc.returncode == 0, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired:
            ok, log = False, f"timed out after {args.timeout:.0f} s"
        dt = time.perf_counter() - t0
        print(f"{'ok  ' if ok else 'FAIL'} {script.name:<40s} {dt:6.1f} s", flush=True)
        if not ok:
            failed.append(script.name)
            print("    " + log.strip().replace("\n", "\n    ")[-4000:], flush=True)
    print(f"{len(scripts) - len(failed)} of {len(scripts)} figure scripts ran"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
