"""The ``decoupled`` policy (DualOptim): one independent Adam state per objective.

A step of objective k reads and writes only k's moments, bias-corrected by k's own counter:

    m_k <- b1 m_k + (1 - b1) g ;  v_k <- b2 v_k + (1 - b2) g^2
    theta <- theta - lr_k * (m_k / (1 - b1^t_k)) / (sqrt(v_k / (1 - b2^t_k)) + eps)

Joint mode: every objective updates its own state with its gradient and the parameter moves
by ``sum_k a_k lr_k direction_k``.

Example:
    >>> import torch, moopt
    >>> p = torch.nn.Parameter(torch.ones(2))
    >>> opt = moopt.MultiObjectiveOptimizer([p], objectives=["a", "b"], policy="decoupled",
    ...                                     lr=0.1)
    >>> p.grad = torch.ones(2); opt.step(objective="a")
    >>> p.grad = -torch.ones(2); opt.step(objective="b")   # b's state is fresh: full step
    >>> p.detach()
    tensor([1., 1.])
"""

from __future__ import annotations

from moopt.states.adam import adam_coefficients, adam_moments, adam_update
from moopt.states.policy import SharingPolicy, StepInfo, register_policy


@register_policy("decoupled")
class DecoupledPolicy(SharingPolicy):
    """Per-objective (m_k, v_k); the step of k uses k's counter t_k."""

    buffers = adam_moments(per_objective=True, role="delta")

    def coefficients(self, info: StepInfo) -> dict[str, float]:
        return adam_coefficients(info.betas, info.t, info.eps)

    def update(self, grad, state, coef):
        return adam_update(grad, state, coef)
