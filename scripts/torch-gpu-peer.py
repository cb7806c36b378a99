"""PyTorch peer on an NVIDIA GPU, for the CUDA rows of scripts/gpu-check.sh: the steps of
../shared/bench/torch_steps.py (the reference SimpleVAE 784-512-256-128-z, MSE-sum + 0.1 KL-mean,
Adam 1e-3, batch 128; the LCD double-backward penalty; DP-SGD with the reference's per-layer
hooks; decoding 5000 latents), fp32 GEMMs with TF32 off, and an Inception v3 forward pass
(torchvision's network, random weights: the FID graph's convolutions and shapes, not its exact
pooling, and no weights to carry). Each timed step ends with torch.cuda.synchronize(), as ours end
by reading a result back. Prints JSON: median milliseconds per step.

Usage (on the GPU machine): python3 scripts/torch-gpu-peer.py
"""
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = torch.device("cuda")
torch.manual_seed(0)
B, D, Z = 128, 784, 2


class SimpleVAE(nn.Module):
    def __init__(s):
        super().__init__()
        s.encoder = nn.Sequential(nn.Linear(D, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
        s.fc_mu, s.fc_logvar = nn.Linear(128, Z), nn.Linear(128, Z)
        s.decoder = nn.Sequential(nn.Linear(Z, 128), nn.ReLU(), nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, D), nn.Sigmoid())

    def forward(s, x, eps):
        h = s.encoder(x)
        mu, lv = s.fc_mu(h), s.fc_logvar(h)
        z = mu + eps * torch.exp(0.5 * lv)
        return s.decoder(z), mu, lv, z


def loss_fn(r, x, mu, lv, beta=0.1):
    return F.mse_loss(r, x, reduction="none").sum(1).mean() + beta * (-0.5 * torch.mean(1 + lv - mu**2 - lv.exp()))


def bench(step, n=100, warm=20):
    for _ in range(warm):
        step()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


x = torch.rand(B, D, device=dev)
eps = torch.randn(B, Z, device=dev)
res = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "batch": B}

m = SimpleVAE().to(dev)
opt = torch.optim.Adam(m.parameters(), 1e-3)


def plain():
    opt.zero_grad()
    r, mu, lv, z = m(x, eps)
    loss_fn(r, x, mu, lv).backward()
    opt.step()


res["plain_step_ms"] = bench(plain)


def lcd():  # decoder gradient penalty with double backprop, lambda 0.1 (reference: compute_lipschitz_penalty)
    opt.zero_grad()
    r, mu, lv, z = m(x, eps)
    loss = loss_fn(r, x, mu, lv)
    a = torch.rand(B, 1, device=dev)
    zi = (a * z + (1 - a) * z[torch.randperm(B, device=dev)]).detach().requires_grad_(True)
    out = m.decoder(zi)
    g = torch.autograd.grad(out, zi, torch.ones_like(out), create_graph=True)[0]
    gp = ((torch.sqrt((g**2).sum(1) + 1e-7) - 1) ** 2).mean()
    (loss + 0.1 * gp).backward()
    opt.step()


res["lcd_step_ms"] = bench(lcd)

# DP-SGD as the reference does it: per-layer hooks, einsum per-sample grads, clip, Gaussian noise.
md = SimpleVAE().to(dev)
optd = torch.optim.Adam(md.parameters(), 1e-3)


def fwd_hook(mod, i, o):
    mod.inp = i[0]


def bwd_hook(mod, gi, go):
    mod.weight.grad_sample = torch.einsum("ni,nj->nij", go[0], mod.inp)
    mod.bias.grad_sample = go[0]


for mod in md.modules():
    if isinstance(mod, nn.Linear):
        mod.register_forward_hook(fwd_hook)
        mod.register_full_backward_hook(bwd_hook)


def dp_hooks(C=1.0, sigma=1.0):
    optd.zero_grad()
    r, mu, lv, z = md(x, eps)
    loss_fn(r, x, mu, lv).backward()
    ps = list(md.parameters())
    norms = torch.sqrt(sum((p.grad_sample.reshape(B, -1) ** 2).sum(1) for p in ps))
    scale = (C / (norms + 1e-6)).clamp(max=1.0)
    for p in ps:
        p.grad = torch.einsum("n,n...->...", scale, p.grad_sample) + torch.randn_like(p) * C * sigma
        p.grad_sample = None
    optd.step()


res["dpsgd_hooks_step_ms"] = bench(dp_hooks)

with torch.no_grad():
    zz = torch.randn(5000, Z, device=dev)
    # Read back to the host, as our decode bench does.
    res["decode_5000_ms"] = bench(lambda: m.decoder(zz).cpu(), n=50, warm=5)
    for n in (1024, 4096):
        a = torch.rand(n, n, device=dev)
        b = torch.rand(n, n, device=dev)
        ms = bench(lambda: a @ b, n=50, warm=5)
        res[f"sgemm_{n}_ms"] = ms
        res[f"sgemm_{n}_tflops"] = 2 * n**3 / (ms * 1e-3) / 1e12

    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).to(dev).eval()
    for batch in (8, 50):
        imgs = torch.rand(batch, 1, 28, 28, device=dev)

        def forward():
            t = (2 * F.interpolate(imgs, size=(299, 299), mode="bilinear", align_corners=False) - 1).repeat(1, 3, 1, 1)
            return net(t).cpu()

        res[f"inception_batch_{batch}_ms_per_image"] = bench(forward, n=30, warm=5) / batch
print(json.dumps(res, indent=1))
