"""`fxp serve RUN_DIR [--host H] [--port P]`: a web page and a JSON API for a run's predictions (Starlette + uvicorn,
which fastai installs).

GET / a page (upload an image, type a text, or fill a table row; see the prediction and its probabilities);
POST /predict (multipart field `file` for an image; JSON `{"text": ...}` for text, `{"rows": [{column: value}]}` for a
table); GET /info (task, classes, inputs, run); GET /health. The prediction is `fxp predict`'s (the kind's `predict`
on the run's exported learner, one request at a time: a fastai learner is not safe to share between threads). A bad
request is a 4xx with one clear message in `{"error": ...}`, never a traceback.
"""
from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import re
import tempfile
import threading
from pathlib import Path

from fxp import saved
from fxp.commands import Parser
from fxp.errors import FxpError
from fxp.runs import MODEL, read_summary

MAX_MB = 10  # largest upload (an image) or JSON body
MAX_ROWS = 1000  # largest table per request
ROWS_PER_FILE = 10  # the tabular kind's predict returns this many rows of each CSV it reads (SHOWN_ROWS)
TOP = 10  # classes shown with their probability


def parser() -> Parser:
    p = Parser(prog="fxp serve", description="Serve a run's model: a web page and a JSON API (POST /predict, "
                                             "GET /info, GET /health).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a completed run folder (fxp runs lists them)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1; 0.0.0.0 for every one)")
    p.add_argument("--port", type=int, default=8000, help="port (8000)")
    p.add_argument("--trust", action="store_true", help="load a model.pkl that does not match the hash the run "
                                                        "recorded (it runs any code it holds)")
    return p


def main(args: list[str]) -> int:
    opts = parser().parse_args(args)
    app = make_app(Path(opts.run_dir), trust=opts.trust)
    import uvicorn

    print(f"serving {opts.run_dir} on http://{opts.host}:{opts.port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=opts.host, port=opts.port, log_level="warning")
    return 0


class Model:
    "The run's learner and config, loaded once; predictions one at a time, through fxp predict's code."

    def __init__(self, run_dir: Path, trust: bool = False):
        from fxp import dispatch
        from fxp.commands.predict import run_config

        if not (run_dir / MODEL).is_file():
            raise FxpError(f"fxp serve: no {MODEL} in {run_dir}: give the folder of a completed run (fxp runs lists "
                           f"them)")
        self.run_dir, self.cfg = run_dir, run_config(run_dir)
        self.kind = dispatch.kind_module(self.cfg.task.kind)
        self.learn = saved.load(run_dir / MODEL, "fxp serve", trust)
        self.input = input_of(self.learn)
        if self.input == "table":
            from fxp.data import quiet_readonly_arrays

            quiet_readonly_arrays()
        self.lock = threading.Lock()

    def info(self) -> dict:
        task = read_summary(self.run_dir).get("task") or self.cfg.task.kind
        out = {"run": str(self.run_dir.resolve()), "task": task, "kind": self.cfg.task.kind, "input": self.input,
               "classes": saved.classes(self.learn)}
        if self.input == "table":
            out["columns"] = columns(self.learn)
        return out

    def predict(self, inputs: list[str], tmp: Path) -> list[dict]:
        from fxp.commands.predict import predict_rows

        import inspect

        params = inspect.signature(self.kind.predict).parameters
        options = {"out": tmp} if "out" in params else {}
        if "top" in params and self.input == "image":
            options["top"] = str(TOP)
        with self.lock, contextlib.redirect_stderr(io.StringIO()):  # a kind's "wrote N predictions to ..." note
            return predict_rows(self.kind, self.learn, self.cfg, inputs, options, self.run_dir)


def input_of(learn) -> str:
    "What the model predicts from: a table's rows, texts, or images."
    if hasattr(learn.dls, "procs"):
        return "table"
    vocab = getattr(learn.dls, "vocab", None)
    return "text" if vocab is not None and len(vocab) == 2 and isinstance(vocab[0], list) else "image"


def columns(learn) -> list[str]:
    "A table row's input columns (not the `<col>_na` flags the model adds itself)."
    to = learn.dls.train_ds
    cont = list(to.cont_names)
    return [c for c in to.cat_names if not (c.endswith("_na") and c[:-3] in cont)] + cont


# --- the app ---------------------------------------------------------------------------------------------------------


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def make_app(run_dir: Path, max_mb: float = MAX_MB, trust: bool = False):
    "The Starlette app serving `run_dir`'s model (`trust`: loaded even if it is not the file the run recorded)."
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    model = Model(Path(run_dir), trust)
    limit = int(max_mb * 2**20)

    async def page(request):
        return HTMLResponse(page_html(model.info()))

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def info(request):
        return JSONResponse(model.info())

    async def predict(request):
        try:
            inputs = await read_inputs(request, model.input, limit)
            rows = await run_in_threadpool(predict_files, model, inputs)
        except BadRequest as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        except FxpError as e:  # the kind's one line: missing columns, an empty text, ...
            return JSONResponse({"error": str(e)}, status_code=422)
        except Exception as e:  # a failure of the model itself: still one line, no traceback
            return JSONResponse({"error": f"prediction failed: {type(e).__name__}: {first(e)}"}, status_code=500)
        return JSONResponse({"predictions": rows})

    routes = [Route("/", page), Route("/health", health), Route("/info", info),
              Route("/predict", predict, methods=["POST"])]
    return Starlette(routes=routes)


def first(e) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


async def read_inputs(request, kind: str, limit: int):
    "The request's inputs for the model's kind of input: (name, image bytes), texts, or table rows."
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise BadRequest(413, f"the request is {int(size) / 2**20:.1f} MB; the limit is {limit / 2**20:g} MB")
    if kind == "image":
        return await read_image(request, limit)
    body = await read_json(request, limit)
    if kind == "text":
        texts = body.get("texts", [body.get("text")]) if isinstance(body, dict) else None
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise BadRequest(422, 'send JSON {"text": "..."} (or {"texts": [...]}) with a non-empty text')
        if any(len(t.split()) == 1 and t.strip().endswith(".txt") for t in texts):  # predict would read the file
            raise BadRequest(422, "send the text itself, not the name of a .txt file")
        return texts
    rows = body.get("rows", [body.get("row")] if "row" in body else None) if isinstance(body, dict) else body
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and r for r in rows):
        raise BadRequest(422, 'send JSON {"rows": [{"column": value, ...}]} (or {"row": {...}}) with the model\'s '
                              'input columns (GET /info lists them)')
    if len(rows) > MAX_ROWS:
        raise BadRequest(413, f"{len(rows)} rows; send at most {MAX_ROWS} per request")
    return rows


