"""PixelCNN++ is causal in raster order, its likelihood factorises, and it handles any batch size."""

import pytest
import torch

from arsmooth.errors import ArsmoothError
from arsmooth.maths import likelihoods as L
from arsmooth.networks.cpu_kernels import padded_concat_elu
from arsmooth.networks.pixelcnnpp import PixelCNNpp, concat_elu
from arsmooth.networks.stacked import bottom_half, stack_pair
from arsmooth.runtime.config import ModelSettings


def _model(channels, nr_resnet=1, nr_filters=8, nr_mix=2, dropout=0.0, fused=False, dropout_mode="element",
           dropout_masks="bernoulli"):
    torch.manual_seed(1)
    m = PixelCNNpp(channels, ModelSettings(nr_resnet=nr_resnet, nr_filters=nr_filters, nr_logistic_mix=nr_mix,
                                           dropout=dropout, fused=fused, dropout_mode=dropout_mode,
                                           dropout_masks=dropout_masks), spatial_condition=False)
    return m.double().eval()


def _dependence(model, x, positions):
    """Boolean ``(len(positions), H * W)``: does pixel ``p``'s output depend on input pixel ``j``?

    One batch element per output position (elements are independent), so one backward pass
    gives every row; all channels of a pixel are pooled on both sides.
    """
    _, c, h, w = x.shape
    n = len(positions)
    xs = x.expand(n, -1, -1, -1).clone().requires_grad_()
    params = model(xs)  # (n, P, H, W)
    rows, cols = positions // w, positions % w
    (grad,) = torch.autograd.grad(params[torch.arange(n), :, rows, cols].sum(), xs)
    return grad.abs().sum(1).reshape(n, h * w) > 0


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_output_sees_exactly_the_pixels_before_it(channels, fused):
    # nr_resnet=2 reaches every earlier pixel of an 8x8 image, so the dependence pattern must be
    # exactly the strict raster-order past: zero on and after the pixel, nonzero before it.
    model = _model(channels, nr_resnet=2, fused=fused)
    x = torch.randn(1, channels, 8, 8, dtype=torch.float64)
    dep = _dependence(model, x, torch.arange(64))
    strict_past = torch.ones(64, 64, dtype=torch.bool).tril(-1)
    assert not (dep & ~strict_past).any(), "an output depends on its own pixel or a later one"
    assert torch.equal(dep, strict_past)


@pytest.mark.parametrize("channels", [1, 3])
def test_small_model_is_causal_on_a_wide_image(channels):
    model = _model(channels, nr_resnet=1)
    h, w = 8, 12
    x = torch.randn(1, channels, h, w, dtype=torch.float64)
    positions = torch.arange(h * w)
    dep = _dependence(model, x, positions)
    strict_past = torch.ones(h * w, h * w, dtype=torch.bool).tril(-1)
    assert not (dep & ~strict_past).any()
    assert dep[1:].any(1).all(), "every output after the first must see some earlier pixel"
    # the left neighbour and the pixel above are always in the receptive field
    left = positions[positions % w > 0]
    above = positions[positions >= w]
    assert dep[left, left - 1].all() and dep[above, above - w].all()


@pytest.mark.parametrize("channels", [1, 3])
def test_stacked_bottom_half_sees_all_of_x_tilde_and_only_the_past_of_x(channels):
    model = _model(channels, nr_resnet=1)
    h, w = 8, 8
    x_tilde = torch.randn(1, channels, h, w, dtype=torch.float64)
    x = L.quantize(torch.rand(1, channels, h, w, dtype=torch.float64) * 2 - 1)
    stacked = stack_pair(x_tilde, x)  # (1, C, 2H, W)

    s = stacked.clone().requires_grad_()
    (grad,) = torch.autograd.grad(bottom_half(model(s)).sum(), s)
    seen = grad.abs().sum(1)[0]  # (2H, W)
    assert (seen[:h] > 0).all(), "p(x | x~) must depend on every pixel of x~"

    bottom = torch.arange(h * w, 2 * h * w)
    dep = _dependence(model, stacked, bottom)
    strict_past = torch.ones(2 * h * w, 2 * h * w, dtype=torch.bool).tril(-1)[bottom]
    assert not (dep & ~strict_past).any()


