"""A Gradio app for an image model fxp exported (`fxp export RUN --format app`): model.onnx and model.json beside this
file, example images in examples/. It needs only what requirements.txt lists (gradio, onnxruntime, numpy, Pillow),
not torch or fastai: model.json says how an image becomes the model's input, and this file does that with PIL and
numpy as the run's fastai pipeline did (fxp checked that both give the same input before writing the folder).

`python app.py [--port 7860] [--host 127.0.0.1]` serves it (Gradio's GRADIO_SERVER_PORT / GRADIO_SERVER_NAME
otherwise); a hosted Gradio Space runs it as it is (README.md's front-matter).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
TOP = 10  # classes shown with their probability


def prepare(image: Image.Image, meta: dict) -> np.ndarray:
    "One image as the model's input batch [1, C, H, W], by model.json's preprocessing."
    pre = meta["preprocessing"]
    image = image.convert("L" if meta["channels"] == 1 else "RGB")
    h, w = meta["input_size"]
    if pre["resize"]:
        image = resized(image, (w, h), pre["resize"]["method"], pre["resize"]["pad_mode"])
    elif image.size != (w, h):  # a run trained at its images' own size: squished to it, as fxp predict does
        image = image.resize((w, h), Image.BILINEAR)
    x = np.asarray(image, dtype=np.float32)
    x = (x[None] if x.ndim == 2 else x.transpose(2, 0, 1)) * np.float32(pre["scale"])
    if pre["normalize"]:
        mean, std = (np.array(pre["normalize"][k], dtype=np.float32).reshape(-1, 1, 1) for k in ("mean", "std"))
        x = (x - mean) / std
    return x[None].astype(np.float32)


def resized(image: Image.Image, size: tuple, method: str, pad_mode: str) -> Image.Image:
    """fastai's Resize on a validation image: `squish` to `size` (w, h); `crop` the centre of the aspect ratio of size,
    or `pad` the image to it (zeros, reflection or border), then resize bilinearly."""
    if method == "squish":
        return image.resize(size, Image.BILINEAR)
    (W, H), (w, h) = image.size, size
    ratios = (W / w, H / h)
    m = max(ratios) if method == "pad" else min(ratios)
    cw, ch = int(m * w), int(m * h)
    left, top = int(0.5 * (W - cw)), int(0.5 * (H - ch))
    box = (max(left, 0), max(top, 0), min(left + cw, W), min(top + ch, H))
    image = image.crop(box)
    pads = (max(-left, 0), max(-top, 0), max(left + cw - W, 0), max(top + ch - H, 0))
    if any(pads):
        arr = np.asarray(image)
        widths = [(pads[1], pads[3]), (pads[0], pads[2])] + [(0, 0)] * (arr.ndim - 2)
        mode = {"zeros": "constant", "reflection": "reflect", "border": "edge"}[pad_mode]
        image = Image.fromarray(np.pad(arr, widths, mode=mode))
    return image.resize(size, Image.BILINEAR)


def answer(probs: np.ndarray, meta: dict):
    "The model's output for one image as the app shows it: {class: probability}, or the values themselves."
    if meta["classes"] is None:
        return {"values": [round(float(v), 6) for v in probs.ravel()]}
    return {c: float(p) for c, p in zip(meta["classes"], probs)}


def main() -> None:
    import gradio as gr
    import onnxruntime

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, help="port (Gradio's default: GRADIO_SERVER_PORT, else 7860)")
    p.add_argument("--host", help="address (Gradio's default: GRADIO_SERVER_NAME, else 127.0.0.1)")
    opts = p.parse_args()
    meta = json.loads((HERE / "model.json").read_text())
    session = onnxruntime.InferenceSession(str(HERE / meta["file"]), providers=["CPUExecutionProvider"])
    name = meta["inputs"][0]["name"]

    def predict(image):
        if image is None:
            raise gr.Error("choose an image first")
        return answer(session.run(None, {name: prepare(image, meta)})[0][0], meta)

    classes = meta["classes"]
    output = gr.Label(num_top_classes=min(TOP, len(classes)), label="prediction") if classes else gr.JSON()
    examples = [[str(f)] for f in sorted((HERE / "examples").glob("*"))]
    demo = gr.Interface(fn=predict, inputs=gr.Image(type="pil", label="image"), outputs=output,
                        examples=examples or None, title=meta["task"], description=describe(meta),
                        flagging_mode="never")
    demo.launch(server_name=opts.host, server_port=opts.port)


def describe(meta: dict) -> str:
    classes = meta["classes"] or []
    shown = ", ".join(classes[:20]) + (f" and {len(classes) - 20} more" if len(classes) > 20 else "")
    what = f"classes: {shown}" if classes else "the model's values"
    return f"A {meta['kind']} model exported by fxp ({meta['format']}); {what}."


if __name__ == "__main__":
    main()
