"""Updating the weights from their gradients: AdamW, its learning-rate schedule, clipping.

Parameters and gradients are trees shaped like `params` (transformer.model): nested dicts
and lists of float32 arrays, None where a parameter is absent. The numbers are torch's
(torch.optim.AdamW, transformers' get_linear_schedule_with_warmup, clip_grad_norm_), step for
step, so a run here and a run in sentence-transformers from the same start agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def leaves(tree, path=""):
    """(path, array) for every array of a tree, in a fixed order: "layers/0/query/weight"."""
    if isinstance(tree, dict):
        for name, part in tree.items():
            yield from leaves(part, f"{path}/{name}" if path else name)
    elif isinstance(tree, list):
        for index, part in enumerate(tree):
            yield from leaves(part, f"{path}/{index}" if path else str(index))
    elif tree is not None:
        yield path, tree


def global_norm(grads, fused=False):
    """The L2 norm of all gradients together, as one long vector. fused: the sums of squares
    on the Numba kernel (`kernels/optimizer.py`: one pass, no float64 copy of each gradient)."""
    if fused:
        from transformer.kernels.optimizer import sum_of_squares

        return float(np.sqrt(sum(sum_of_squares(g) for _, g in leaves(grads))))
    return float(np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for _, g in leaves(grads))))


def clip_by_global_norm(grads, max_norm, fused=False):
    """Scale every gradient by max_norm / (norm + 1e-6) when the global norm is above max_norm
    (torch.nn.utils.clip_grad_norm_), in place. Returns the norm before clipping."""
    norm = global_norm(grads, fused)
    factor = max_norm / (norm + 1e-6)
    if factor < 1.0:
        for _, grad in leaves(grads):
            grad *= np.float32(factor)
    return norm


def linear_schedule(step, base_lr, warmup_steps, total_steps):
    """The learning rate of optimizer step `step` (0 for the first): rising linearly from 0
    over warmup_steps, then falling linearly to 0 at total_steps (transformers'
    get_linear_schedule_with_warmup: the first step with warm-up has rate 0)."""
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    return base_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


@dataclass
class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), torch.optim.AdamW's numbers:

        param -= lr * weight_decay * param                 the decay, apart from the gradient
        m = beta1 m + (1 - beta1) g ;  v = beta2 v + (1 - beta2) g^2
        param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    `no_decay`: paths (as `leaves` spells them) that get no weight decay: biases and norm
    scales, as sentence-transformers and transformers' Trainer do. `fused`: each weight's
    update in one pass on the Numba kernel (`kernels/optimizer.py`), the same numbers.
    """

    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    step_count: int = 0
    moments: dict | None = None  # path -> (m, v)
    fused: bool = False

    def step(self, params, grads, lr, no_decay=frozenset()):
        """One update of every parameter with a gradient, in place."""
        if self.moments is None:
            self.moments = {}
        self.step_count += 1
        t = self.step_count
        bias_correction1 = 1.0 - self.beta1 ** t
        bias_correction2_sqrt = np.sqrt(1.0 - self.beta2 ** t)
        grads_by_path = dict(leaves(grads))
        for path, param in leaves(params):
            grad = grads_by_path.get(path)
            if grad is None:
                continue
            if path not in self.moments:
                self.moments[path] = (np.zeros_like(param), np.zeros_like(param))
            m, v = self.moments[path]
            if self.fused and param.flags.c_contiguous and grad.flags.c_contiguous:
                from transformer.kernels.optimizer import adamw_update

                decay = 0.0 if path in no_decay else self.weight_decay
                adamw_update(param, np.ascontiguousarray(grad, dtype=np.float32), m, v, lr, decay, self.beta1,
                             self.beta2, self.eps, bias_correction1, bias_correction2_sqrt)
                continue
            if path not in no_decay and self.weight_decay:
                param *= np.float32(1.0 - lr * self.weight_decay)
            m *= np.float32(self.beta1)
            m += np.float32(1.0 - self.beta1) * grad
            v *= np.float32(self.beta2)
            v += np.float32(1.0 - self.beta2) * grad * grad
            denominator = np.sqrt(v) / np.float32(bias_correction2_sqrt) + np.float32(self.eps)
            param -= np.float32(lr / bias_correction1) * m / denominator

    def state(self):
        """What a checkpoint keeps to resume: {"step_count": int}, {path/m, path/v: arrays}."""
        arrays = {}
        for path, (m, v) in (self.moments or {}).items():
            arrays[f"{path}/m"], arrays[f"{path}/v"] = m, v
        return {"step_count": self.step_count}, arrays

    def load_state(self, numbers, arrays):
        self.step_count = int(numbers["step_count"])
        paths = {name.rsplit("/", 1)[0] for name in arrays}
        self.moments = {path: (np.array(arrays[f"{path}/m"]), np.array(arrays[f"{path}/v"])) for path in paths}
