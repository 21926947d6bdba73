#!/usr/bin/python3
"""Training parity with PyTorch, direction A (PyTorch -> ember): writes tests/data/parity/*.pth
and tests/golden/parity.hpp, which tests/test_pytorch_parity.cpp reads.

Run with Debian's python3 (real PyTorch 1.13):  /usr/bin/python3 scripts/golden_parity.py

For each optimizer config (SGD with Nesterov momentum and weight decay, Adam, AdamW):
1. torch.manual_seed(MODEL_SEED), build mlp() (Linear, ReLU, BatchNorm1d, Dropout, Linear) and
   train it WARM_STEPS steps on batches drawn from a generator seeded WARM_DATA_SEED; save the
   model's and the optimizer's state_dicts with torch.save (<name>_model.pth,
   <name>_optimizer.pth).
2. Load both files into a fresh model and optimizer, record the eval-mode output on the eval
   batch, then torch.manual_seed(DROPOUT_SEED) (dropout draws from the default generator) and
   train STEPS steps on batches from a generator seeded DATA_SEED. Record every state_dict
   entry, the losses and the eval-mode output again.
ember repeats step 2 from the same files (its generator is PyTorch's, so batches and dropout
masks are the same) and must land on the recorded numbers.

scripts/torch_parity.py (the 'pytorch_parity_live' test) imports this module for the model,
the configs and the training loop, and runs direction B (ember -> PyTorch).
"""

import collections
import os
import sys

import torch

IN, HIDDEN, OUT = 5, 16, 3
BATCH, EVAL_BATCH = 32, 16
DROPOUT = 0.2
WARM_STEPS, STEPS = 5, 50
MODEL_SEED, WARM_DATA_SEED, DROPOUT_SEED, DATA_SEED, EVAL_SEED = 0, 1, 2, 3, 4

# name -> (class, options, C++ options type, field order of the C++ options struct)
OPTIMIZERS = collections.OrderedDict([
    ('sgd', (torch.optim.SGD, dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4),
             'sgd_options', ['lr', 'momentum', 'dampening', 'weight_decay', 'nesterov'])),
    ('adam', (torch.optim.Adam, dict(lr=0.01), 'adam_options', ['lr'])),
    ('adamw', (torch.optim.AdamW, dict(lr=0.01, weight_decay=0.05), 'adamw_options',
               ['lr', 'weight_decay'])),
])


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.ReLU(),
                               torch.nn.BatchNorm1d(HIDDEN), torch.nn.Dropout(DROPOUT),
                               torch.nn.Linear(HIDDEN, OUT))


def randn(rows, cols, generator):
    # Drawn in float64, then rounded: PyTorch's float32 randn of 16 or more elements takes
    # an AVX2 kernel (its own vector log/sincos) on AVX2 machines and a scalar one elsewhere,
    # so its float32 draws depend on the CPU; the float64 fill is the same everywhere, and
    # ember repeats it.
    return torch.randn(rows, cols, generator=generator, dtype=torch.float64).float()


def train(model, optimizer, steps, data):
    """`steps` steps of MSE on randn batches from the torch.Generator `data`; the losses."""
    model.train()
    criterion = torch.nn.MSELoss()
    losses = []
    for _ in range(steps):
        x = randn(BATCH, IN, data)
        y = randn(BATCH, OUT, data)
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def eval_output(model):
    """The eval-mode output on the eval batch; leaves the model in training mode."""
    x = randn(EVAL_BATCH, IN, torch.Generator().manual_seed(EVAL_SEED))
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train()
    return out


def warm_up(name):
    """Step 1: the model and optimizer after WARM_STEPS steps from MODEL_SEED."""
    cls, options = OPTIMIZERS[name][:2]
    torch.manual_seed(MODEL_SEED)
    model = mlp()
    optimizer = cls(model.parameters(), **options)
    train(model, optimizer, WARM_STEPS, torch.Generator().manual_seed(WARM_DATA_SEED))
    return model, optimizer


def resume(name, model_file, optimizer_file):
    """A fresh model and optimizer loaded from the two files."""
    cls, options = OPTIMIZERS[name][:2]
    model = mlp()
    model.load_state_dict(torch.load(model_file))
    optimizer = cls(model.parameters(), **options)
    optimizer.load_state_dict(torch.load(optimizer_file))
    return model, optimizer


def continue_training(model, optimizer):
    """Step 2 on a loaded model: (eval output before, losses, eval output after)."""
    before = eval_output(model)
    torch.manual_seed(DROPOUT_SEED)
    losses = train(model, optimizer, STEPS, torch.Generator().manual_seed(DATA_SEED))
    return before, losses, eval_output(model)


