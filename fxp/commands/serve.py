"""`fxp serve RUN_DIR [--host H] [--port P]`: a web page and a JSON API for a run's predictions (Starlette + uvicorn,
which fastai installs).

GET / a page (upload an image, type a text, or fill a table row; see the prediction and its probabilities, a mask
over its image); POST /predict (multipart fields `file` for images; JSON `{"text": ...}` for text, `{"rows": [{column:
value}]}` for a table); GET /info (task, classes, inputs, the run's name); GET /health. The prediction is `fxp
predict`'s (the kind's `predict` on the run's exported learner, one request at a time: a fastai learner is not safe to
share between threads), with its pixel budget: an image is measured by its header before anything decodes it. A bad
request is a 4xx with one clear message in `{"error": ...}`, never a traceback.

What a page of another site could make a browser do is refused: a Host header that is not this server's (DNS
rebinding), a POST with another site's Origin, a JSON body not sent as application/json. A text is never read as a
path of the server's disk.
"""
from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import re
import tempfile
from pathlib import Path

from fxp import saved
from fxp.commands import Parser
from fxp.errors import FxpError
from fxp.writer import write_atomic

MAX_MB = 10  # largest request: images or a JSON body
MAX_FILES = 16  # images per request
MAX_ROWS = 1000  # largest table per request
QUEUE = 64  # requests waiting for the model at once; one more is told to retry (503)
ROWS_PER_FILE = 10  # the tabular kind's predict returns this many rows of each CSV it reads (SHOWN_ROWS)
TOP = 10  # classes shown with their probability
LOCAL = ("localhost", "127.0.0.1", "::1")  # the Host names always served (others: the bound address, --allow-host)
WARNING = "fxp: warning: "  # how a kind's predict warns on stderr (an unknown category): served in "warnings"
SERVED = ("image", "text", "table", "pairs", "audio")  # the inputs (a kind's INPUT) the page and the API take


def parser() -> Parser:
    p = Parser(prog="fxp serve", description="Serve a run's model: a web page and a JSON API (POST /predict, "
                                             "GET /info, GET /health).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a completed run folder (fxp runs lists them)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1; 0.0.0.0 for every one)")
    p.add_argument("--port", type=int, default=8000, help="port (8000)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a further name the server answers to in the Host header (its DNS name, its address on the "
                        "network when --host 0.0.0.0); localhost, 127.0.0.1 and --host always")
    p.add_argument("--max-pixels", type=int, metavar="N", help="the largest image accepted, in pixels (fxp predict's "
                                                               "default: 16 times the training size on each side)")
    p.add_argument("--trust", action="store_true", help="load a model.pkl that does not match the hash the run "
                                                        "recorded (it runs any code it holds)")
    return p


def main(args: list[str]) -> int:
    opts = parser().parse_args(args)
    app = make_app(Path(opts.run_dir), hosts=[opts.host, *opts.allow_host], max_pixels=opts.max_pixels,
                   trust=opts.trust)
    import uvicorn

    print(f"serving {opts.run_dir} on http://{opts.host}:{opts.port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=opts.host, port=opts.port, log_level="warning")
    return 0


class Model:
    "The run's learner and config, loaded once; predictions through fxp predict's code (one at a time: see make_app)."

    def __init__(self, run_dir: Path, max_pixels: int | None = None, trust: bool = False):
        from fxp import dispatch
        from fxp.predicting import pixel_budget

        self.run = saved.open_run(run_dir, "fxp serve", trust)
        self.run_dir, self.cfg, self.kind = run_dir, self.run.written, self.run.kind
        self.input = dispatch.declared(self.kind, "INPUT")
        if self.input not in SERVED:
            raise FxpError(f"fxp serve: a {self.cfg.task.kind} run takes {self.input or 'no input it declares'}; "
                           f"fxp serve takes runs of {', '.join(SERVED)}")
        self.learn = self.run.learn
        self.max_pixels = pixel_budget(self.learn, max_pixels)

    def info(self) -> dict:
        "What the page and GET /info show: the run by its folder's name (never the server's paths)."
        task = self.run.summary.get("task") or self.cfg.task.kind
        out = {"run": self.run_dir.resolve().name, "task": task, "kind": self.cfg.task.kind, "input": self.input,
               "classes": saved.classes(self.learn)}
        if self.input == "image":
            out["max_pixels"] = self.max_pixels
        if self.input in ("table", "pairs"):
            out["columns"], out["categories"] = columns(self.learn), categories(self.learn)
        return out

    def predict(self, inputs: list[str], tmp: Path) -> tuple[list[dict], list[str]]:
        "The kind's rows for `inputs`, and the warnings it wrote (`fxp: warning: ...` lines: unknown categories)."
        import inspect

        from fxp.predicting import predict_rows

        params = inspect.signature(self.kind.predict).parameters
        options = {"out": tmp} if "out" in params else {}
        if "top" in params and self.input in ("image", "audio"):
            options["top"] = str(TOP)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):  # a kind's "wrote N predictions to ..." note, its warnings
            rows = predict_rows(self.kind, self.learn, self.cfg, inputs, options, Path(self.run_dir.resolve().name),
                                self.max_pixels)
        warns = [ln.removeprefix(WARNING) for ln in err.getvalue().splitlines() if ln.startswith(WARNING)]
        return rows, [re.sub(r"rows\d+\.csv", "the request", w) for w in warns]


