"""``arsmooth import``: a state dict laid out as the public PyTorch PixelCNN++ port saves it becomes a baseline run
whose network gives the same mixture parameters and loss. The port-style network below is written here from
the port's published layout (key names, shapes, data flow), with random weights."""

import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from arsmooth.cli import main
from arsmooth.maths import likelihoods as L
from arsmooth.models.build import model_from_checkpoint
from arsmooth.runtime import checkpoint as C


def wn(m):
    """The port's old weight_norm (weight_g / weight_v; deprecated in favour of parametrizations)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.nn.utils.weight_norm(m)


def celu(x):
    return F.elu(torch.cat([x, -x], 1))


class Nin(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.lin_a = wn(nn.Linear(i, o))

    def forward(self, x):
        return self.lin_a(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Conv(nn.Module):
    """Down-shifted (``right=False``: centred columns) or down-right-shifted convolution."""

    def __init__(self, i, o, k, stride=1, right=False):
        super().__init__()
        self.conv = wn(nn.Conv2d(i, o, k, stride))
        self.pad = (k[1] - 1, 0, k[0] - 1, 0) if right else ((k[1] - 1) // 2, (k[1] - 1) // 2, k[0] - 1, 0)

    def forward(self, x):
        return self.conv(F.pad(x, self.pad))


class Deconv(nn.Module):
    def __init__(self, n, k, right):
        super().__init__()
        self.deconv, self.k, self.right = wn(nn.ConvTranspose2d(n, n, k, 2, output_padding=1)), k, right

    def forward(self, x):
        y = self.deconv(x)
        h, w = y.shape[-2:]
        if self.right:
            return y[:, :, : h - self.k[0] + 1, : w - self.k[1] + 1]
        c = (self.k[1] - 1) // 2
        return y[:, :, : h - self.k[0] + 1, c : w - c]


class Gated(nn.Module):
    def __init__(self, n, right, skip):
        super().__init__()
        k = (2, 2) if right else (2, 3)
        self.conv_input = Conv(2 * n, n, k, right=right)
        if skip:
            self.nin_skip = Nin(2 * skip * n, n)
        self.conv_out = Conv(2 * n, 2 * n, k, right=right)

    def forward(self, x, a=None):
        h = self.conv_input(celu(x))
        if a is not None:
            h = h + self.nin_skip(celu(a))
        a_, b_ = self.conv_out(celu(h)).chunk(2, 1)  # eval mode: Dropout2d is the identity
        return x + a_ * torch.sigmoid(b_)


class Layer(nn.Module):
    def __init__(self, count, n, skip_u, skip_ul):
        super().__init__()
        self.u_stream = nn.ModuleList(Gated(n, False, skip_u) for _ in range(count))
        self.ul_stream = nn.ModuleList(Gated(n, True, skip_ul) for _ in range(count))


class PortStyle(nn.Module):
    """The port's PixelCNN: its module names, shapes and data flow."""

    def __init__(self, nr_resnet, nf, nr_mix, channels):
        super().__init__()
        self.up_layers = nn.ModuleList(Layer(nr_resnet, nf, 0, 1) for _ in range(3))
        self.down_layers = nn.ModuleList(Layer(n, nf, 1, 2) for n in (nr_resnet, nr_resnet + 1, nr_resnet + 1))
        self.downsize_u_stream = nn.ModuleList(Conv(nf, nf, (2, 3), 2) for _ in range(2))
        self.downsize_ul_stream = nn.ModuleList(Conv(nf, nf, (2, 2), 2, right=True) for _ in range(2))
        self.upsize_u_stream = nn.ModuleList(Deconv(nf, (2, 3), False) for _ in range(2))
        self.upsize_ul_stream = nn.ModuleList(Deconv(nf, (2, 2), True) for _ in range(2))
        self.u_init = Conv(channels + 1, nf, (2, 3))
        self.ul_init = nn.ModuleList([Conv(channels + 1, nf, (1, 3)), Conv(channels + 1, nf, (2, 1), right=True)])
        self.nin_out = Nin(nf, (3 if channels == 1 else 10) * nr_mix)

    def forward(self, x):
        x = torch.cat([x, torch.ones_like(x[:, :1])], 1)
        down = lambda t: F.pad(t, (0, 0, 1, 0))[:, :, :-1]  # noqa: E731
        right = lambda t: F.pad(t, (1, 0, 0, 0))[:, :, :, :-1]  # noqa: E731
        us, uls = [down(self.u_init(x))], [down(self.ul_init[0](x)) + right(self.ul_init[1](x))]
        for i in range(3):
            u, ul = us[-1], uls[-1]
            for bu, bul in zip(self.up_layers[i].u_stream, self.up_layers[i].ul_stream):
                u = bu(u)
                ul = bul(ul, u)
                us.append(u)
                uls.append(ul)
            if i != 2:
                us.append(self.downsize_u_stream[i](us[-1]))
                uls.append(self.downsize_ul_stream[i](uls[-1]))
        u, ul = us.pop(), uls.pop()
        for i in range(3):
            for bu, bul in zip(self.down_layers[i].u_stream, self.down_layers[i].ul_stream):
                u = bu(u, us.pop())
                ul = bul(ul, torch.cat([u, uls.pop()], 1))
            if i != 2:
                u, ul = self.upsize_u_stream[i](u), self.upsize_ul_stream[i](ul)
        return self.nin_out(F.elu(ul))


