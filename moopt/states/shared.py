"""The ``shared`` policy: one Adam state for every objective (the plain-Adam baseline).

    m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
    theta <- theta - lr_k * (m / (1 - b1^T)) / (sqrt(v / (1 - b2^T)) + eps)

counted by the parameter's total step counter T. With N = 1 this is exactly
``torch.optim.AdamW``. Joint mode mixes the gradients first: one step on
``sum_k a_k g_k`` with ``lr = sum_k a_k lr_k``.

Example:
    >>> import torch, moopt
    >>> p = torch.nn.Parameter(torch.ones(2))
    >>> opt = moopt.MultiObjectiveOptimizer([p], objectives=["a", "b"], policy="shared", lr=0.1)
    >>> p.grad = torch.ones(2); opt.step(objective="a")
    >>> p.detach()
    tensor([0.9000, 0.9000])
"""

from __future__ import annotations

from moopt.states.adam import adam_coefficients, adam_moments, adam_update
from moopt.states.policy import SharingPolicy, StepInfo, register_policy


@register_policy("shared")
class SharedPolicy(SharingPolicy):
    """One (m, v) pair for all objectives, counted by the total step counter T."""

    buffers = adam_moments(per_objective=False, role="shared")
    joint_mode = "mix"

    def coefficients(self, info: StepInfo) -> dict[str, float]:
        return adam_coefficients(info.betas, info.T, info.eps)

    def update(self, grad, state, coef):
        return adam_update(grad, state, coef)
