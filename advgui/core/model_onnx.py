"""ONNX files (``models`` extra): converted to torch with onnx2torch for gradient attacks, checked against
onnxruntime on open; opened black-box (onnxruntime forward, no gradients) when the graph cannot be converted.

- The graph must have one input: float, rank 4, NCHW or NHWC. A dynamic batch is fine; dynamic height/width or
  channels must be given (``input_size`` / ``channels``), else the file is refused (``onnx-dynamic-shape``).
  A graph with a fixed batch of 1 is run one image at a time.
- Conversion: every node is looked up in onnx2torch's converter registry first, so an unsupported operator is
  named without trying; then ``onnx2torch.convert``. The converted module and onnxruntime classify the same
  seeded random images; the largest absolute difference of their outputs is recorded (``onnx_check``). A
  module that fails or disagrees (beyond 1e-3 of the output scale) is not used for gradients.
- Black-box: ``Classifier.white_box`` is False, ``black_box_operator`` names the failing operator, forward runs
  onnxruntime; gradient attacks refuse the model (``black-box-only``); score-based attacks such as Square work.
- Metadata (``metadata_props``) may carry advgui's keys: ``class_names`` (JSON list), ``mean``, ``std`` (JSON
  lists), ``input_size``. Without them mean 0 / std 1 are assumed (normalisation inside the graph).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn

from .models import LoadProgress, ModelError, Opened, Progress, require_extra

CHECK_IMAGES = 2
CHECK_SEED = 0
AGREE_TOL = 1e-3          # relative to max(1, largest |output|): above it the conversion is not trusted
_FLOAT_TYPES = {1: "float32"}   # TensorProto.FLOAT


class _Layout(nn.Module):
    """NCHW in; permutes to NHWC when the graph wants it; runs one image at a time for a fixed batch of 1."""

    def __init__(self, nhwc: bool, per_sample: bool) -> None:
        super().__init__()
        self.nhwc = nhwc
        self.per_sample = per_sample

    def to_graph(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1) if self.nhwc else x


class OnnxTorchNet(_Layout):
    """The onnx2torch module behind the layout adapter (white-box: gradients flow)."""

    def __init__(self, module: nn.Module, nhwc: bool, per_sample: bool) -> None:
        super().__init__(nhwc, per_sample)
        self.module = module

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_graph(x)
        if self.per_sample and x.shape[0] != 1:
            return torch.cat([self._run(x[i:i + 1]) for i in range(x.shape[0])])
        return self._run(x)


class OnnxRuntimeNet(_Layout):
    """onnxruntime behind the layout adapter (black-box: forward only, no gradients)."""

    def __init__(self, session: Any, input_name: str, output_name: str, nhwc: bool, per_sample: bool,
                 reason: str, source: str) -> None:
        super().__init__(nhwc, per_sample)
        self.session = session
        self.input_name = input_name
        self.output_name = output_name
        self.reason = reason
        self.source = source

    def __deepcopy__(self, memo: dict) -> "OnnxRuntimeNet":
        # an InferenceSession cannot be copied; it has no state to protect, so copies share it
        return OnnxRuntimeNet(self.session, self.input_name, self.output_name, self.nhwc, self.per_sample,
                              self.reason, self.source)

    def run_numpy(self, arr: np.ndarray) -> np.ndarray:
        if self.per_sample and arr.shape[0] != 1:
            return np.concatenate([self.session.run([self.output_name], {self.input_name: arr[i:i + 1]})[0]
                                   for i in range(arr.shape[0])])
        return self.session.run([self.output_name], {self.input_name: arr})[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise ModelError(f"{self.source}: open as a black box ({self.reason}); it has no gradients, so only "
                             "score-based attacks such as Square can attack it", code="black-box-only",
                             path=self.source, reason=self.reason)
        arr = np.ascontiguousarray(self.to_graph(x.detach()).cpu().numpy().astype(np.float32, copy=False))
        out = self.run_numpy(arr)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device)


def _dims(value_info: Any) -> list[Any]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def graph_inputs(model: Any) -> list[Any]:
    init = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init]


def describe_input(model: Any) -> dict[str, Any]:
    """Name, dims, element type and layout of the single input (``onnx-inputs`` when there are several)."""
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        return {"count": len(inputs), "names": [i.name for i in inputs]}
    inp = inputs[0]
    dims = _dims(inp)
    nhwc = len(dims) == 4 and dims[3] in (1, 3) and dims[1] not in (1, 3)
    return {"count": 1, "names": [inp.name], "name": inp.name, "dims": dims,
            "elem_type": int(inp.type.tensor_type.elem_type), "layout": "NHWC" if nhwc else "NCHW"}


def _nodes(model: Any) -> Any:
    """(node, domain, opset of that domain) for every node of the graph."""
    opsets = {o.domain or "": o.version for o in model.opset_import}
    for node in model.graph.node:
        domain = node.domain or ""
        yield node, domain, opsets.get(domain, opsets.get("ai.onnx", 0))


def unsupported_operators(model: Any) -> list[str]:
    """Operators onnx2torch has no converter for ("Op (domain, opset N)"), found without converting."""
    from onnx2torch.node_converters.registry import get_converter
    missing: list[str] = []
    for node, domain, version in _nodes(model):
        try:
            get_converter(node.op_type, version, domain)
        except NotImplementedError:
            label = f"{node.op_type} ({domain or 'ai.onnx'}, opset {version})"
            if label not in missing:
                missing.append(label)
    return missing


def fold_identity_initializers(model: Any) -> int:
    """Replace ``Identity`` nodes that only rename an initializer by a copy of it under the new name (torch.onnx
    shares equal constants that way, e.g. the zero biases of folded BatchNorms; onnx2torch then cannot find a
    Conv's bias among the initializers). Same graph semantics; returns the number of nodes folded."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    folded = 0
    for node in list(graph.node):
        if node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in inits \
                and node.output[0] not in outputs and node.output[0] not in inits:
            t = graph.initializer.add()
            t.CopyFrom(inits[node.input[0]])
            t.name = node.output[0]
            inits[t.name] = t
            graph.node.remove(node)
            folded += 1
    return folded


_BRIDGED: dict[Any, int] = {}   # converters advgui registered under a newer opset -> the version they come from


def bridge_newer_opsets(model: Any) -> list[str]:
    """onnx2torch lags the ONNX opsets (``Identity`` of opset 19, which torch.onnx emits, has no converter in
    1.5): for an operator whose newer version is missing, register the newest older converter of the same
    operator under the newer version. The conversion check against onnxruntime then verifies the result, so a
    semantic change between versions shows up as a disagreement (and the model opens black-box).
    Returns the bridged operators ("Identity 19 ← 16")."""
    from onnx import defs
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
    bridged: list[str] = []
    for node, domain, opset in _nodes(model):
        try:
            since = defs.get_schema(node.op_type, max_inclusive_version=opset, domain=domain).since_version
        except Exception:  # noqa: BLE001 - an operator onnx does not know: nothing to bridge
            continue
        want = OperationDescription(domain=domain, operation_type=node.op_type, version=since)
        if want in _BRIDGED:
            label = f"{node.op_type} {since} ← {_BRIDGED[want]}"
            if label not in bridged:
                bridged.append(label)
            continue
        if want in _CONVERTER_REGISTRY:
            continue
        older = [d for d in _CONVERTER_REGISTRY
                 if d.domain == domain and d.operation_type == node.op_type and d.version < since]
        if not older:
            continue
        best = max(older, key=lambda d: d.version)
        _CONVERTER_REGISTRY[want] = _CONVERTER_REGISTRY[best]
        _BRIDGED[want] = best.version
        bridged.append(f"{node.op_type} {since} ← {best.version}")
    return bridged


def read_metadata(model: Any) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _load_proto(path: Path) -> Any:
    onnx = require_extra("onnx", f"{path} (an ONNX file)")
    try:
        return onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError, ValueError, OSError
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path}: not a readable ONNX file ({msg})", code="corrupt-file", path=str(path),
                         reason=msg) from None


