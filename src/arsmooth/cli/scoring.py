"""The commands that score models and samples: evaluate, sensitivity, sigma, fit-classifier, metrics.
Each command's parser, then its handler: a thin layer over library calls."""

from __future__ import annotations

from ..errors import ArsmoothError
from .options import (
    chosen_device,
    common_options,
    default_batch,
    device_option,
    nonneg_int,
    positive_int,
    set_threads,
    use_pretrained,
)


def _label(src) -> str:
    return f"pretrained {src['kind']}" if isinstance(src, dict) else str(src)


def add_evaluate(sub) -> None:
    ev = sub.add_parser("evaluate", help="test bits/dim: baseline (exact), two-step ELBO and IW bound",
                        description="Score test images in bits per dimension of 8-bit images (lower is better): "
                        "the baseline's exact -log p(x), and for a stage-1 + stage-2 pair the two-step -ELBO "
                        "and the tighter importance-weighted bound, both upper bounds on -log p(x). (The "
                        "'test bits/dim' that training logs for stage 1 alone is a density of noisy images x~, "
                        "not comparable with these.) The test set is the checkpoint's own dataset and image "
                        "size unless --dataset says otherwise; prints one JSON object.")
    ev.add_argument("--baseline", help="baseline checkpoint")
    ev.add_argument("--stage1", help="stage-1 checkpoint (with --stage2)")
    ev.add_argument("--stage2", help="stage-2 checkpoint (with --stage1)")
    ev.add_argument("--pretrained", metavar="NAME", help="score the models that ship with arsmooth (e.g. mnist)")
    ev.add_argument("--dataset", default=None, help="dataset name, or folder:PATH to score another folder with the "
                    "checkpoint's image size and channels (default: the one the checkpoints were trained on)")
    ev.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE",
                    help="data settings of the test set, e.g. --set data.center_crop=140 (repeatable)")
    ev.add_argument("--data-root", help="data folder (default: the checkpoint's, else $ARSMOOTH_DATA, else ./data)")
    ev.add_argument("--n-images", type=positive_int, default=1000, help="test images (default 1000)")
    ev.add_argument("--draws", type=positive_int, default=1, help="noise draws for the ELBO (default 1)")
    ev.add_argument("--iw", type=nonneg_int, default=10, help="K of the importance-weighted bound (default 10; 0: skip)")
    ev.add_argument("--seed", type=nonneg_int, default=0, help="seed of the noise draws (default 0)")
    ev.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument("--batch-size", type=positive_int, default=None,
                    help="test images scored at once (default 50 on the CPU, 500 on a GPU)")
    device_option(ev)
    ev.set_defaults(func=run_evaluate)


def run_evaluate(a) -> int:
    import json

    import torch

    from ..data.image_sets import load_configured
    from ..evaluation import tasks
    from ..runtime import checkpoint as ckpt_io

    set_threads(a.threads)
    device = chosen_device(a)
    use_pretrained(a)
    base = pair = kernel = None
    ckpts = []
    if a.baseline:
        base, ck = tasks.load_model(a.baseline, "baseline", device)
        ckpts.append((_label(a.baseline), ck))
    if a.stage1 or a.stage2:
        if not (a.stage1 and a.stage2):
            raise ArsmoothError("the two-step bound needs both --stage1 and --stage2")
        pair, kernel = tasks.load_pair(a.stage1, a.stage2, device)
        for src in (a.stage1, a.stage2):  # both stages: a pair trained on two datasets is not scored on one silently
            ckpts.append((_label(src), src if isinstance(src, dict) else ckpt_io.load_checkpoint(src)))
    if base is None and pair is None:
        raise ArsmoothError("give --baseline CKPT and/or --stage1 CKPT --stage2 CKPT")
    data = tasks.test_data_of(ckpts, a.dataset, a.data_root, a.set)
    x = load_configured(data, "test")[0][: a.n_images]
    tasks.check_image_shape(x, ckpts)
    res = tasks.likelihood(x, baseline=base, pair=pair, kernel=kernel, n_draws=a.draws, k_iw=a.iw,
                       generator=torch.Generator().manual_seed(a.seed), progress=not a.no_progress,
                       batch_size=default_batch(a, 50, 500, device))
    res = {k: round(v, 5) if isinstance(v, float) else v for k, v in res.items()}
    res["dataset"] = data.dataset
    print(json.dumps(res, indent=2))
    return 0


