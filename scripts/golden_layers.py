#!/usr/bin/python3
"""Writes tests/golden/layers.hpp: what PyTorch computes for ember's built-in layers.

Run with Debian's PyTorch (not a pyenv python):  /usr/bin/python3 scripts/golden_layers.py
Every number is written as a C++ hexadecimal floating literal, so the header holds exactly the
values PyTorch produced (float32 values with an `f` suffix, float64 without).
"""

import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden",
                   "layers.hpp")

lines = []


def hexlit(v, suffix):
    v = float(v)
    if math.isnan(v) or math.isinf(v):
        raise ValueError("golden values must be finite")
    return v.hex() + suffix


def array(name, t):
    """inline constexpr T name[] plus name_shape[]; dtype float32 or float64."""
    t = t.detach().contiguous()
    if t.dtype == torch.float32:
        ctype, suffix = "float", "f"
    elif t.dtype == torch.float64:
        ctype, suffix = "double", ""
    else:
        raise TypeError(t.dtype)
    flat = t.reshape(-1).tolist()
    shape = list(t.shape)
    lines.append("inline constexpr std::size_t %s_shape[] = {%s};"
                 % (name, ", ".join(str(d) for d in shape) if shape else "1"))
    body = ",\n    ".join(", ".join(hexlit(v, suffix) for v in flat[i:i + 4])
                          for i in range(0, len(flat), 4))
    lines.append("inline constexpr %s %s[] = {\n    %s};" % (ctype, name, body))
    lines.append("")


def scalar(name, ctype, value):
    lines.append("inline constexpr %s %s = %s;" % (ctype, name, value))


def strings(name, values):
    lines.append("inline constexpr const char* %s[] = {%s};"
                 % (name, ", ".join('"%s"' % v for v in values)))
    lines.append("")


f64 = torch.float64

# --- linear initialisation: after manual_seed(42), exactly torch.nn.Linear's draws ------------
torch.manual_seed(42)
lin_a = nn.Linear(4, 3)
lin_b = nn.Linear(5, 2, bias=False)
lin_c = nn.Linear(3, 2)
array("linear_seed42_a_weight", lin_a.weight)
array("linear_seed42_a_bias", lin_a.bias)
array("linear_seed42_b_weight", lin_b.weight)
array("linear_seed42_c_weight", lin_c.weight)
array("linear_seed42_c_bias", lin_c.bias)

torch.manual_seed(7)
lin_d = nn.Linear(6, 4, dtype=f64)
array("linear_seed7_double_weight", lin_d.weight)
array("linear_seed7_double_bias", lin_d.bias)

# --- forward outputs on fixed inputs ----------------------------------------------------------
torch.manual_seed(0)
x = torch.randn(4, 6, dtype=f64) * 2
array("input_4x6", x)
with torch.no_grad():
    array("linear_seed7_double_forward", lin_d(x))
    x32 = torch.randn(5, 4)
    array("input_5x4_float", x32)
    array("linear_seed42_a_forward", lin_a(x32))
    array("relu_forward", nn.ReLU()(x))
    array("leaky_relu_forward", nn.LeakyReLU()(x))
    array("leaky_relu_slope_0_2_forward", nn.LeakyReLU(0.2)(x))
    array("sigmoid_forward", nn.Sigmoid()(x))
    array("tanh_forward", nn.Tanh()(x))
    array("gelu_forward", nn.GELU()(x))
    array("gelu_tanh_forward", nn.GELU(approximate="tanh")(x))
    array("softmax_forward", nn.Softmax(dim=-1)(x))
    array("log_softmax_forward", nn.LogSoftmax(dim=-1)(x))
    # Large logits: a naive exp overflows, the stable form does not.
    big = x * 300
    array("input_big_4x6", big)
    array("softmax_big_forward", nn.Softmax(dim=-1)(big))
    array("log_softmax_big_forward", nn.LogSoftmax(dim=-1)(big))
    x3 = torch.randn(2, 3, 5, dtype=f64)
    array("input_2x3x5", x3)
    array("softmax_rank3_forward", nn.Softmax(dim=-1)(x3))
    array("flatten_rank3_forward", nn.Flatten()(x3))

    # Dropout: float32, seed 3, p = 0.3 on an [8, 16] input; then the next uniform draw.
    xd = torch.randn(8, 16)
    array("input_8x16_float", xd)
    torch.manual_seed(3)
    array("dropout_p03_seed3_forward", nn.Dropout(0.3).train()(xd))
    array("dropout_p03_seed3_next_rand", torch.rand(1, dtype=f64))

