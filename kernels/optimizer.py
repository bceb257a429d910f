"""The optimizer's passes over every weight, fused: AdamW's update and the gradients' norm.

    adamw_update     param, grad, m, v float32 [n] (C-contiguous, updated in place)
                     param *= decay                        (1 - lr * weight_decay, or 1)
                     m = beta1 m + (1 - beta1) g ;  v = beta2 v + (1 - beta2) g g
                     param -= step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)
    sum_of_squares   x float32 [n] -> float64 sum of x^2

The NumPy twins are `transformer.optim.AdamW.step` and `optim.global_norm`: the update there
is about ten passes over each weight, each with a fresh temporary (22 million floats for
MiniLM, most of them the word table); here one pass reads param, grad, m, v and writes three
of them back. Each element is the same chain of float32 operations in the same order as the
twin's (no fused multiply-adds), so the two agree to the last bit or nearly. Elements are
split over the threads (`_jit.run_chunks`).
"""

import numpy as np

from ._jit import even_bounds, jit, parallel_chunks, run_chunks

_ELEMENTS_PER_CHUNK = 256 * 1024


@jit
def _adamw_range(param, grad, m, v, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps,
                 step_size, first, stop):
    for i in range(first, stop):
        g = grad[i]
        p = param[i] * decay
        moment = m[i] * beta1 + one_minus_beta1 * g
        square = v[i] * beta2 + one_minus_beta2 * g * g
        m[i] = moment
        v[i] = square
        param[i] = p - step_size * moment / (np.sqrt(square) / bias_correction2_sqrt + eps)


def adamw_update(param, grad, m, v, lr, weight_decay, beta1, beta2, eps, bias_correction1, bias_correction2_sqrt):
    """One AdamW update of one weight, in place (see the module docstring). param, grad, m, v:
    float32 arrays of one shape, C-contiguous; weight_decay 0 for none."""
    arrays = {"param": param, "grad": grad, "m": m, "v": v}
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray) or array.dtype != np.float32 or not array.flags.c_contiguous:
            raise TypeError(f"adamw_update: {name} must be a C-contiguous float32 array")
        if array.shape != param.shape:
            raise ValueError(f"adamw_update: {name} has shape {array.shape}, expected {param.shape} as param")
    n = param.size
    f32 = np.float32
    run_chunks(_adamw_range, even_bounds(n, parallel_chunks(n, _ELEMENTS_PER_CHUNK)),
               *(array.reshape(-1) for array in arrays.values()), f32(1.0 - lr * weight_decay), f32(beta1),
               f32(1.0 - beta1), f32(beta2), f32(1.0 - beta2), f32(bias_correction2_sqrt), f32(eps),
               f32(lr / bias_correction1))


@jit
def _sum_of_squares_range(x, bounds, partial, first, stop):
    """The chunk first..stop-1's float64 sum of squares into partial[c], c its index in bounds."""
    total = 0.0  # float64: millions of squares of float32 gradients
    for i in range(first, stop):
        value = np.float64(x[i])
        total += value * value
    for c in range(bounds.shape[0] - 1):
        if bounds[c] == first:
            partial[c] = total


def sum_of_squares(x):
    """float64 sum of x * x over a float32 array x (any shape)."""
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    bounds = even_bounds(flat.size, parallel_chunks(flat.size, _ELEMENTS_PER_CHUNK))
    partial = np.zeros(len(bounds) - 1, dtype=np.float64)
    run_chunks(_sum_of_squares_range, bounds, flat, np.array(bounds, dtype=np.int64), partial)
    return float(partial.sum())


def adamw_naive(param, grad, m, v, lr, weight_decay, beta1, beta2, eps, bias_correction1, bias_correction2_sqrt):
    """The update one element at a time in float64 -> (param, m, v) new float64 arrays."""
    param, m, v = (np.array(a, np.float64).reshape(-1) for a in (param, m, v))
    for i, g in enumerate(np.asarray(grad, np.float64).reshape(-1)):
        param[i] *= 1.0 - lr * weight_decay
        m[i] = beta1 * m[i] + (1.0 - beta1) * g
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g
        param[i] -= lr / bias_correction1 * m[i] / (np.sqrt(v[i]) / bias_correction2_sqrt + eps)
    return param, m, v
