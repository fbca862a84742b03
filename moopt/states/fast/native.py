"""Native CPU kernels (``native.c``), built with the system C compiler and cached on disk.

The C file holds the fused steps of the built-in policies' families (Adam-like for shared /
decoupled, bridged) over float32, bfloat16 and 8-bit block-wise state, in alternating mode
and in joint mode (every objective's term in one pass), the 8-bit codec, and a NaN/inf scan
of float32 gradients. Which scalar and which buffer a kernel reads where comes from the
policies' declarations: :mod:`moopt.states.fast.native_tables` turns them into ``-D`` flags
of the build.
It builds in about a second with ``cc -O3 -march=native -fopenmp`` into
``~/.cache/moopt/native/`` (``MOOPT_CACHE_DIR`` moves it), keyed by a hash of the source,
the flags, the compiler and the CPU, and is loaded with :mod:`ctypes`: no torch headers, no
build step at install time. The first request builds it (or loads it from the cache) before
it returns, so every step of a run takes the same kernels.

``MOOPT_NATIVE=0`` never builds or loads it; ``MOOPT_NATIVE_ARCH`` replaces
``-march=native``. The code has AVX-512, AVX2 and portable paths. Without a working compiler
it warns once and stays off (the compiled or eager paths step the parameters then).

Example:
    >>> from moopt.states.fast import native
    >>> native.mode() in ("sync", "off")
    True
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from moopt.states.quantization import QuantMap

SOURCE = Path(__file__).with_name("native.c")
# No FMA contraction (bit-equal to torch's separate multiply and add); no errno on sqrt (lets
# it vectorise); integer views of float scratch need -fno-strict-aliasing.
FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-strict-aliasing", "-fopenmp",
         "-std=c11", "-shared", "-fPIC"]


def _cpu_flags() -> list[str]:
    """``-march=native`` unless ``MOOPT_NATIVE_ARCH`` names other flags (say, a common
    ``-march=x86-64-v3`` for a cache shared by different machines)."""
    return os.environ.get("MOOPT_NATIVE_ARCH", "-march=native").split()


KIND = {"f32": 0, "bf16": 1, "int8": 2}
# Kernel families of moopt_step: one per built-in policy (native_tables.KERNELS).
FAMILY = {"shared": 0, "decoupled": 1, "bridged": 2}
# One thread below this many values: a parallel region costs more than it saves.
PARALLEL_MIN_NUMEL = 1 << 16


class Buf(ctypes.Structure):
    """One state buffer as the C kernel sees it (``Buf`` in native.c)."""

    _fields_ = [("kind", ctypes.c_int32), ("block", ctypes.c_int32),
                ("data", ctypes.c_void_p), ("absmax", ctypes.c_void_p),
                ("values", ctypes.c_void_p), ("table", ctypes.c_void_p),
                ("planes", ctypes.c_void_p), ("minifloat", ctypes.c_int32),
                ("shift", ctypes.c_int32)]


def mode() -> str:
    """"sync" (default: build or load on first use) or "off", from ``MOOPT_NATIVE``."""
    value = os.environ.get("MOOPT_NATIVE", "1").strip().lower()
    return "off" if value in ("0", "off", "false", "no") else "sync"


def _table_flags() -> list[str]:
    """The ``-D`` flags that place the declared scalars and buffers (imported here: the
    tables read the policy declarations, which must not be imported by the codec's users)."""
    from moopt.states.fast.native_tables import build_flags

    return build_flags()


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _cache_dir() -> Path:
    root = os.environ.get("MOOPT_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "moopt"
    return base / "native"


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + platform.processor() + flags


@functools.cache
def _compiler_version(cc: str) -> str:
    """``cc --version`` (asked once per process: the cache check and the build both need it)."""
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _library_path(cc: str, flags: list[str]) -> Path:
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(flags), cc,
                                    _compiler_version(cc), _cpu_id()]).encode()).hexdigest()[:20]
    return _cache_dir() / f"moopt_native_{key}.so"


