#!/usr/bin/python3
"""Writes tests/golden/losses.hpp: inputs, values and gradients of every loss in ember::nn,
computed by PyTorch in float32 and float64, for tests/test_losses.cpp.

Run with Debian's /usr/bin/python3 (python3-torch 1.13), from anywhere:
    /usr/bin/python3 scripts/golden_losses.py
Inputs are drawn in float32 under fixed seeds, so the float64 run sees the same numbers exactly.
"""
import pathlib

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "golden" / "losses.hpp"
ROWS, COLS = 4, 3  # elementwise losses
BATCH, CLASSES = 6, 4  # class-index losses


def far_from(d, points, margin=1e-2):
    """Keep elements off the kinks, where finite differences and PyTorch may pick sides."""
    for p in points:
        assert ((d.abs() - p).abs() > margin).all(), (d, p)


def elementwise_cases():
    g = torch.Generator().manual_seed(2)  # the first seed whose differences straddle 0.5 and 1
    x = torch.randn(ROWS, COLS, generator=g)
    y = torch.randn(ROWS, COLS, generator=g)
    d = x - y
    far_from(d, [0.0, 1.0, 0.5])
    assert ((d.abs() < 0.5).any() and (d.abs() > 1.0).any() and
            ((d.abs() > 0.5) & (d.abs() < 1.0)).any()), "Huber cases need both sides"

    prob = torch.sigmoid(torch.randn(ROWS, COLS, generator=g)).clamp(0.05, 0.95)
    soft = torch.rand(ROWS, COLS, generator=g)
    soft[0, 0], soft[1, 2], soft[3, 1] = 0.0, 1.0, 1.0  # hard labels too
    logits = 3 * torch.randn(ROWS, COLS, generator=g)
    logits[2, 0] = 25.0  # saturated: sigmoid rounds to 1 in float32, a naive log(1 - p) is -inf
    logits[2, 1] = -30.0

    pos_weight = torch.tensor([2.0, 0.5, 1.25])
    weight = torch.tensor([0.75, 1.5, 0.25])  # one per class (column)
    return [
        # name, fn(input, target, reduction), input, target, param, pos_weight, weight
        ("mse", lambda a, b, r: F.mse_loss(a, b, reduction=r), x, y, 0.0, None, None),
        ("l1", lambda a, b, r: F.l1_loss(a, b, reduction=r), x, y, 0.0, None, None),
        ("huber_delta_1", lambda a, b, r: F.huber_loss(a, b, reduction=r, delta=1.0), x, y, 1.0,
         None, None),
        ("huber_delta_half", lambda a, b, r: F.huber_loss(a, b, reduction=r, delta=0.5), x, y,
         0.5, None, None),
        ("smooth_l1_beta_1",
         lambda a, b, r: F.smooth_l1_loss(a, b, reduction=r, beta=1.0), x, y, 1.0, None,
         None),
        ("smooth_l1_beta_half",
         lambda a, b, r: F.smooth_l1_loss(a, b, reduction=r, beta=0.5), x, y, 0.5, None,
         None),
        ("smooth_l1_beta_0",
         lambda a, b, r: F.smooth_l1_loss(a, b, reduction=r, beta=0.0), x, y, 0.0, None, None),
        ("bce", lambda a, b, r: F.binary_cross_entropy(a, b, reduction=r), prob, soft, 0.0,
         None, None),
        ("bce_weight",
         lambda a, b, r: F.binary_cross_entropy(a, b, reduction=r, weight=weight.to(a.dtype)),
         prob, soft, 0.0, None, weight),
        ("bce_with_logits",
         lambda a, b, r: F.binary_cross_entropy_with_logits(a, b, reduction=r), logits, soft,
         0.0, None, None),
        ("bce_with_logits_pos_weight",
         lambda a, b, r: F.binary_cross_entropy_with_logits(
             a, b, reduction=r, pos_weight=pos_weight.to(a.dtype)),
         logits, soft, 0.0, pos_weight, None),
        ("bce_with_logits_weight",
         lambda a, b, r: F.binary_cross_entropy_with_logits(
             a, b, reduction=r, weight=weight.to(a.dtype), pos_weight=pos_weight.to(a.dtype)),
         logits, soft, 0.0, pos_weight, weight),
    ]


def class_cases():
    g = torch.Generator().manual_seed(2)
    logits = 2 * torch.randn(BATCH, CLASSES, generator=g)
    log_probs = F.log_softmax(torch.randn(BATCH, CLASSES, generator=g), dim=1)
    valid = torch.tensor([0, 3, 1, 2, 3, 0])
    ignored = torch.tensor([0, -100, 1, 2, -100, 3])
    with_two = torch.tensor([2, 3, 2, 0, 1, 2])  # class 2 is ignore_index in some cases

    weight = torch.tensor([0.5, 2.0, 1.25, 0.75])  # class weights

    def cast(w, a):
        return None if w is None else w.to(a.dtype)

    def ce(ignore_index, smoothing, w=None):
        return lambda a, t, r: F.cross_entropy(a, t, weight=cast(w, a), reduction=r,
                                               ignore_index=ignore_index,
                                               label_smoothing=smoothing)

    def nll(ignore_index, w=None):
        return lambda a, t, r: F.nll_loss(a, t, weight=cast(w, a), reduction=r,
                                          ignore_index=ignore_index)

    return [
        # name, fn, input, classes, param (label_smoothing), ignore_index, weight
        ("cross_entropy", ce(-100, 0.0), logits, valid, 0.0, -100, None),
        ("cross_entropy_ignore", ce(-100, 0.0), logits, ignored, 0.0, -100, None),
        ("cross_entropy_smoothing", ce(-100, 0.1), logits, ignored, 0.1, -100, None),
        ("cross_entropy_ignore_2_smoothing", ce(2, 0.25), logits, with_two, 0.25, 2, None),
        ("cross_entropy_weight", ce(-100, 0.0, weight), logits, ignored, 0.0, -100, weight),
        ("cross_entropy_weight_ignore_2_smoothing", ce(2, 0.25, weight), logits, with_two, 0.25,
         2, weight),
        ("nll", nll(-100), log_probs, valid, 0.0, -100, None),
        ("nll_ignore_2", nll(2), log_probs, with_two, 0.0, 2, None),
        ("nll_weight", nll(-100, weight), log_probs, ignored, 0.0, -100, weight),
    ]


