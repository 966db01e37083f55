"""The commands that run experiments and list what ships: demo, reproduce, list, report, pretrained.
Each command's parser, then its handler: a thin layer over library calls."""

from __future__ import annotations

import sys

from .options import chosen_device, common_options, device_option, positive_float, positive_int, set_threads


def add_demo(sub) -> None:
    d = sub.add_parser("demo", help="baseline vs smoothed MADE on the olympics data, then pretrained MNIST "
                       "digits (about a minute)",
                       description="Train a baseline MADE and a smoothed MADE side by side on the 2-d "
                       "olympics data and write report.md with the test NLL table and sample plots. Runs on "
                       "one thread unless --threads says otherwise: these small models gain nothing from a "
                       "second one, and two threads on a busy 2-core machine took 176 s instead of 42 s. Then it adds the "
                       "paper's Fig. 6 columns sampled from the pretrained MNIST models (5 to 8 s; --no-images skips it).")
    d.add_argument("--out", default="arsmooth-demo", help="output folder (default ./arsmooth-demo)")
    d.add_argument("--steps", type=positive_int, default=16000, help="training steps (default 16000)")
    d.add_argument("--sigma", type=positive_float, default=0.3, help="noise std of q(x~|x) (default 0.3)")
    d.add_argument("--hidden", type=positive_int, default=128, help="hidden units per layer (default 128)")
    d.add_argument("--no-images", action="store_true",
                   help="skip the image part (MNIST digits sampled from the pretrained models that ship)")
    common_options(d)
    device_option(d, "the pretrained image models")
    d.set_defaults(func=run_demo, threads=1)


def run_demo(a) -> int:
    from ..experiments.demo import run_demo

    set_threads(a.threads)
    device = chosen_device(a)
    path = run_demo(a.out, steps=a.steps, sigma=a.sigma, hidden=a.hidden, seed=a.seed, force=a.force,
                    progress=not a.no_progress, images=not a.no_images, device=device)
    print(f"report written to {path}")
    return 0


def add_reproduce(sub) -> None:
    from ..experiments import EXPERIMENTS

    r = sub.add_parser("reproduce", help="run one of the paper's experiments",
                       description="Run an experiment of the paper and write NAME.json, NAME.md, "
                       "NAME.run.json and PNG figures to --out. Experiments: "
                       + "; ".join(f"{e.name}: {e.what}" for e in EXPERIMENTS.values()))
    r.add_argument("name", metavar="NAME", help=f"one of {', '.join(EXPERIMENTS)}")
    r.add_argument("--out", required=True, help="output folder (created if missing)")
    r.add_argument("--quick", action="store_true", help="tiny budgets: the same code path in seconds")
    r.add_argument("--sigma", type=positive_float, default=None,
                   help="noise std (fig3, denoise1d, table1, realnvp; fig4 adds it to its sweep)")
    r.add_argument("--stage2", choices=("stacked", "spatial"), default=None,
                   help="stage-2 design of mnist / fashion / cifar10 / celeba: the paper's stacked [x~ ; x] image or "
                   "x~ through a spatial encoder (default: see README, 'Two designs of stage 2')")
    r.add_argument("--data-root", default=None,
                   help="data folder of the image experiments (default $ARSMOOTH_DATA, else ./data); CelebA is read "
                   "from DATA_ROOT/celeba/img_align_celeba")
    r.add_argument("--inception-weights", default=None, metavar="FILE",
                   help="cifar10 / celeba: also compute the standard Inception FID / KID / IS with torch-fidelity "
                   "(pip install 'arsmooth[inception]') from this weights file "
                   "(weights-inception-2015-12-05-6726825d.pth); nothing is downloaded")
    r.add_argument("--classifier", default=None, metavar="FILE",
                   help="image experiments: the LeNet of the sample metrics, fit on the experiment's dataset (e.g. "
                   "results/classifiers/mnist.pt, or arsmooth fit-classifier); default OUT/classifier.pt, fit when missing")
    r.add_argument("--dry-run", action="store_true",
                   help="print the plan (models, budgets, and for cifar10 / celeba the cost estimate on --device) and exit")
    device_option(r, "sampling and scoring (training follows each preset's device setting)")
    common_options(r)
    r.set_defaults(func=run_reproduce)


