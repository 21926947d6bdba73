"""Training parity with PyTorch, direction B (ember -> PyTorch), live.

    python scripts/torch_parity.py TORCH_TOOL WORKDIR

The 'pytorch_parity_live' meson test runs it with Debian's /usr/bin/python3 (PyTorch 1.13). It
exits 77 (meson: skipped) when torch cannot be imported.

`torch_tool parity WORKDIR` trains golden_parity's MLP in ember with each optimizer
(golden_parity.OPTIMIZERS) for WARM_STEPS steps, saves model and optimizer with ember's PyTorch
writer, then continues STEPS steps itself and saves where it landed. Here real PyTorch loads
ember's two files into nn.Sequential and torch.optim (strict), checks that the eval-mode
output as loaded is ember's, continues STEPS steps on the same batches with the same dropout
seed, and compares with ember's continuation: every parameter and buffer to 1e-5 and the
eval-mode outputs to 1e-6, each relative to the tensor's scale (max |a - b| / max |b|).
Direction A (PyTorch -> ember) is tests/test_pytorch_parity.cpp, from golden_parity.py's files.
"""
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)

PARAMETER_TOLERANCE = 1e-5
OUTPUT_TOLERANCE = 1e-6

failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def scaled_difference(actual, expected):
    """max |a - b| / max |b| (0 when equal), and the largest element-wise relative difference."""
    a, b = actual.double().reshape(-1), expected.double().reshape(-1)
    diff = (a - b).abs()
    if diff.max().item() == 0:
        return 0.0, 0.0
    element = (diff / b.abs()).nan_to_num(nan=0.0, posinf=float("inf")).max().item()
    return diff.max().item() / b.abs().max().item(), element


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    tool, work = sys.argv[1], sys.argv[2]
    try:
        import torch
    except ImportError:
        print("SKIP: %s cannot import torch" % sys.executable)
        sys.exit(77)
    import golden_parity as gp

    print("PyTorch", torch.__version__, "from", sys.executable)
    # PyTorch's BatchNorm sums per thread: one thread makes its numbers repeatable.
    torch.set_num_threads(1)
    os.makedirs(work, exist_ok=True)
    r = subprocess.run([tool, "parity", work], capture_output=True, text=True)
    check(r.returncode == 0, "torch_tool parity " + r.stderr.strip())
    if r.returncode != 0:
        sys.exit(1)

    def compare(name, what, actual, expected, tolerance):
        scaled, element = scaled_difference(actual, expected)
        check(scaled <= tolerance, "%s %s: %.3g of its scale (element-wise %.3g), tolerance %g"
              % (name, what, scaled, element, tolerance))

    for name in gp.OPTIMIZERS:
        prefix = os.path.join(work, "ember_" + name)
        model, optimizer = gp.resume(name, prefix + "_model.pth", prefix + "_optimizer.pth")
        check(True, "%s: ember's model loads into nn.Sequential (strict), its state into %s"
              % (name, type(optimizer).__name__))
        ember = torch.load(prefix + "_result.pth")
        before, losses, after = gp.continue_training(model, optimizer)
        compare(name, "eval output as loaded", before, ember["eval_before"], OUTPUT_TOLERANCE)
        compare(name, "losses", torch.tensor(losses), ember["losses"], PARAMETER_TOLERANCE)
        for key, t in model.state_dict().items():
            if t.dtype == torch.int64:
                check(torch.equal(t, ember[key]), "%s %s: %d, ember %d"
                      % (name, key, int(t), int(ember[key])))
            else:
                compare(name, key, t, ember[key], PARAMETER_TOLERANCE)
        compare(name, "eval output after %d steps" % gp.STEPS, after, ember["eval_after"],
                OUTPUT_TOLERANCE)

    print("%d failure(s)" % len(failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
