#!/usr/bin/python3
"""Writes tests/golden/optimizers.hpp: PyTorch's optimizer trajectories and state_dicts.

Run with Debian's python3 (real PyTorch 1.13):  /usr/bin/python3 scripts/golden_optimizers.py

Toy problem: two parameters p0 [2, 3] and p1 [4]; loss = sum(c * p^2) + sum(d * p) with fixed
c > 0 and d, so grad = (2 * c) * p + d, which the C++ test computes the same way in the same
precision. Each case runs 20 steps in float64 and in float32 (same starting numbers), recording
both parameters after every step and the full state_dict after 10 steps.
"""

import copy
import math
import os
import sys

import torch

STEPS = 20
STATE_STEP = 10

# Field order of the C++ options structs (designated initializers must follow it).
FIELDS = {
    'sgd': ['lr', 'momentum', 'dampening', 'weight_decay', 'nesterov', 'maximize'],
    'adam': ['lr', 'betas', 'eps', 'weight_decay', 'amsgrad', 'maximize'],
    'adamw': ['lr', 'betas', 'eps', 'weight_decay', 'amsgrad', 'maximize'],
    'rmsprop': ['lr', 'alpha', 'eps', 'weight_decay', 'momentum', 'centered', 'maximize'],
}
CLASSES = {
    'sgd': torch.optim.SGD,
    'adam': torch.optim.Adam,
    'adamw': torch.optim.AdamW,
    'rmsprop': torch.optim.RMSprop,
}

# (name, kind, options of each group, p1 frozen). One group holds p0 and p1; two groups hold
# p0 and p1 separately.
CASES = [
    ('sgd_plain', 'sgd', [dict(lr=0.05)], False),
    ('sgd_momentum_dampening', 'sgd', [dict(lr=0.05, momentum=0.9, dampening=0.3)], False),
    ('sgd_nesterov', 'sgd', [dict(lr=0.05, momentum=0.9, nesterov=True)], False),
    ('sgd_weight_decay', 'sgd', [dict(lr=0.05, momentum=0.5, weight_decay=0.1)], False),
    ('sgd_maximize', 'sgd', [dict(lr=0.02, momentum=0.5, maximize=True)], False),
    ('sgd_frozen_parameter', 'sgd', [dict(lr=0.05, momentum=0.9)], True),
    ('sgd_two_groups', 'sgd', [dict(lr=0.1, momentum=0.9), dict(lr=0.01, momentum=0.9)], False),
    ('adam_plain', 'adam', [dict(lr=0.05)], False),
    ('adam_amsgrad', 'adam', [dict(lr=0.05, amsgrad=True)], False),
    ('adam_weight_decay', 'adam', [dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)],
     False),
    ('adam_maximize', 'adam', [dict(lr=0.01, maximize=True)], False),
    ('adam_two_groups', 'adam', [dict(lr=0.05), dict(lr=0.01, weight_decay=0.1, amsgrad=True)],
     False),
    # With β2 = 0.3, float32's sqrt(1 - β2^t) rounds to 1 from step 14 on, where ember leaves
    # out the division by it.
    ('adam_bias_correction_reaches_one', 'adam', [dict(lr=0.05, betas=(0.9, 0.3))], False),
    ('adamw_plain', 'adamw', [dict(lr=0.05)], False),
    ('adamw_amsgrad', 'adamw', [dict(lr=0.05, weight_decay=0.1, amsgrad=True)], False),
    ('rmsprop_plain', 'rmsprop', [dict(lr=0.01)], False),
    ('rmsprop_centered_momentum', 'rmsprop', [dict(lr=0.01, momentum=0.9, centered=True)], False),
    ('rmsprop_weight_decay', 'rmsprop', [dict(lr=0.01, alpha=0.9, weight_decay=0.1)], False),
]


def problem():
    """Starting parameters and loss coefficients, exact in float32."""
    g = torch.Generator().manual_seed(2024)
    p0 = torch.randn(2, 3, generator=g)
    p1 = torch.randn(4, generator=g)
    c0 = torch.rand(2, 3, generator=g) * 1.5 + 0.5
    c1 = torch.rand(4, generator=g) * 1.5 + 0.5
    d0 = torch.rand(2, 3, generator=g) * 2 - 1
    d1 = torch.rand(4, generator=g) * 2 - 1
    return dict(p0=p0, p1=p1, c0=c0, c1=c1, d0=d0, d1=d1)