async def read_image(request, limit: int):
    from starlette.formparsers import MultiPartException

    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest(415, "send the image as multipart/form-data in the field `file`")
    try:
        form = await request.form(max_part_size=limit + 1)
    except MultiPartException as e:
        raise BadRequest(400, f"unreadable upload: {e}") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise BadRequest(422, "no file: send the image in the multipart field `file`")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise BadRequest(413, f"{upload.filename} is larger than the {limit / 2**20:g} MB limit")
    return [(Path(upload.filename or "upload").name, data, image_format(data, upload.filename))]


def image_format(data: bytes, name: str | None) -> str:
    "The image's format (PNG, JPEG, ...), its pixels read through; else a 415 naming the file."
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return (im.format or "PNG").lower()
    except Exception:
        raise BadRequest(415, f"{name or 'the upload'} is not an image fxp can read (PNG, JPEG, ...)") from None


async def read_json(request, limit: int):
    body = await request.body()
    if len(body) > limit:
        raise BadRequest(413, f"the body is larger than the {limit / 2**20:g} MB limit")
    try:
        return json.loads(body)
    except ValueError:
        raise BadRequest(400, "the body is not JSON") from None


def predict_files(model: Model, inputs: list) -> list[dict]:
    "Inputs as the kind's predict takes them (files in a temporary folder: images, CSV chunks), its rows back."
    with tempfile.TemporaryDirectory(prefix="fxp-serve-") as tmp:
        tmp = Path(tmp)
        if model.input == "text":
            return [{**row, "input": text} for row, text in zip(model.predict(inputs, tmp), inputs)]
        if model.input == "image":
            ((name, data, fmt),) = inputs
            (tmp / f"upload.{fmt}").write_bytes(data)
            return [image_row(row, name) for row in model.predict([str(tmp / f"upload.{fmt}")], tmp)]
        return table_rows(model, inputs, tmp)


def image_row(row: dict, name: str) -> dict:
    "The upload's name instead of the temporary file; a mask or an output image as a PNG data URL."
    row = {**row, "input": name}
    for key in ("mask", "output"):
        if key in row and Path(str(row[key])).is_file():
            row[key] = "data:image/png;base64," + base64.b64encode(_png(Path(row[key]), key == "mask")).decode()
    return row


def _png(path: Path, mask: bool) -> bytes:
    "The file as PNG bytes; a mask's class indices spread over the grey levels, so that it can be seen."
    from PIL import Image

    with Image.open(path) as im:
        if mask:
            import numpy as np

            a = np.asarray(im).astype("float32")
            im = Image.fromarray((255 * a / max(a.max(), 1)).astype("uint8"))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    return buf.getvalue()


