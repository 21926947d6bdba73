#!/usr/bin/python3
"""Writes tests/golden/schedulers.hpp and tests/golden/training_tools.hpp from PyTorch.

Run with Debian's python3 (real PyTorch 1.13):  /usr/bin/python3 scripts/golden_schedulers.py

schedulers.hpp: for each LR scheduler case, the lr of both param groups (SGD, lr 0.1 and 0.03)
after construction and after each of STEPS scheduler steps, and the scheduler's state_dict at
the end (keys in order, each value as Python's repr). Cases cover the chainable step(), the
closed form of step(epoch), a resume with last_epoch >= 0, an lr changed from outside the
scheduler between steps, and ReduceLROnPlateau on a fixed metric sequence. Also the bytes of a
checkpoint torch.save wrote mid-run (model, optimizer and scheduler state) and the lrs PyTorch
produces after it, so the test can resume it in ember.

MultiStepLR keeps its milestones in a collections.Counter ({epoch: count}); ember keeps the same
mapping in a dict whose keys are the epochs' decimal strings (ember::value dicts are
string-keyed, and ember's PyTorch loader turns int keys into such strings), so the golden repr
writes the Counter that way.

training_tools.hpp: clip_grad_norm_ (several norm types, float32 and float64) and
clip_grad_value_ on three gradients, with the total norm, the clip coefficient and the clipped
gradients; accuracy, MAE and MSE on fixed data.
"""

import collections
import io
import math
import os
import sys
import warnings

import torch

warnings.simplefilter('ignore')
L = torch.optim.lr_scheduler

STEPS = 30
LRS = (0.1, 0.03)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')

# Metric sequence for ReduceLROnPlateau: improves, plateaus with small wiggles, improves again
# a little, rises, then falls.
METRICS = [1.0, 0.8, 0.7, 0.65, 0.66, 0.6501, 0.6499, 0.64, 0.64, 0.641, 0.65, 0.5, 0.49995,
           0.4999, 0.5, 0.51, 0.52, 0.3, 0.3, 0.3, 0.29, 0.2999, 0.31, 0.35, 0.4, 0.45, 0.1,
           0.1, 0.1, 0.1]
assert len(METRICS) == STEPS


def make_optimizer(initial_lr=None):
    p0 = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    p1 = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = torch.optim.SGD([{'params': [p0], 'lr': LRS[0]}, {'params': [p1], 'lr': LRS[1]}],
                          lr=LRS[0])
    if initial_lr is not None:
        for g, lr in zip(opt.param_groups, initial_lr):
            g['initial_lr'] = lr
    return opt


def lrs(opt):
    return [g['lr'] for g in opt.param_groups]


def py_repr(v):
    if isinstance(v, collections.Counter):
        return '{' + ', '.join('%r: %r' % (str(k), c) for k, c in v.items()) + '}'
    return repr(v)


