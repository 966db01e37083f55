"""The ``arsmooth`` command line: a thin layer over the library, one module per group of commands with each
command's parser beside its handler (``add_NAME`` then ``run_NAME``); :mod:`.options` holds what they share.

Bad input ends in one line on stderr (``arsmooth: error: ...``) and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import ArsmoothError
from . import bench, experiments, sampling, scoring, training
from .options import IMAGE_METHODS  # noqa: F401 - importable from arsmooth.cli, as the tests do

# the subcommands, in the order --help lists them
COMMANDS = (experiments.add_demo, experiments.add_reproduce, training.add_train, training.add_presets, sampling.add_sample,
            scoring.add_evaluate, scoring.add_sensitivity, scoring.add_sigma, training.add_export, training.add_import,
            bench.add_bench, scoring.add_fit_classifier, scoring.add_metrics, experiments.add_report,
            experiments.add_pretrained, experiments.add_list)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="arsmooth", description="Distribution smoothing for autoregressive models "
                "(Meng et al., ICLR 2021): train on noisy data, then denoise.")
    p.add_argument("--version", action="version", version=f"arsmooth {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ..runtime.fileio import remove_unused_folders

    try:
        return args.func(args)
    except ArsmoothError as e:
        remove_unused_folders()  # a refused command leaves no empty output folder behind
        print(f"arsmooth: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        remove_unused_folders()
        print("arsmooth: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, permissions changed mid-run, ...
        remove_unused_folders()
        print(f"arsmooth: error: {e.strerror or e} ({getattr(e, 'filename', '') or ''})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