# --- batch_norm1d: three training steps, then evaluation ----------------------------------------
torch.manual_seed(1)
bn_batches = [torch.randn(5, 6, dtype=f64) * 3 + 1 for _ in range(3)]
bn_eval_input = torch.randn(4, 6, dtype=f64)
for i, b in enumerate(bn_batches):
    array("bn_batch%d" % i, b)
array("bn_eval_input", bn_eval_input)
for dtype, tag in ((f64, "double"), (torch.float32, "float")):
    for momentum, mtag in ((0.1, ""), (None, "_cumulative")):
        bn = nn.BatchNorm1d(6, dtype=dtype, momentum=momentum)
        bn.train()
        with torch.no_grad():
            for b in bn_batches:
                y = bn(b.to(dtype))
            array("bn_%s%s_last_train_forward" % (tag, mtag), y)
            array("bn_%s%s_running_mean" % (tag, mtag), bn.running_mean)
            array("bn_%s%s_running_var" % (tag, mtag), bn.running_var)
            scalar("bn_%s%s_num_batches_tracked" % (tag, mtag), "std::int64_t",
                   int(bn.num_batches_tracked))
            bn.eval()
            array("bn_%s%s_eval_forward" % (tag, mtag), bn(bn_eval_input.to(dtype)))
lines.append("")

# --- a small sequential MLP in float64: outputs and gradients by autograd ---------------------
torch.manual_seed(0)
mlp = nn.Sequential(
    nn.Linear(5, 8, dtype=f64),
    nn.BatchNorm1d(8, dtype=f64),
    nn.GELU(),
    nn.Linear(8, 6, dtype=f64),
    nn.Tanh(),
    nn.Linear(6, 3, dtype=f64),
    nn.LogSoftmax(dim=1),
)
array("mlp_init_0_weight", mlp[0].weight)
array("mlp_init_0_bias", mlp[0].bias)
array("mlp_init_3_weight", mlp[3].weight)
array("mlp_init_3_bias", mlp[3].bias)
array("mlp_init_5_weight", mlp[5].weight)
array("mlp_init_5_bias", mlp[5].bias)
mlp_x = torch.randn(7, 5, dtype=f64, requires_grad=True)
mlp_upstream = torch.randn(7, 3, dtype=f64)
mlp.train()
mlp_out = mlp(mlp_x)
(mlp_out * mlp_upstream).sum().backward()
array("mlp_input", mlp_x)
array("mlp_upstream", mlp_upstream)
array("mlp_output", mlp_out)
array("mlp_input_grad", mlp_x.grad)
for name, p in mlp.named_parameters():
    array("mlp_grad_" + name.replace(".", "_"), p.grad)
array("mlp_running_mean", mlp[1].running_mean)
array("mlp_running_var", mlp[1].running_var)
mlp.eval()
with torch.no_grad():
    array("mlp_eval_output", mlp(mlp_x))

# --- state_dict keys of a sequential with linear + batch norm ---------------------------------
seq = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
sd = seq.state_dict()
strings("linear_bn_state_dict_keys", list(sd.keys()))
scalar("linear_bn_num_batches_tracked_dim", "std::size_t", sd["1.num_batches_tracked"].dim())
lines.append("")

header = [
    "#pragma once",
    "// Generated by scripts/golden_layers.py with PyTorch %s (Python %s)."
    % (torch.__version__, sys.version.split()[0]),
    "// Do not edit: rerun `/usr/bin/python3 scripts/golden_layers.py` instead.",
    "",
    "#include <cstddef>",
    "#include <cstdint>",
    "",
    "namespace golden::layers",
    "{",
    "",
]
footer = ["} // namespace golden::layers", ""]
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as f:
    f.write("\n".join(header + lines + footer))
print("wrote", os.path.normpath(OUT))