# (name, C++ type, C++ options, Python class, kwargs, mode, extra)
# mode: 'chain' (step()), 'closed' (step(epoch) for each epoch in extra), 'resume' (extra is the
# last_epoch to construct with, initial_lr set beforehand), 'outside' (lr halved from outside
# after step extra), 'plateau' (step(METRICS[i])).
CASES = [
    ('step_lr', 'step_lr', '{.step_size = 3, .gamma = 0.5}', L.StepLR,
     dict(step_size=3, gamma=0.5), 'chain', None),
    ('step_lr_default_gamma', 'step_lr', '{.step_size = 7}', L.StepLR, dict(step_size=7),
     'chain', None),
    ('multi_step_lr', 'multi_step_lr', '{.milestones = {4, 9, 9, 15}, .gamma = 0.3}',
     L.MultiStepLR, dict(milestones=[4, 9, 9, 15], gamma=0.3), 'chain', None),
    ('exponential_lr', 'exponential_lr', '{.gamma = 0.9}', L.ExponentialLR, dict(gamma=0.9),
     'chain', None),
    ('cosine_annealing_lr', 'cosine_annealing_lr', '{.T_max = 10, .eta_min = 0.001}',
     L.CosineAnnealingLR, dict(T_max=10, eta_min=0.001), 'chain', None),
    ('cosine_annealing_lr_default_eta_min', 'cosine_annealing_lr', '{.T_max = 7}',
     L.CosineAnnealingLR, dict(T_max=7), 'chain', None),
    ('linear_lr_warmup', 'linear_lr', '{.start_factor = 0.25, .total_iters = 8}', L.LinearLR,
     dict(start_factor=0.25, total_iters=8), 'chain', None),
    ('linear_lr_defaults', 'linear_lr', '{}', L.LinearLR, dict(), 'chain', None),
    ('linear_lr_decay', 'linear_lr',
     '{.start_factor = 1.0, .end_factor = 0.1, .total_iters = 10}', L.LinearLR,
     dict(start_factor=1.0, end_factor=0.1, total_iters=10), 'chain', None),
    # The deprecated closed form, step(epoch).
    ('step_lr_closed', 'step_lr', '{.step_size = 3, .gamma = 0.5}', L.StepLR,
     dict(step_size=3, gamma=0.5), 'closed', [1, 2, 3, 7, 6, 12, 30, 0]),
    ('multi_step_lr_closed', 'multi_step_lr', '{.milestones = {4, 9, 9, 15}, .gamma = 0.3}',
     L.MultiStepLR, dict(milestones=[4, 9, 9, 15], gamma=0.3), 'closed',
     [1, 4, 9, 10, 3, 16, 29]),
    ('exponential_lr_closed', 'exponential_lr', '{.gamma = 0.9}', L.ExponentialLR,
     dict(gamma=0.9), 'closed', [1, 5, 2, 17]),
    ('cosine_annealing_lr_closed', 'cosine_annealing_lr', '{.T_max = 10, .eta_min = 0.001}',
     L.CosineAnnealingLR, dict(T_max=10, eta_min=0.001), 'closed', [1, 3, 10, 11, 25, 4]),
    ('linear_lr_closed', 'linear_lr', '{.start_factor = 0.25, .total_iters = 8}', L.LinearLR,
     dict(start_factor=0.25, total_iters=8), 'closed', [1, 4, 8, 12, 2]),
    # Resuming: constructed with last_epoch >= 0 on groups that have initial_lr.
    ('step_lr_resume', 'step_lr', '{.step_size = 3, .gamma = 0.5, .last_epoch = 4}', L.StepLR,
     dict(step_size=3, gamma=0.5, last_epoch=4), 'resume', None),
    ('cosine_annealing_lr_resume', 'cosine_annealing_lr',
     '{.T_max = 10, .eta_min = 0.001, .last_epoch = 4}', L.CosineAnnealingLR,
     dict(T_max=10, eta_min=0.001, last_epoch=4), 'resume', None),
    # The chainable form follows an lr changed by someone else.
    ('step_lr_outside', 'step_lr', '{.step_size = 3, .gamma = 0.5}', L.StepLR,
     dict(step_size=3, gamma=0.5), 'outside', 4),
    ('cosine_annealing_lr_outside', 'cosine_annealing_lr', '{.T_max = 10, .eta_min = 0.001}',
     L.CosineAnnealingLR, dict(T_max=10, eta_min=0.001), 'outside', 4),
    ('linear_lr_outside', 'linear_lr', '{.start_factor = 0.25, .total_iters = 8}', L.LinearLR,
     dict(start_factor=0.25, total_iters=8), 'outside', 3),
    # ReduceLROnPlateau.
    ('plateau_min_rel', 'reduce_lr_on_plateau',
     '{.factor = 0.5, .patience = 2, .cooldown = 1, .min_lr = 0.002}', L.ReduceLROnPlateau,
     dict(factor=0.5, patience=2, cooldown=1, min_lr=0.002), 'plateau', None),
    ('plateau_min_abs', 'reduce_lr_on_plateau',
     '{.factor = 0.5, .patience = 1, .threshold = 0.01, '
     '.threshold_mode = ember::optim::plateau_threshold::abs}',
     L.ReduceLROnPlateau, dict(factor=0.5, patience=1, threshold=0.01, threshold_mode='abs'),
     'plateau', None),
    ('plateau_max_rel', 'reduce_lr_on_plateau',
     '{.mode = ember::optim::plateau_mode::max, .factor = 0.2, .patience = 0, .cooldown = 2, '
     '.min_lrs = {0.001, 0.0001}}',
     L.ReduceLROnPlateau, dict(mode='max', factor=0.2, patience=0, cooldown=2,
                               min_lr=[0.001, 0.0001]), 'plateau', None),
    ('plateau_max_abs', 'reduce_lr_on_plateau',
     '{.mode = ember::optim::plateau_mode::max, .patience = 3, .threshold = 0.02, '
     '.threshold_mode = ember::optim::plateau_threshold::abs}',
     L.ReduceLROnPlateau, dict(mode='max', patience=3, threshold=0.02, threshold_mode='abs'),
     'plateau', None),
    # eps: the second group's reductions are smaller than eps, so they are skipped.
    ('plateau_eps', 'reduce_lr_on_plateau', '{.factor = 0.5, .patience = 1, .eps = 0.01}',
     L.ReduceLROnPlateau, dict(factor=0.5, patience=1, eps=0.01), 'plateau', None),
    # PyTorch accepts a negative patience (a reduction at every step) and cooldown (none).
    ('plateau_negative', 'reduce_lr_on_plateau',
     '{.factor = 0.5, .patience = -1, .cooldown = -2, .min_lr = 0.002}', L.ReduceLROnPlateau,
     dict(factor=0.5, patience=-1, cooldown=-2, min_lr=0.002), 'plateau', None),
]