def port_split(out, channels, k):
    """The port's layout: logits, then per colour [means | log-scales | coefficients]."""
    b, _, h, w = out.shape
    rest = out[:, k:].reshape(b, channels, -1, k, h, w)  # (B, C, 2 or 3, K, H, W)
    mu, log_s = rest[:, :, 0].permute(0, 1, 3, 4, 2), rest[:, :, 1].permute(0, 1, 3, 4, 2).clamp(min=-7.0)
    coef = torch.tanh(rest[:, :, 2]).permute(0, 1, 3, 4, 2) if channels == 3 else None
    return out[:, :k].permute(0, 2, 3, 1), mu, log_s, coef


def port_nll(x, out, channels, k):
    """Discretized logistic mixture NLL (nats per image), written from the port's layout: a second implementation."""
    logit, mu, log_s, coef = port_split(out, channels, k)
    xs = x.unsqueeze(-1)  # (B, C, H, W, 1)
    if channels == 3:
        mu = torch.stack([mu[:, 0], mu[:, 1] + coef[:, 0] * xs[:, 0],
                          mu[:, 2] + coef[:, 1] * xs[:, 0] + coef[:, 2] * xs[:, 1]], 1)
    inv = torch.exp(-log_s)
    cdf_hi = torch.sigmoid(inv * (xs - mu + 1 / 255))
    cdf_lo = torch.sigmoid(inv * (xs - mu - 1 / 255))
    p = torch.where(xs < -0.999, cdf_hi, torch.where(xs > 0.999, 1 - cdf_lo, cdf_hi - cdf_lo)).clamp_min(1e-12)
    lp = torch.log(p).sum(1) + torch.log_softmax(logit, -1)  # (B, H, W, K)
    return -torch.logsumexp(lp, -1).flatten(1).sum(1)


def _port_file(tmp_path, channels, prefix="", nr_resnet=1, nf=6, k=2, seed=0):
    torch.manual_seed(seed)
    net = PortStyle(nr_resnet, nf, k, channels).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    path = tmp_path / "port.pth"
    torch.save({prefix + key: v.float() for key, v in net.state_dict().items()}, path)
    return net.float(), path


@pytest.mark.parametrize("channels,prefix", [(1, ""), (3, ""), (3, "module.")])
def test_imported_network_gives_the_ports_mixture_parameters_and_loss(tmp_path, channels, prefix):
    port, path = _port_file(tmp_path, channels, prefix)
    assert main(["import", str(path), "--out", str(tmp_path / "run"), "--size", "8"]) == 0
    ck = C.load_checkpoint(tmp_path / "run" / "last.pt")
    s = C.settings_of(ck)
    assert (s.model.nr_resnet, s.model.nr_filters, s.model.nr_logistic_mix, s.model.dropout_mode) == (1, 6, 2, "channel")
    assert ck["extra"]["image_shape"] == [channels, 8, 8] and (tmp_path / "run" / "config.yaml").is_file()
    ours = model_from_checkpoint(ck)
    x = L.quantize(torch.rand(3, channels, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    with torch.no_grad():
        out = port(x)
        got = L.split_image_params(ours.params(x), channels, 2)
        for a, b in zip(got, port_split(out, channels, 2)):
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(-ours.log_prob(x), port_nll(x, out, channels, 2), rtol=1e-4, atol=1e-3)


def test_an_imported_run_starts_a_stage1_run(tmp_path):
    _, path = _port_file(tmp_path, 1)
    assert main(["import", str(path), "--out", str(tmp_path / "run"), "--size", "8", "--dataset", "digits"]) == 0
    rc = main(["train", "digits-stage1", "--out", str(tmp_path / "s1"), "--init-from", str(tmp_path / "run" / "last.pt"),
               "--set", "model.nr_resnet=1", "--set", "model.nr_filters=6", "--set", "model.nr_logistic_mix=2",
               "--max-steps", "1", "--no-progress", "--set", "train.eval_images=4"])
    assert rc == 0
    assert C.load_checkpoint(tmp_path / "s1" / "last.pt")["extra"]["init_from"]["kind"] == "baseline"


def _refused(tmp_path, capsys, path) -> str:
    assert main(["import", str(path), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()  # nothing written
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_refusals_are_one_line_and_write_nothing(tmp_path, capsys):
    _, path = _port_file(tmp_path, 3)
    state = torch.load(path, weights_only=True)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    assert "not a loadable PyTorch state dict" in _refused(tmp_path, capsys, bad)
    torch.save({k: v for k, v in state.items() if k != "nin_out.lin_a.weight_g"}, bad)
    assert "nin_out.lin_a.weight_g" in _refused(tmp_path, capsys, bad)
    torch.save({**state, "extra.weight": torch.zeros(2)}, bad)
    assert "extra.weight" in _refused(tmp_path, capsys, bad)
    torch.save({**state, "up_layers.0.u_stream.0.conv_out.conv.weight_v": torch.zeros(12, 12, 2, 2)}, bad)
    assert "up_layers.0.u_stream.0.conv_out.conv.weight_v has shape (12, 12, 2, 2)" in _refused(tmp_path, capsys, bad)
    torch.save([1, 2, 3], bad)
    assert "holds a list, not a state dict" in _refused(tmp_path, capsys, bad)


def test_a_pickle_of_code_is_not_run(tmp_path, capsys):
    class Boom:
        def __reduce__(self):
            return (subprocess.call, ([sys.executable, "-c", f"open({str(tmp_path / 'ran')!r}, 'w')"],))

    import pickle

    (tmp_path / "evil.pth").write_bytes(pickle.dumps(Boom()))
    assert "not a loadable PyTorch state dict" in _refused(tmp_path, capsys, tmp_path / "evil.pth")
    assert not (tmp_path / "ran").exists()
