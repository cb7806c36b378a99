"""Makes the fixtures of `align-fl models fetch`'s conversion from pytorch-fid's own code.

pytorch-fid (0.3.0) builds its FID Inception by patching torchvision's Inception3 and loads
`pt_inception-2015-12-05-6726825d.pth` into it. This machine cannot reach that file, so the
script builds the same module, fills it from the project's safetensors (names and BN convention
of ../shared/models/inception-2015-12-05.md), checks that pytorch-fid's forward pass then gives
the reference features, and writes:

* crates/metrics/tests/fixtures/pytorch-fid-state-dict.txt: every entry of pytorch-fid's
  state dict as `name dtype shape sha256`, the digest's first 16 hex digits of the entry's
  little-endian bytes once filled, which the Rust name table is tested against;
* crates/metrics/tests/fixtures/pytorch-fid-stem.pth: the stem convolution's entries plus one
  int64 and the classifier's bias, saved in PyTorch's legacy (pre-1.6) format as the released
  file is, for the reader test;
* with --full FILE: the whole state dict in the legacy format (91 MB, not committed), for
  `scripts/check-models-fetch.sh`.

Run with the PyTorch peer (../shared/bench/setup.sh) plus `pip install pytorch-fid safetensors`:
    python scripts/make-pytorch-fid-fixture.py [--full /tmp/pt_inception.pth]
"""

import argparse
import collections
import hashlib
import pathlib

import torch
from safetensors.torch import load_file
from pytorch_fid import inception as fid

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = ROOT / "crates" / "metrics" / "tests" / "fixtures"

STEM = {
    "Conv2d_1a_3x3": "conv",
    "Conv2d_2a_3x3": "conv_1",
    "Conv2d_2b_3x3": "conv_2",
    "Conv2d_3b_1x1": "conv_3",
    "Conv2d_4a_3x3": "conv_4",
}
BLOCKS = {
    "Mixed_5b": "mixed", "Mixed_5c": "mixed_1", "Mixed_5d": "mixed_2", "Mixed_6a": "mixed_3",
    "Mixed_6b": "mixed_4", "Mixed_6c": "mixed_5", "Mixed_6d": "mixed_6", "Mixed_6e": "mixed_7",
    "Mixed_7a": "mixed_8", "Mixed_7b": "mixed_9", "Mixed_7c": "mixed_10",
}
BRANCHES = {
    "A": {"branch1x1": "conv", "branch5x5_1": "tower.conv", "branch5x5_2": "tower.conv_1",
          "branch3x3dbl_1": "tower_1.conv", "branch3x3dbl_2": "tower_1.conv_1",
          "branch3x3dbl_3": "tower_1.conv_2", "branch_pool": "tower_2.conv"},
    "B": {"branch3x3": "conv", "branch3x3dbl_1": "tower.conv", "branch3x3dbl_2": "tower.conv_1",
          "branch3x3dbl_3": "tower.conv_2"},
    "C": {"branch1x1": "conv", "branch7x7_1": "tower.conv", "branch7x7_2": "tower.conv_1",
          "branch7x7_3": "tower.conv_2", "branch7x7dbl_1": "tower_1.conv",
          "branch7x7dbl_2": "tower_1.conv_1", "branch7x7dbl_3": "tower_1.conv_2",
          "branch7x7dbl_4": "tower_1.conv_3", "branch7x7dbl_5": "tower_1.conv_4",
          "branch_pool": "tower_2.conv"},
    "D": {"branch3x3_1": "tower.conv", "branch3x3_2": "tower.conv_1",
          "branch7x7x3_1": "tower_1.conv", "branch7x7x3_2": "tower_1.conv_1",
          "branch7x7x3_3": "tower_1.conv_2", "branch7x7x3_4": "tower_1.conv_3"},
    "E": {"branch1x1": "conv", "branch3x3_1": "tower_conv", "branch3x3_2a": "tower_mixed_conv",
          "branch3x3_2b": "tower_mixed_conv_1", "branch3x3dbl_1": "tower_1_conv",
          "branch3x3dbl_2": "tower_1_conv_1", "branch3x3dbl_3a": "tower_1_mixed_conv",
          "branch3x3dbl_3b": "tower_1_mixed_conv_1", "branch_pool": "tower_2_conv"},
}
KIND = {"Mixed_5b": "A", "Mixed_5c": "A", "Mixed_5d": "A", "Mixed_6a": "B", "Mixed_6b": "C",
        "Mixed_6c": "C", "Mixed_6d": "C", "Mixed_6e": "C", "Mixed_7a": "D", "Mixed_7b": "E",
        "Mixed_7c": "E"}