def table_rows(model: Model, rows: list[dict], tmp: Path) -> list[dict]:
    "Rows written as CSV files of ROWS_PER_FILE (each read whole by the kind), predictions back in order."
    import pandas as pd

    files = []
    for i in range(0, len(rows), ROWS_PER_FILE):
        files.append(tmp / f"rows{i // ROWS_PER_FILE}.csv")
        pd.DataFrame(rows[i:i + ROWS_PER_FILE]).to_csv(files[-1], index=False)
    try:
        out = model.predict([str(f) for f in files], tmp)
    except FxpError as e:  # it names the chunk's file: the client sent rows
        raise FxpError(re.sub(r"rows\d+\.csv", "the request", str(e))) from None
    drop = ("input", "row")
    return [{k: v for k, v in r.items() if k not in drop} for r in out]


# --- the page ----------------------------------------------------------------------------------------------------------


def page_html(info: dict) -> str:
    "One page, no external fetch: a form for the model's input, the prediction shown below it."
    esc = html.escape
    if info["input"] == "image":
        form = '<input type="file" id="file" name="file" accept="image/*">'
    elif info["input"] == "text":
        form = '<textarea id="text" rows="5" cols="70" placeholder="a text to classify"></textarea>'
    else:
        form = "".join(f'<label>{esc(c)} <input class="col" name="{esc(c)}"></label><br>' for c in info["columns"])
    classes = ", ".join(map(str, info["classes"] or [])) or "-"
    return PAGE.format(title=esc(f"fxp serve: {info['task']}"), task=esc(str(info["task"])), kind=esc(info["kind"]),
                       run=esc(info["run"]), classes=esc(classes[:500]), form=form, input=json.dumps(info["input"]))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><link rel="icon" href="data:,">
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}} #error{{color:#b00}} #label{{font-size:1.6em}}</style>
</head><body>
<h1>{task}</h1>
<p>{kind} model from <code>{run}</code>; classes: {classes}</p>
<form id="form">{form}<p><button type="submit" id="go">Predict</button></p></form>
<img id="preview" alt="" style="max-height:12em"><p id="error"></p><p id="label"></p><div id="result"></div><img id="mask" alt="" style="max-width:100%">
<script>
const input = {input};
const form = document.getElementById("form");
form.addEventListener("submit", async (ev) => {{
  ev.preventDefault();
  for (const id of ["error", "label", "result"]) document.getElementById(id).textContent = "";
  document.getElementById("mask").removeAttribute("src");
  let body, headers = {{}};
  if (input === "image") {{
    body = new FormData();
    const file = document.getElementById("file").files[0];
    if (!file) {{ document.getElementById("error").textContent = "choose an image first"; return; }}
    body.append("file", file);
    document.getElementById("preview").src = URL.createObjectURL(file);
  }} else if (input === "text") {{
    body = JSON.stringify({{text: document.getElementById("text").value}});
    headers["Content-Type"] = "application/json";
  }} else {{
    const row = {{}};
    for (const el of document.querySelectorAll(".col")) if (el.value !== "") row[el.name] = isNaN(el.value) ? el.value : Number(el.value);
    body = JSON.stringify({{rows: [row]}});
    headers["Content-Type"] = "application/json";
  }}
  const res = await fetch("predict", {{method: "POST", body, headers}});
  const out = await res.json();
  if (!res.ok) {{ document.getElementById("error").textContent = out.error; return; }}
  show(out.predictions[0]);
}});
function show(row) {{
  const label = row.label ?? row.tags ?? Object.entries(row).find(([k]) => k.endsWith("_pred"))?.[1];
  if (label !== undefined) document.getElementById("label").textContent = String(label);
  if (row.mask || row.output) document.getElementById("mask").src = row.mask || row.output;
  const table = document.createElement("table");
  const probs = row.probabilities && !Array.isArray(row.probabilities) ? row.probabilities : null;
  const entries = probs ? Object.entries(probs) : Object.entries(row).filter(([k]) => !["mask", "output"].includes(k));
  table.innerHTML = "<tr><th>" + (probs ? "class</th><th>probability" : "key</th><th>value") + "</th></tr>";
  for (const [k, v] of entries) {{
    const tr = table.insertRow(); tr.insertCell().textContent = k;
    tr.insertCell().textContent = typeof v === "object" ? JSON.stringify(v) : v;
  }}
  document.getElementById("result").appendChild(table);
}}
</script></body></html>
"""