def cxx_float(v):
    s = '%.9g' % v
    if 'e' not in s and '.' not in s and 'n' not in s:
        s += '.0'
    return s + 'f'


def cxx_floats(t):
    return '{' + ', '.join(cxx_float(v) for v in t.detach().reshape(-1).tolist()) + '}'


def cxx_value(v):
    if isinstance(v, bool):
        return 'true' if v else 'false'
    return repr(float(v))


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data_dir = os.path.join(root, 'tests', 'data', 'parity')
    os.makedirs(data_dir, exist_ok=True)
    torch.set_num_threads(1)

    out = []
    w = out.append
    w('// Generated by scripts/golden_parity.py with torch %s (Debian python3-torch 1.13)'
      % torch.__version__)
    w('// under /usr/bin/python3, with tests/data/parity/*.pth. Do not edit: rerun the script.')
    w('#pragma once')
    w('')
    w('#include <ember/optim/optimizers.hpp>')
    w('')
    w('#include <cstddef>')
    w('#include <cstdint>')
    w('#include <span>')
    w('')
    w('namespace golden::parity')
    w('{')
    w('')
    w('// nn.Sequential(Linear(in, hidden), ReLU(), BatchNorm1d(hidden), Dropout(dropout),')
    w('// Linear(hidden, out)), MSE loss; batches x [batch, in] then y [batch, out], each')
    w('// torch.randn(..., dtype=float64) rounded to float32.')
    for k, v in [('in_features', IN), ('hidden', HIDDEN), ('out_features', OUT),
                 ('batch', BATCH), ('eval_batch', EVAL_BATCH), ('warm_steps', WARM_STEPS),
                 ('steps', STEPS)]:
        w('inline constexpr std::size_t %s = %d;' % (k, v))
    w('inline constexpr double dropout = %r;' % DROPOUT)
    for k, v in [('model_seed', MODEL_SEED), ('warm_data_seed', WARM_DATA_SEED),
                 ('dropout_seed', DROPOUT_SEED), ('data_seed', DATA_SEED),
                 ('eval_seed', EVAL_SEED)]:
        w('inline constexpr std::uint64_t %s = %d;' % (k, v))
    w('')
    w('struct entry')
    w('{')
    w('    const char* key;')
    w('    std::span<const float> values;')
    w('};')
    w('')

    for name, (cls, options, cxx_type, fields) in OPTIMIZERS.items():
        model, optimizer = warm_up(name)
        model_file = os.path.join(data_dir, name + '_model.pth')
        optimizer_file = os.path.join(data_dir, name + '_optimizer.pth')
        torch.save(model.state_dict(), model_file)
        torch.save(optimizer.state_dict(), optimizer_file)
        model, optimizer = resume(name, model_file, optimizer_file)
        before, losses, after = continue_training(model, optimizer)
        state = model.state_dict()

        opts = ', '.join('.%s = %s' % (f, cxx_value(options.get(f, 0))) for f in fields)
        w('// %s(%s)' % (cls.__name__, ', '.join('%s=%r' % kv for kv in options.items())))
        w('namespace %s' % name)
        w('{')
        w('inline constexpr ember::optim::%s options{%s};' % (cxx_type, opts))
        w('inline constexpr const char* model_file = "%s_model.pth";' % name)
        w('inline constexpr const char* optimizer_file = "%s_optimizer.pth";' % name)
        w('inline constexpr float eval_before[] = %s;' % cxx_floats(before))
        w('inline constexpr float eval_after[] = %s;' % cxx_floats(after))
        w('inline constexpr float losses[] = %s;' % cxx_floats(torch.tensor(losses)))
        entries = []
        for key, t in state.items():
            if t.dtype == torch.int64:
                w('inline constexpr const char* num_batches_tracked_key = "%s";' % key)
                w('inline constexpr std::int64_t num_batches_tracked = %d;' % int(t))
                continue
            var = 'final_' + key.replace('.', '_')
            w('inline constexpr float %s[] = %s;' % (var, cxx_floats(t)))
            entries.append((key, var))
        w('inline constexpr entry final_state[] = {%s};'
          % ', '.join('{"%s", %s}' % kv for kv in entries))
        w('} // namespace %s' % name)
        w('')
        print('%s: loss %.6f -> %.6f, %s %d B, %s %d B' % (
            name, losses[0], losses[-1], os.path.basename(model_file),
            os.path.getsize(model_file), os.path.basename(optimizer_file),
            os.path.getsize(optimizer_file)))

    w('} // namespace golden::parity')
    path = os.path.join(root, 'tests', 'golden', 'parity.hpp')
    with open(path, 'w') as f:
        f.write('\n'.join(out) + '\n')
    print('wrote', path)


if __name__ == '__main__':
    sys.exit(main())
