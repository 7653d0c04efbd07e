"""A classifier the suite did not train, evaluated in the same grid, records and tables as the trained rows."""
from __future__ import annotations

import hashlib
import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.errors import UsageError
from bench.plugins import DataSpec, Defense, Splits
from bench.tracks.image_robustness import TRACK

FORMATS = (".safetensors", ".onnx")
# Suffixes of pickled weights (torch.save, pickle, joblib, Hugging Face's pytorch_model.bin): never opened.
PICKLED = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".tar", ".joblib")
WAY_OUT = ("export it to safetensors (safetensors.torch.save_file(model.state_dict(), ...)) "
           "or ONNX (torch.onnx.export)")
PROBE_BATCH = 2
OLDER_OPSETS = (18, 17, 16, 15, 14, 13)  # tried in turn when onnx2torch cannot convert the graph as it is
ONNX_TOLERANCE = 1e-4  # converted torch model vs. the ONNX reference evaluator, on the probe batch

# ONNX files whose conversion agreed with the reference evaluator in this process: (sha256, input shape).
_VERIFIED: set[tuple[str, tuple[int, ...]]] = set()


@dataclass(frozen=True)
class CheckpointParams:
    path: str = ""  # a .safetensors state dict or an .onnx graph
    arch: str = ""  # for .safetensors: one of the suite's architectures (bench.tracks.image_robustness.models)
    width: int = 1  # with arch
    factory: str = ""  # "my_pkg.models:build": factory(input_shape, num_classes) -> nn.Module (instead of arch)
    mean: tuple[float, ...] = ()  # per-channel normalisation applied inside the model; () = none
    std: tuple[float, ...] = ()
    label: str = ""  # the row's name in the tables ("" = checkpoint and its params)


