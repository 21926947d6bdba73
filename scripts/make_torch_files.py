"""PyTorch and safetensors files for ember's pytorch_format and safetensors tests, and the
canonical dumps ember must load them as.

    # files from each PyTorch (Debian's 1.13, and a current one from PyPI in a venv):
    /usr/bin/python3 scripts/make_torch_files.py write tests/data/pytorch
    /tmp/torchvenv/bin/python scripts/make_torch_files.py write tests/data/pytorch
    # or only some files, added to the manifest already there:
    /usr/bin/python3 scripts/make_torch_files.py write tests/data/pytorch --only sgd.pth
    # reference safetensors files (needs the `safetensors` package):
    /tmp/stvenv/bin/python scripts/make_torch_files.py safetensors tests/data/safetensors
    # then the golden header from every manifest written so far:
    python3 scripts/make_torch_files.py header tests/data tests/golden/pytorch_files.hpp

`write` puts its files in OUT/torch-MAJOR.MINOR/ with manifest.json (file -> dump). The
lesson's linear_model.pth and checkpoint.tar come from the shared reference workflow
(--workflow, default /work/shared/reference/seed_workflow.py) run by the same interpreter.
torch_roundtrip.py imports build_files() and dump() from here for the live round trips.

dump() is the canonical text both sides compute: None, True/False, ints in decimal, floats as
f<16 hex digits of the IEEE bits>, strings quoted with non-printable bytes as \\xNN, lists,
tuples and sets as [..], dicts as {key:value,..} with int keys as decimal strings, and tensors
as T(dtype,[shape],<hex of the contiguous little-endian bytes>).
"""
import collections
import json
import os
import shutil
import struct
import subprocess
import sys


def dict_key(k):
    """A key as ember reads it: an int, or a float that holds one (Python's 30.0 and 30 are
    one key), as its decimal string."""
    if isinstance(k, float) and k.is_integer():
        k = int(k)
    return str(k) if isinstance(k, int) and not isinstance(k, bool) else k


def dump(x):
    import torch

    if x is None:
        return "None"
    if isinstance(x, bool):
        return "True" if x else "False"
    if isinstance(x, int):
        return str(int(x))
    if isinstance(x, float):
        return "f" + struct.pack(">d", x).hex()
    if isinstance(x, str):
        out = "'"
        for b in x.encode("utf-8"):
            c = chr(b)
            out += c if 0x20 <= b < 0x7F and c not in "'\\" else "\\x%02x" % b
        return out + "'"
    if isinstance(x, torch.dtype):
        return dump(str(x))
    if isinstance(x, torch.Tensor):
        t = x.detach().contiguous()
        raw = bytes(t.reshape(-1).view(torch.uint8).numpy()).hex() if t.numel() else ""
        name = str(t.dtype).replace("torch.", "")
        return "T(%s,[%s],%s)" % (name, ",".join(str(d) for d in t.shape), raw)
    if isinstance(x, (list, tuple, set, frozenset)):
        items = sorted(x) if isinstance(x, (set, frozenset)) else x
        return "[" + ",".join(dump(i) for i in items) + "]"
    if isinstance(x, dict):
        return "{" + ",".join(
            dump(dict_key(k)) + ":" + dump(v)
            for k, v in x.items()) + "}"
    raise TypeError("no dump for %r" % type(x))


def mlp():
    import torch.nn as nn

    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.25),
                         nn.Linear(8, 3))