def run(kind, groups, frozen, dtype, data):
    p0 = data['p0'].to(dtype).clone().requires_grad_(True)
    p1 = data['p1'].to(dtype).clone().requires_grad_(not frozen)
    c0, c1 = data['c0'].to(dtype), data['c1'].to(dtype)
    d0, d1 = data['d0'].to(dtype), data['d1'].to(dtype)
    cls = CLASSES[kind]
    if len(groups) == 1:
        opt = cls([p0, p1], **groups[0])
    else:
        # Every option given, in the optimizer's own order, so each group's keys come out in
        # the order a single-group optimizer prints them (user-given keys would come first).
        def full(opts):
            return cls([torch.zeros(1, requires_grad=True)], **opts).defaults
        opt = cls([dict(params=[p0], **full(groups[0])), dict(params=[p1], **full(groups[1]))])
    trajectory, state = [], None
    for step in range(1, STEPS + 1):
        opt.zero_grad()
        with torch.no_grad():
            p0.grad = (2 * c0) * p0 + d0
            if not frozen:
                p1.grad = (2 * c1) * p1 + d1
        opt.step()
        trajectory.append([float(v) for v in p0.detach().flatten()] +
                          [float(v) for v in p1.detach().flatten()])
        if step == STATE_STEP:
            state = copy.deepcopy(opt.state_dict())  # it holds the live tensors
    return trajectory, state


def num(x):
    x = float(x)
    assert math.isfinite(x), x
    return repr(x)


def array(values):
    return '{' + ', '.join(num(v) for v in values) + '}'


def scalar(v):
    """A param_group option or non-tensor state value as a C++ state_value."""
    if v is None:
        return 'std::monostate{}'
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, int):
        return 'std::int64_t{%d}' % v
    if isinstance(v, float):
        return num(v)
    if isinstance(v, tuple):
        return 'std::vector<double>' + array(v)
    raise TypeError(type(v))


def cpp_options(kind, opts):
    parts = []
    for field in FIELDS[kind]:
        if field in opts:
            v = opts[field]
            if isinstance(v, bool):
                parts.append('.%s = %s' % (field, 'true' if v else 'false'))
            elif isinstance(v, tuple):
                parts.append('.%s = %s' % (field, array(v)))
            else:
                parts.append('.%s = %s' % (field, num(v)))
    for field in opts:
        assert field in FIELDS[kind], field
    return '{' + ', '.join(parts) + '}'


def cpp_state(s64, s32):
    """Code building the optimizer_state of both runs (tensors differ by dtype)."""
    lines = ['        ember::optim::optimizer_state s;']
    assert len(s64['param_groups']) == len(s32['param_groups'])
    for g64, g32 in zip(s64['param_groups'], s32['param_groups']):
        assert g64 == g32
        items = ', '.join('{"%s", %s}' % (k, scalar(v)) for k, v in g64.items() if k != 'params')
        lines.append('        s.param_groups.push_back({{%s}, {%s}});' %
                     (items, ', '.join(str(i) for i in g64['params'])))
    assert list(s64['state'].keys()) == list(s32['state'].keys())
    for index in sorted(s64['state']):
        a, b = s64['state'][index], s32['state'][index]
        assert list(a.keys()) == list(b.keys())
        lines.append('        {')
        lines.append('            auto& st = s.state[%d];' % index)
        for key in a:
            va, vb = a[key], b[key]
            if isinstance(va, torch.Tensor):
                shape = '{' + ', '.join(str(d) for d in va.shape) + '}'
                if va.dtype == torch.float64:
                    # A state tensor in the parameter's dtype.
                    assert vb.dtype == torch.float32
                    lines.append('            st.insert("%s", tensor<T>(%s, f64 ? std::vector<double>%s '
                                 ': std::vector<double>%s));' %
                                 (key, shape, array(va.flatten().tolist()),
                                  array(vb.flatten().tolist())))
                else:
                    # Adam's step: float32 whatever the parameter's dtype.
                    assert va.dtype == torch.float32 and torch.equal(va, vb)
                    lines.append('            st.insert("%s", tensor<float>(%s, std::vector<double>%s));' %
                                 (key, shape, array(va.flatten().tolist())))
            else:
                assert va == vb
                lines.append('            st.insert("%s", %s);' % (key, scalar(va)))
        lines.append('        }')
    lines.append('        return s;')
    return '\n'.join(lines)