def columns(learn) -> list[str]:
    "A table row's input columns (not the `<col>_na` flags the model adds itself)."
    to = learn.dls.train_ds
    cont = list(to.cont_names)
    return [c for c in to.cat_names if not (c.endswith("_na") and c[:-3] in cont)] + cont


def categories(learn) -> dict:
    "Each categorical input column's known values (Categorify's, without its #na#), which the page offers."
    from fastai.tabular.core import Categorify

    cats = next((p for p in learn.dls.train_ds.procs if isinstance(p, Categorify)), None)
    known = columns(learn)
    return {c: [str(v) for v in vals if str(v) != "#na#"] for c, vals in (cats.classes if cats else {}).items()
            if c in known}


# --- the app ---------------------------------------------------------------------------------------------------------


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def make_app(run_dir: Path, max_mb: float = MAX_MB, hosts: list[str] = (), max_pixels: int | None = None,
             trust: bool = False):
    """The Starlette app serving `run_dir`'s model to the Host names LOCAL and `hosts`. Predictions run in a worker
    thread, one at a time (a fastai learner is not safe to share between threads; one decoded image at a time),
    at most QUEUE requests waiting for their turn. `trust`: the model is loaded even if it is not the file the run
    recorded."""
    import anyio
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    model = Model(Path(run_dir), max_pixels, trust)
    limit, served = int(max_mb * 2**20), {*LOCAL, *(h for h in hosts if h not in ("0.0.0.0", "::"))}
    turn, waiting = anyio.CapacityLimiter(1), [0]

    def guarded(handler):
        "A handler that answers only requests sent to a served Host name (no DNS rebinding) and same-site POSTs."
        async def checked(request):
            try:
                check_origin(request, served)
                return await handler(request)
            except BadRequest as e:
                return JSONResponse({"error": e.message}, status_code=e.status)
        return checked

    async def page(request):
        return HTMLResponse(page_html(model.info()))

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def info(request):
        return JSONResponse(model.info())

    async def predict(request):
        if waiting[0] >= QUEUE:
            raise BadRequest(503, f"{QUEUE} requests are waiting for the model; retry in a moment")
        waiting[0] += 1
        try:
            inputs = await read_inputs(request, model, limit)
            rows, warns = await anyio.to_thread.run_sync(predict_files, model, inputs, limiter=turn)
        except FxpError as e:  # the kind's one line: missing columns, an empty text, ...
            return JSONResponse({"error": str(e)}, status_code=422)
        except BadRequest:
            raise
        except Exception as e:  # a failure of the model itself: still one line, no traceback
            return JSONResponse({"error": f"prediction failed: {type(e).__name__}: {first(e)}"}, status_code=500)
        finally:
            waiting[0] -= 1
        return JSONResponse({"predictions": rows, **({"warnings": warns} if warns else {})})

    routes = [Route("/", guarded(page)), Route("/health", guarded(health)), Route("/info", guarded(info)),
              Route("/predict", guarded(predict), methods=["POST"])]
    return Starlette(routes=routes)