@pytest.mark.parametrize("discretized", [True, False])
@pytest.mark.parametrize("channels", [1, 3])
def test_log_likelihood_factorises_pixel_by_pixel(channels, discretized):
    # Pixel k's log-prob must be the same when every pixel at or after k is garbage: then the
    # batched log-likelihood is the sum of the autoregressive conditionals.
    nr_mix, h, w = 3, 4, 8
    model = _model(channels, nr_mix=nr_mix)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, channels, h, w, generator=g, dtype=torch.float64) * 2 - 1
    x = L.quantize(x) if discretized else 1.5 * x  # smoothed data may leave [-1, 1]
    full = L.image_log_prob(x, model(x), nr_mix, discretized)[0].flatten()  # (H W,)

    n = h * w
    garbage = 3.0 * torch.randn(n, channels, h, w, generator=g, dtype=torch.float64)
    after = (torch.arange(n)[None, :] >= torch.arange(n)[:, None]).view(n, 1, h, w)
    corrupted = torch.where(after, garbage, x)  # row k: pixels >= k replaced
    lp = L.image_log_prob(x.expand(n, -1, -1, -1), model(corrupted), nr_mix, discretized)
    one_at_a_time = lp.reshape(n, n).diagonal()  # row k scored at pixel k
    assert torch.allclose(one_at_a_time, full, rtol=0, atol=1e-10)
    assert one_at_a_time.sum().item() == pytest.approx(full.sum().item(), abs=1e-9)
    # and the garbage does change later pixels, so the comparison is not vacuous
    assert not torch.allclose(lp.reshape(n, n)[0, 1:], full[1:])


@pytest.mark.parametrize("shape", [(30, 28), (28, 30), (6, 8)])
def test_sizes_not_divisible_by_4_are_refused(shape):
    model = _model(1)
    with pytest.raises(ArsmoothError, match="divisible by 4"):
        model(torch.zeros(1, 1, *shape, dtype=torch.float64))


def test_wrong_channel_count_is_refused():
    with pytest.raises(ArsmoothError, match="1 or 3"):
        PixelCNNpp(2, ModelSettings(), spatial_condition=False)
    with pytest.raises(ArsmoothError, match=r"\(B, 3, H, W\)"):
        _model(3)(torch.zeros(1, 1, 8, 8, dtype=torch.float64))


def test_batch_size_can_change_and_samples_are_independent():
    model = _model(3, nr_mix=2)
    x = torch.randn(5, 3, 8, 12, dtype=torch.float64)
    out2 = model(x[:2])
    out5 = model(x)
    assert out2.shape == (2, L.image_param_channels(3, 2), 8, 12)
    assert out5.shape == (5, model.out_channels, 8, 12)
    assert torch.allclose(out5[:2], out2, atol=1e-12)


def test_dropout_acts_in_train_mode_only():
    model = _model(1, dropout=0.5)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


