"""Live round trips between ember and the PyTorch (and safetensors) of the Python running this.

    python scripts/torch_roundtrip.py TORCH_TOOL WORKDIR

The 'pytorch_roundtrip' meson test runs it with Debian's /usr/bin/python3 (PyTorch 1.13); run
it with any other Python that has torch to check that version. It exits 77 (meson: skipped)
when torch cannot be imported.

1. PyTorch writes every file of make_torch_files.build_files() (state_dicts, optimizer
   states, every dtype, views, shared storage, plain values, RNG state) plus a checkpoint in
   ember's layout; ember loads each (torch_tool dump) and must print the same canonical dump.
2. ember writes its files (torch_tool write); PyTorch loads each with
   torch.load(weights_only=True) -- except, on PyTorch 1.x, files holding Python floats, which
   its weights_only unpickler cannot read at all (it lacks the BINFLOAT opcode, even for files
   torch.save wrote) -- and must see the same dump. Then the state_dict loads into the
   equivalent nn.Module (strict), the optimizer states into torch.optim.SGD/Adam and take a
   step, the checkpoint restores model, optimizer and RNG (torch.rand after set_rng_state
   gives what ember's generator gives).
3. With the safetensors package: its load_file reads ember's file, its save gives the same
   bytes, and ember reads what it writes.
4. With EMBER_LARGE_TESTS=1 (about 10 GB of memory and 9 GB of disk, a minute or two): a
   4.3 GB state_dict each way, so record sizes and offsets need ZIP64.
"""
import collections
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)

failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def first_difference(a, b):
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    return "differ at %d: ember ...%s  vs  python ...%s" % (i, a[max(0, i - 30):i + 60],
                                                            b[max(0, i - 30):i + 60])


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    tool, work = sys.argv[1], sys.argv[2]
    try:
        import torch
    except ImportError:
        print("SKIP: %s cannot import torch" % sys.executable)
        sys.exit(77)
    import make_torch_files as m

    print("PyTorch", torch.__version__, "from", sys.executable)
    floats_load_weights_only = int(torch.__version__.split(".")[0]) >= 2
    os.makedirs(work, exist_ok=True)

    def multi_step_state():
        # A MultiStepLR's state: its milestones a collections.Counter, which ember reads.
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 5, 5], gamma=0.5)
        for _ in range(4):
            opt.step()
            sched.step()
        return sched.state_dict()

    def ember_dump(path, kind):
        r = subprocess.run([tool, "dump", path, kind], capture_output=True, text=True)
        if r.returncode != 0:
            return "ERROR " + r.stderr.strip()
        return r.stdout.strip()

    # 1. PyTorch writes, ember reads.
    files = m.build_files()
    torch.manual_seed(5)
    files["checkpoint_for_ember.tar"] = ({
        "epoch": 7,
        "model_state_dict": files["mlp.pth"][0],
        "optimizer_state_dict": files["sgd.pth"][0],
        "train_loss": 0.5, "val_loss": 0.25,
        "hyperparameters": {"learning_rate": 0.01, "layers": [4, 8, 3]},
        "timestamp": "2024-05-06T07:08:09.101112",
        "ember_version": "python",
        "ember": {"global_step": 11,
                  "generators": {"default": torch.get_rng_state()},
                  "scheduler_state": multi_step_state(), "data_state": [2, 0, 1]},
        "pytorch_version": str(torch.__version__),
    }, "checkpoint")
    for name, (obj, kind) in files.items():
        path = os.path.join(work, "py_" + name)
        torch.save(obj, path)
        expected, got = m.dump(obj), ember_dump(path, kind)
        check(got == expected, "torch.save -> ember %s (%s)%s" % (
            name, kind, "" if got == expected else ": " + first_difference(got, expected)))

    # 2. ember writes, PyTorch reads.
    r = subprocess.run([tool, "write", work], capture_output=True, text=True)
    check(r.returncode == 0, "torch_tool write " + r.stderr.strip())
    expect = collections.OrderedDict()
    with open(os.path.join(work, "expect.tsv")) as f:
        for line in f:
            name, kind, dump = line.rstrip("\n").split("\t")
            expect[name] = (kind, dump)

    def load(name):
        path = os.path.join(work, name)
        try:
            return torch.load(path, weights_only=True), "weights_only=True"
        except Exception as e:
            if floats_load_weights_only or "Unsupported operand 71" not in str(e):
                raise
            return torch.load(path, weights_only=False), "weights_only=False (1.x lacks BINFLOAT)"

    loaded = {}
    for name, (kind, dump) in expect.items():
        if kind not in ("state_dict", "optimizer", "checkpoint", "value"):
            continue
        try:
            obj, how = load(name)
        except Exception as e:
            check(False, "ember -> torch.load %s: %s" % (name, e))
            continue
        loaded[name] = obj
        got = m.dump(obj)
        check(got == dump, "ember -> torch.load(%s) %s%s" % (
            how, name, "" if got == dump else ": " + first_difference(dump, got)))

    if "ember_mlp.pth" in loaded:
        model = m.mlp()
        model.load_state_dict(loaded["ember_mlp.pth"], strict=True)
        check(True, "ember's state_dict loads into nn.Sequential(Linear, BatchNorm1d, ReLU, "
                    "Dropout, Linear) with strict=True")
        sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                              weight_decay=1e-4)
        sgd.load_state_dict(loaded["ember_sgd.pth"])
        buffers = [sgd.state[p]["momentum_buffer"] for p in model.parameters()]
        saved = loaded["ember_sgd.pth"]["state"]
        check(all(torch.equal(b, saved[i]["momentum_buffer"]) for i, b in enumerate(buffers)),
              "ember's SGD state loads into torch.optim.SGD (momentum buffers)")
        m.train(model, sgd, 1, 3)
        check(True, "torch.optim.SGD steps from ember's state")
        adam = torch.optim.Adam(model.parameters(), lr=1e-2)
        adam.load_state_dict(loaded["ember_adam.pth"])
        m.train(model, adam, 1, 4)
        check(all(float(adam.state[p]["step"]) == 3.0 for p in model.parameters()),
              "ember's Adam state loads into torch.optim.Adam and steps (step 2 -> 3)")

    if "ember_checkpoint.tar" in loaded:
        ck = loaded["ember_checkpoint.tar"]
        model = m.mlp()
        model.load_state_dict(ck["model_state_dict"], strict=True)
        adam = torch.optim.Adam(model.parameters(), lr=1e-2)
        adam.load_state_dict(ck["optimizer_state_dict"])
        check(list(ck)[:8] == ["epoch", "model_state_dict", "optimizer_state_dict", "train_loss",
                               "val_loss", "hyperparameters", "timestamp", "ember_version"],
              "ember's checkpoint has the lesson's keys")
        torch.set_rng_state(ck["ember"]["generators"]["default"])
        got, want = m.dump(torch.rand(5)), expect["rng_next"][1]
        check(got == want, "torch.set_rng_state(ember's generator) then torch.rand(5) draws "
                           "what ember draws")

    if "ember_multistep.tar" in expect:
        # MultiStepLR's milestones are a Counter of int epochs in PyTorch; ember writes them
        # back as one, so a PyTorch scheduler resumed from ember's state decays where ember's
        # does. (1.13's weights_only refuses a Counter, as it refuses PyTorch's own file.)
        ck = torch.load(os.path.join(work, "ember_multistep.tar"), weights_only=False)
        state = ck["ember"]["scheduler_state"]
        milestones = state["milestones"]
        check(isinstance(milestones, collections.Counter) and
              all(type(k) is int for k in milestones) and dict(milestones) == {2: 1, 4: 2, 6: 1},
              "ember writes MultiStepLR's milestones as PyTorch's Counter of int epochs: %r"
              % (milestones,))
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=0.1)
        opt.load_state_dict(ck["optimizer_state_dict"])
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1])
        sched.load_state_dict(state)
        lrs = []
        for _ in range(5):
            opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        want = expect["ember_multistep.tar"][1]
        check(m.dump(lrs) == want, "torch MultiStepLR resumed from ember's checkpoint sets "
                                   "ember's lrs: %s, ember %s" % (m.dump(lrs), want))

    # 3. safetensors, when the package is there.
    try:
        from safetensors.torch import load_file, save_file, save
    except ImportError:
        print("note: the safetensors package is not importable here; skipping its checks")
        load_file = None
    if load_file is not None:
        path = os.path.join(work, "ember.safetensors")
        tensors = load_file(path)
        want = expect["ember.safetensors"][1]
        got = m.dump({k: tensors[k] for k in sorted(tensors)})
        check(got == want, "ember -> safetensors.load_file" + (
            "" if got == want else ": " + first_difference(want, got)))
        with open(path, "rb") as f:
            check(save(tensors, metadata={"format": "pt"}) == f.read(),
                  "safetensors' writer gives ember's bytes")
        dtypes = collections.OrderedDict(files["dtypes.pt"][0])
        py = os.path.join(work, "py.safetensors")
        save_file({k: v.contiguous() for k, v in dtypes.items()}, py)
        want = m.dump({k: dtypes[k] for k in sorted(dtypes)})
        got = ember_dump(py, "safetensors")
        check(got == want, "safetensors.save_file -> ember" + (
            "" if got == want else ": " + first_difference(got, want)))

    # 4. Past 4 GiB, on request.
    if os.environ.get("EMBER_LARGE_TESTS") == "1":
        big = os.path.join(work, "big_torch.pth")
        t = torch.zeros(4300000000, dtype=torch.uint8)
        t[0], t[t.numel() // 2], t[-1] = 7, 5, 9
        torch.save(collections.OrderedDict([("big", t), ("small", torch.tensor([0.0, 2.5]))]),
                   big)
        del t
        r = subprocess.run([tool, "big-check", big], capture_output=True, text=True)
        os.remove(big)
        check(r.stdout.split() == ["4300000000", "7", "5", "9", "2.5"],
              "a 4.3 GB torch.save file (ZIP64) loads in ember: " + r.stdout.strip() +
              r.stderr.strip())
        big = os.path.join(work, "big_ember.pth")
        r = subprocess.run([tool, "big-write", big], capture_output=True, text=True)
        sd = torch.load(big, weights_only=True)
        t = sd["big"]
        check([t.numel(), int(t[0]), int(t[t.numel() // 2]), int(t[-1]), float(sd["small"][1])]
              == [4300000000, 7, 5, 9, 2.5], "a 4.3 GB ember file (ZIP64) loads in torch")
        del sd, t
        os.remove(big)

    print("%d failure(s)" % len(failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