def trajectory_array(name, rows):
    body = ',\n'.join('        ' + array(r) for r in rows)
    return '    static constexpr double %s[%d][%d] = {\n%s};' % (name, len(rows), len(rows[0]), body)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_path = os.path.join(root, 'tests', 'golden', 'optimizers.hpp')
    data = problem()
    out = []
    out.append('// Generated by scripts/golden_optimizers.py with torch %s (Debian python3-torch 1.13)'
               % torch.__version__)
    out.append('// under /usr/bin/python3. Do not edit: rerun the script.')
    out.append('#pragma once')
    out.append('')
    out.append('#include <ember/optim/optimizers.hpp>')
    out.append('')
    out.append('#include <cstdint>')
    out.append('#include <cstring>')
    out.append('#include <type_traits>')
    out.append('#include <variant>')
    out.append('#include <vector>')
    out.append('')
    out.append('namespace golden::optimizers')
    out.append('{')
    out.append('')
    out.append('inline constexpr std::size_t steps = %d;' % STEPS)
    out.append('/// state() is the state_dict after this many steps.')
    out.append('inline constexpr std::size_t state_step = %d;' % STATE_STEP)
    out.append('')
    out.append('// p0 [2, 3] and p1 [4] start here; grad = (2 * c) * p + d.')
    for key in ['p0', 'p1', 'c0', 'c1', 'd0', 'd1']:
        v = data[key].flatten().tolist()
        out.append('inline constexpr double %s[%d] = %s;' % (key, len(v), array(v)))
    out.append('')
    out.append('template <class T>')
    out.append('ember::host_tensor tensor(std::vector<std::int64_t> shape, const std::vector<double>& values)')
    out.append('{')
    out.append('    ember::host_tensor t(ember::dtype_of<T>(), std::move(shape));')
    out.append('    auto data = t.data<T>();')
    out.append('    for (std::size_t i = 0; i < values.size(); ++i)')
    out.append('        data[i] = static_cast<T>(values[i]);')
    out.append('    return t;')
    out.append('}')
    names = []
    for name, kind, groups, frozen in CASES:
        t64, s64 = run(kind, groups, frozen, torch.float64, data)
        t32, s32 = run(kind, groups, frozen, torch.float32, data)
        names.append(name)
        desc = '%s(%s)%s' % (CLASSES[kind].__name__, '; '.join(
            ', '.join('%s=%r' % kv for kv in g.items()) for g in groups),
            ', p1 frozen' if frozen else '')
        out.append('')
        out.append('// %s' % desc)
        out.append('struct %s' % name)
        out.append('{')
        out.append('    static constexpr const char* name = "%s";' % name)
        out.append('    template <class T>')
        out.append('    using optimizer = ember::optim::%s<T>;' % kind)
        out.append('    using options_type = ember::optim::%s_options;' % kind)
        out.append('    /// One entry: one group holding p0 and p1. Two: p0 and p1 in groups of their own.')
        out.append('    static std::vector<options_type> groups()')
        out.append('    {')
        out.append('        return {%s};' % ', '.join('options_type' + cpp_options(kind, g)
                                                    for g in groups))
        out.append('    }')
        out.append('    static constexpr bool frozen_p1 = %s;' % ('true' if frozen else 'false'))
        out.append('    /// Row k: p0 then p1 (flattened) after k + 1 steps.')
        out.append(trajectory_array('trajectory_f64', t64))
        out.append(trajectory_array('trajectory_f32', t32))
        out.append('    template <class T>')
        out.append('    static ember::optim::optimizer_state state()')
        out.append('    {')
        out.append('        constexpr bool f64 = std::is_same_v<T, double>;')
        out.append('        (void)f64;')
        out.append(cpp_state(s64, s32))
        out.append('    }')
        out.append('};')
    out.append('')
    out.append('#define EMBER_GOLDEN_OPTIMIZER_CASES %s' % ', '.join('golden::optimizers::' + n for n in names))
    out.append('')
    out.append('} // namespace golden::optimizers')
    out.append('')
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, 'w') as f:
        f.write('\n'.join(out))
    print('wrote', out_path, file=sys.stderr)


if __name__ == '__main__':
    main()