def add_sensitivity(sub) -> None:
    se = sub.add_parser("sensitivity", help="how much a stage-2 model listens to x~ at each pixel",
                        description="For test images x and x~ = x + noise, the gradient norm of stage 2's output "
                        "parameters at four pixels with respect to the causal clean neighbours of each pixel, "
                        "against the gradient norm with respect to x~ at the pixel itself, and their ratio "
                        "(neighbours / x~). A p(x | x~) that ignores x~ has a huge ratio. Prints one JSON object.")
    se.add_argument("stage2", metavar="CKPT", help="a stage-2 checkpoint")
    se.add_argument("--n-images", type=positive_int, default=8, help="test images (default 8)")
    se.add_argument("--data-root", help="data folder (default: the checkpoint's, else $ARSMOOTH_DATA, else ./data)")
    se.add_argument("--seed", type=nonneg_int, default=0, help="seed of the noise (default 0)")
    se.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    device_option(se)
    se.set_defaults(func=run_sensitivity)


def run_sensitivity(a) -> int:
    import json

    import torch

    from ..data.image_sets import load_configured
    from ..evaluation import tasks
    from ..maths.kernels import make_kernel
    from ..runtime.checkpoint import settings_of

    set_threads(a.threads)
    model, ck = tasks.load_model(a.stage2, "stage2", chosen_device(a))
    data = tasks.test_data_of([(a.stage2, ck)], None, a.data_root)
    x = load_configured(data, "test")[0][: a.n_images]
    kernel = make_kernel(settings_of(ck).smoothing.kernel, ck["sigma"])
    xt = kernel.sample(x, torch.Generator().manual_seed(a.seed))
    res = tasks.stage2_sensitivity(model, x, xt, tasks.sensitivity_positions(*x.shape[-2:]))
    res = {"checkpoint": a.stage2, "design": model.conditioning, "sigma": ck["sigma"], **res}
    print(json.dumps(res, indent=2))
    return 0


def add_sigma(sub) -> None:
    sg = sub.add_parser("sigma", help="the noise level the median-distance heuristic suggests for a dataset",
                        description="Saremi and Hyvarinen's heuristic, the one behind the paper's choices (App. C.1): "
                        "median pairwise distance of training images / (2 sqrt(D)), in the [-1, 1] units of "
                        "smoothing.sigma, averaged over random subsets (with its spread). The paper uses 0.5 "
                        "for MNIST and 0.3 for CIFAR-10 and CelebA 'mainly based on' it.")
    sg.add_argument("--dataset", required=True, help="any dataset the loaders take (mnist, fashion, digits, folder:PATH, ...)")
    sg.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="data settings, e.g. --set data.size=32 --set data.channels=3 for folder:PATH")
    sg.add_argument("--data-root", help="data folder (default $ARSMOOTH_DATA, else ./data)")
    sg.add_argument("-n", type=positive_int, default=2000, help="images per random subset (default 2000)")
    sg.add_argument("--subsets", type=positive_int, default=5, help="random subsets (default 5)")
    sg.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    sg.set_defaults(func=run_sigma)


