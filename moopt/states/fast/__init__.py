"""The fused paths, derived from the policies' declarations (nothing here is per policy).

* :mod:`~moopt.states.fast.fused`: one function per (policy, objective count, storage
  codecs) that decodes every buffer, applies the policy's rule and encodes the new values,
  written in torch ops;
* :mod:`~moopt.states.fast.compiled`: that function compiled with ``torch.compile``
  (inductor: C++/OpenMP on a CPU, Triton on CUDA), built before its first use and cached
  on disk;
* :mod:`~moopt.states.fast.native` / ``native.c``: C kernels for the built-in policies on
  CPUs, where they beat the compiled path; their argument tables come from the declarations
  (:mod:`~moopt.states.fast.native_step`);
* :mod:`~moopt.states.fast.stepper`: picks the path of every parameter (native, compiled,
  eager, reference), groups small tensors into one call, and records why
  (``MultiObjectiveOptimizer.kernel_report()``).

The optimizer chooses this package (``fast_path=True``); policies never import it.
"""