def train(model, optimizer, steps, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(6, 4, generator=g)
        y = torch.randn(6, 3, generator=g)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def build_files():
    """name -> (object to torch.save, how ember loads it: state_dict|optimizer|value)."""
    import torch

    files = collections.OrderedDict()
    torch.manual_seed(0)
    model = mlp()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                          weight_decay=1e-4)
    train(model, sgd, 2, 1)
    files["mlp.pth"] = (model.state_dict(), "state_dict")
    files["sgd.pth"] = (sgd.state_dict(), "optimizer")
    adam = torch.optim.Adam(model.parameters(), lr=1e-2)
    train(model, adam, 2, 2)
    files["adam.pth"] = (adam.state_dict(), "optimizer")

    files["dtypes.pt"] = (collections.OrderedDict([
        ("float32", torch.tensor([1.5, -2.25, 3e38], dtype=torch.float32)),
        ("float64", torch.tensor([[0.1, -1e300], [5e-324, 2.0]], dtype=torch.float64)),
        ("float16", torch.tensor([0.5, -65504.0, 6e-8], dtype=torch.float16)),
        ("bfloat16", torch.tensor([1.0, -3.0e38, 0.0078125], dtype=torch.bfloat16)),
        ("int64", torch.tensor([-(2 ** 63), 2 ** 63 - 1, 0], dtype=torch.int64)),
        ("int32", torch.tensor([-(2 ** 31), 2 ** 31 - 1], dtype=torch.int32)),
        ("int16", torch.tensor([-32768, 32767, 1], dtype=torch.int16)),
        ("int8", torch.tensor([-128, 127], dtype=torch.int8)),
        ("uint8", torch.tensor([0, 255, 7], dtype=torch.uint8)),
        ("bool", torch.tensor([True, False, True], dtype=torch.bool)),
        ("scalar", torch.tensor(42, dtype=torch.int64)),
        ("empty", torch.zeros(0, 4)),
    ]), "state_dict")

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    flat = torch.arange(10, dtype=torch.int32)
    shared = torch.arange(6, dtype=torch.float64)
    files["views.pt"] = (collections.OrderedDict([
        ("base", base),
        ("transposed", base.t()),
        ("strided", base[1:, ::2]),
        ("offset", flat[3:7]),
        ("shared_a", shared[:4]),
        ("shared_b", shared[2:]),
        ("expanded", torch.tensor([1.0, 2.0, 3.0]).expand(2, 3)),
        ("column", base[:, 2]),
        ("permuted", torch.arange(24, dtype=torch.int16).reshape(2, 3, 4).permute(2, 0, 1)),
    ]), "state_dict")

    files["values.pt"] = ({
        "none": None, "true": True, "false": False,
        "small": 7, "negative": -300, "int32": 2 ** 31 - 1, "large": 2 ** 40,
        "very_negative": -(2 ** 63), "largest": 2 ** 63 - 1,
        "float": 0.1, "inf": float("inf"), "text": "h\u00e9llo \u2603",
        "list": [1, "two", 3.0, None], "tuple": (1, 2), "set": {3, 1, 2},
        "nested": {"a": {"b": [True, {"c": torch.tensor([1, 2])}]}},
        "int_keys": {0: "zero", 10: "ten"},
        "dtype": torch.float16, "size": torch.Size([2, 3]),
        "version": torch.__version__,
    }, "value")

    files["tensor.pt"] = (torch.arange(6, dtype=torch.float32).reshape(2, 3), "value")
    files["parameter.pt"] = ({"p": torch.nn.Parameter(torch.tensor([0.5, 1.5]))}, "value")

    torch.manual_seed(42)
    torch.rand(3)
    torch.randn(1)
    files["rng.pt"] = ({"seed": 42, "state": torch.get_rng_state()}, "value")

    # Groups with keys of their own ('name', timm's 'lr_scale'), which PyTorch keeps.
    named = mlp()
    named_sgd = torch.optim.SGD([
        {"params": list(named[0].parameters()), "name": "first", "lr_scale": 0.5},
        {"params": list(named[4].parameters()), "name": "head", "lr": 0.05},
    ], lr=0.1, momentum=0.9)
    train(named, named_sgd, 1, 3)
    files["sgd_named_groups.pth"] = (named_sgd.state_dict(), "optimizer")

    # MultiStepLR given float milestones keeps them as its Counter's float keys.
    sched = torch.optim.lr_scheduler.MultiStepLR(
        torch.optim.SGD(named.parameters(), lr=0.1), milestones=[30.0, 60.0, 60.0], gamma=0.5)
    files["multi_step_float_milestones.pt"] = (sched.state_dict(), "value")
    return files


def version_dir(out):
    import torch

    major, minor = torch.__version__.split(".")[:2]
    return os.path.join(out, "torch-%s.%s" % (major, minor))