def results(fn, x, t, upstream, dtype):
    """value and gradient for each reduction, plus per-element losses, in `dtype`."""
    x = x.to(dtype)
    if t.is_floating_point():
        t = t.to(dtype)
    out = {}
    for r in ("mean", "sum"):
        a = x.clone().requires_grad_()
        v = fn(a, t, r)
        v.backward()
        out[r] = (v.item(), a.grad.flatten().tolist())
    a = x.clone().requires_grad_()
    losses = fn(a, t, "none")
    losses.backward(upstream.to(dtype))
    out["none"] = (losses.sum().item(), a.grad.flatten().tolist())
    out["losses"] = losses.detach().flatten().tolist()
    return out


_emitted = {}  # (kind, values) -> name: cases that share an input share its array


def array(name, values, kind="double"):
    """(C++ text, name) of a constexpr array; empty text when an equal array exists."""
    key = (kind, tuple(values))
    if key in _emitted:
        return "", _emitted[key]
    _emitted[key] = name
    body = ", ".join(repr(float(v)) if kind == "double" else str(int(v)) for v in values)
    return f"inline constexpr {kind} {name}[] = {{{body}}};\n", name


def ref(name):
    return f"data::{name}" if name else "{}"


def emit_case(name, fn, x, target, param, ignore_index, pos_weight, weight, upstream):
    """The case's arrays (in namespace data) and its loss_case, as C++ text."""
    data = ""
    names = {}

    def add(key, values, kind="double"):
        nonlocal data
        text, names[key] = array(f"{name}_{key}", values, kind)
        data += text

    add("input", x.flatten().tolist())
    names["target"] = names["classes"] = names["pos_weight"] = names["weight"] = None
    if target.is_floating_point():
        add("target", target.flatten().tolist())
    else:
        add("classes", target.tolist(), "std::int64_t")
    add("upstream", upstream.flatten().tolist())
    if pos_weight is not None:
        add("pos_weight", pos_weight.tolist())
    if weight is not None:
        add("weight", weight.tolist())
    expect = []
    for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
        res = results(fn, x, target, upstream, dtype)
        add(f"{tag}_losses", res["losses"])
        for r in ("mean", "sum", "none"):
            add(f"{tag}_grad_{r}", res[r][1])
        values = ", ".join(repr(res[r][0]) for r in ("mean", "sum", "none"))
        grads = ", ".join(ref(names[f"{tag}_{k}"])
                          for k in ("losses", "grad_mean", "grad_sum", "grad_none"))
        expect.append(f"{{{values}, {grads}}}")
    rows, cols = x.shape
    case = (f"inline constexpr loss_case {name}{{\n"
            f"    {rows}, {cols}, {ref(names['input'])}, {ref(names['target'])}, "
            f"{ref(names['classes'])},\n"
            f"    {ref(names['upstream'])}, {param!r}, {ignore_index}, {ref(names['pos_weight'])}, "
            f"{ref(names['weight'])},\n"
            f"    {expect[0]},\n    {expect[1]}}};\n")
    return data, case


def main():
    g = torch.Generator().manual_seed(3)
    parts = []
    for name, fn, x, y, param, pw, w in elementwise_cases():
        parts.append(emit_case(name, fn, x, y, param, -100, pw, w,
                               torch.randn(x.shape, generator=g)))
    for name, fn, x, t, param, ignore, w in class_cases():
        parts.append(emit_case(name, fn, x, t, param, ignore, None, w,
                               torch.randn(t.shape, generator=g)))
    data = "".join(d for d, _ in parts)
    cases = "\n".join(c for _, c in parts)
    header = f"""#pragma once
// Generated by scripts/golden_losses.py with torch {torch.__version__}; do not edit.
// Each loss_case holds an input (float32 values, exact in double too), its target, and what
// PyTorch computes from them in float32 (f32) and float64 (f64) for every reduction.
#include <cstddef>
#include <cstdint>
#include <span>

namespace golden::losses
{{

/// What PyTorch computes in one dtype.
struct expected
{{
    double mean, sum, none_sum; // forward's value per reduction ('none': sum of the losses)
    std::span<const double> losses;    // reduction='none', flattened
    std::span<const double> grad_mean; // d mean / d input
    std::span<const double> grad_sum;  // d sum / d input
    std::span<const double> grad_none; // losses.backward(upstream)
}};

struct loss_case
{{
    std::size_t rows, cols;
    std::span<const double> input;
    std::span<const double> target;        // elementwise losses
    std::span<const std::int64_t> classes; // class-index losses
    std::span<const double> upstream;      // grad_output for reduction 'none'
    double param;                          // delta, beta or label_smoothing
    std::int64_t ignore_index;
    std::span<const double> pos_weight;   // bce_with_logits_loss's pos_weight, one per column
    std::span<const double> weight;       // weight: one per column, or per class
    expected f32, f64;
}};

namespace data
{{
"""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(header + data + "} // namespace data\n\n" + cases +
                   "\n} // namespace golden::losses\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