def check_origin(request, served: set) -> None:
    """The Host header names this server (a page on another site whose DNS name points here, DNS rebinding, sends
    its own), and a POST from a browser comes from this server's own page (a cross-site form sends its Origin)."""
    from urllib.parse import urlsplit

    host = request.headers.get("host", "")
    name = urlsplit(f"//{host}").hostname or ""
    if name not in served:
        raise BadRequest(421, f"this server answers to {', '.join(sorted(served))}, not to the host {host!r} "
                              f"(fxp serve --allow-host NAME adds a name)")
    origin = request.headers.get("origin")
    if request.method == "POST" and origin is not None and urlsplit(origin).netloc != host:
        raise BadRequest(403, f"a request from the page of another site ({origin}) is refused; use this server's "
                              f"page or a client that sends no Origin (curl, a script)")


def first(e) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


async def read_inputs(request, model: Model, limit: int):
    "The request's inputs for the model's kind of input: (name, upload, format) of images, texts, or table rows."
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise BadRequest(413, f"the request is {int(size) / 2**20:.1f} MB; the limit is {limit / 2**20:g} MB")
    if model.input in ("image", "audio"):
        return await read_images(request, limit, model.max_pixels, model.input)
    body = await read_json(request, limit)
    if model.input == "text":
        texts = body.get("texts", [body.get("text")]) if isinstance(body, dict) else None
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise BadRequest(422, 'send JSON {"text": "..."} (or {"texts": [...]}) with a non-empty text')
        return texts
    rows = body.get("rows", [body.get("row")] if "row" in body else None) if isinstance(body, dict) else body
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and r for r in rows):
        raise BadRequest(422, 'send JSON {"rows": [{"column": value, ...}]} (or {"row": {...}}) with the model\'s '
                              'input columns (GET /info lists them)')
    if len(rows) > MAX_ROWS:
        raise BadRequest(413, f"{len(rows)} rows; send at most {MAX_ROWS} per request")
    return rows


async def read_images(request, limit: int, max_pixels: int, takes: str = "image") -> list:
    "Each multipart `file` part (an image, or a sound file: `takes`): its name, the upload (spooled) and its format."
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest(415, f"send the {takes} as multipart/form-data in the field `file`")
    try:
        form = await request.form(max_files=MAX_FILES, max_part_size=limit + 1)
    except (MultiPartException, HTTPException) as e:  # no boundary, a part without a name, a torn body
        raise BadRequest(400, f"unreadable upload: {getattr(e, 'detail', None) or e}") from None
    uploads = [u for u in form.getlist("file") if not isinstance(u, str)]
    if not uploads:
        raise BadRequest(422, f"no file: send the {takes} in the multipart field `file`")
    header = image_header if takes == "image" else audio_header
    return [(Path(u.filename or "upload").name, u, header(u, max_pixels)) for u in uploads]


def audio_header(upload, max_pixels: int) -> str:
    "The upload's sound format by its header (libsndfile's): not a sound file soundfile reads is a 415."
    import soundfile

    name = Path(upload.filename or "the upload").name
    try:
        upload.file.seek(0)
        fmt = soundfile.info(upload.file).format.lower()
    except Exception:
        raise BadRequest(415, f"{name} is not a sound file fxp can read (WAV, FLAC, OGG)") from None
    finally:
        upload.file.seek(0)
    return {"wav": "wav", "flac": "flac", "ogg": "ogg"}.get(fmt, "wav")


def image_header(upload, max_pixels: int) -> str:
    "The upload's format by its header, which also gives its size: over `max_pixels` is a 413, not an image a 415."
    from fxp.predicting import TooLarge, image_format

    name = Path(upload.filename or "the upload").name
    try:
        fmt = image_format(upload.file, name, max_pixels)
    except TooLarge as e:
        raise BadRequest(413, str(e)) from None
    if fmt is None:
        raise BadRequest(415, f"{name} is not an image fxp can read (PNG, JPEG, ...)")
    return fmt


async def read_json(request, limit: int):
    "The JSON body; sent as application/json, which a page of another site cannot send without asking first (CORS)."
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise BadRequest(415, "send the input as JSON with the header Content-Type: application/json")
    body = await request.body()
    if len(body) > limit:
        raise BadRequest(413, f"the body is larger than the {limit / 2**20:g} MB limit")
    try:
        return json.loads(body)
    except ValueError:
        raise BadRequest(400, "the body is not JSON") from None