def write(out, workflow, only=None):
    """Every file, or with `only` (names) just those, added to the manifest already there."""
    import torch

    folder = version_dir(out)
    os.makedirs(folder, exist_ok=True)
    manifest = collections.OrderedDict()
    manifest["_torch"] = torch.__version__
    if only:
        with open(os.path.join(folder, "manifest.json")) as f:
            manifest = json.load(f, object_pairs_hook=collections.OrderedDict)
    for name, (obj, kind) in build_files().items():
        if only and name not in only:
            continue
        torch.save(obj, os.path.join(folder, name))
        manifest[name] = {"kind": kind, "dump": dump(obj)}
    if only:
        with open(os.path.join(folder, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)
        print("wrote", ", ".join(only), "into", folder)
        return
    # The lesson's files, from the shared reference workflow.
    tmp = os.path.join(folder, "workflow-tmp")
    os.makedirs(tmp, exist_ok=True)
    subprocess.run([sys.executable, workflow, "100", tmp], check=True, stdout=subprocess.DEVNULL)
    for name, kind in [("linear_model.pth", "state_dict"), ("checkpoint.tar", "value")]:
        shutil.move(os.path.join(tmp, name), os.path.join(folder, name))
        obj = torch.load(os.path.join(folder, name), weights_only=False)
        manifest[name] = {"kind": kind, "dump": dump(obj)}
    shutil.rmtree(tmp)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print("wrote", folder)


def write_safetensors(out):
    import safetensors
    import torch
    from safetensors.torch import save_file

    os.makedirs(out, exist_ok=True)
    files = collections.OrderedDict()
    dtypes = collections.OrderedDict(
        (k, v) for k, v in build_files()["dtypes.pt"][0].items())
    files["dtypes.safetensors"] = (dtypes, None)
    torch.manual_seed(0)
    model = mlp()
    files["mlp.safetensors"] = (model.state_dict(), {"format": "pt", "note": "q\"uote\n\u00e9"})
    files["empty.safetensors"] = ({}, None)
    manifest = collections.OrderedDict()
    manifest["_safetensors"] = safetensors.__version__
    for name, (tensors, metadata) in files.items():
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, name),
                  metadata=metadata)
        manifest[name] = {"kind": "safetensors",
                          "dump": dump({k: tensors[k] for k in sorted(tensors)}),
                          "metadata": dump(metadata or {})}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print("wrote", out)


def cxx_string(s):
    # Dumps are printable ASCII without backslash-free guarantees; a raw string with a
    # delimiter no dump contains is simplest.
    assert ")golden\"" not in s
    return 'R"golden(' + s + ')golden"'


def header(data, path):
    entries = []
    versions = []
    for sub in sorted(os.listdir(os.path.join(data, "pytorch"))):
        mpath = os.path.join(data, "pytorch", sub, "manifest.json")
        if not os.path.exists(mpath):
            continue
        with open(mpath) as f:
            manifest = json.load(f, object_pairs_hook=collections.OrderedDict)
        versions.append("%s (torch %s)" % (sub, manifest["_torch"]))
        for name, e in manifest.items():
            if name.startswith("_"):
                continue
            entries.append(("pytorch/%s/%s" % (sub, name), e["kind"], e["dump"], ""))
    st = os.path.join(data, "safetensors", "manifest.json")
    if os.path.exists(st):
        with open(st) as f:
            manifest = json.load(f, object_pairs_hook=collections.OrderedDict)
        versions.append("safetensors %s" % manifest["_safetensors"])
        for name, e in manifest.items():
            if name.startswith("_"):
                continue
            entries.append(("safetensors/" + name, e["kind"], e["dump"], e["metadata"]))
    with open(path, "w") as f:
        f.write("// Generated by scripts/make_torch_files.py from the files it wrote under\n")
        f.write("// tests/data/ with: %s. Do not edit.\n" % "; ".join(versions))
        f.write("// Each entry: a file under tests/data/, how ember loads it, and the canonical\n")
        f.write("// dump (see the script) of what PyTorch saved into it.\n")
        f.write("#pragma once\n\n#include <string_view>\n\nnamespace golden::torch_files\n{\n\n")
        f.write("struct file\n{\n    std::string_view path;\n    std::string_view kind;\n"
                "    std::string_view dump;\n    std::string_view metadata;\n};\n\n")
        f.write("inline constexpr file files[] = {\n")
        for p, kind, d, meta in entries:
            f.write("    {\"%s\", \"%s\",\n     %s,\n     %s},\n"
                    % (p, kind, cxx_string(d), cxx_string(meta)))
        f.write("};\n\n} // namespace golden::torch_files\n")
    print("wrote", path, "with", len(entries), "files")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "write" and sys.argv[3] == "--only":
        write(sys.argv[2], None, sys.argv[4:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "write":
        workflow = "/work/shared/reference/seed_workflow.py"
        if len(sys.argv) >= 5 and sys.argv[3] == "--workflow":
            workflow = sys.argv[4]
        write(sys.argv[2], workflow)
    elif len(sys.argv) == 3 and sys.argv[1] == "safetensors":
        write_safetensors(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "header":
        header(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
