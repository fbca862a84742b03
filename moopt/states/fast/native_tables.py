"""The native kernels' argument tables, generated from the built-in policies' declarations.

``native.c`` holds one kernel family per built-in policy (:data:`KERNELS`). It reads the
scalar vector and the buffer slots of :mod:`moopt.states.rule` by name, through ``-D`` flags
made here from the declarations: for policy ``P`` (upper case),

* ``P_C_<name>``: the offset of coefficient ``<name>`` in a term block (after the scale),
  ``P_NCOEF`` their count;
* ``P_S_<name>``: the slot of buffer ``<name>`` in an alternating step (shared buffers first,
  then the objective's own: a joint step repeats the own slots per objective);
  ``P_NSHARED`` / ``P_NOWN``: how many buffers are shared / per objective;
* ``P_MIX``: 1 for a ``"mix"`` joint mode.

A declaration that reorders coefficients or buffers rebuilds the library with new flags; one
that drops a name the C code reads fails with a message naming it (:func:`build_flags`).

Example:
    >>> from moopt.states.fast.native_tables import build_flags
    >>> "-DBRIDGED_S_m_base=0" in build_flags()
    True
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from moopt.states.bridged import BridgedPolicy
from moopt.states.decoupled import DecoupledPolicy
from moopt.states.policy import SharingPolicy
from moopt.states.rule import Rule
from moopt.states.shared import SharedPolicy

# The kernel family of each built-in policy class (exactly these classes: a subclass may
# change the math, and takes the compiled path).
KERNELS: dict[type[SharingPolicy], str] = {
    SharedPolicy: "shared",
    DecoupledPolicy: "decoupled",
    BridgedPolicy: "bridged",
}

SOURCE = Path(__file__).with_name("native.c")


def kernel_of(policy: SharingPolicy) -> str | None:
    """The native kernel family of ``policy``, or None (no native kernel)."""
    return KERNELS.get(type(policy))


def _used_names(prefix: str) -> tuple[set[str], set[str]]:
    """The coefficient and buffer names ``native.c`` reads for ``prefix``."""
    text = SOURCE.read_text()
    return (set(re.findall(rf"\b{prefix}_C_(\w+)", text)) - {"NONE"},
            set(re.findall(rf"\b{prefix}_S_(\w+)", text)))


def policy_flags(policy: SharingPolicy, family: str) -> list[str]:
    """The ``-D`` flags of one policy's kernel family (see the module docstring)."""
    prefix = family.upper()
    rule = Rule.of(policy, 1)
    coefs = policy.coefficient_names()  # the built-ins read no group hyperparameters
    slots = [spec for spec, _ in rule.slots(("k",))]
    needed_coefs, needed_bufs = _used_names(prefix)
    missing = sorted((needed_coefs - set(coefs)) | (needed_bufs - {s.name for s in slots}))
    if missing:
        raise ValueError(f"native.c reads {missing} of policy {policy.label()!r}, whose "
                         f"declaration has coefficients {list(coefs)} and buffers "
                         f"{[s.name for s in policy.buffers]}")
    return [
        *(f"-D{prefix}_C_{name}={1 + i}" for i, name in enumerate(coefs)),
        f"-D{prefix}_NCOEF={len(coefs)}",
        *(f"-D{prefix}_S_{spec.name}={i}" for i, spec in enumerate(slots)),
        f"-D{prefix}_NSHARED={len(rule.shared)}",
        f"-D{prefix}_NOWN={len(rule.own)}",
        f"-D{prefix}_MIX={int(policy.joint_mode == 'mix')}",
    ]


@functools.cache
def build_flags() -> list[str]:
    """Every family's flags, for the build of ``native.c``."""
    flags: list[str] = []
    for cls, family in KERNELS.items():
        flags.extend(policy_flags(cls(), family))
    return flags