def test_stack_pair_and_bottom_half_round_trip():
    a, b = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)
    s = stack_pair(a, b)
    assert s.shape == (2, 3, 8, 8)
    assert torch.equal(s[:, :, :4], a) and torch.equal(bottom_half(s), b)
    assert torch.equal(bottom_half(torch.arange(6.0).view(1, 6, 1)), torch.tensor([[[3.0], [4.0], [5.0]]]))
    with pytest.raises(ArsmoothError):
        bottom_half(torch.zeros(1, 1, 5, 4))
    with pytest.raises(ArsmoothError):
        stack_pair(a, b[:, :1])


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("pad", [(0, 0, 0, 0), (1, 1, 1, 0), (1, 0, 1, 0)])
def test_padded_concat_elu_equals_the_straightforward_chain(pad, channels_last):
    # same values and same gradients as pad(dropout(concat_elu(cat(xs)))), with the same dropout
    # masks drawn from the same seed, in either memory layout
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = [torch.randn(2, c, 5, 6, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_() for c in (3, 2)]
    torch.manual_seed(7)
    ref = torch.nn.functional.pad(torch.nn.functional.dropout(concat_elu(torch.cat(xs, 1)), 0.5, True), pad)
    torch.manual_seed(7)
    out = padded_concat_elu(xs, pad, 0.5, True)
    assert torch.equal(out == 0, ref == 0)  # the same entries dropped (and the same padding)
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-15)  # the ELU's vectorised and scalar paths: 1 ulp
    assert out.is_contiguous(memory_format=fmt)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, xs, g)
    for a, b in zip(torch.autograd.grad(out, xs, g), ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_padded_concat_elu_gradient_is_the_derivative():
    xs = [torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)]
    mask = torch.rand(1, 4, 3, 4, dtype=torch.float64).ge(0.3).double() / 0.7
    from arsmooth.networks.cpu_kernels import PaddedConcatElu

    assert torch.autograd.gradcheck(lambda x: PaddedConcatElu.apply((1, 1, 1, 0), mask, x), xs)
    assert torch.autograd.gradcheck(lambda x: PaddedConcatElu.apply((1, 0, 1, 0), None, x), xs)
    channel_mask = torch.tensor([0.0, 2.0, 2.0, 0.0], dtype=torch.float64).view(1, 4, 1, 1)  # Dropout2d's shape
    two = [torch.randn(1, 1, 3, 4, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    assert torch.autograd.gradcheck(lambda a, b: PaddedConcatElu.apply((0, 1, 0, 1), channel_mask, a, b), two)
    assert torch.autograd.gradcheck(lambda a, b: PaddedConcatElu.apply((0, 0, 0, 0), channel_mask, a, b), two)
    assert torch.autograd.gradcheck(lambda a, b: PaddedConcatElu.apply((0, 0, 0, 0), None, a, b), two)


def test_gate_gradient_is_the_derivative():
    from arsmooth.networks.cpu_kernels import FusedGate

    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 6, 4, 5, dtype=torch.float64, requires_grad=True)
    a, b = c.detach().chunk(2, 1)
    assert torch.allclose(FusedGate.apply(x, c), x + a * torch.sigmoid(b))
    assert torch.autograd.gradcheck(FusedGate.apply, (x, c))


@pytest.mark.parametrize("source", ["bernoulli", "bits"])
@pytest.mark.parametrize("channels,mode", [(1, "element"), (3, "element"), (1, "channel"), (3, "channel")])
def test_fused_network_trains_exactly_like_the_straightforward_one(channels, mode, source):
    # train mode with dropout: same weights and seed give the same loss and gradients, i.e. the
    # fused path consumes the same random numbers (bernoulli: F.dropout's, channel mode nn.Dropout2d's;
    # bits: the bit masks, drawn by both networks)
    ref = _model(channels, nr_resnet=2, dropout=0.5, dropout_mode=mode, dropout_masks=source).float().train()
    fused = _model(channels, nr_resnet=2, dropout=0.5, fused=True, dropout_mode=mode,
                   dropout_masks=source).float().train()
    fused.load_state_dict(ref.state_dict())
    x = L.quantize(torch.rand(3, channels, 8, 8) * 2 - 1)
    grads = []
    for m in (ref, fused):
        torch.manual_seed(3)
        loss = -L.image_log_prob(x, m(x), 2, discretized=True).mean()
        grads.append((loss.detach(), torch.autograd.grad(loss, list(m.parameters()))))
    (l_ref, g_ref), (l_fused, g_fused) = grads
    torch.testing.assert_close(l_fused, l_ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(g_fused, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode,source,p", [("element", "bernoulli", 0.3), ("channel", "bernoulli", 0.3),
                                           ("element", "bits", 0.5), ("channel", "bits", 0.5),
                                           ("element", "bits", 0.25), ("element", "bits", 0.3)])
def test_dropout_masks_are_unbiased_and_independent(mode, source, p, monkeypatch):
    """The masks the fused network multiplies by (the straightforward network's, by the test above): every
    entry is 0 or 1 / (1 - p), dropped with probability p, with no correlation between neighbouring
    entries; channel masks are one draw per image and channel. Bounds: 5 standard errors. Bit masks:
    p = 1/2 (one bit per entry), p = 1/4 (a byte per entry) and p = 0.3 (not a whole number of bits)."""
    import arsmooth.networks.cpu_kernels as P  # where the fused chain and its masks live

    seen, real = [], P.PaddedConcatElu

    class Recording(torch.autograd.Function):
        @staticmethod
        def apply(pad, mask, *xs):
            if mask is not None:
                seen.append(mask)
            return real.apply(pad, mask, *xs)

    monkeypatch.setattr(P, "PaddedConcatElu", Recording)
    b = 16
    m = _model(1, nr_resnet=2, dropout=p, fused=True, dropout_mode=mode, dropout_masks=source).float().train()
    torch.manual_seed(0)
    m(torch.rand(b, 1, 8, 8) * 2 - 1)
    assert len(seen) == 2 * 3 * 2 + 2 * (3 * 2 + 2)  # one mask per gated resnet
    for mask in seen:
        assert mask.shape[:2] == (b, 16) and (mask.shape[2:] == (1, 1)) == (mode == "channel")
    flat = torch.cat([mk.flatten() for mk in seen])
    assert torch.all((flat == 0) | torch.isclose(flat, torch.tensor(1 / (1 - p))))
    dropped = (flat == 0).double()
    n = len(dropped)
    assert abs(dropped.mean() - p) < 5 * (p * (1 - p) / n) ** 0.5
    # neighbouring entries (channels for channel masks, pixels in a row for element masks) are uncorrelated
    a = torch.cat([(mk[:, :-1] if mode == "channel" else mk[..., :-1]).flatten() for mk in seen]) == 0
    c = torch.cat([(mk[:, 1:] if mode == "channel" else mk[..., 1:]).flatten() for mk in seen]) == 0
    corr = torch.corrcoef(torch.stack([a.double(), c.double()]))[0, 1]
    assert abs(corr) < 5 / len(a) ** 0.5


def test_random_bytes_give_independent_fair_bits():
    """Every bit position of the bytes (hence of the 64-bit words they come from) is a fair coin, and
    neighbouring bits, within a byte and across bytes, are uncorrelated. Bounds: 5 standard errors."""
    from arsmooth.networks.cpu_kernels import random_bytes

    torch.manual_seed(0)
    n = 1 << 17
    b = random_bytes(n)
    assert b.dtype == torch.uint8 and b.shape == (n,)
    bits = ((b.long().unsqueeze(1) >> torch.arange(8)) & 1).double()  # (n, 8)
    words = bits.view(-1, 64)  # the 64 bits of each generator draw, in order
    assert torch.all((words.mean(0) - 0.5).abs() < 5 * (0.25 / len(words)) ** 0.5)
    flat = bits.flatten()
    corr = torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1]
    assert abs(corr) < 5 / len(flat) ** 0.5
    corr8 = torch.corrcoef(torch.stack([flat[:-8], flat[8:]]))[0, 1]  # the same bit of neighbouring bytes
    assert abs(corr8) < 5 / len(flat) ** 0.5