def _build() -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC)")
    errors = []
    serial = [f for f in FLAGS if f != "-fopenmp"]
    # -march=native is not known to every compiler, OpenMP not installed with every one.
    tables = _table_flags()
    for flags in (FLAGS + _cpu_flags() + tables, FLAGS + tables, serial + tables):
        path = _library_path(cc, flags)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Build beside the target, then rename: other processes never see half a file.
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
            os.close(fd)
            done = subprocess.run([cc, *flags, str(SOURCE), "-o", tmp, "-lm"],
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                os.unlink(tmp)
                errors.append(done.stderr.strip()[-2000:])
                continue
            os.replace(tmp, path)
        lib = ctypes.CDLL(str(path))
        lib.moopt_step.restype = ctypes.c_int
        lib.moopt_step.argtypes = [ctypes.c_int, ctypes.c_void_p,
                                   ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                   ctypes.c_int64, ctypes.POINTER(Buf), ctypes.c_int,
                                   ctypes.POINTER(ctypes.c_float), ctypes.c_int, ctypes.c_int]
        lib.moopt_step_many.restype = None
        lib.moopt_step_many.argtypes = [ctypes.c_int, ctypes.c_int,
                                        ctypes.POINTER(ctypes.c_void_p),
                                        ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                        ctypes.POINTER(ctypes.c_int64),
                                        ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                        ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                        ctypes.c_int, ctypes.c_int64,
                                        ctypes.POINTER(ctypes.c_int32)]
        lib.moopt_decode.restype = None
        lib.moopt_decode.argtypes = [ctypes.POINTER(Buf), ctypes.c_int64, ctypes.c_void_p,
                                     ctypes.c_int]
        lib.moopt_encode.restype = ctypes.c_int
        lib.moopt_encode.argtypes = [ctypes.POINTER(Buf), ctypes.c_int64, ctypes.c_void_p,
                                     ctypes.c_int]
        lib.moopt_all_finite.restype = ctypes.c_int
        lib.moopt_all_finite.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
        return lib
    raise RuntimeError("building native.c failed:\n" + "\n".join(errors))


class _Loader:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lib: ctypes.CDLL | None = None
        self.done = False
        self.failed: BaseException | None = None

    def get(self) -> ctypes.CDLL | None:
        with self.lock:
            if not self.done:
                try:
                    self.lib = _build()
                except Exception as exc:  # no compiler, no OpenMP...: the other paths stay
                    self.failed = exc
                    warnings.warn(f"moopt: the native CPU kernels are unavailable ({exc}); "
                                  "using the compiled or eager kernels", RuntimeWarning,
                                  stacklevel=3)
                self.done = True
            return self.lib


_loader = _Loader()


def library() -> ctypes.CDLL | None:
    """The loaded library (built or loaded from the disk cache by the first call), or None
    (off, or the build failed: :func:`failure` says why)."""
    if mode() == "off":
        return None
    return _loader.get()


def failure() -> BaseException | None:
    """Why the library could not be built, if it could not."""
    return _loader.failed


_tables: dict[int, tuple[QuantMap, Tensor, Tensor, Tensor]] = {}


def _map_tables(qmap: QuantMap) -> tuple[Tensor, Tensor, Tensor]:
    """The map's entries and its encoding table as native.c's ``store`` reads them.

    Entry ``key`` (the top 16 bits of a float32 pattern) is ``T << 16 | step << 8 | code``.
    A value whose pattern has those top bits gets ``code``, or ``code + step`` (mod 256)
    when the pattern's low 16 bits exceed ``T``. With M the low 16 bits of the one map
    midpoint inside the key's interval (quantization's threshold table, which also settles
    which side a value exactly on the midpoint takes): positive keys round up past M
    (``T = M``, step +1 from the code below); negative keys, whose values fall as their
    patterns grow, take the code above the midpoint while the low bits are below M
    (``T = M - 1``, step -1 from that code). ``T = 0xFFFF`` where no value of the key can
    pass: no midpoint inside (or M = 0 for a negative key), and inf/NaN patterns.
    """
    entry = _tables.get(id(qmap))
    if entry is None or entry[0] is not qmap:
        values, code_lo, threshold = qmap.tables(torch.device("cpu"))
        bits = threshold.view(torch.int32)
        keys = torch.arange(1 << 16, dtype=torch.int32)
        none = ~torch.isfinite(threshold) | ((keys & 0x7F80) == 0x7F80)
        inside = (bits >> 16) & 0xFFFF
        if bool(((inside != keys) & ~none).any()):
            raise AssertionError("a map midpoint lies outside its lookup key")
        low = bits & 0xFFFF
        code = code_lo.to(torch.int32)
        negative = keys >= 0x8000
        down = negative & ~none & (low > 0)  # negative keys that can cross their midpoint
        none = none | (negative & (low == 0))
        limit = torch.where(down, low - 1, low)
        limit = torch.where(none, torch.tensor(0xFFFF, dtype=torch.int32), limit)
        step = torch.where(down, torch.tensor(0xFF, dtype=torch.int32),
                           torch.tensor(1, dtype=torch.int32))
        code = torch.where(down, code + 1, code)
        if bool((code > 255).any()):
            raise AssertionError("a code above the map's last")
        table = (limit << 16) | (step << 8) | code
        # Byte b of every entry, as 4 planes of 256 bytes (native.c's gather-free decoder).
        # Maps of fewer than 256 entries are padded with their last (no code reaches it).
        padded = torch.cat([values, values[-1:].expand(256 - values.numel())])
        planes = padded.contiguous().view(torch.uint8).view(-1, 4).t().contiguous()
        entry = (qmap, values.contiguous(), table.contiguous(), planes)
        _tables[id(qmap)] = entry
    return entry[1], entry[2], entry[3]


def f32_buffer(t: Tensor) -> Buf:
    return Buf(KIND["f32"], 0, t.data_ptr(), None, None, None, None)


def bf16_buffer(t: Tensor) -> Buf:
    return Buf(KIND["bf16"], 0, t.data_ptr(), None, None, None, None)


def int8_buffer(codes: Tensor, absmax: Tensor, qmap: QuantMap, block: int) -> Buf:
    values, table, planes = _map_tables(qmap)
    # A minifloat map is encoded by arithmetic (native.c minifloat16), others by table.
    minifloat, shift = 0, 0
    if qmap.minifloat is not None:
        signed, mantissa_bits = qmap.minifloat
        minifloat, shift = (1 if signed else 2), 23 - mantissa_bits
    return Buf(KIND["int8"], block, codes.data_ptr(), absmax.data_ptr(), values.data_ptr(),
               table.data_ptr(), planes.data_ptr(), minifloat, shift)


def buffer_array(bufs: list[Buf]) -> ctypes.Array:
    """``bufs`` as the C array :func:`step` takes (build once, reuse while the tensors live)."""
    return (Buf * len(bufs))(*bufs)


def scalar_array(scalars: list[float]) -> ctypes.Array:
    """``scalars`` as the float32 C array :func:`step` takes."""
    return (ctypes.c_float * len(scalars))(*scalars)


def step(lib: ctypes.CDLL, family: str, p: Tensor, grads: list[Tensor],
         bufs: list[Buf] | ctypes.Array, scalars: list[float] | ctypes.Array) -> bool:
    """One in-place step of the contiguous float32 CPU tensor ``p`` with one contiguous
    float32 gradient per objective taking part (one: alternating mode).

    ``bufs``: the buffer slots (:meth:`moopt.states.rule.Rule.slots`), as a list or a
    :func:`buffer_array`; ``scalars``: the rule's scalar vector, as a list or a
    :func:`scalar_array`. False if the kernel declined (nothing changed).
    """
    n = p.numel()
    array = bufs if isinstance(bufs, ctypes.Array) else buffer_array(bufs)
    values = scalars if isinstance(scalars, ctypes.Array) else scalar_array(scalars)
    pointers = (ctypes.c_void_p * len(grads))(*[g.data_ptr() for g in grads])
    return lib.moopt_step(FAMILY[family], p.data_ptr(), pointers, len(grads), n, array,
                          len(array), values, len(values), _threads(n)) == 0


def step_many(lib: ctypes.CDLL, family: str, params: Sequence[Tensor],
              grads: Sequence[Sequence[Tensor]], bufs: Sequence[ctypes.Array],
              scalars: Sequence[ctypes.Array]) -> list[bool]:
    """:func:`step` for several parameters in one call: parameter ``k`` with its gradients
    ``grads[k]`` (as many for every parameter), its :func:`buffer_array` ``bufs[k]`` (of
    one length) and :func:`scalar_array` ``scalars[k]`` (of one length). Tensors of at least
    :data:`PARALLEL_MIN_NUMEL` values run one after another on torch's threads, the smaller
    ones single-threaded and side by side. Returns, per parameter, whether it was stepped
    (False: declined, nothing changed)."""
    count = len(params)
    if count == 0:
        return []
    nobj = len(grads[0])
    pointers = ctypes.c_void_p * count
    status = (ctypes.c_int32 * count)()
    lib.moopt_step_many(
        FAMILY[family], count, pointers(*[p.data_ptr() for p in params]),
        (ctypes.c_void_p * (count * nobj))(*[g.data_ptr() for gs in grads for g in gs]), nobj,
        (ctypes.c_int64 * count)(*[p.numel() for p in params]),
        pointers(*[ctypes.addressof(b) for b in bufs]), len(bufs[0]),
        pointers(*[ctypes.addressof(v) for v in scalars]), len(scalars[0]),
        torch.get_num_threads(), PARALLEL_MIN_NUMEL, status)
    return [code == 0 for code in status]


def scannable(t: Tensor) -> bool:
    """Whether :func:`all_finite` takes ``t`` (a contiguous float32 CPU tensor)."""
    return t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous()


def all_finite(lib: ctypes.CDLL, t: Tensor) -> bool:
    """No NaN or inf in the contiguous float32 CPU tensor ``t``."""
    return bool(lib.moopt_all_finite(t.data_ptr(), t.numel(), _threads(t.numel())))


def _threads(n: int) -> int:
    return torch.get_num_threads() if n >= PARALLEL_MIN_NUMEL else 1


def decode(lib: ctypes.CDLL, codes: Tensor, absmax: Tensor, qmap: QuantMap, block: int,
           out: Tensor) -> Tensor:
    """Fill the contiguous float32 CPU tensor ``out`` with the values that ``codes`` and
    ``absmax`` encode (as :func:`moopt.states.quantization.dequantize_blockwise`)."""
    buf = int8_buffer(codes, absmax, qmap, block)
    lib.moopt_decode(ctypes.byref(buf), codes.numel(), out.data_ptr(), _threads(out.numel()))
    return out


def encode(lib: ctypes.CDLL, x: Tensor, codes: Tensor, absmax: Tensor, qmap: QuantMap,
           block: int) -> bool:
    """Quantize the contiguous float32 CPU tensor ``x`` into ``codes`` / ``absmax`` (as
    :func:`moopt.states.quantization.quantize_blockwise`, bit for bit); True when the kernel
    ran (it needs no scratch, so it always does)."""
    buf = int8_buffer(codes, absmax, qmap, block)
    return lib.moopt_encode(ctypes.byref(buf), x.numel(), x.data_ptr(),
                            _threads(x.numel())) == 0
