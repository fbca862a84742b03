"""The toy policy the contract tests register themselves (and the policy names they run)."""

import moopt
from moopt.states.fast.native_tables import KERNELS
from moopt.states.policy import BufferSpec, SharingPolicy


class ToyPolicy(SharingPolicy):
    """Per-objective momentum over one shared mean |g| (listed own-first, unlike the
    built-ins, so the by-name state record is exercised)."""

    buffers = (BufferSpec("m", per_objective=True, signed=True, role="delta"),
               BufferSpec("s", per_objective=False, signed=False, role="base"))

    def coefficients(self, info):
        b1, b2 = info.betas
        return {"b1": b1, "a1": 1 - b1, "b2": b2, "a2": 1 - b2, "c": 1 / (1 - b2**info.T),
                "eps": info.eps}

    def update(self, grad, state, coef):
        m = state.m * coef.b1 + grad * coef.a1
        s = state.s * coef.b2 + grad.abs() * coef.a2
        return m / (s * coef.c + coef.eps), {"m": m, "s": s}


# Every registered policy, and the toy (registered by the ``policy`` fixture while a test
# runs: tests/states/conftest.py).
POLICY_NAMES = [*moopt.list_policies(), "toy"]
# The policies with native CPU kernels.
NATIVE = sorted(cls.name for cls in KERNELS)