def _json_list(meta: dict[str, str], key: str) -> Optional[list]:
    try:
        v = json.loads(meta[key]) if key in meta else None
    except json.JSONDecodeError:
        return None
    return v if isinstance(v, list) else None


def open_onnx(path: Path, *, input_size: Any = None, channels: Optional[int] = None,
              progress: Progress = None) -> Opened:
    path = Path(path)
    model = _load_proto(path)
    ort = require_extra("onnxruntime", f"{path} (an ONNX file)")
    require_extra("onnx2torch", f"{path} (an ONNX file)")
    info = describe_input(model)
    if info["count"] != 1:
        raise ModelError(f"{path}: the graph has {info['count']} inputs ({', '.join(info['names']) or 'none'}); "
                         "advgui needs a model with one image input", code="onnx-inputs", path=str(path),
                         inputs=info["names"])
    dims, name = info["dims"], info["name"]
    if info["elem_type"] not in _FLOAT_TYPES:
        raise ModelError(f"{path}: input {name!r} has element type {info['elem_type']}, not float32; advgui feeds "
                         "float images", code="onnx-input", path=str(path), input=name, dims=dims)
    if len(dims) != 4:
        raise ModelError(f"{path}: input {name!r} has shape {dims}; advgui needs images (N, C, H, W) or "
                         "(N, H, W, C)", code="onnx-input", path=str(path), input=name, dims=dims)
    nhwc = info["layout"] == "NHWC"
    b, c, h, w = (dims[0], dims[3], dims[1], dims[2]) if nhwc else dims
    meta = read_metadata(model)
    meta_size = _json_list(meta, "input_size")
    want = None
    if input_size is not None:
        want = (int(input_size), int(input_size)) if isinstance(input_size, int) else tuple(int(v) for v in input_size)
        want = (want[0], want[0]) if len(want) == 1 else want[-2:]
    elif meta_size:
        want = (int(meta_size[0]), int(meta_size[-1]))
    if not isinstance(h, int) or not isinstance(w, int):
        if want is None:
            raise ModelError(f"{path}: input {name!r} has dynamic height/width {dims} that cannot be resolved; "
                             "pass --input-size PX", code="onnx-dynamic-shape", path=str(path), input=name,
                             dims=dims, needs="input_size")
        h, w = want
    elif want is not None and (h, w) != tuple(want):
        raise ModelError(f"{path}: the graph takes only {h}×{w} images, not {want[0]}×{want[1]}",
                         code="bad-input-size", path=str(path), input=name, dims=dims)
    if not isinstance(c, int):
        if channels is None:
            raise ModelError(f"{path}: input {name!r} has a dynamic channel count {dims}; pass --channels 1|3",
                             code="onnx-dynamic-shape", path=str(path), input=name, dims=dims, needs="channels")
        c = int(channels)
    if isinstance(b, int) and b > 1:
        raise ModelError(f"{path}: input {name!r} has a fixed batch of {b}; advgui needs a dynamic batch or 1",
                         code="onnx-dynamic-shape", path=str(path), input=name, dims=dims, needs="batch")
    per_sample = b == 1
    outputs = [o.name for o in model.graph.output]
    notes = []
    if len(outputs) > 1:
        notes.append(f"the graph has {len(outputs)} outputs; the first ({outputs[0]}) is taken as logits")
    mean = _json_list(meta, "mean")
    std = _json_list(meta, "std")
    if mean is None or std is None:
        notes.append("no mean/std in the file: normalisation assumed inside the graph (override with --mean/--std)")
    names = _json_list(meta, "class_names")

    providers = ["CPUExecutionProvider"]
    if torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")

    # the images both engines classify for the check: seeded, in [0, 1], normalised as the wrapper will
    g = torch.Generator().manual_seed(CHECK_SEED)
    x = torch.rand(CHECK_IMAGES, c, h, w, generator=g)
    if mean is not None and std is not None and len(mean) in (1, c) and len(std) in (1, c):
        x = (x - torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)) / \
            torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def reference() -> tuple[OnnxRuntimeNet, np.ndarray]:
        """onnxruntime's session and its answer on the check images (runs beside the conversion: onnxruntime
        releases the GIL, onnx2torch needs it)."""
        try:
            session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{path}: onnxruntime cannot load the graph ({msg})", code="corrupt-file",
                             path=str(path), reason=msg) from None
        rt = OnnxRuntimeNet(session, name, outputs[0], nhwc, per_sample, "", str(path))
        try:
            out = rt.run_numpy(np.ascontiguousarray(rt.to_graph(x).numpy()))
        except Exception as e:  # noqa: BLE001
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{path}: onnxruntime cannot run the graph on {c}×{h}×{w} images ({msg})",
                             code="bad-input-size", path=str(path), input=name, dims=dims) from None
        if out.ndim != 2:
            raise ModelError(f"{path}: the output {outputs[0]!r} has shape {list(out.shape)}; expected "
                             "(N, classes)", code="bad-output", path=str(path))
        return rt, out

    reason, operator, check = None, None, {"images": CHECK_IMAGES, "max_abs_diff": None, "agree": None,
                                           "tolerance": AGREE_TOL, "runtime": f"onnxruntime {ort.__version__}"}
    fold_identity_initializers(model)       # the torch copy only; onnxruntime runs the file as it is
    bridged = bridge_newer_opsets(model)
    if bridged:
        notes.append(f"onnx2torch converters of older opsets used for {', '.join(bridged)} (checked against "
                     "onnxruntime)")
    missing = unsupported_operators(model)
    torch_net: Optional[nn.Module] = None
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="advgui-onnxruntime") as pool:
        ref_future = pool.submit(reference)
        if missing:
            operator = missing[0].split(" ")[0]
            reason = f"onnx2torch cannot convert operator {missing[0]}" + \
                     (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        else:
            if progress is not None:
                progress(LoadProgress("convert", 0, 1, str(path)))
            import onnx2torch
            t0 = time.perf_counter()
            try:
                torch_net = OnnxTorchNet(onnx2torch.convert(model).eval(), nhwc, per_sample).eval()
            except Exception as e:  # noqa: BLE001 - onnx2torch raises many types
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                reason = f"onnx2torch cannot convert the graph ({msg})"
                import re
                m = re.search(r"operation_type='(\w+)'", msg)
                operator = m.group(1) if m else None
        ort_net, ref = ref_future.result()
    n_out = int(ref.shape[1])
    if torch_net is not None:
        try:
            with torch.no_grad():
                got = torch_net(x).float().numpy()
            diff = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
            scale = max(1.0, float(np.abs(ref).max()))
            check.update(max_abs_diff=diff, agree=bool(diff <= AGREE_TOL * scale),
                         seconds=round(time.perf_counter() - t0, 3))
            if not check["agree"]:
                reason = (f"the converted torch model differs from onnxruntime by {diff:.3g}" if np.isfinite(diff)
                          else f"the converted torch model returns shape {list(got.shape)}, onnxruntime "
                               f"{list(ref.shape)}")
        except Exception as e:  # noqa: BLE001 - a converted module that fails at run time
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            reason = f"the converted torch model fails ({msg})"
        if progress is not None:
            progress(LoadProgress("check", 1, 1, str(path)))
    net: nn.Module
    if reason is None and torch_net is not None:
        net = torch_net
    else:
        ort_net.reason = reason
        net = ort_net
        notes.append(f"black-box only: {reason}")
    return Opened(net, str(path), "onnx", {}, mean=[float(v) for v in mean] if mean else None,
                  std=[float(v) for v in std] if std else None, input_size=(int(h), int(w)), channels=int(c),
                  class_names=[str(v) for v in names] if names else None,
                  class_names_source=f"{path} (metadata)" if names else "", num_classes=n_out,
                  white_box=reason is None, black_box_reason=reason, black_box_operator=operator,
                  onnx_check=check, notes=notes)