def run_sigma(a) -> int:
    import json
    import statistics

    from ..data.image_sets import load_configured
    from ..maths.kernels import sigma_heuristic
    from ..runtime.config import load_config

    set_threads(a.threads)
    sets = [f"data.dataset={a.dataset}", *a.set] + ([f"data.data_root={a.data_root}"] if a.data_root else [])
    data = load_config("digits-baseline", sets).data  # the data settings, checked as train checks them
    x = load_configured(data, "train")[0]
    values = [sigma_heuristic(x, a.n, seed) for seed in range(a.subsets)]
    res = {"dataset": a.dataset, "sigma": round(statistics.mean(values), 4),
           "sd_over_subsets": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
           "subset_size": min(a.n, len(x)), "subsets": a.subsets, "images": len(x), "dims": x[0].numel(),
           "units": "[-1, 1] pixel units (smoothing.sigma)"}
    print(json.dumps(res, indent=2))
    return 0


def add_fit_classifier(sub) -> None:
    fc = sub.add_parser("fit-classifier", help="train the LeNet feature extractor of the sample metrics",
                        description="Train the small LeNet classifier whose features and logits our FID, KID and "
                        "Inception-style score use (deterministic, a few CPU minutes for MNIST). On CIFAR-10 the "
                        "same LeNet on 3x32x32 images: its numbers are 'FID (LeNet features)', not Inception FID.")
    fc.add_argument("--dataset", required=True, metavar="NAME",
                    help="mnist, fashion, cifar10, celeba or folder:PATH (your own images, with --set data.size=S "
                    "--set data.channels=C as you trained on them). celeba and folders have no labels: the LeNet "
                    "learns to tell four rotations apart instead")
    fc.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE",
                    help="folder:PATH only: its image settings (data.size, data.channels, data.center_crop, "
                    "data.test_fraction)")
    fc.add_argument("--data-root", help="data folder (default $ARSMOOTH_DATA, else ./data)")
    fc.add_argument("--epochs", type=positive_int, default=None,
                    help="epochs (default 3 for mnist, 10 for fashion, 15 for cifar10, 5 for celeba, 20 for a folder)")
    fc.add_argument("--out", help="where to write it (default classifiers/DATASET.pt; a folder: classifiers/FOLDERNAME.pt)")
    device_option(fc, "the classifier trains")
    common_options(fc)
    fc.set_defaults(func=run_fit_classifier)


def run_fit_classifier(a) -> int:
    from pathlib import Path

    from ..evaluation import classifier as lenet
    from ..runtime.fileio import prepare_out_file

    set_threads(a.threads)
    device = chosen_device(a)
    data = None
    if a.dataset.startswith("folder:"):  # own images: the rotation task, with the folder's image settings
        from ..runtime.config import DataSettings, Settings

        data = Settings(data=DataSettings(dataset="digits")).with_overrides(
            [f"data.dataset={a.dataset}", *([f"data.data_root={a.data_root}"] if a.data_root else []), *a.set]).data
    elif a.set:
        raise ArsmoothError("--set applies to --dataset folder:PATH (the image settings of your own images)")
    name = Path(a.dataset.split(":", 1)[1]).name if data is not None else a.dataset
    out = Path(a.out or f"classifiers/{name}.pt")
    prepare_out_file(out, a.force)  # find out now, not after minutes of training, that it cannot be written
    net, info = lenet.fit_dataset(a.dataset, a.data_root, a.epochs, a.seed, not a.no_progress, data=data, device=device)
    sha = lenet.save(net, info, out)
    task = " (telling the four rotations apart)" if info.get("task") == "rotation" else ""
    print(f"test accuracy{task} {100 * info['test_accuracy']:.2f}% after {info['epochs']} epochs "
          f"({info['train_seconds']} s); wrote {out} (weights sha256 {sha[:16]}...)")
    return 0


