"""Image-model tasks over checkpoints: sampling, likelihood bounds, inpainting and denoising.

Units: bits per dimension of 8-bit images (the paper reports bits/dim of the discrete 8-bit data). The two-step bounds are
``-ELBO / (D ln 2)`` and the importance-weighted ``-log (1/K) sum_k p(x~_k) P(x | x~_k) / q(x~_k | x)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ArsmoothError
from ..maths import smoothing
from ..maths.kernels import Gaussian, make_kernel
from ..maths.likelihoods import bits_per_dim, draw
from ..maths.objectives import objective_of
from ..models.build import model_from_checkpoint
from ..models.image_model import ImageModel
from ..runtime import checkpoint as ckpt_io
from ..runtime.config import DataSettings
from ..runtime.distributed import device_of

IMAGE_METHODS = ("baseline", "smoothed", "single-step", "single-step-detached", "two-step")


def load_model(src, kind: str | tuple[str, ...], device="cpu") -> tuple[ImageModel, dict]:
    """A model from a checkpoint path, or from an already loaded checkpoint dict (e.g. a pretrained one)."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    stage = set(kinds) & {"stage1", "stage2"}  # a smoothed checkpoint (stages 1 and 2 trained together) serves either
    if isinstance(src, dict):
        ckpt = src
    else:
        ckpt = ckpt_io.load_checkpoint(src, expect_kind=(*kinds, "smoothed") if stage else kinds, map_location=device)
    objective = objective_of(ckpt["kind"])
    if objective.joint and stage:
        joint = model_from_checkpoint(ckpt, device)
        part = sorted(stage)[0]
        return dict(zip(objective.stages, joint.stages))[part], {**ckpt, "kind": part}
    if ckpt["kind"] not in kinds:
        raise ArsmoothError(f"a {ckpt['kind']} model was given where a {' or '.join(kinds)} model is expected")
    return model_from_checkpoint(ckpt, device), ckpt


def load_pair(stage1_path, stage2_path, device="cpu") -> tuple[smoothing.SmoothedPair, object]:
    """The two-step model from a stage-1 and a stage-2 checkpoint; refuses mixed-up kinds or sigmas."""
    m1, c1 = load_model(stage1_path, "stage1", device)
    m2, c2 = load_model(stage2_path, "stage2", device)
    ckpt_io.check_same_sigma(c1, c2)
    k1, k2 = ckpt_io.settings_of(c1).smoothing.kernel, ckpt_io.settings_of(c2).smoothing.kernel
    if k1 != k2:
        raise ArsmoothError(f"stage 1 was trained with a {k1} kernel and stage 2 with a {k2} kernel; they must match")
    if tuple(c1["extra"]["image_shape"]) != tuple(c2["extra"]["image_shape"]):
        raise ArsmoothError("stage 1 and stage 2 were trained on images of different shapes")
    return smoothing.SmoothedPair(m1, m2), make_kernel(k1, c1["sigma"])


def load_prior(stage1_path, device="cpu") -> tuple[smoothing.SmoothedPair, object]:
    """Stage 1 alone (for x~ samples and single-step denoising), as a pair without p(x | x~)."""
    m1, c1 = load_model(stage1_path, "stage1", device)
    return smoothing.SmoothedPair(m1, None), make_kernel(ckpt_io.settings_of(c1).smoothing.kernel, c1["sigma"])


def test_data_of(ckpts: list[tuple[str, dict]], dataset: str | None = None,
                 data_root: str | None = None, overrides=()) -> DataSettings:
    """The ``data`` settings to score checkpoints on: their own dataset (all must agree), or ``dataset``.

    ``dataset`` may be another ``folder:PATH``: the image size and channels come from the checkpoint (and the
    crop and test share from its own folder settings, when it was trained on a folder), so a folder scores
    with the settings the model was trained with. ``overrides`` (``data.KEY=VALUE`` texts) change any of them.
    """
    own = {ckpt_io.settings_of(c).data.dataset for _, c in ckpts}
    if dataset is None and len(own) > 1:
        raise ArsmoothError(f"the checkpoints were trained on different datasets ({', '.join(sorted(own))}); "
                            "pass --dataset")
    data = ckpt_io.settings_of(ckpts[0][1]).data
    if dataset is not None:
        data = _other_dataset(data, dataset, tuple(ckpts[0][1]["extra"]["image_shape"]))
    if data_root is not None:
        data = dataclasses.replace(data, data_root=data_root)
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if not key.startswith("data."):
            raise ArsmoothError(f"--set {text}: only data.* settings apply here (the model's come from its checkpoint)")
    if overrides:
        from ..runtime.config import Settings

        data = Settings(data=data).with_overrides(list(overrides)).data
    return data