def run_reproduce(a) -> int:
    from ..experiments import reproduce

    set_threads(a.threads)
    device = chosen_device(a)
    rec = reproduce(a.name, a.out, quick=a.quick, seed=a.seed, sigma=a.sigma, force=a.force,
                    progress=not a.no_progress, stage2=a.stage2, data_root=a.data_root,
                    inception_weights=a.inception_weights, classifier=a.classifier, device=str(device),
                    dry_run=a.dry_run)
    if rec is not None:  # None: a rank of a torchrun group other than the first
        print(f"wrote {a.out}/{a.name}.md (the summary), {a.name}.json and {a.name}.run.json in {rec['wall_time_s']} s")
    return 0


def add_report(sub) -> None:
    rp = sub.add_parser("report", help="one markdown report over image reproductions (paper Table 2 layout)",
                        description="Put the baseline, p(x~), single-step and two-step of one or more "
                        "'arsmooth reproduce mnist|fashion' folders side by side: metrics, bits/dim, grids, "
                        "neighbours, probes, budgets. 'arsmooth train' run folders (your own data too) get a "
                        "table and a plot of their learning curves (REPORT_curves.png beside the report).")
    rp.add_argument("runs", nargs="+", help="output folders of arsmooth reproduce mnist / fashion, or arsmooth train run folders")
    rp.add_argument("--out", default="report.md", help="the markdown file to write (default report.md)")
    rp.add_argument("--force", action="store_true", help="overwrite --out")
    rp.set_defaults(func=run_report)


def run_report(a) -> int:

    from ..experiments.report import folders_only, write_report
    from ..runtime.fileio import prepare_out_file

    prepare_out_file(a.out, a.force)
    dirs, skipped = folders_only(a.runs, a.out)
    if skipped:
        print(f"skipped {len(skipped)} path(s) that are not folders: {', '.join(map(str, skipped))}", file=sys.stderr)
    print(f"wrote {write_report(dirs, a.out)}")
    return 0


def add_pretrained(sub) -> None:
    pt = sub.add_parser("pretrained", help="list the pretrained models that ship with arsmooth",
                        description="The CPU-scale models inside the package (safetensors, SHA-256 checked on "
                        "every load): dataset, kind, size, sigma and training images. Use them with "
                        "'arsmooth sample --pretrained NAME' and 'arsmooth evaluate --pretrained NAME'.")
    pt.set_defaults(func=run_pretrained)


def run_pretrained(a) -> int:
    from ..models import pretrained as shipped

    m = shipped.manifest()
    if not m:
        print("no pretrained models ship with this installation")
        return 0
    for name in sorted(m):
        for kind in shipped.KINDS:
            e = m[name].get(kind)
            if e:
                size = "/".join(str(e["model"][k]) for k in ("nr_resnet", "nr_filters", "nr_logistic_mix"))
                imgs = f"{e['images_seen']:,}" if e.get("images_seen") else "?"
                print(f"{name:8s} {kind:8s} resnets/filters/logistics {size:8s} sigma {e['sigma']}  "
                      f"{imgs} training images  sha256 {e['sha256'][:12]}...")
    print("(arsmooth sample --pretrained NAME --method two-step --out DIR; arsmooth evaluate --pretrained NAME)")
    return 0


def add_list(sub) -> None:
    ls = sub.add_parser("list", help="list the experiments")
    ls.set_defaults(func=run_list)


def run_list(a) -> int:
    from ..experiments import EXPERIMENTS

    for e in EXPERIMENTS.values():
        print(f"{e.name:10s} {e.what}")
    return 0