def add_metrics(sub) -> None:
    mt = sub.add_parser("metrics", help="FID / KID / Inception-style score of sample files, with our LeNet",
                        description="Score the uint8 images of .npz files written by 'arsmooth sample' (or every "
                        "column of a reproduce samples.npz) against as many test images of --dataset: FID and KID "
                        "on the LeNet's features, the Inception-style score on its logits (fit one with "
                        "'arsmooth fit-classifier'). One JSON line per sample set; the numbers compare sets scored "
                        "with the same classifier, not papers.")
    mt.add_argument("samples", nargs="+", help=".npz files of samples")
    mt.add_argument("--dataset", required=True, help="the test set to compare with (e.g. mnist, fashion, or "
                    "folder:PATH, read at the samples' size and channels)")
    mt.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE",
                    help="data settings of the test set, e.g. --set data.center_crop=140 (repeatable)")
    mt.add_argument("--classifier", required=True, help="a classifier written by arsmooth fit-classifier")
    mt.add_argument("-n", type=positive_int, default=None, help="images per side (default: all samples)")
    mt.add_argument("--data-root", help="data folder (default $ARSMOOTH_DATA, else ./data)")
    mt.add_argument("--seed", type=nonneg_int, default=0, help="seed of the KID subsets (default 0)")
    mt.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    device_option(mt, "the classifier and the metrics")
    mt.set_defaults(func=run_metrics)


def run_metrics(a) -> int:
    import json
    import warnings
    import zipfile
    from pathlib import Path

    import numpy as np

    from ..data.image_sets import to_uint8
    from ..evaluation import classifier as lenet
    from ..evaluation import metrics as sample_metrics

    set_threads(a.threads)
    chosen_device(a)  # checked before any work
    sets = []
    for path in a.samples:  # every file is read before anything is computed
        if not Path(path).is_file():
            raise ArsmoothError(f"{path} does not exist (give .npz files written by arsmooth sample or reproduce)")
        if not zipfile.is_zipfile(path):
            raise ArsmoothError(f"{path} is not an .npz file (arsmooth sample and reproduce write them)")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files if k == "uint8" or k.endswith(".uint8")}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ArsmoothError(f"{path} is not a readable .npz of samples ({' '.join(str(e).split())[:120]})") from None
        if not arrays:
            raise ArsmoothError(f"{path} holds no uint8 images (arsmooth sample and reproduce write them as 'uint8')")
        sets += [(path, key, u8) for key, u8 in arrays.items()]
    net, info = lenet.load(a.classifier)
    net = net.to(chosen_device(a))
    real = to_uint8(_metrics_test_images(a, sets[0][2].shape))
    for path, key, u8 in sets:
        n = min(a.n or len(u8), len(u8), len(real))
        with warnings.catch_warnings():  # torchmetrics' notes on buffering features: not the user's concern
            warnings.simplefilter("ignore", UserWarning)
            # a rotation LeNet's logits say nothing about classes: no Inception-style score from it
            res = sample_metrics.sample_metrics(u8[:n], real[:n], net, a.seed, score=info.get("task") != "rotation")
        res = {"samples": f"{path}" + ("" if key == "uint8" else f":{key[:-len('.uint8')]}"), **res,
               "feature_extractor": f"LeNet {Path(a.classifier).name} ({100 * info['test_accuracy']:.2f}% test "
               f"accuracy on {info.get('dataset', '?')}, sha256 {info['weights_sha256'][:12]})"}
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}))
    return 0


def _metrics_test_images(a, shape: tuple):
    """The test images ``metrics`` compares with: ``--dataset``; a ``folder:`` at the samples' size and channels
    (``shape``: ``(N, C, H, W)``), unless ``--set data.*`` says otherwise."""
    from ..data.image_sets import load_configured
    from ..runtime.config import DataSettings, Settings

    data = DataSettings(dataset=a.dataset, data_root=a.data_root,
                        **({"size": int(shape[2]), "channels": int(shape[1])} if a.dataset.startswith("folder:") else {}))
    if a.set:
        bad = [t for t in a.set if not t.strip().startswith("data.")]
        if bad:
            raise ArsmoothError(f"--set {bad[0]}: only data.* settings apply here")
        data = Settings(data=data).with_overrides(a.set).data
    return load_configured(data, "test")[0]
