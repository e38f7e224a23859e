"""Model opening benchmark: advgui's ``load_model`` against each framework's own load, side by side.

    python benchmarks/model_open_benchmark.py [--repeats 7] [--threads 1] [--only timm,hf,onnx,torchvision]

Needs the models extra (``pip install -e ".[models]"``). Builds, with random weights and saved the way each
framework saves them, in a temporary folder:
- timm ``resnet18`` (safetensors);
- a Hugging Face ViT-S/16-sized image classifier (``save_pretrained``: config.json, model.safetensors,
  preprocessor_config.json);
- an ONNX ResNet-18 exported with ``torch.onnx`` (dynamic batch);
- torchvision ``resnet18`` (a .pth state_dict).

For each it times, alternating within every repeat, in one process (imports done beforehand):
- ours: ``load_model(...)`` to a ready Classifier (for ONNX this includes the conversion check on 2 images);
- the reference, the framework's own load of the same files:
  timm ``create_model(name, num_classes=n, checkpoint_path=file)``; transformers
  ``AutoModelForImageClassification.from_pretrained(folder, local_files_only=True)`` plus
  ``AutoImageProcessor.from_pretrained(folder)`` (and the model alone, as a second ratio); ONNX
  ``onnx.load`` + ``onnx2torch.convert`` + ``onnxruntime.InferenceSession`` (the two engines advgui
  loads into; onnxruntime alone as a second ratio); torchvision ``resnet18(num_classes=n)`` +
  ``load_state_dict(torch.load(weights_only=True))``.
Prints medians and ratios (ours / reference); the target is ≤ 1.2.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def compare(name: str, ours: Callable[[], object], refs: dict[str, Callable[[], object]], repeats: int) -> list[str]:
    ours()
    for r in refs.values():
        r()                                    # warm: lazy imports, file cache
    t_ours: list[float] = []
    t_refs: dict[str, list[float]] = {k: [] for k in refs}
    for i in range(repeats):
        order = [("ours", ours)] + list(refs.items())
        if i % 2:
            order.reverse()                    # alternate who goes first
        for k, fn in order:
            (t_ours if k == "ours" else t_refs[k]).append(timed(fn))
    mo = statistics.median(t_ours)
    lines = []
    for k, ts in t_refs.items():
        mr = statistics.median(ts)
        lines.append(f"| {name} | {k} | {mo * 1000:.0f} ms | {mr * 1000:.0f} ms | **{mo / mr:.2f}** |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="timm,hf,onnx,torchvision")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("ADVGUI_OFFLINE", "1")
    from advgui.core.models import load_model
    only = set(args.only.split(","))
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        torch.manual_seed(0)
        if "timm" in only:
            import timm
            from safetensors.torch import save_file
            net = timm.create_model("resnet18", pretrained=False, num_classes=10)
            f = tmp / "timm_r18.safetensors"
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(f))
            rows += compare("timm resnet18 (11.7 M)", lambda: load_model("timm:resnet18", weights=f, device="cpu"),
                            {"timm.create_model(checkpoint_path=)":
                             lambda: timm.create_model("resnet18", num_classes=10, checkpoint_path=str(f)).eval()},
                            args.repeats)
        if "hf" in only:
            from transformers import (AutoImageProcessor, AutoModelForImageClassification, ViTConfig,
                                      ViTForImageClassification, ViTImageProcessor)
            from transformers.utils import logging as hf_logging
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
            cfg = ViTConfig(image_size=224, patch_size=16, hidden_size=384, num_hidden_layers=12,
                            num_attention_heads=6, intermediate_size=1536, num_labels=10)
            folder = tmp / "vit_s"
            ViTForImageClassification(cfg).save_pretrained(str(folder))
            ViTImageProcessor().save_pretrained(str(folder))

            def hf_ref():
                AutoModelForImageClassification.from_pretrained(str(folder), local_files_only=True).eval()
                AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)

            rows += compare("HF ViT-S/16 (21.7 M)", lambda: load_model(f"hf:{folder}", device="cpu"),
                            {"from_pretrained + AutoImageProcessor": hf_ref,
                             "from_pretrained (model only)":
                             lambda: AutoModelForImageClassification.from_pretrained(str(folder),
                                                                                     local_files_only=True).eval()},
                            args.repeats)
        if "onnx" in only or "torchvision" in only:
            import torchvision
            tv = torchvision.models.resnet18(num_classes=10).eval()
            with torch.no_grad():       # BatchNorm statistics like a trained model's (not all alike)
                for m in tv.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.running_mean.uniform_(-0.1, 0.1)
                        m.running_var.uniform_(0.5, 1.5)
                        m.weight.uniform_(0.5, 1.5)
                        m.bias.uniform_(-0.1, 0.1)
        if "onnx" in only:
            import onnx
            import onnx2torch
            import onnxruntime as ort
            f = tmp / "r18.onnx"
            torch.onnx.export(tv, (torch.rand(1, 3, 224, 224),), str(f), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}}, dynamo=False)

            def onnx_ref():
                onnx2torch.convert(onnx.load(str(f))).eval()
                ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])

            clf = load_model(str(f), device="cpu")
            print("ONNX check:", json.dumps(clf.onnx_check))
            rows += compare("ONNX ResNet-18 (11.7 M)", lambda: load_model(str(f), device="cpu"),
                            {"onnx.load + onnx2torch.convert + InferenceSession": onnx_ref,
                             "InferenceSession alone":
                             lambda: ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])},
                            args.repeats)
        if "torchvision" in only:
            f = tmp / "tv_r18.pth"
            torch.save(tv.state_dict(), f)

            def tv_ref():
                m = torchvision.models.resnet18(num_classes=10)
                m.load_state_dict(torch.load(str(f), map_location="cpu", weights_only=True))
                m.eval()

            rows += compare("torchvision resnet18 (11.7 M)",
                            lambda: load_model("torchvision:resnet18", weights=f, device="cpu"),
                            {"resnet18() + load_state_dict(torch.load)": tv_ref}, args.repeats)
    print(f"\nload average: {os.getloadavg()[0]:.2f}, torch threads {args.threads}, {args.repeats} repeats\n")
    print("| model | reference | advgui | reference time | ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