def predict_files(model: Model, inputs: list) -> tuple[list[dict], list[str]]:
    """Inputs as the kind's predict takes them (files in a temporary folder: images, texts, CSV chunks), its rows back
    with its warnings. A text is always written to a file: a text that names a file of the server is not read."""
    with tempfile.TemporaryDirectory(prefix="fxp-serve-") as tmp:
        tmp = Path(tmp)
        if model.input == "text":
            files = [write(tmp / f"text{i}.txt", t.encode()) for i, t in enumerate(inputs)]
            rows, warns = model.predict(files, tmp)
            return [{**row, "input": text} for row, text in zip(rows, inputs)], warns
        if model.input == "audio":
            files = [write(tmp / f"upload{i}.{fmt}", up.file.read()) for i, (_, up, fmt) in enumerate(inputs)]
            rows, warns = model.predict(files, tmp)
            return [{**row, "input": name} for row, (name, _, _) in zip(rows, inputs)], warns
        if model.input == "image":
            files = [write(tmp / f"upload{i}.{fmt}", decoded(up, name)) for i, (name, up, fmt) in enumerate(inputs)]
            rows, warns = model.predict(files, tmp)
            return [image_row(row, name, model) for row, (name, _, _) in zip(rows, inputs)], warns
        return table_rows(model, inputs, tmp)


def write(path: Path, data: bytes) -> str:
    write_atomic(path, data)
    return str(path)


def decoded(upload, name: str) -> bytes:
    "The upload's bytes, its pixels read through once (in the worker thread): a torn image is a 415 naming it."
    from PIL import Image

    upload.file.seek(0)
    data = upload.file.read()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception:
        raise BadRequest(415, f"{name} is not an image fxp can read (PNG, JPEG, ...)") from None
    return data


def image_row(row: dict, name: str, model: Model) -> dict:
    "The upload's name instead of the temporary file; a mask (class ids) or an output image as a PNG data URL."
    row = {**row, "input": name}
    if "output" in row and Path(str(row["output"])).is_file():
        row["output"] = data_url(Path(row["output"]).read_bytes())
    if "mask" in row and Path(str(row["mask"])).is_file():
        png, row["legend"] = mask_png(Path(row["mask"]), saved.classes(model.learn) or [])
        row["mask"] = data_url(png)
    return row


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def mask_png(path: Path, classes: list[str]) -> tuple[bytes, dict]:
    """A mask as an index PNG: each pixel its class id, with masks.png's colours as its palette; and the legend of
    the classes it shows, {name: "#rrggbb"}."""
    import numpy as np
    from PIL import Image

    from fxp.tasks.segmentation import code_colours

    colours = (code_colours(max(len(classes), 1)) * 255).round().astype("uint8")
    with Image.open(path) as im:
        ids = np.asarray(im).astype("uint8")
    out = Image.fromarray(ids).convert("P")
    out.putpalette(colours.ravel().tolist())
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    shown = [int(i) for i in np.unique(ids) if i < len(classes)]
    return buf.getvalue(), {classes[i]: "#" + bytes(colours[i]).hex() for i in shown}


def table_rows(model: Model, rows: list[dict], tmp: Path) -> tuple[list[dict], list[str]]:
    "Rows written as CSV files of ROWS_PER_FILE (each read whole by the kind), predictions back in order."
    import pandas as pd

    files = []
    for i in range(0, len(rows), ROWS_PER_FILE):
        files.append(tmp / f"rows{i // ROWS_PER_FILE}.csv")
        write_atomic(files[-1], pd.DataFrame(rows[i:i + ROWS_PER_FILE]).to_csv(index=False))
    try:
        out, warns = model.predict([str(f) for f in files], tmp)
    except FxpError as e:  # it names the chunk's file: the client sent rows
        raise FxpError(re.sub(r"rows\d+\.csv", "the request", str(e))) from None
    drop = ("input", "row")
    return [{k: v for k, v in r.items() if k not in drop} for r in out], list(dict.fromkeys(warns))


# --- the page ---------------------------------------------------------------------------------------------------------


def page_html(info: dict) -> str:
    "One page, no external fetch: a form for the model's input, the prediction shown below it."
    esc = html.escape
    classes = ", ".join(map(str, info["classes"] or [])) or "-"
    return PAGE.format(title=esc(f"fxp serve: {info['task']}"), task=esc(str(info["task"])), kind=esc(info["kind"]),
                       run=esc(info["run"]), classes=esc(classes[:500]), form=form_html(info),
                       input=json.dumps(info["input"]))