def _other_dataset(data: DataSettings, dataset: str, shape: tuple[int, int, int]) -> DataSettings:
    """``data`` pointed at ``dataset``; a folder gets the checkpoint's image shape and ``data``'s folder settings."""
    if not dataset.startswith("folder:"):
        return data if dataset == data.dataset else DataSettings(dataset=dataset)
    own = data if data.dataset.startswith("folder:") else DataSettings()
    return DataSettings(dataset=dataset, size=own.size or shape[1], channels=shape[0], center_crop=own.center_crop,
                        test_fraction=own.test_fraction, data_root=data.data_root)


def check_image_shape(x: Tensor, ckpts: list[tuple[str, dict]]) -> None:
    """Refuse test images whose shape differs from the one a checkpoint was trained on."""
    for path, c in ckpts:
        want = tuple(c["extra"]["image_shape"])
        if tuple(x.shape[1:]) != want:
            raise ArsmoothError(f"{path} was trained on images {want}, the test images are {tuple(x.shape[1:])}; "
                                "score it on its own dataset (omit --dataset)")


def check_finite(x: Tensor, what: str) -> Tensor:
    if not torch.isfinite(x).all():
        raise ArsmoothError(f"{what} produced non-finite values; no images were written")
    return x


def sample_seeded(method: str, n: int, seed: int, *, baseline: ImageModel | None = None, pair=None, kernel=None,
                  batch_size: int = 64, progress: bool = False, fast: bool = True, ctx=None) -> Tensor | None:
    """``n`` images by ``method``, batch ``i`` drawn from :func:`batch_seed` ``(seed, i)``: the images depend
    on ``seed``, ``n`` and ``batch_size`` only. Under torchrun (``ctx`` from :func:`arsmooth.runtime.distributed.setup`)
    the batches are dealt across the processes and gathered on rank 0, which returns them (the others
    return None), so N processes give the images of one, about N times faster.
    """
    from tqdm.auto import tqdm

    from ..runtime import distributed

    ctx = ctx or distributed.Context()
    n_batches = -(-n // batch_size)
    mine = distributed.my_share(ctx, n_batches)
    done = {}
    for i in tqdm(mine, desc=f"sampling ({method})", unit="batch", disable=not (progress and ctx.main),
                  dynamic_ncols=True):
        b = min(batch_size, n - i * batch_size)
        g = torch.Generator().manual_seed(batch_seed(seed, i))
        done[i] = sample_images(method, b, baseline=baseline, pair=pair, kernel=kernel, generator=g, batch_size=b,
                                fast=fast).cpu()  # to the host as each batch is done: it is kept to be written
    merged = distributed.gather_on_main(ctx, done)
    return None if merged is None else torch.cat([merged[i] for i in range(n_batches)])


def sample_images(method: str, n: int, *, baseline: ImageModel | None = None, pair=None, kernel=None,
                  generator=None, batch_size: int = 64, progress: bool = False, fast: bool = True) -> Tensor:
    """``n`` images by ``method`` (one of :data:`IMAGE_METHODS`), in [-1, 1] units, unclamped.

    ``fast=False`` uses the obvious sampler (same images, one network pass per pixel).
    """
    if method not in IMAGE_METHODS:
        raise ArsmoothError(f"unknown sampling method {method!r}; choose one of {', '.join(IMAGE_METHODS)}")
    if n < 1:
        raise ArsmoothError(f"the number of samples must be >= 1, got {n}")
    out = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        if method == "baseline":
            if baseline is None:
                raise ArsmoothError("method baseline needs a baseline checkpoint (--baseline)")
            x = baseline.sample(b, generator=generator, progress=progress, fast=fast)
        else:
            if pair is None:
                raise ArsmoothError(f"method {method} needs --stage1 (and --stage2 for two-step)")
            xt = pair.prior.sample(b, generator=generator, progress=progress, fast=fast)
            x = smoothing.denoise(pair, kernel, xt, method, generator) if method != "two-step" else \
                pair.reverse.sample(context=xt, generator=generator, progress=progress, fast=fast)
        out.append(check_finite(x.detach(), f"sampling ({method})"))
    return torch.cat(out)



def batch_seed(seed: int, index: int) -> int:
    """The seed of sample batch ``index``: samples then depend on (seed, batch size, n) only, not on the
    process, the session or the order in which batches were drawn."""
    import numpy as np

    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> 1)