class Normalized(nn.Module):
    """``net((x - mean) / std)``: the wrapped model sees normalised inputs, attacks and certifiers see pixels.
    ``mean`` and ``std`` are buffers, so the state dict (the runner's cache) holds them."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], ndim: int):
        super().__init__()
        view = (1, len(mean), *([1] * (ndim - 1)))  # broadcast over the channel axis of (B, C, H, W)
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(view))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(view))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _convert_older_opset(graph):
    """onnx2torch lags behind the exporters' opsets (torch 2.x writes opset 18-20; onnx2torch 1.5 lacks e.g.
    Constant-19): the graph converted to an older opset by ONNX's version converter, then to torch, or None.
    The result is checked against the original graph on a probe batch (``_from_onnx``)."""
    from onnx import version_converter
    from onnx2torch import convert

    current = max((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), default=0)
    for target in OLDER_OPSETS:
        if target >= current:
            continue
        try:
            return convert(version_converter.convert_version(graph, target))
        except Exception:
            continue
    return None


def _run_onnx(data: bytes, graph, x):
    """The ONNX graph's output on ``x`` (numpy), by onnxruntime where it is installed, else by ONNX's reference
    evaluator (pure numpy: slow for large models, but always there)."""
    initializers = {t.name for t in graph.graph.initializer}
    name = next(i.name for i in graph.graph.input if i.name not in initializers)
    try:
        import onnxruntime
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(graph).run(None, {name: x})[0]
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {name: x})[0]


class Checkpoint(Defense):
    """Evaluates a classifier trained elsewhere: nothing is trained, the weights come from ``path``.

    Formats: ``.safetensors``, a state dict loaded into the suite's ``arch`` (at ``width``) or into the model
    that ``factory`` builds; ``.onnx``, converted to a torch module by onnx2torch (attacks need gradients) and
    checked against the graph itself (onnxruntime where installed, else ONNX's reference evaluator) on a probe
    batch, within 1e-4. A graph whose opset onnx2torch lacks is first taken to an older opset by ONNX's version
    converter. ``factory`` names the user's own code, ``"module:function"``, imported by name and called as
    ``function(input_shape, num_classes)`` -> ``nn.Module``; without ``path`` that model is evaluated as it is.

    Threat model: none claimed; the model is what is evaluated. Defaults: no file (``path`` or ``factory`` is
    required), no architecture (``arch`` or ``factory`` is required for safetensors), width 1, no
    normalisation, no ``label`` (the table then names the row as it names any defense's variants).

    Inputs are in the dataset's pixel space ([0, 1]): attacks, budgets and certifiers stay there. A model
    trained on normalised inputs gets ``mean`` and ``std`` (1 value, or one per channel), applied inside the
    evaluated module as ``(x - mean) / std`` and stored as buffers, so the runner's cache holds them too.

    Before any compute, ``check()`` refuses a missing or unreadable file, a format it does not read, an unknown
    ``arch``, a ``factory`` that cannot be imported and an ONNX graph that does not convert; ``check_data(spec)``
    (also run by ``build``) builds the model on the CPU and refuses weights that do not fit the architecture and
    a model whose output on a probe batch of the dataset's shape is not ``(batch, num_classes)``. ``identity()``
    is the file's sha256 (and the factory's source hash): the cache key and the records name the content.

    Security: nothing is unpickled. ``.pt``, ``.pth``, ``.pkl``, ``.bin`` and ``.ckpt`` files are refused without
    being opened, and so is a torch.save archive under another name; safetensors and ONNX (protobuf) are data
    formats. The only code run is the suite's own and the ``factory`` the user names.
    """

    track = TRACK
    Params = CheckpointParams

    def __init__(self, params: Any = None):
        super().__init__(params)
        self._identity: dict[str, Any] | None = None
        self._checked = False

    # ---- checks before any compute ----------------------------------------------------------------------
    def _file(self) -> Path | None:
        return Path(self.params.path).expanduser() if self.params.path else None

    def _where(self) -> str:
        return f"checkpoint.path {self.params.path}"

    def check(self) -> None:
        p = self.params
        path = self._file()
        if path is None and not p.factory:
            raise UsageError("checkpoint: give the model file, --set checkpoint.path=FILE (.safetensors or .onnx), "
                             "or --set checkpoint.factory=module:function")
        if path is not None:
            self._check_file(path)
        onnx = path is not None and path.suffix.lower() == ".onnx"
        if onnx and (p.arch or p.factory):
            raise UsageError(f"{self._where()}: an ONNX graph is its own architecture; leave checkpoint.arch and "
                             f"checkpoint.factory empty")
        if not onnx:
            if p.arch and p.factory:
                raise UsageError("checkpoint: give checkpoint.arch or checkpoint.factory, not both")
            if not p.arch and not p.factory:
                raise UsageError(f"{self._where()}: a safetensors state dict needs its architecture: "
                                 f"--set checkpoint.arch=NAME ({', '.join(self._archs())}) or "
                                 f"--set checkpoint.factory=module:function")
            if p.arch and p.arch not in self._archs():
                raise UsageError(f"checkpoint.arch {p.arch!r}: unknown architecture; choose one of "
                                 f"{', '.join(self._archs())}, or give checkpoint.factory=module:function")
        if p.width != 1 and not p.arch:
            raise UsageError("checkpoint.width applies to checkpoint.arch only")
        self._check_normalisation()
        if p.factory:
            self._factory()
        if onnx:
            self._onnx_module(path.read_bytes())
        self._checked = True

    @staticmethod
    def _archs() -> tuple[str, ...]:
        from bench.tracks.image_robustness.models import ARCHS

        return ARCHS

    def _check_file(self, path: Path) -> None:
        where = self._where()
        suffix = path.suffix.lower()
        if suffix in PICKLED:
            raise UsageError(f"{where}: {suffix} files are pickles, which can run code when loaded and are never "
                             f"opened here; {WAY_OUT}")
        if not path.exists():
            raise UsageError(f"{where}: no such file")
        if not path.is_file():
            raise UsageError(f"{where}: not a file")
        if suffix not in FORMATS:
            raise UsageError(f"{where}: unsupported format {suffix or '(no suffix)'!r}; give a .safetensors or "
                             f".onnx file ({WAY_OUT})")
        try:
            with open(path, "rb") as fh:
                head = fh.read(8)
        except OSError as exc:
            raise UsageError(f"{where}: cannot read it ({exc.strerror or exc})") from None
        # A torch.save zip, or (for ONNX, whose first byte is a protobuf tag) a pickle's protocol header. A
        # safetensors file starts with its header's length, which may begin with any byte: its parser rejects
        # anything else without executing it.
        if head[:4] == b"PK\x03\x04" or suffix == ".onnx" and head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05":
            raise UsageError(f"{where}: the file is a pickle or a torch.save archive, not {suffix[1:]}; it is not "
                             f"opened; {WAY_OUT}")
        if suffix == ".safetensors":
            self._safetensors_keys(path)

    def _safetensors_keys(self, path: Path) -> dict[str, tuple[int, ...]]:
        """Tensor names and shapes from the header (reads no tensor data)."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as exc:
            raise UsageError(f"{self._where()}: not a readable safetensors file ({_first_line(exc)})") from None

    def _check_normalisation(self) -> None:
        p = self.params
        if bool(p.mean) != bool(p.std):
            raise UsageError("checkpoint: give both checkpoint.mean and checkpoint.std, or neither")
        if len(p.mean) != len(p.std):
            raise UsageError(f"checkpoint: checkpoint.mean has {len(p.mean)} values, checkpoint.std {len(p.std)}; "
                             f"give as many of each")
        if any(not math.isfinite(s) or s <= 0 for s in p.std):
            raise UsageError(f"checkpoint.std {list(p.std)}: every value must be positive")

    def _factory(self):
        spec = self.params.factory
        module_name, sep, attr = spec.partition(":")
        if not sep or not module_name or not attr:
            raise UsageError(f"checkpoint.factory {spec!r}: expected module:function, e.g. my_pkg.models:build")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise UsageError(f"checkpoint.factory {spec!r}: cannot import {module_name} ({_first_line(exc)})") from None
        fn = module
        for part in attr.split("."):
            fn = getattr(fn, part, None)
            if fn is None:
                raise UsageError(f"checkpoint.factory {spec!r}: {module_name} has no {attr}")
        if not callable(fn):
            raise UsageError(f"checkpoint.factory {spec!r}: {attr} is not callable")
        return fn

    def _onnx_module(self, data: bytes):
        """The ONNX graph converted to a torch module, and the parsed graph."""
        try:
            import onnx
            from onnx2torch import convert
        except ImportError as exc:  # pragma: no cover - declared dependencies
            raise UsageError(f"checkpoint: ONNX needs onnx and onnx2torch ({_first_line(exc)}); "
                             f"pip install onnx onnx2torch") from None
        try:
            graph = onnx.load_from_string(data)
            initializers = {i.name for i in graph.graph.initializer}
            inputs = [i for i in graph.graph.input if i.name not in initializers]
            if len(inputs) != 1 or len(graph.graph.output) != 1:
                raise ValueError(f"expected one input and one output, found {len(inputs)} and "
                                 f"{len(graph.graph.output)}")
        except Exception as exc:
            raise UsageError(f"{self._where()}: not an ONNX graph ({_first_line(exc)})") from None
        try:
            module = convert(graph)
        except Exception as exc:
            module = _convert_older_opset(graph)
            if module is None:
                raise UsageError(f"{self._where()}: not an ONNX graph that onnx2torch can convert "
                                 f"({_first_line(exc)}); exporting with opset_version=17 may help") from None
        return module, graph

    # ---- identity ---------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            identity: dict[str, Any] = {}
            path = self._file()
            if path is not None:
                identity["sha256"] = self._hash_file(path)
            if self.params.factory:
                from bench import hashing

                module = self.params.factory.partition(":")[0]
                try:
                    identity["factory_code"] = hashing.module_source_hash(module)
                except Exception:  # check() names the problem; identity stays cheap and total
                    identity["factory_code"] = None
            self._identity = identity
        return self._identity

    @staticmethod
    def _hash_file(path: Path) -> str | None:
        h = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            return None  # check() refuses it
        return h.hexdigest()

    # ---- the model --------------------------------------------------------------------------------------
    def check_data(self, spec: DataSpec) -> None:
        """Build the model on the CPU for ``spec`` and probe it (the global RNG is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            self._load(spec)

    def build(self, spec: DataSpec):
        return self._load(spec)

    def _load(self, spec: DataSpec):
        """The model with the file's weights, checked against ``spec``; UsageError (one line) on a mismatch."""
        if not self._checked:
            self.check()
        p = self.params
        channels = spec.input_shape[0] if spec.input_shape else 0
        if p.mean and len(p.mean) not in (1, channels):
            raise UsageError(f"checkpoint.mean/std have {len(p.mean)} values; dataset {spec.name} has {channels} "
                             f"channel(s): give 1 value or {channels}")
        path = self._file()
        data = None
        if path is not None:
            data = path.read_bytes()
            if _sha256(data) != self.identity().get("sha256"):
                raise UsageError(f"{self._where()}: the file changed during the run; run again")
        if path is not None and path.suffix.lower() == ".onnx":
            net = self._from_onnx(data, spec)
        else:
            net = self._from_state_dict(data, spec)
        model = Normalized(net, p.mean, p.std, len(spec.input_shape)) if p.mean else net
        self._probe(model, spec)
        return model

    def _from_state_dict(self, data: bytes | None, spec: DataSpec):
        p = self.params
        shape, k = tuple(spec.input_shape), spec.num_classes
        if p.arch:
            from bench.tracks.image_robustness.models import build_model

            try:
                net = build_model(p.arch, shape, k, p.width)
            except Exception as exc:
                raise UsageError(f"checkpoint.arch {p.arch}: cannot build it for dataset {spec.name} "
                                 f"{shape} ({_first_line(exc)})") from None
            what = f"arch {p.arch} (width {p.width}) for {spec.name}"
        else:
            try:
                net = self._factory()(shape, k)
            except UsageError:
                raise
            except Exception as exc:
                raise UsageError(f"checkpoint.factory {p.factory}: failed for dataset {spec.name} input {shape}, "
                                 f"{k} classes ({_first_line(exc)})") from None
            if not isinstance(net, nn.Module):
                raise UsageError(f"checkpoint.factory {p.factory}: returned {type(net).__name__}, not a "
                                 f"torch.nn.Module")
            what = f"the model of {p.factory} for {spec.name}"
        if data is not None:
            self._load_state(net, data, what)
        return net

    def _load_state(self, net, data: bytes, what: str) -> None:
        from safetensors.torch import load as load_safetensors

        try:
            state = load_safetensors(data)
        except Exception as exc:
            raise UsageError(f"{self._where()}: not a readable safetensors file ({_first_line(exc)})") from None
        expected = net.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if missing or unexpected:
            def few(keys):
                return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

            parts = ([f"missing {few(missing)}"] if missing else []) + ([f"unexpected {few(unexpected)}"]
                                                                       if unexpected else [])
            raise UsageError(f"{self._where()}: its tensors do not fit {what}: {'; '.join(parts)}")
        for name in expected:  # the model's order: the first layer that does not fit is named
            tensor = state[name]
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise UsageError(f"{self._where()}: tensor {name} has shape {tuple(tensor.shape)}, {what} needs "
                                 f"{tuple(expected[name].shape)} (another input shape, class count or width?)")
            if not tensor.dtype.is_floating_point and expected[name].dtype.is_floating_point:
                raise UsageError(f"{self._where()}: tensor {name} is {tensor.dtype}, {what} needs floats")
        net.load_state_dict(state, strict=True)

    def _from_onnx(self, data: bytes, spec: DataSpec):
        import numpy as np

        net, graph = self._onnx_module(data)
        net.eval()
        key = (_sha256(data), tuple(spec.input_shape))
        if key in _VERIFIED:
            return net
        declared = self._declared_shape(graph)
        want = (PROBE_BATCH, *spec.input_shape)
        if declared is not None and (len(declared) != len(want) or any(
                d is not None and d != w for d, w in zip(declared[1:], want[1:]))):
            shown = ", ".join("?" if d is None else str(d) for d in declared)
            raise UsageError(f"{self._where()}: the graph takes inputs of shape ({shown}), dataset {spec.name} "
                             f"gives (batch, {', '.join(map(str, spec.input_shape))})")
        x = self._probe_inputs(spec)[1]
        try:
            with torch.no_grad():
                out = net(x)
        except Exception as exc:
            hint = ""
            if declared is not None and declared[0] is not None:
                hint = (f"; its batch size is fixed at {declared[0]}: export it with a dynamic batch axis "
                        f"(torch.onnx.export(..., dynamic_axes={{INPUT: {{0: 'batch'}}, OUTPUT: {{0: 'batch'}}}}))")
            raise UsageError(f"{self._where()}: the converted graph fails on a {tuple(x.shape)} batch "
                             f"({_first_line(exc)}){hint}") from None
        try:
            expected = _run_onnx(data, graph, x.numpy())
        except Exception as exc:
            raise UsageError(f"{self._where()}: ONNX's own evaluator cannot run the graph on a "
                             f"{tuple(x.shape)} batch ({_first_line(exc)})") from None
        got = out.detach().numpy() if isinstance(out, torch.Tensor) else None
        if got is None or got.shape != np.shape(expected):
            raise UsageError(f"{self._where()}: the converted model's output does not match the ONNX graph's "
                             f"(shape {None if got is None else got.shape} vs {np.shape(expected)})")
        diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
        scale = max(1.0, float(np.max(np.abs(expected))) if got.size else 1.0)
        if not diff <= ONNX_TOLERANCE * scale:
            raise UsageError(f"{self._where()}: the converted model differs from the ONNX graph by {diff:.3g} on a "
                             f"probe batch (tolerance {ONNX_TOLERANCE:g}); onnx2torch mis-converts an op")
        _VERIFIED.add(key)
        return net

    @staticmethod
    def _declared_shape(graph) -> tuple[int | None, ...] | None:
        initializers = {t.name for t in graph.graph.initializer}
        inputs = [i for i in graph.graph.input if i.name not in initializers]
        tensor = inputs[0].type.tensor_type
        if not tensor.HasField("shape"):
            return None
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)

    @staticmethod
    def _probe_inputs(spec: DataSpec):
        """Zeros and a fixed uniform batch in the data bounds, of the dataset's shape."""
        lo, hi = spec.bounds
        gen = torch.Generator().manual_seed(0)
        shape = (PROBE_BATCH, *spec.input_shape)
        return torch.zeros(shape), lo + (hi - lo) * torch.rand(shape, generator=gen)

    def _probe(self, model, spec: DataSpec) -> None:
        was_training = model.training
        model.eval()
        try:
            for x in self._probe_inputs(spec):
                try:
                    with torch.no_grad():
                        out = model(x)
                except Exception as exc:
                    raise UsageError(f"checkpoint: the model fails on a batch of dataset {spec.name}'s shape "
                                     f"{tuple(x.shape)} ({_first_line(exc)})") from None
                if not isinstance(out, torch.Tensor):
                    raise UsageError(f"checkpoint: the model returns {type(out).__name__}, not a tensor of logits")
                if tuple(out.shape) != (PROBE_BATCH, spec.num_classes):
                    raise UsageError(f"checkpoint: the model's output has shape {tuple(out.shape)} for a "
                                     f"{tuple(x.shape)} batch; dataset {spec.name} needs ({PROBE_BATCH}, "
                                     f"{spec.num_classes}): (batch, classes)")
                if not torch.isfinite(out).all():
                    raise UsageError(f"checkpoint: the model's logits are not finite on a batch of dataset "
                                     f"{spec.name}")
        finally:
            model.train(was_training)

    def fit(self, model, data: Splits, ctx) -> None:
        """Nothing to train: ``build`` loaded the weights."""
        model.eval()