def form_html(info: dict) -> str:
    "The inputs: a file, a text box, or a field per column (a list of its known values for a categorical one)."
    esc = html.escape
    if info["input"] in ("image", "audio"):
        return f'<input type="file" id="file" name="file" accept="{info["input"]}/*">'
    if info["input"] == "text":
        return '<textarea id="text" rows="5" cols="70" placeholder="a text to classify"></textarea>'
    fields = []
    for c in info["columns"]:
        known = info["categories"].get(c)
        options = "".join(f"<option>{esc(v)}</option>" for v in known or [])
        field = (f'<select class="col" name="{esc(c)}"><option value=""></option>{options}</select>'
                 if known is not None else f'<input class="col" name="{esc(c)}">')
        fields.append(f"<label>{esc(c)} {field}</label><br>")
    return "".join(fields)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><link rel="icon" href="data:,">
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}} #error{{color:#b00}} #label{{font-size:1.6em}}
#view{{position:relative;display:inline-block}} #preview{{display:block;max-height:24em}}
#mask{{position:absolute;left:0;top:0;width:100%;height:100%;opacity:.55;image-rendering:pixelated}}
#legend span{{display:inline-block;margin-right:1em}} #legend i{{display:inline-block;width:1em;height:1em;
margin-right:.3em;vertical-align:middle;border:1px solid #333}}</style>
</head><body>
<h1>{task}</h1>
<p>{kind} model of the run <code>{run}</code>; classes: {classes}</p>
<form id="form">{form}<p><button type="submit" id="go">Predict</button></p></form>
<div id="view"><img id="preview" alt=""><img id="mask" alt="" hidden></div><div id="legend"></div>
<p id="error"></p><p id="label"></p><div id="warnings"></div><div id="result"></div>
<img id="output" alt="" style="max-width:100%">
<script>
const input = {input};
const form = document.getElementById("form");
const $ = (id) => document.getElementById(id);
form.addEventListener("submit", async (ev) => {{
  ev.preventDefault();
  for (const id of ["error", "label", "result", "legend", "warnings"]) $(id).textContent = "";
  $("mask").hidden = true;
  $("output").removeAttribute("src");
  let body, headers = {{}};
  if (input === "image" || input === "audio") {{
    body = new FormData();
    const file = $("file").files[0];
    if (!file) {{ $("error").textContent = `choose ${{input === "image" ? "an image" : "a sound"}} first`; return; }}
    body.append("file", file);
    if (input === "image") $("preview").src = URL.createObjectURL(file);
  }} else if (input === "text") {{
    body = JSON.stringify({{text: $("text").value}});
    headers["Content-Type"] = "application/json";
  }} else {{
    const row = {{}};
    for (const el of document.querySelectorAll(".col"))  // an empty field: a missing value
      row[el.name] = el.value === "" ? null : el.tagName === "SELECT" || isNaN(el.value) ? el.value : Number(el.value);
    body = JSON.stringify({{rows: [row]}});
    headers["Content-Type"] = "application/json";
  }}
  const res = await fetch("predict", {{method: "POST", body, headers}});
  const out = await res.json();
  if (!res.ok) {{ $("error").textContent = out.error; return; }}
  for (const w of out.warnings || []) $("warnings").appendChild(document.createElement("p")).textContent = w;
  show(out.predictions[0]);
}});
function show(row) {{
  const label = row.label ?? row.tags ?? Object.entries(row).find(([k]) => k.endsWith("_pred"))?.[1];
  if (label !== undefined) $("label").textContent = String(label);
  if (row.mask) {{ $("mask").src = row.mask; $("mask").hidden = false; }}
  if (row.output) $("output").src = row.output;
  for (const [name, colour] of Object.entries(row.legend || {{}})) {{
    const item = $("legend").appendChild(document.createElement("span"));
    item.appendChild(document.createElement("i")).style.background = colour;
    item.appendChild(document.createTextNode(name));
  }}
  const table = document.createElement("table");
  const probs = row.probabilities && !Array.isArray(row.probabilities) ? row.probabilities : null;
  const entries = probs ? Object.entries(probs)
    : Object.entries(row).filter(([k]) => !["mask", "output", "legend"].includes(k));
  table.innerHTML = "<tr><th>" + (probs ? "class</th><th>probability" : "key</th><th>value") + "</th></tr>";
  for (const [k, v] of entries) {{
    const tr = table.insertRow(); tr.insertCell().textContent = k;
    tr.insertCell().textContent = typeof v === "object" ? JSON.stringify(v) : v;
  }}
  $("result").appendChild(table);
}}
</script></body></html>
"""