def run_case(case):
    name, _, _, cls, kwargs, mode, extra = case
    if mode == 'resume':
        opt = make_optimizer(initial_lr=LRS)
    else:
        opt = make_optimizer()
    sched = cls(opt, **kwargs)
    seq = [lrs(opt)]
    last = [list(sched._last_lr)] if hasattr(sched, '_last_lr') else []
    epochs = extra if mode == 'closed' else range(STEPS)
    for i, e in enumerate(epochs):
        opt.step()
        if mode == 'plateau':
            sched.step(METRICS[i])
        elif mode == 'closed':
            sched.step(e)
        else:
            sched.step()
        seq.append(lrs(opt))
        last.append(list(sched._last_lr))
        if mode == 'outside' and i + 1 == extra:
            for g in opt.param_groups:
                g['lr'] *= 0.5
            seq.append(lrs(opt))
            last.append(list(sched._last_lr))
    sd = sched.state_dict()
    state = [(k, py_repr(v)) for k, v in sd.items()]
    return seq, last, state


def cxx_double(x):
    r = repr(float(x))
    if r == 'inf':
        return 'std::numeric_limits<double>::infinity()'
    if r == '-inf':
        return '-std::numeric_limits<double>::infinity()'
    if r == 'nan':
        return 'std::numeric_limits<double>::quiet_NaN()'
    return r


def cxx_string(s):
    return '"' + s.replace('\\', '\\\\').replace('"', '\\"') + '"'


def resume_checkpoint():
    """A run saved mid-way by PyTorch: model, SGD (with initial_lr in its groups) and a
    CosineAnnealingLR's state under 'scheduler_state_dict', the lesson's way. Returns the file's
    bytes and the lrs of the next 12 steps."""
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = L.CosineAnnealingLR(opt, T_max=10, eta_min=0.001)
    for _ in range(6):
        opt.step()
        sched.step()
    # Someone changed the lr between steps, so the chainable form matters.
    opt.param_groups[0]['lr'] *= 0.5
    buf = io.BytesIO()
    torch.save({'epoch': 6, 'model_state_dict': model.state_dict(),
                'optimizer_state_dict': opt.state_dict(),
                'scheduler_state_dict': sched.state_dict()}, buf)
    after = []
    for _ in range(12):
        opt.step()
        sched.step()
        after.append(opt.param_groups[0]['lr'])
    return buf.getvalue(), after


def write_schedulers(path):
    out = []
    w = out.append
    w('// Generated by scripts/golden_schedulers.py with torch %s under /usr/bin/python3.'
      % torch.__version__)
    w('// Do not edit: rerun the script.')
    w('#pragma once')
    w('')
    w('#include <ember/optim/lr_scheduler.hpp>')
    w('')
    w('#include <array>')
    w('#include <cstddef>')
    w('#include <limits>')
    w('#include <string_view>')
    w('#include <utility>')
    w('#include <vector>')
    w('')
    w('namespace golden::schedulers')
    w('{')
    w('')
    w('/// The lrs of the two SGD param groups before any scheduler.')
    w('inline constexpr std::array<double, 2> lrs = {%s, %s};' % LRS)
    w('inline constexpr std::size_t steps = %d;' % STEPS)
    w('/// What ReduceLROnPlateau steps on.')
    w('inline constexpr std::array<double, %d> metrics = {%s};'
      % (STEPS, ', '.join(cxx_double(m) for m in METRICS)))
    w('')
    w('/// One run: lr of each group after construction, then after each step (in an "outside"')
    w('/// case, an extra row after the lrs were halved from outside); get_last_lr() likewise')
    w('/// (ReduceLROnPlateau has none before its first step); state_dict() at the end as')
    w('/// (key, Python repr of the value).')
    w('struct run')
    w('{')
    w('    std::vector<std::array<double, 2>> lr;')
    w('    std::vector<std::array<double, 2>> last_lr;')
    w('    std::vector<std::pair<std::string_view, std::string_view>> state;')
    w('};')
    w('')
    for case in CASES:
        name, cxx_type, cxx_opts, _, _, mode, extra = case
        seq, last, state = run_case(case)
        w('// %s: ember::optim::%s with %s (%s)' % (name, cxx_type, cxx_opts, mode))
        if mode == 'closed':
            w('inline const std::vector<long> %s_epochs = {%s};'
              % (name, ', '.join(str(e) for e in extra)))
        w('inline const run %s = {' % name)
        w('    {%s},' % ', '.join('{%s, %s}' % tuple(cxx_double(x) for x in r) for r in seq))
        w('    {%s},' % ', '.join('{%s, %s}' % tuple(cxx_double(x) for x in r) for r in last))
        w('    {%s},' % ', '.join('{%s, %s}' % (cxx_string(k), cxx_string(v)) for k, v in state))
        w('};')
        w('')
    data, after = resume_checkpoint()
    w('/// torch.save of {epoch, model_state_dict, optimizer_state_dict (SGD lr 0.1, momentum')
    w('/// 0.9), scheduler_state_dict (CosineAnnealingLR T_max 10, eta_min 0.001)} after 6 steps')
    w('/// and a halving of the lr from outside; then the lrs of the next 12 steps.')
    w('inline constexpr unsigned char resume_checkpoint[%d] = {' % len(data))
    for i in range(0, len(data), 24):
        w('    ' + ', '.join(str(b) for b in data[i:i + 24]) + ',')
    w('};')
    w('inline constexpr std::array<double, %d> resume_lrs = {%s};'
      % (len(after), ', '.join(cxx_double(x) for x in after)))
    w('')
    w('} // namespace golden::schedulers')
    with open(path, 'w') as f:
        f.write('\n'.join(out) + '\n')