FIG6_COLUMNS = ("baseline", "smoothed", "single-step", "two-step")


def partial_path(partial: str | Path, ctx=None) -> Path:
    """Where :func:`fig6_columns` keeps its finished batches: ``partial`` itself in one process, one file per
    rank under torchrun (``NAME.rank1of4.npz``)."""
    partial = Path(partial)
    if ctx is None or not ctx.enabled:
        return partial
    return partial.with_name(f"{partial.name.removesuffix('.npz')}.rank{ctx.rank}of{ctx.world}.npz")


def fig6_columns(baseline, pair, kernel, n: int, seed: int, batch_size: int = 64, partial=None,
                 progress: bool = False, ctx=None) -> dict | None:
    """The paper's Fig. 6 columns: baseline samples, and from the same x~ ~ p(x~) the smoothed, single-step
    and two-step images; ``n`` of each as 8-bit images (uint8, what is saved and scored), batch ``i``
    drawn from :func:`batch_seed` ``(seed, i)``.

    With ``partial`` (a ``.npz`` path), the batches done so far are saved there after each batch, and a
    later call with the same ``seed``, ``batch_size`` and ``n`` continues from them: the result is the
    same as one uninterrupted call. Under torchrun (``ctx`` from :func:`arsmooth.runtime.distributed.setup`) the
    batches are dealt across the processes, each keeping its own partial file (:func:`partial_path`),
    and gathered on rank 0, which returns the columns (the others return None): the images do not
    depend on the number of processes.
    """
    import numpy as np
    from tqdm.auto import tqdm

    from ..data.image_sets import to_uint8
    from ..runtime import distributed
    from ..runtime.fileio import atomic_write

    ctx = ctx or distributed.Context()
    mine = list(distributed.my_share(ctx, -(-n // batch_size)))
    key = np.array([seed, batch_size, n] + ([ctx.rank, ctx.world] if ctx.enabled else []))
    partial = None if partial is None else partial_path(partial, ctx)
    done: dict[str, list[Tensor]] = {k: [] for k in FIG6_COLUMNS}
    if partial is not None and partial.is_file():
        with np.load(partial) as z:
            if "key" in z.files and np.array_equal(z["key"], key):
                done = {k: list(torch.from_numpy(z[k]).split(batch_size)) for k in FIG6_COLUMNS}
    bar = tqdm(mine[len(done["baseline"]):], desc="sampling the Fig. 6 columns", unit="batch",
               disable=not (progress and ctx.main), dynamic_ncols=True)
    for i in bar:
        b = min(batch_size, n - i * batch_size)
        g = torch.Generator().manual_seed(batch_seed(seed, i))
        done["baseline"].append(to_uint8(sample_images("baseline", b, baseline=baseline, generator=g, batch_size=b).cpu()))
        cols = two_step_columns(pair, kernel, b, generator=g, batch_size=b)
        for k, v in cols.items():
            done[k].append(to_uint8(v.cpu()))
        if partial is not None:
            arrays = {k: torch.cat(v).numpy() for k, v in done.items()}
            atomic_write(partial, lambda tmp: np.savez_compressed(tmp, key=key, **arrays), suffix=".npz")
    merged = distributed.gather_on_main(ctx, {i: {k: done[k][j] for k in FIG6_COLUMNS} for j, i in enumerate(mine)})
    if merged is None:
        return None
    return {k: torch.cat([merged[i][k] for i in sorted(merged)]) for k in FIG6_COLUMNS}


def two_step_columns(pair, kernel, n: int, generator=None, batch_size: int = 64, progress: bool = False) -> dict:
    """The paper's Fig. 6 columns from the same draws x~ ~ p(x~): x~ itself, single-step, two-step."""
    xt = sample_images("smoothed", n, pair=pair, kernel=kernel, generator=generator, batch_size=batch_size,
                       progress=progress)
    single = torch.cat([smoothing.denoise(pair, kernel, xt[i : i + batch_size], "single-step") for i in range(0, n, batch_size)])
    two = torch.cat([pair.reverse.sample(context=xt[i : i + batch_size], generator=generator, progress=progress)
                     for i in range(0, n, batch_size)])
    return {"smoothed": xt, "single-step": check_finite(single.detach(), "single-step denoising"),
            "two-step": check_finite(two, "two-step sampling")}


@torch.no_grad()
def likelihood(x: Tensor, *, baseline: ImageModel | None = None, pair=None, kernel=None, n_draws: int = 1,
               k_iw: int = 0, batch_size: int = 50, generator=None, progress: bool = False) -> dict:
    """Test bits/dim of 8-bit images ``x``: baseline exact; two-step ELBO (``n_draws`` noise draws) and IW(K).
    ``progress`` shows a bar over the batches of every bound (images scored, and the bound being computed)."""
    from tqdm.auto import tqdm

    if n_draws < 1 or k_iw < 0:
        raise ArsmoothError(f"need n_draws >= 1 and K >= 0, got {n_draws} and {k_iw}")
    n, dims = x.shape[0], x[0].numel()
    res: dict = {"n_images": int(n)}
    dev = device_of(baseline if baseline is not None else pair.prior)
    chunks = [x[i : i + batch_size].to(dev) for i in range(0, n, batch_size)]
    parts = {}
    if baseline is not None:
        parts["baseline"] = lambda c: baseline.log_prob(c)
    if pair is not None:
        parts["two_step_elbo"] = lambda c: smoothing.elbo(pair, kernel, c, n_draws, generator)
        if k_iw:
            parts["two_step_iw"] = lambda c: smoothing.iw_bound(pair, kernel, c, k_iw, generator)
    bar = tqdm(total=n * len(parts), desc="scoring", unit="img", disable=not progress, leave=False)
    for name, log_p in parts.items():  # in this order: the noise draws do not depend on the bar
        bar.set_description(f"scoring: {name}")
        total = 0.0
        for c in chunks:
            total += float(log_p(c).sum())
            bar.update(len(c))
        res[name] = bits_per_dim(-total / n, dims)
        if name == "two_step_elbo":
            res["elbo_noise_draws"] = n_draws
        if name == "two_step_iw":
            res["iw_k"] = k_iw
    bar.close()
    return res


def inpaint(pair, kernel, x: Tensor, generator=None, progress: bool = False) -> dict:
    """Complete the bottom half of ``x``: x~ from the perturbed top half by stage 1, then x by stage 2."""
    h = x.shape[-2] // 2
    x = x.to(device_of(pair.prior))
    noisy = kernel.sample(x, generator)
    xt = pair.prior.sample(known=noisy, start_row=h, generator=generator, progress=progress)
    out = pair.reverse.sample(context=xt, known=x, start_row=h, generator=generator, progress=progress)
    masked = x.clone()
    masked[..., h:, :] = 0.0
    return {"observed": masked.cpu(), "x_tilde": xt.cpu(), "completed": check_finite(out, "inpainting").cpu()}


def psnr(a: Tensor, b: Tensor) -> float:
    """Mean PSNR in dB of 8-bit images (both quantised and clamped), peak 255."""
    from ..data.image_sets import to_uint8

    mse = ((to_uint8(a).double() - to_uint8(b).double()) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(255.0**2 / mse)).mean())


def clean_model_single_step(baseline: ImageModel, x: Tensor, sigmas=(0.01, 0.05, 0.1), generator=None) -> dict:
    """Paper App. C.6: single-step denoising with a model trained on clean data.

    ``x~ = x + sigma eps`` is denoised by ``x~ + sigma^2 grad log p(x~)`` where ``p`` is the baseline's
    mixture read as a continuous density (full gradient). Returns PSNR of noisy and denoised, per sigma.
    """
    from ..maths import likelihoods

    def log_p(t: Tensor) -> Tensor:
        return likelihoods.image_log_prob(t, baseline.net(t), baseline.nr_mix, False).flatten(1).sum(1)

    baseline.eval()
    x = x.to(device_of(baseline))
    out = {}
    for s in sigmas:
        noisy = x + s * draw("normal", x.shape, generator, x)
        den = noisy + s**2 * smoothing.score(log_p, noisy)
        out[str(s)] = {"noisy": psnr(noisy, x), "single_step": psnr(check_finite(den.detach(), "denoising"), x)}
    return out


def denoise(pair, kernel, x: Tensor, generator=None, progress: bool = False) -> dict:
    """Perturb clean ``x`` with q, then denoise with single-step (Gaussian only) and two-step; PSNR of each.
    Runs on the models' device; the images come back on the host."""
    x = x.to(device_of(pair.prior))
    noisy = kernel.sample(x, generator)
    out = {"clean": x, "noisy": noisy}
    if isinstance(kernel, Gaussian):
        out["single_step"] = smoothing.single_step_denoise(pair, noisy, kernel.std)
    out["two_step"] = pair.reverse.sample(context=noisy, generator=generator, progress=progress)
    scores = {k: psnr(v, x) for k, v in out.items() if k != "clean"}
    return {"images": {k: v.detach().cpu() for k, v in out.items()}, "psnr": scores}


def sensitivity_positions(h: int, w: int) -> list[tuple[int, int]]:
    """Four pixels inside the object area of an ``h x w`` image (for 28 x 28: (7, 14), (14, 7), (14, 14), (21, 14))."""
    return [(h // 4, w // 2), (h // 2, w // 4), (h // 2, w // 2), (3 * h // 4, w // 2)]


def causal_neighbours(i: int, j: int, w: int) -> list[tuple[int, int]]:
    """The clean pixels next to ``(i, j)`` that come before it in raster order (up-left, up, up-right, left)."""
    cand = [(i - 1, j - 1), (i - 1, j), (i - 1, j + 1), (i, j - 1)]
    return [(a, b) for a, b in cand if a >= 0 and 0 <= b < w]


def stage2_sensitivity(model: ImageModel, x: Tensor, x_tilde: Tensor, positions: list[tuple[int, int]]) -> dict:
    """How much stage 2's output at a pixel listens to x~ there, against its causal clean neighbours.

    For each position ``p`` and image, the Frobenius norm of the Jacobian of the mixture parameters at
    ``p`` with respect to the clean neighbours (:func:`causal_neighbours`) and with respect to
    ``x~(p)``; ``ratio`` is their quotient (neighbours / x~), averaged over images. A p(x | x~) that
    ignores x~ has a huge ratio; a denoiser's is small.
    """
    if not getattr(model, "takes_context", False):
        raise ArsmoothError(f"the sensitivity diagnostic needs a stage-2 checkpoint, got {model.kind}")
    model.eval()
    x, x_tilde = x.to(device_of(model)), x_tilde.to(device_of(model))
    w = x.shape[-1]
    out = []
    for i, j in positions:
        xs, xts = x.clone().requires_grad_(), x_tilde.clone().requires_grad_()
        theta = model.params(xs, context=xts)[:, :, i, j]  # (B, P)
        sq_x, sq_xt = x.new_zeros(x.shape[0]), x.new_zeros(x.shape[0])
        nb = causal_neighbours(i, j, w)
        for k in range(theta.shape[1]):  # images are independent: one backward pass per parameter
            gx, gxt = torch.autograd.grad(theta[:, k].sum(), (xs, xts), retain_graph=True)
            sq_x += sum(gx[:, :, a, b].pow(2).sum(1) for a, b in nb)
            sq_xt += gxt[:, :, i, j].pow(2).sum(1)
        ratio = (sq_x.sqrt() / sq_xt.sqrt().clamp_min(1e-30))
        out.append({"position": [i, j], "grad_neighbours": float(sq_x.sqrt().mean()),
                    "grad_x_tilde_here": float(sq_xt.sqrt().mean()), "ratio": float(ratio.mean())})
    ratios = [r["ratio"] for r in out]
    return {"positions": out, "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratio_geomean": float(torch.tensor(ratios).log().mean().exp()), "n_images": int(x.shape[0])}
