"""The two network families side by side on MNIST: writes ``families.md`` beside this file.

Reads ``../mnist/mnist.json`` (PixelCNN++, ``reproduce mnist``) and ``transformer-mnist.json`` (the causal pixel
transformer, ``reproduce transformer-mnist``), and, for the comparison at equal training images, each run's
``metrics.jsonl`` (test bits/dim on the first 200 test images at every checkpoint).

    python results/images/transformer_mnist/families.py
"""

import json
from pathlib import Path

import yaml

from arsmooth.runtime.run_folder import read_metrics

HERE = Path(__file__).resolve().parent
FAMILIES = {"PixelCNN++": HERE.parent / "mnist", "transformer": HERE}
RESULTS = {"PixelCNN++": HERE.parent / "mnist" / "mnist.json", "transformer": HERE / "transformer-mnist.json"}
AT_IMAGES = 150_000  # the transformer runs' budget
ROWS = (("baseline", "baseline"), ("two_step", "two-step (stages 1 + 2)"), ("single_step", "single-step (stage 1)"))


def checkpoint_bpd(run: Path, images: int) -> tuple[int, float] | None:
    """(images, test bits/dim on 200 test images) of the run's last checkpoint at or before ``images``."""
    batch = yaml.safe_load((run / "config.yaml").read_text())["train"]["batch_size"]
    best = None
    for rec in read_metrics(run):
        seen = rec.get("images", rec["step"] * batch)  # lines written before "images" was logged
        if "test_bpd" in rec and seen <= images:
            best = (seen, rec["test_bpd"])
    return best


def result_rows(family: str, r: dict, first_2000: Path) -> list[str]:
    """The family's three rows; ``first_2000``: ``arsmooth evaluate --baseline ... --n-images 2000 --iw 0``'s output."""
    p, b, m, psnr = r["params"], r["bpd"], r["metrics"], r["denoise_psnr"]
    exact_2000 = f"{json.loads(first_2000.read_text())['baseline']:.3f} (exact)" if first_2000.is_file() else ""
    cells = {"baseline": (p["baseline"], r["training"]["baseline"]["images_seen"], f"{b['baseline']:.3f} (exact)",
                          exact_2000),
             "two_step": (p["stage1"] + p["stage2"], r["training"]["stage2"]["images_seen"],
                          f"≤ {b['two_step_elbo']:.3f} (ELBO)", f"≤ {b['two_step_iw']:.3f} (IW K={b['iw_k']})"),
             "single_step": (p["stage1"], r["training"]["stage1"]["images_seen"], "", "")}
    out = []
    for key, name in ROWS:
        params, images, bpd, iw = cells[key]
        denoise = {"two_step": f"{psnr['two_step']:.2f}", "single_step": f"{psnr['single_step']:.2f}"}.get(key, "")
        out.append(f"| {family} | {name} | {params:,} | {images:,} | {bpd} | {iw} | {m[key]['fid']:.2f} | "
                   f"{m[key]['kid']:.2f} ± {m[key]['kid_std']:.2f} | {m[key]['is']:.2f} | {denoise} |")
    return out


def main() -> None:
    lines = ["# The two families on MNIST (written by `families.py`)", "",
             "Bits/dim are 8-bit on all 10,000 test images (the IW column on the first 2,000); sample metrics on "
             "5,000 samples per row against 5,000 test images with the LeNet of `results/classifiers/mnist.pt`; PSNR "
             "of denoising on 500 test images at sigma 0.5 (noisy input: 14.84 dB). Lower is better for bits/dim, FID "
             "and KID, higher for IS and PSNR.", "",
             "| family | model | parameters | training images | test bits/dim | bound on 2,000 | FID | KID | IS | "
             "denoising PSNR (dB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    missing = []
    for family, path in RESULTS.items():
        if path.is_file():
            lines += result_rows(family, json.loads(path.read_text()), path.parent / "baseline_first_2000.json")
        else:
            missing.append(f"{family}: {path.name} not there yet (the evaluation has not run)")
    lines += [""] + [f"- {m}" for m in missing] + ([""] if missing else [])
    lines += [f"## At equal training images ({AT_IMAGES:,} per model)", "",
              "Test bits/dim on the first 200 test images at the last checkpoint at or before "
              f"{AT_IMAGES:,} training images (each run's `metrics.jsonl`; stage 1 scores x~, a density, not "
              "8-bit bits/dim).", "", "| model | PixelCNN++ | transformer |", "|---|---|---|"]
    for kind in ("baseline", "stage1", "stage2"):
        cells = []
        for folder in FAMILIES.values():
            got = checkpoint_bpd(folder / "runs" / kind, AT_IMAGES)
            cells.append("" if got is None else f"{got[1]:.3f} (at {got[0]:,})")
        lines.append(f"| {kind} | {' | '.join(cells)} |")
    (HERE / "families.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