# ---- training tools ----

CLIP_CASES = [
    # (name, max_norm, norm_type)
    ('norm2', 1.0, 2.0),
    ('norm2_no_clip', 100.0, 2.0),
    ('norm1', 2.5, 1.0),
    ('norm3', 0.7, 3.0),
    ('norm_inf', 0.5, math.inf),
    ('norm_minus_inf', 0.05, -math.inf),
    ('norm0', 2.0, 0.0),
    ('norm_half', 10.0, 0.5),
]
SHAPES = [(3, 4), (5,), (2, 2)]


def clip_grads(dtype):
    g = torch.Generator().manual_seed(1234)
    grads = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in SHAPES]
    grads[2][0, 1] = 0.0  # a zero for the 0-norm to skip
    return grads


def clip_case(dtype, max_norm, norm_type):
    grads = clip_grads(dtype)
    params = []
    for gr in grads:
        p = torch.nn.Parameter(torch.zeros_like(gr))
        p.grad = gr.clone()
        params.append(p)
    total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return float(total), float(coef), [p.grad.flatten().tolist() for p in params]


def clip_value_case(dtype, clip):
    grads = clip_grads(dtype)
    params = []
    for gr in grads:
        p = torch.nn.Parameter(torch.zeros_like(gr))
        p.grad = gr.clone()
        params.append(p)
    torch.nn.utils.clip_grad_value_(params, clip)
    return [p.grad.flatten().tolist() for p in params]


def flat(vals):
    return ', '.join(cxx_double(x) for x in vals)


