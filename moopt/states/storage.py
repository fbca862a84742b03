"""Storage backends: how one optimizer-state buffer is kept in memory.

A sharing policy declares *which* buffers it needs; a storage backend decides *how* each is
stored (float32, bfloat16, 8-bit block-wise, ...). The optimizer always does its math in the
compute dtype (float32, or float64 for float64 parameters) and asks the backend to read a
buffer into that dtype and to write the updated value back.

A stored buffer is a small dict of tensors (``parts``): ``{"": tensor}`` for plain storage,
``{"codes": uint8, "absmax": float32}`` for 8-bit. The optimizer keeps the parts flat in its
``state`` under ``"<buffer>"`` / ``"<buffer>#<part>"`` keys, so ``state_dict`` holds only
plain tensors and ints.

Example:
    >>> import torch
    >>> from moopt.states.storage import get_storage
    >>> backend = get_storage("fp32")
    >>> p = torch.zeros(3)
    >>> parts = backend.allocate(p, signed=True)
    >>> backend.write(parts, torch.tensor([1.0, -2.0, 3.0]), signed=True)
    >>> backend.read(parts, p, signed=True)
    tensor([ 1., -2.,  3.])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor

from moopt.base.registry import Registry, decorator_for
from moopt.states.tensors import like, local

Parts = dict[str, Tensor]

STORAGES: Registry[type[StorageBackend]] = Registry("storage backend")
register_storage = decorator_for(STORAGES)


def compute_dtype(param: Tensor) -> torch.dtype:
    """The dtype optimizer math runs in for ``param``: float64 stays float64, else float32."""
    return torch.float64 if param.dtype == torch.float64 else torch.float32


class Codec:
    """How one stored buffer decodes to values and encodes back, in torch ops only.

    The fused path traces these into one compiled region with the policy's update (decode,
    update, encode: each state byte read and written once). ``parts`` names the stored
    parts in the order :meth:`decode` takes them and :meth:`encode` returns them (``""``: the
    buffer is one plain tensor); both see flat (1-D) tensors. ``elementwise`` promises that
    value ``i`` lives at position ``i`` of every part and nowhere else, so the buffers of
    several parameters may be concatenated into one call. ``key`` must tell apart codecs
    that trace differently (it keys compiled kernels). :meth:`constants` are tensors the
    codec reads (say, a lookup table), passed in on the step's device. Nothing else may vary
    from call to call: a codec's attributes are constants of its compiled kernels.
    """

    parts: tuple[str, ...] = ("",)
    elementwise: bool = True

    @property
    def key(self) -> tuple:
        return (type(self).__qualname__,)

    def constants(self, device: torch.device) -> tuple[Tensor, ...]:
        return ()

    def decode(self, parts: Sequence[Tensor], constants: Sequence[Tensor], dtype: torch.dtype,
               numel: int) -> Tensor:
        """The buffer's ``numel`` values (flat, in ``dtype``) from its flat parts."""
        return parts[0].to(dtype)

    def encode(self, value: Tensor, constants: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """New contents of the parts (flat) for the flat ``value``; the caller copies them in
        (a copy into a bfloat16 part rounds to nearest even)."""
        return (value,)


PLAIN = Codec()


class StorageBackend:
    """Base class of storage backends. Subclass, implement ``allocate``, ``unit_roundoff`` and
    either ``codec`` (torch ops: the backend then gets the fused path, and ``read`` / ``write``
    come from the codec) or ``read`` / ``write`` (reference path only), and register.

    ``aliases = True`` promises that ``read`` returns the stored tensor itself (no copy), so
    in-place updates of the value already update the state and ``write`` is a no-op for it.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[bool] = False

    def allocate(self, param: Tensor, *, signed: bool) -> Parts:
        """Zero-initialised storage for a buffer shaped like ``param``."""
        raise NotImplementedError

    def codec(self, param: Tensor, *, signed: bool) -> Codec | None:
        """The codec of a buffer shaped like ``param``, or None if there is none in torch ops
        (then parameters using this backend take the reference path)."""
        return None

    def read(self, parts: Parts, param: Tensor, *, signed: bool) -> Tensor:
        """The buffer as a tensor of ``param``'s shape in ``compute_dtype(param)``."""
        codec = self._codec_or_fail(param, signed)
        shard = local(param)
        flat = codec.decode([local(parts[name]).reshape(-1) for name in codec.parts],
                            codec.constants(shard.device), compute_dtype(param), shard.numel())
        return like(flat.view(shard.shape), param)

    def write(self, parts: Parts, value: Tensor, *, signed: bool) -> None:
        """Store ``value`` (compute dtype, ``param``'s shape) into ``parts``."""
        value = local(value)
        codec = self._codec_or_fail(value, signed)
        new = codec.encode(value.reshape(-1), codec.constants(value.device))
        for name, content in zip(codec.parts, new):
            target = local(parts[name])
            target.copy_(content.view(target.shape))

    def _codec_or_fail(self, param: Tensor, signed: bool) -> Codec:
        codec = self.codec(param, signed=signed)
        if codec is None:
            raise NotImplementedError(f"storage {self.name or type(self).__name__!r} defines "
                                      "neither codec() nor read() / write()")
        return codec

    def unit_roundoff(self, param: Tensor) -> float:
        """Relative error of one stored value; used by the bridged cancellation guard."""
        raise NotImplementedError

    def config(self) -> dict:
        """Constructor arguments, saved in ``state_dict`` so a load can check them."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


@register_storage("fp32")
class FP32Storage(StorageBackend):
    """Full-precision storage: float32 buffers (float64 for float64 parameters)."""

    name = "fp32"
    aliases = True

    def allocate(self, param: Tensor, *, signed: bool) -> Parts:
        return {"": torch.zeros_like(param, dtype=compute_dtype(param),
                                     memory_format=torch.preserve_format)}

    def codec(self, param: Tensor, *, signed: bool) -> Codec:
        return PLAIN

    def read(self, parts: Parts, param: Tensor, *, signed: bool) -> Tensor:
        return parts[""]

    def unit_roundoff(self, param: Tensor) -> float:
        return float(torch.finfo(compute_dtype(param)).eps) / 2


def get_storage(spec: str | StorageBackend) -> StorageBackend:
    """A backend instance from a registered name or an instance."""
    if isinstance(spec, StorageBackend):
        return spec
    if isinstance(spec, str):
        return STORAGES.get(spec)()
    raise TypeError(f"storage must be a name or a StorageBackend instance, got {spec!r}")


def list_storages() -> list[str]:
    """Names of the registered storage backends."""
    return STORAGES.names()


ALL_ROLES = ("shared", "base", "delta")


def resolve_storage(
    spec: str | StorageBackend | Mapping[str, str | StorageBackend],
    roles: tuple[str, ...],
) -> dict[str, StorageBackend]:
    """Map each of a policy's ``roles`` to a backend.

    ``spec`` is one backend for every role, or a mapping ``{role: backend}`` where the key
    ``"default"`` (if present) covers the roles it does not name (fp32 otherwise).
    """
    if isinstance(spec, Mapping):
        for role in spec:
            if role != "default" and role not in ALL_ROLES:
                raise ValueError(
                    f"storage role {role!r} is not a state role; roles are "
                    f"{', '.join(ALL_ROLES)} (or 'default')"
                )
        default = get_storage(spec.get("default", "fp32"))
        return {role: get_storage(spec[role]) if role in spec else default for role in roles}
    backend = get_storage(spec)
    return {role: backend for role in roles}