def graph_name(module):
    """The project's name of a torchvision BasicConv2d path such as `Mixed_5b.branch5x5_1`."""
    if module in STEM:
        return STEM[module]
    block, branch = module.split(".")
    return f"{BLOCKS[block]}.{BRANCHES[KIND[block]][branch]}"


def pytorch_fid_module():
    """The module fid_inception_v3 builds, before it loads the download (for the entry names)."""
    model = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    model.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
    model.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
    model.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
    model.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
    model.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
    model.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
    model.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
    model.Mixed_7b = fid.FIDInceptionE_1(1280)
    model.Mixed_7c = fid.FIDInceptionE_2(2048)
    return model


def filled_state_dict(model, ours):
    """The module's state dict with the project's weights: γ = 1 (the graph has no BN scale)."""
    state = collections.OrderedDict()
    for name, value in model.state_dict().items():
        module, _, leaf = name.rpartition(".")
        if name.startswith("fc."):
            state[name] = torch.zeros_like(value)
            continue
        base, part = module.rsplit(".", 1)
        g = graph_name(base)
        source = {("conv", "weight"): "weight", ("bn", "bias"): "beta",
                  ("bn", "running_mean"): "mean", ("bn", "running_var"): "var"}.get((part, leaf))
        if source is not None:
            state[name] = ours[f"{g}.{source}"].clone()
        elif (part, leaf) == ("bn", "weight"):
            state[name] = torch.ones_like(value)
        elif (part, leaf) == ("bn", "num_batches_tracked"):
            state[name] = torch.zeros_like(value)
        else:
            raise SystemExit(f"unexpected entry {name}")
    return state


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", type=pathlib.Path, help="also write the whole state dict here")
    args = parser.parse_args()

    ours = load_file(SHARED / "models" / "inception-2015-12-05.safetensors")
    state = filled_state_dict(pytorch_fid_module(), ours)
    # pytorch-fid's own constructor and strict load_state_dict, with the download replaced.
    fid.load_state_dict_from_url = lambda *a, **k: state
    model = fid.InceptionV3([3], resize_input=False, normalize_input=False, use_fid_inception=True).eval()
    assert all(m.eps == 0.001 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))

    reference = load_file(SHARED / "fixtures" / "inception_reference.safetensors")
    with torch.no_grad():
        features = model(reference["input_299"])[0].flatten(1)
    want = reference["features"][:2]
    err = ((features - want).norm() / want.norm()).item()
    print(f"pytorch-fid's InceptionV3 with these entries: relative L2 error {err:.2e} against the fixture's features")
    assert err < 1e-4, err

    FIXTURES.mkdir(parents=True, exist_ok=True)
    with open(FIXTURES / "pytorch-fid-state-dict.txt", "w") as out:
        out.write("# pytorch-fid 0.3.0's FID Inception state dict, filled from inception-2015-12-05.safetensors:\n")
        out.write("# name dtype shape sha256[:16] of the values (scripts/make-pytorch-fid-fixture.py)\n")
        for name, value in state.items():
            dtype = str(value.dtype).removeprefix("torch.")
            digest = hashlib.sha256(value.contiguous().numpy().tobytes()).hexdigest()[:16]
            out.write(f"{name} {dtype} {'x'.join(map(str, value.shape))} {digest}\n")
    stem = collections.OrderedDict((k, v) for k, v in state.items() if k.startswith("Conv2d_1a_3x3."))
    stem["fc.bias"] = state["fc.bias"][:8].clone()
    torch.save(stem, FIXTURES / "pytorch-fid-stem.pth", _use_new_zipfile_serialization=False)
    print(f"wrote {FIXTURES / 'pytorch-fid-state-dict.txt'} ({len(state)} entries) and pytorch-fid-stem.pth")
    if args.full:
        torch.save(state, args.full, _use_new_zipfile_serialization=False)
        print(f"wrote {args.full}")


if __name__ == "__main__":
    main()