def write_training_tools(path):
    out = []
    w = out.append
    w('// Generated by scripts/golden_schedulers.py with torch %s under /usr/bin/python3.'
      % torch.__version__)
    w('// Do not edit: rerun the script.')
    w('#pragma once')
    w('')
    w('#include <array>')
    w('#include <cstddef>')
    w('#include <cstdint>')
    w('#include <limits>')
    w('#include <string_view>')
    w('#include <vector>')
    w('')
    w('namespace golden::training_tools')
    w('{')
    w('')
    w('// Three gradients of shapes [3, 4], [5], [2, 2] (torch.randn, seed 1234, float64; the')
    w('// float32 ones are these rounded), with grads[2][0, 1] = 0.')
    for dt, suffix in ((torch.float64, 'f64'), (torch.float32, 'f32')):
        grads = clip_grads(dt)
        w('inline const std::vector<std::vector<double>> grads_%s = {%s};'
          % (suffix, ', '.join('{%s}' % flat(gr.flatten().tolist()) for gr in grads)))
    w('')
    w('struct clip_case')
    w('{')
    w('    std::string_view name;')
    w('    double max_norm;')
    w('    double norm_type;')
    w('    double total_norm; ///< what clip_grad_norm_ returns')
    w('    double coef;       ///< min(max_norm / (total_norm + 1e-6), 1), in the grads\' dtype')
    w('    std::vector<std::vector<double>> clipped;')
    w('};')
    for dt, suffix in ((torch.float64, 'f64'), (torch.float32, 'f32')):
        w('inline const std::vector<clip_case> clip_norm_%s = {' % suffix)
        for name, max_norm, norm_type in CLIP_CASES:
            total, coef, clipped = clip_case(dt, max_norm, norm_type)
            w('    {"%s", %s, %s, %s, %s, {%s}},'
              % (name, cxx_double(max_norm), cxx_double(norm_type), cxx_double(total),
                 cxx_double(coef), ', '.join('{%s}' % flat(c) for c in clipped)))
        w('};')
    w('inline constexpr double clip_value = 0.3;')
    for dt, suffix in ((torch.float64, 'f64'), (torch.float32, 'f32')):
        w('inline const std::vector<std::vector<double>> clip_value_%s = {%s};'
          % (suffix, ', '.join('{%s}' % flat(c) for c in clip_value_case(dt, 0.3))))
    w('')

    # Metrics.
    g = torch.Generator().manual_seed(99)
    n, c = 20, 4
    scores = torch.randn(n, c, generator=g, dtype=torch.float64)
    labels = torch.randint(0, c, (n,), generator=g)
    acc = (scores.argmax(1) == labels).double().mean().item()
    probs = torch.sigmoid(torch.randn(n, generator=g, dtype=torch.float64))
    targets = torch.randint(0, 2, (n,), generator=g).double()
    bin_acc = ((probs > 0.5).double() == targets).double().mean().item()
    bin_acc_07 = ((probs > 0.7).double() == targets).double().mean().item()
    pred = torch.randn(n, 3, generator=g, dtype=torch.float64)
    truth = torch.randn(n, 3, generator=g, dtype=torch.float64)
    mae = torch.nn.functional.l1_loss(pred, truth).item()
    mse = torch.nn.functional.mse_loss(pred, truth).item()
    pred32, truth32 = pred.float(), truth.float()
    mae32 = torch.nn.functional.l1_loss(pred32.double(), truth32.double()).item()
    mse32 = torch.nn.functional.mse_loss(pred32.double(), truth32.double()).item()
    w('// Metrics: class scores [20, 4] and int64 labels; binary probabilities [20] and 0/1')
    w('// targets; predictions and truths [20, 3] (float64; the float32 results use them rounded,')
    w('// computed in float64).')
    w('inline constexpr std::size_t n = %d, classes = %d;' % (n, c))
    w('inline const std::vector<double> scores = {%s};' % flat(scores.flatten().tolist()))
    w('inline const std::vector<std::int64_t> labels = {%s};'
      % ', '.join(str(int(x)) for x in labels))
    w('inline constexpr double accuracy = %s;' % cxx_double(acc))
    w('inline const std::vector<double> probs = {%s};' % flat(probs.tolist()))
    w('inline const std::vector<double> binary_targets = {%s};' % flat(targets.tolist()))
    w('inline constexpr double binary_accuracy = %s; ///< threshold 0.5' % cxx_double(bin_acc))
    w('inline constexpr double binary_accuracy_07 = %s; ///< threshold 0.7'
      % cxx_double(bin_acc_07))
    w('inline const std::vector<double> pred = {%s};' % flat(pred.flatten().tolist()))
    w('inline const std::vector<double> truth = {%s};' % flat(truth.flatten().tolist()))
    w('inline constexpr double mae = %s, mse = %s;' % (cxx_double(mae), cxx_double(mse)))
    nan = float('nan')
    tie_scores = torch.tensor([[1., 3., 3.], [1., nan, 5.], [nan, nan, 0.], [2., 2., 2.],
                               [-1., -3., -0.5]], dtype=torch.float64)
    w('/// Ties and NaN: torch.argmax picks the first largest, and NaN as the largest.')
    w('inline const std::vector<double> tie_scores = {%s};' % flat(tie_scores.flatten().tolist()))
    w('inline const std::vector<std::int64_t> tie_argmax = {%s};'
      % ', '.join(str(int(x)) for x in tie_scores.argmax(1)))
    w('inline constexpr double mae_f32 = %s, mse_f32 = %s;'
      % (cxx_double(mae32), cxx_double(mse32)))
    w('')
    w('} // namespace golden::training_tools')
    with open(path, 'w') as f:
        f.write('\n'.join(out) + '\n')


def main():
    golden = os.path.join(ROOT, 'tests', 'golden')
    write_schedulers(os.path.join(golden, 'schedulers.hpp'))
    write_training_tools(os.path.join(golden, 'training_tools.hpp'))


if __name__ == '__main__':
    sys.exit(main())
