"""auto_LiRPA on this suite's torch/numpy, and the small bound helpers the ``lirpa`` defense and the
``certified-*`` certifiers share.

``import_auto_lirpa()`` returns the ``auto_LiRPA`` module. The only release on PyPI (0.3, 2022) was written for
torch < 1.13 and numpy 1; on torch 2.x + numpy 2 it breaks in four places. Each fix
below is applied only when the installed versions need it, detected by the very failure it repairs:

1. ``numpy_arraysetops`` -- ``import auto_LiRPA`` fails on ``numpy.lib.arraysetops`` (removed in numpy 2).
2. ``onnx_set_opset_version`` -- ``import auto_LiRPA`` fails on ``torch.onnx.symbolic_helper._set_opset_version``
   (removed in torch 2.x). The shim also registers torch's opset-10+ symbolic functions, which torch 2.x
   registers only inside ``torch.onnx.export``: without that, opset 12 silently falls back to opset-9 symbolics
   (``gather`` becomes ``OneHot``, which auto_LiRPA cannot bound).
3. ``node_getitem`` -- building a BoundedModule fails because ``torch._C.Node`` lost ``__getitem__``.
4. ``named_members_remove_duplicate`` -- ``BoundedModule._named_members`` lacks the ``remove_duplicate``
   argument newer torch passes (``parameters()`` raises TypeError).

A newer auto_LiRPA (0.6+) imports and builds cleanly and gets none of them. ``APPLIED`` lists the patches
applied in this process. Everything here is idempotent. The import also leaves the process's warning filters
and root logging handlers as it found them (auto_LiRPA 0.3 calls ``logging.basicConfig`` and
``warnings.simplefilter("once")`` at import).

Two facts of auto_LiRPA 0.3 the helpers below account for:
- A BoundedModule shares the model's parameters but holds *copies* of its buffers (BatchNorm running
  statistics): ``sync_buffers`` copies them across; ``BoundedCache`` does it on every look-up, so a certifier
  never bounds a BatchNorm model with stale statistics.
- With BatchNorm in train mode, bounds use the batch statistics of the BoundedModule's last ``forward``: call
  ``bounded(x)`` on the clean batch before ``compute_bounds``.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import sys
import types
import warnings
import weakref
from typing import Any, Callable, Iterator

import torch
from torch import nn

from bench.errors import NotCertifiable, out_of_memory

APPLIED: list[str] = []
_READY: list[Any] = []  # the patched module, once import_auto_lirpa() has succeeded

# Layers the bound computation is expected to handle (BatchNorm2d in eval mode only); used to name the
# culprit when auto_LiRPA fails on a model.
SUPPORTED_LAYERS = (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten, nn.BatchNorm2d, nn.Sequential, nn.Identity)
METHODS = ("IBP", "CROWN-IBP", "CROWN")


# ---- the four patches ------------------------------------------------------------------------------------
def numpy_arraysetops() -> None:
    # numpy 2 removed numpy.lib.arraysetops; auto_LiRPA 0.3 imports `isin` from it.
    import numpy

    module = types.ModuleType("numpy.lib.arraysetops")
    module.isin = numpy.isin
    sys.modules["numpy.lib.arraysetops"] = module


def onnx_set_opset_version() -> None:
    # torch 2.x removed symbolic_helper._set_opset_version; set the opset on the exporter's GLOBALS instead.
    import torch.onnx.symbolic_helper as helper
    import torch.onnx.utils as onnx_utils

    exporter = sys.modules[onnx_utils._optimize_graph.__module__]  # the module whose GLOBALS the graph pass reads
    globals_ = getattr(exporter, "GLOBALS", None) or importlib.import_module("torch.onnx._globals").GLOBALS
    # torch 2.x registers the opset-10+ symbolic functions lazily, inside torch.onnx.export, which auto_LiRPA
    # never calls: without this, opset 12 silently falls back to opset-9 symbolics (gather -> OneHot).
    register = getattr(exporter, "_trigger_symbolic_function_registration", lambda: None)

    def _set_opset_version(opset_version: int) -> None:
        register()
        globals_.export_onnx_opset_version = opset_version

    helper._set_opset_version = _set_opset_version


def node_getitem() -> None:
    # torch 2.x dropped torch._C.Node.__getitem__ (node["attr"]), which auto_LiRPA 0.3's parse_graph uses.
    torch._C.Node.__getitem__ = lambda self, k: getattr(self, self.kindOf(k))(k)


def named_members_remove_duplicate(bounded_module_cls: type) -> None:
    # torch >= 2.0 calls _named_members(..., remove_duplicate=...); auto_LiRPA 0.3's override lacks it.
    original = bounded_module_cls._named_members

    def _named_members(self, get_members_fn, prefix="", recurse=True, remove_duplicate=True):
        return original(self, get_members_fn, prefix=prefix, recurse=recurse)

    bounded_module_cls._named_members = _named_members


# ---- detection ---------------------------------------------------------------------------------------------
def no_legacy_gpu_fusion() -> None:
    torch._C._jit_override_can_fuse_on_gpu(False)


def _legacy_gpu_fuser_on() -> bool:
    """auto_LiRPA 0.3 switches TorchScript to the legacy executor at import; on CUDA its fuser then compiles the
    ``@torch.jit.script`` ReLU-relaxation helpers with NVRTC, which failed on an H200 with torch 2.11 ("CUDA driver
    error: invalid argument" inside CROWN). Unfused, those helpers run op by op: same numbers, no compilation."""
    profiling = torch._C._jit_set_profiling_executor(False)  # the setter returns the previous value
    torch._C._jit_set_profiling_executor(profiling)
    return not profiling and torch._C._jit_can_fuse_on_gpu()


def _import_fix(exc: ImportError) -> Callable[[], None] | None:
    """The patch that repairs this import failure, or None when it is something else."""
    if getattr(exc, "name", None) == "numpy.lib.arraysetops" or "numpy.lib.arraysetops" in str(exc):
        return numpy_arraysetops
    if "_set_opset_version" in str(exc):
        return onnx_set_opset_version
    return None


def _purge() -> None:
    """Forget a half-imported auto_LiRPA so the next import starts afresh."""
    for name in [m for m in sys.modules if m == "auto_LiRPA" or m.startswith("auto_LiRPA.")]:
        del sys.modules[name]


def _apply(fix: Callable, *args) -> None:
    fix(*args)
    APPLIED.append(fix.__name__)


def _needs_node_getitem(lirpa) -> bool:
    """Build a one-layer BoundedModule: the failure patch 3 repairs shows up here, not at import."""
    probe = nn.Sequential(nn.Linear(2, 2))  # Gemm has attributes (alpha, beta, transB): parse_graph reads them
    try:
        lirpa.BoundedModule(probe, torch.zeros(1, 2), device="cpu")
    except TypeError as exc:
        if "subscriptable" in str(exc) and not hasattr(torch._C.Node, "__getitem__"):
            return True
        raise
    return False


def _needs_remove_duplicate(lirpa) -> bool:
    own = lirpa.BoundedModule.__dict__.get("_named_members")
    return own is not None and "remove_duplicate" not in inspect.signature(own).parameters


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    """Keep auto_LiRPA's import-time global side effects (root logging handler, warning filter) and torch's
    deprecation and CUDA-lookup noise out of the process."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    # torch's extension loader, imported by auto_LiRPA, warns "No CUDA runtime is found" on every CPU host.
    cpp_extension = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_extension.level
    cpp_extension.setLevel(logging.ERROR)
    try:
        # record=True also catches what auto_LiRPA's own simplefilter("once") would let through
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        cpp_extension.setLevel(level)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
    for w in caught:  # pass everything on but torch's deprecation of the @torch.jit.script auto_LiRPA uses
        if not (issubclass(w.category, FutureWarning) and "torch.jit.script" in str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def import_auto_lirpa():
    """The ``auto_LiRPA`` module, with exactly the compatibility patches this environment needs."""
    if _READY:
        return _READY[0]
    with _quiet_import():
        for _ in range(3):  # at most the two import-time patches, then a clean import
            try:
                lirpa = importlib.import_module("auto_LiRPA")
                break
            except ImportError as exc:
                if getattr(exc, "name", None) == "auto_LiRPA":
                    raise ImportError("auto_LiRPA is not installed: pip install --no-deps auto-lirpa==0.3 appdirs "
                                      "(its metadata pins torch<1.13, hence --no-deps)") from exc
                fix = _import_fix(exc)
                if fix is None or fix.__name__ in APPLIED:
                    raise
                _purge()
                _apply(fix)
        else:  # pragma: no cover - the loop breaks or raises
            raise ImportError("auto_LiRPA could not be imported")
        if _needs_remove_duplicate(lirpa):
            _apply(named_members_remove_duplicate, lirpa.BoundedModule)
        if _needs_node_getitem(lirpa):
            _apply(node_getitem)
    if _legacy_gpu_fuser_on():
        _apply(no_legacy_gpu_fusion)
    _READY.append(lirpa)
    return lirpa


# ---- failures -> NotCertifiable ------------------------------------------------------------------------------
def unsupported_layer(model: nn.Module) -> str:
    """The type name of the first submodule (in ``modules()`` order, the root last) outside
    ``SUPPORTED_LAYERS``; a container whose forward does more than chain its children (a residual block) counts
    as a layer."""
    for module in list(model.modules())[1:] + [model]:
        if not isinstance(module, SUPPORTED_LAYERS):
            return type(module).__name__
    return type(model).__name__


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.ops: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("Name: ") and msg.split(",")[0][6:] not in self.ops:
            self.ops.append(msg.split(",")[0][6:])  # "Name: onnx::TopK, Attr: ..." -> onnx::TopK


def describe_failure(exc: BaseException, ops: list[str] = ()) -> str:
    """One line: the exception's type, its first line and -- for errors raised inside TorchScript, whose first
    line is generic -- its last line, where the cause is; plus the unsupported ONNX ops auto_LiRPA logged."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0][:160] if lines else ""
    if len(lines) > 1:
        text += f" ... {lines[-1][:200]}"
    return f"{type(exc).__name__}: {text}" + (f", unsupported ops {', '.join(ops)}" if ops else "")


@contextlib.contextmanager
def not_certifiable_on_failure(model: nn.Module, what: str) -> Iterator[None]:
    """Turn auto_LiRPA's failure on ``model`` into ``NotCertifiable("<Layer> (...)")``. Out-of-memory errors and
    interrupts pass through unchanged: they say nothing about the model."""
    collect = _Collect()
    log = logging.getLogger("auto_LiRPA")
    log.addHandler(collect)
    try:
        yield
    except (NotCertifiable, MemoryError, torch.cuda.OutOfMemoryError):
        raise
    except Exception as exc:
        if out_of_memory(exc):  # a matter of load (other lanes, the batch size), not of the model
            raise
        raise NotCertifiable(f"{unsupported_layer(model)} ({what} with auto_LiRPA "
                             f"{getattr(sys.modules.get('auto_LiRPA'), '__version__', '?')}: "
                             f"{describe_failure(exc, collect.ops)})") from exc
    finally:
        log.removeHandler(collect)


# ---- helpers shared by certified training and certification ----------------------------------------------
def build_bounded(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str | None = None,
                  bound_opts: dict | None = None):
    """A ``BoundedModule`` sharing ``model``'s parameters, traced in eval mode on a zero input of one example of
    ``input_shape`` (C, H, W) on ``device`` (default: the model's), and left in eval mode. The model's own mode is
    restored. Raises ``NotCertifiable`` naming the layer when auto_LiRPA cannot convert or IBP-bound the model."""
    lirpa = import_auto_lirpa()
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    dummy = torch.zeros(1, *input_shape, device=device)
    was_training = model.training
    model.eval()
    try:
        with not_certifiable_on_failure(model, "conversion"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and ONNX-export chatter
            bounded = lirpa.BoundedModule(model, dummy, bound_opts=bound_opts, device=device)
            # Some unsupported ops convert and fail only when bounded: a zero-width IBP bound finds them now.
            ptb = lirpa.PerturbationLpNorm(norm=float("inf"), eps=0.0, x_L=dummy, x_U=dummy)
            with torch.no_grad():
                bounded.compute_bounds(x=(lirpa.BoundedTensor(dummy, ptb),), method="IBP")
    finally:
        model.train(was_training)
    bounded.eval()
    return bounded


def _buffer_nodes(bounded) -> Iterator[Any]:
    for node in bounded._modules.values():
        if type(node).__name__ == "BoundBuffers":
            yield node


def sync_buffers(bounded, model: nn.Module, to_model: bool = False, prefix: str = "") -> None:
    """Copy the model's buffers (BatchNorm running statistics) into the BoundedModule's copies, or back.
    ``prefix``: the model's name inside the module the BoundedModule was built from (e.g. "model.")."""
    buffers = {prefix + name: buf for name, buf in model.named_buffers()}
    with torch.no_grad():
        for node in _buffer_nodes(bounded):
            theirs = buffers.get(getattr(node, "ori_name", None))
            if theirs is not None and theirs.shape == node.buffer.shape:
                (theirs if to_model else node.buffer).copy_(node.buffer if to_model else theirs)


# auto_LiRPA's options for computing intermediate (CROWN) bounds of every neuron, not only of the unstable ones.
DENSE_BOUND_OPTS = {"sparse_intermediate_bounds": False, "sparse_conv_intermediate_bounds": False,
                    "sparse_intermediate_bounds_with_ibp": False, "sparse_features_alpha": False,
                    "sparse_spec_alpha": False}


class BoundedCache:
    """One BoundedModule per model object (weakly keyed: dropped with the model), input shape and device, built
    with ``bound_opts``. Each look-up refreshes the copied buffers from the model and puts the BoundedModule in
    eval mode."""

    def __init__(self, bound_opts: dict | None = None):
        self._cache: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
        self.bound_opts = bound_opts

    def get(self, model: nn.Module, input_shape: tuple[int, ...], device) -> Any:
        per_model = self._cache.setdefault(model, {})
        key = (tuple(int(s) for s in input_shape), str(torch.device(device)))
        if key not in per_model:
            per_model[key] = build_bounded(model, input_shape, device, self.bound_opts)
        bounded = per_model[key]
        sync_buffers(bounded, model)
        bounded.eval()
        return bounded


def spec_matrix(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C of shape (B, K-1, K): row j is e_y - e_j for each class j != y, in increasing order of j."""
    b = len(y)
    eye = torch.eye(num_classes, device=y.device, dtype=torch.float32)
    c = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (B, K, K): row j = e_y - e_j (row y is zero)
    keep = torch.arange(num_classes, device=y.device).unsqueeze(0) != y.unsqueeze(1)  # (B, K)
    return c[keep].view(b, num_classes - 1, num_classes)


def linf_box(x: torch.Tensor, eps: float, bounds: tuple[float, float] = (0.0, 1.0)):
    """The Linf ball of radius eps around x intersected with the data box: (x_L, x_U)."""
    lo, hi = bounds
    return (x - eps).clamp(min=lo), (x + eps).clamp(max=hi)


def margin_lower_bounds(bounded, x: torch.Tensor, y: torch.Tensor, eps: float, method: str,
                        bounds: tuple[float, float] = (0.0, 1.0), num_classes: int | None = None) -> torch.Tensor:
    """(B, K-1) lower bounds of the margins (e_y - e_j)^T f(x') over every x' with ||x' - x||_inf <= eps inside
    the data box ``bounds`` (columns: j != y in increasing order). ``method``: "IBP", "CROWN-IBP" or "CROWN".
    Differentiable w.r.t. the parameters. After "CROWN-IBP", ``bounded.ibp_lower`` holds the IBP margins too."""
    if method not in METHODS:
        raise ValueError(f"unknown bound method {method!r}; choose one of {', '.join(METHODS)}")
    lirpa = import_auto_lirpa()
    x_l, x_u = linf_box(x, eps, bounds)
    ptb = lirpa.PerturbationLpNorm(norm=float("inf"), eps=eps, x_L=x_l, x_U=x_u)
    if num_classes is None:
        num_classes = int(bounded.final_node().output_shape[-1])
    c = spec_matrix(y, num_classes).to(x.dtype)
    lower, _ = bounded.compute_bounds(x=(lirpa.BoundedTensor(x, ptb),), C=c, method=method, bound_upper=False)
    return lower
