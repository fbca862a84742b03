"""An independent float64 re-derivation of ALGORITHMS.md sections 1-3 in NumPy.

Written from the spec, not from moopt's code: one parameter vector, explicit state, no
storage backends, no guard (the guard must not change well-conditioned float64 results).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


class ReferenceOptimizer:
    # The policies re-derived here (a registered policy needs its own derivation).
    POLICIES = ("shared", "decoupled", "bridged")

    def __init__(self, theta0: np.ndarray, objectives: Sequence[str], policy: str, *, lr: float,
                 betas=(0.9, 0.95), base_betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0,
                 lr_ratios: Mapping[str, float] | None = None) -> None:
        self.theta = np.array(theta0, dtype=np.float64)
        self.objectives = list(objectives)
        self.policy = policy
        self.lr, self.betas, self.base_betas = lr, betas, base_betas
        self.eps, self.wd = eps, weight_decay
        self.ratios = {k: (lr_ratios or {}).get(k, 1.0) for k in objectives}
        z = np.zeros_like(self.theta)
        self.T = 0
        self.t = dict.fromkeys(objectives, 0)
        self.m = {k: z.copy() for k in objectives}
        self.v = {k: z.copy() for k in objectives}
        self.m_shared, self.v_shared = z.copy(), z.copy()
        self.m_b, self.v_b = z.copy(), z.copy()

    def _adam(self, m, v, step, lr):
        b1, b2 = self.betas
        return lr * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + self.eps)

    def _base_hat(self):
        b3, b4 = self.base_betas
        if self.T == 1:
            return self.m_b.copy(), self.v_b.copy()
        return self.m_b / (1 - b3 ** (self.T - 1)), self.v_b / (1 - b4 ** (self.T - 1))

    def _delta_dir(self, k, g, mb_hat, vb_hat):
        b1, b2 = self.betas
        self.m[k] = b1 * self.m[k] + (1 - b1) * (g - mb_hat)
        self.v[k] = b2 * self.v[k] + (1 - b2) * (g * g - vb_hat)
        mk_hat = self.m[k] / (1 - b1 ** self.t[k])
        vk_hat = self.v[k] / (1 - b2 ** self.t[k])
        return (mk_hat + mb_hat) / (np.sqrt(np.abs(vk_hat + vb_hat)) + self.eps)

    def alternating(self, k: str, g: np.ndarray) -> None:
        g = np.asarray(g, dtype=np.float64)
        self.T += 1
        self.t[k] += 1
        lr_k = self.lr * self.ratios[k]
        self.theta = self.theta * (1 - lr_k * self.wd)
        b1, b2 = self.betas
        if self.policy == "shared":
            self.m_shared = b1 * self.m_shared + (1 - b1) * g
            self.v_shared = b2 * self.v_shared + (1 - b2) * g * g
            self.theta = self.theta - self._adam(self.m_shared, self.v_shared, self.T, lr_k)
        elif self.policy == "decoupled":
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            self.theta = self.theta - self._adam(self.m[k], self.v[k], self.t[k], lr_k)
        elif self.policy == "bridged":
            mb_hat, vb_hat = self._base_hat()
            self.theta = self.theta - lr_k * self._delta_dir(k, g, mb_hat, vb_hat)
            b3, b4 = self.base_betas
            self.m_b = b3 * self.m_b + (1 - b3) * g
            self.v_b = b4 * self.v_b + (1 - b4) * g * g
        else:
            raise ValueError(self.policy)

    def joint(self, grads: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> None:
        grads = {k: np.asarray(g, dtype=np.float64) for k, g in grads.items()}
        total = sum(weights[k] for k in grads)
        a = {k: weights[k] / total for k in grads}
        self.T += 1
        for k in grads:
            self.t[k] += 1
        lr = {k: self.lr * self.ratios[k] for k in grads}
        lr_joint = sum(a[k] * lr[k] for k in grads)
        self.theta = self.theta * (1 - lr_joint * self.wd)
        b1, b2 = self.betas
        if self.policy == "shared":
            g = sum(a[k] * grads[k] for k in grads)
            self.m_shared = b1 * self.m_shared + (1 - b1) * g
            self.v_shared = b2 * self.v_shared + (1 - b2) * g * g
            self.theta = self.theta - self._adam(self.m_shared, self.v_shared, self.T, lr_joint)
        elif self.policy == "decoupled":
            step = np.zeros_like(self.theta)
            for k, g in grads.items():
                self.m[k] = b1 * self.m[k] + (1 - b1) * g
                self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
                step += a[k] * self._adam(self.m[k], self.v[k], self.t[k], lr[k])
            self.theta = self.theta - step
        elif self.policy == "bridged":
            mb_hat, vb_hat = self._base_hat()
            step = np.zeros_like(self.theta)
            for k, g in grads.items():
                step += a[k] * lr[k] * self._delta_dir(k, g, mb_hat, vb_hat)
            self.theta = self.theta - step
            b3, b4 = self.base_betas
            self.m_b = b3 * self.m_b + (1 - b3) * sum(a[k] * grads[k] for k in grads)
            self.v_b = b4 * self.v_b + (1 - b4) * sum(a[k] * grads[k] ** 2 for k in grads)
        else:
            raise ValueError(self.policy)
