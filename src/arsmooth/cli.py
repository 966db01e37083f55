"""The ``arsmooth`` command line: a thin layer over the library.

Bad input ends in one line on stderr (``arsmooth: error: ...``) and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import sys

from . import __version__
from .errors import ArsmoothError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return v


def nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def positive_int(text: str) -> int:
    v = nonneg_int(text)
    if v == 0:
        raise argparse.ArgumentTypeError("must be >= 1, got 0")
    return v


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_demo(a) -> int:
    from .demo import run_demo

    _threads(a.threads)
    path = run_demo(a.out, steps=a.steps, sigma=a.sigma, hidden=a.hidden, seed=a.seed, force=a.force,
                    progress=not a.no_progress)
    print(f"report written to {path}")
    return 0


def cmd_reproduce(a) -> int:
    from .experiments import reproduce

    _threads(a.threads)
    rec = reproduce(a.name, a.out, quick=a.quick, seed=a.seed, sigma=a.sigma, force=a.force,
                    progress=not a.no_progress)
    print(f"{a.name}: {rec['result']}")
    print(f"wrote {a.out}/{a.name}.json and {a.out}/{a.name}.md in {rec['wall_time_s']} s")
    return 0


def cmd_list(a) -> int:
    from .experiments import EXPERIMENTS

    for e in EXPERIMENTS.values():
        print(f"{e.name:10s} {e.what}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="arsmooth", description="Distribution smoothing for autoregressive models "
                "(Meng et al., ICLR 2021): train on noisy data, then denoise.")
    p.add_argument("--version", action="version", version=f"arsmooth {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def common(sp, seed_help="random seed"):
        sp.add_argument("--seed", type=nonneg_int, default=0, help=f"{seed_help} (default 0)")
        sp.add_argument("--force", action="store_true", help="overwrite existing output files")
        sp.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars")

    d = sub.add_parser("demo", help="baseline vs smoothed MADE on the olympics data (a few minutes)",
                       description="Train a baseline MADE and a smoothed MADE side by side on the 2-d "
                       "olympics data and write report.md with the test NLL table and sample plots.")
    d.add_argument("--out", default="arsmooth-demo", help="output folder (default ./arsmooth-demo)")
    d.add_argument("--steps", type=positive_int, default=4000, help="training steps (default 4000)")
    d.add_argument("--sigma", type=positive_float, default=0.3, help="noise std of q(x~|x) (default 0.3)")
    d.add_argument("--hidden", type=positive_int, default=128, help="hidden units per layer (default 128)")
    common(d)
    d.set_defaults(func=cmd_demo)

    from .experiments import EXPERIMENTS

    r = sub.add_parser("reproduce", help="run one of the paper's experiments",
                       description="Run an experiment of the paper and write NAME.json, NAME.md, "
                       "NAME.run.json and PNG figures to --out. Experiments: "
                       + "; ".join(f"{e.name}: {e.what}" for e in EXPERIMENTS.values()))
    r.add_argument("name", metavar="NAME", help=f"one of {', '.join(EXPERIMENTS)}")
    r.add_argument("--out", required=True, help="output folder (created if missing)")
    r.add_argument("--quick", action="store_true", help="tiny budgets: the same code path in seconds")
    r.add_argument("--sigma", type=positive_float, default=None,
                   help="noise std (fig3, denoise1d, table1, realnvp; fig4 adds it to its sweep)")
    common(r)
    r.set_defaults(func=cmd_reproduce)

    ls = sub.add_parser("list", help="list the experiments")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except ArsmoothError as e:
        print(f"arsmooth: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("arsmooth: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, permissions changed mid-run, ...
        print(f"arsmooth: error: {e.strerror or e} ({getattr(e, 'filename', '') or ''})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