def test_the_network_file_is_the_network_and_its_forward_changes_no_process_state():
    """The CPU kernels and the mask machinery live in networks.cpu_kernels; the network modules hold no
    autograd.Function and never call set_num_threads, and a forward pass leaves torch's threads alone (the
    trainer gives the mask thread its core, through cpu_kernels.threads_for_masks)."""
    from pathlib import Path

    import arsmooth.networks as N
    from arsmooth.networks.cpu_kernels import threads_for_masks
    from arsmooth.runtime.config import ModelSettings

    for name in ("pixelcnnpp.py", "transformer.py"):
        text = (Path(N.__file__).parent / name).read_text()
        assert "autograd.Function" not in text and "set_num_threads" not in text, name
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        net = PixelCNNpp(1, ModelSettings(nr_resnet=1, nr_filters=4, nr_logistic_mix=2, dropout=0.5,
                                          dropout_masks="bernoulli"), spatial_condition=False).train()
        x = torch.zeros(2, 1, 8, 8)
        seen = []
        net.down_u[0][0].register_forward_hook(lambda *a: seen.append(torch.get_num_threads()))
        net(x)
        assert seen == [2] and torch.get_num_threads() == 2  # the forward pass itself changes nothing
        with threads_for_masks(net):
            net(x)
        assert seen[-1] == 1 and torch.get_num_threads() == 2  # the trainer's context: a core for the masks
        with threads_for_masks(net.eval()):
            assert torch.get_num_threads() == 2  # no mask thread in eval mode: nothing changes
    finally:
        torch.set_num_threads(before)
