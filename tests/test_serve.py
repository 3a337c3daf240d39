"""`fxp serve` (and `fxp predict`'s share of its checks): the JSON API and the page, on the exported learners of
tests/fixtures/exported (no training).

Most tests call the Starlette app in this process (TestClient); one starts the installed `fxp serve` command (uvicorn on
a free port), sends it 20 requests at once and a pixel bomb, then drives its page in headless Chromium. The other
pages driven in Chromium are served by `fxp serve` forked from this worker (`serving`): the same command and server,
without a fresh interpreter's 4 CPU-s of imports each.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import assert_one_line_error, copy_exported, forked, run_fxp, run_installed, start_fxp


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return copy_exported(tmp_path_factory.mktemp("serve"), "classification", "tabular")


def client(run: Path, **kw):
    "The app in this process, as a browser or curl on this machine reaches it (Host 127.0.0.1)."
    from starlette.testclient import TestClient

    from fxp.commands.serve import make_app

    return TestClient(make_app(run, **kw), base_url="http://127.0.0.1:8000")


@pytest.fixture(scope="module")
def images(runs):
    return client(runs / "classification")


def blank_png(path: Path, w: int, h: int, mode: str = "L") -> Path:
    "An all-zero PNG of w x h pixels, written row by row (a 13000x13000 one is 164 KB and never held in memory)."
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    colour, channels = {"L": (0, 1), "RGB": (2, 3)}[mode]
    z, row, parts = zlib.compressobj(9), b"\0" * (1 + w * channels), []
    parts += [z.compress(row) for _ in range(h)]
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)))
        f.write(chunk(b"IDAT", b"".join(parts) + z.flush()) + chunk(b"IEND", b""))
    return path


def test_pairs_are_served_as_rows_of_their_two_columns(tmp_path):
    "What a run takes is its kind's declaration (INPUT): collab's (user, item) pairs, sent and shown as rows."
    import pandas as pd

    run = copy_exported(tmp_path, "collab") / "collab"
    pairs = client(run)
    info = pairs.get("/info").json()
    assert info["input"] == "pairs" and info["columns"] == ["userId", "movieId"], info
    rows = pd.read_csv(run / "pairs.csv", dtype=str).to_dict("records")
    r = pairs.post("/predict", json={"rows": rows})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [(p["userId"], p["movieId"]) for p in preds] == [(r["userId"], r["movieId"]) for r in rows]
    assert all(0 <= p["prediction"] <= 5.5 for p in preds)  # the task's y_range
    assert all(f'name="{c}"' in pairs.get("/").text for c in info["columns"])


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    "issue 30's upload: a 13000x13000 grey PNG of 164 KB, under Pillow's own decompression-bomb limit."
    return blank_png(tmp_path_factory.mktemp("bomb") / "bomb.png", 13000, 13000)


def upload(client, path: Path, name: str | None = None, kind: str = "image/png"):
    return client.post("/predict", files={"file": (name or path.name, path.read_bytes(), kind)})


def test_health_and_info(images, runs):
    assert images.get("/health").json() == {"status": "ok"}
    info = images.get("/info").json()
    assert info["classes"] == ["3", "7"] and info["input"] == "image" and info["kind"] == "classification"
    assert info["run"] == "classification"  # the run's name: the server's paths are its own
    assert str(runs) not in images.get("/").text


def test_an_uploaded_image_gets_its_label_and_probabilities(images, runs):
    for digit in ("3", "7"):
        r = upload(images, runs / "classification" / f"{digit}.png")
        assert r.status_code == 200, r.text
        (row,) = r.json()["predictions"]
        assert row["input"] == f"{digit}.png" and row["label"] == digit
        probs = row["probabilities"]
        assert set(probs) == {"3", "7"} and sum(probs.values()) == pytest.approx(1, abs=1e-3)
        assert probs[digit] == row["probability"] > 0.5


@pytest.mark.parametrize("send, status, says", [
    (dict(files={"file": ("notes.txt", b"not an image at all", "text/plain")}), 415, "notes.txt is not an image"),
    (dict(files={"file": ("3.png", b"\x89PNG\r\n\x1a\n broken", "image/png")}), 415, "not an image"),
    (dict(files={"other": ("3.png", b"x", "image/png")}), 422, "multipart field `file`"),
    (dict(json={"text": "hello"}), 415, "multipart/form-data"),
])
def test_a_bad_upload_is_a_4xx_with_a_clear_message(images, send, status, says):
    r = images.post("/predict", **send)
    assert r.status_code == status and says in r.json()["error"], r.text
    assert "Traceback" not in r.text


def test_requests_beyond_the_queue_are_told_to_retry(runs, monkeypatch):
    from fxp.commands import serve

    monkeypatch.setattr(serve, "QUEUE", 0)
    r = upload(client(runs / "classification"), runs / "classification" / "3.png")
    assert r.status_code == 503 and "retry" in r.json()["error"]


def test_an_upload_over_the_limit_is_413(runs):
    small = client(runs / "classification", max_mb=0.0001)  # 104 bytes
    r = upload(small, runs / "classification" / "3.png")
    assert r.status_code == 413 and "MB" in r.json()["error"]


def test_table_rows_as_json(runs):
    "Rows in, fxp predict's salary predictions out, in order; a row without the model's columns is a 422."
    import pandas as pd

    tab = client(runs / "tabular")
    info = tab.get("/info").json()
    assert info["input"] == "table" and "education-num" in info["columns"] and "salary" not in info["columns"]
    rows = pd.read_csv(runs / "tabular" / "rows.csv", skipinitialspace=True).to_dict("records")
    r = tab.post("/predict", json={"rows": rows * 5})  # 15 rows: two CSV chunks for the kind
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 15 and [p["salary_pred"] for p in preds] == [p["salary_pred"] for p in preds[:3]] * 5
    assert all(p["salary_pred"] in ("<50k", ">=50k") and 0.5 <= p["probability"] <= 1 for p in preds)
    assert "warnings" not in r.json()
    r = tab.post("/predict", json={"row": {"age": 30}})
    assert r.status_code == 422 and "lacks the model's input columns: workclass" in r.json()["error"]
    json_type = {"Content-Type": "application/json"}
    assert tab.post("/predict", content=b"{not json", headers=json_type).status_code == 400
    assert tab.post("/predict", json={"rows": []}).status_code == 422
    page = tab.get("/").text
    assert all(f'name="{c}"' in page for c in info["columns"])


@pytest.fixture(scope="module")
def more(tmp_path_factory) -> Path:
    return copy_exported(tmp_path_factory.mktemp("serve-more"), "segmentation", "text")


def test_a_mask_comes_back_as_class_ids_with_the_colours_of_masks_png(more, tmp_path):
    "An index PNG of the image's size: each pixel the class id fxp predict writes, masks.png's colours as its palette."
    import base64
    import io

    import numpy as np
    from PIL import Image

    from fxp.tasks.segmentation import code_colours

    seg, photo = client(more / "segmentation"), more / "segmentation" / "0001TP_006750.png"
    classes = seg.get("/info").json()["classes"]
    (row,) = upload(seg, photo).json()["predictions"]
    head, _, data = row["mask"].partition(",")
    r = run_fxp("predict", more / "segmentation", photo, "--out", tmp_path / "masks", cwd=tmp_path)
    assert r.returncode == 0, r
    with (Image.open(io.BytesIO(base64.b64decode(data))) as mask, Image.open(photo) as im,
          Image.open(tmp_path / "masks" / "0001TP_006750_mask.png") as written):
        assert head == "data:image/png;base64" and mask.size == im.size and mask.mode == "P"
        ids = np.asarray(mask)
        assert (ids == np.asarray(written)).all() and ids.max() < len(classes)
        palette = np.asarray(mask.getpalette()[:3 * len(classes)]).reshape(-1, 3)
    colours = (code_colours(len(classes)) * 255).round()
    assert (palette == colours).all()
    shown = [classes[i] for i in np.unique(ids)]
    assert list(row["legend"]) == shown and set(row["shares"]) == set(shown)
    assert all(row["legend"][c] == "#" + bytes(colours[classes.index(c)].astype("uint8")).hex() for c in shown)


def test_a_text_is_text_never_a_path_of_the_server(more, tmp_path, monkeypatch):
    "A text naming a file of the server (with a space: the old guard took single words only) is classified as written."
    text = client(more / "text")
    assert text.get("/info").json()["classes"] == ["negative", "positive"]
    r = text.post("/predict", json={"texts": ["a dull film", "a wonderful film"]})
    assert r.status_code == 200 and [p["input"] for p in r.json()["predictions"]] == ["a dull film", "a wonderful film"]
    assert all(p["label"] in ("negative", "positive") for p in r.json()["predictions"])
    secret = tmp_path / "my notes.txt"
    secret.write_text("the server's own notes " * 100)
    read = []
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: read.append(self) or real(self, *a, **k))
    r = text.post("/predict", json={"text": str(secret)})
    assert r.status_code == 200 and r.json()["predictions"][0]["input"] == str(secret), r.text
    assert read and secret not in read  # the kind read the request's text (from a file of its own), not the notes
    for bad in ({"text": ""}, {"texts": "not a list"}):
        r = text.post("/predict", json=bad)
        assert r.status_code == 422 and r.json()["error"], bad
    assert 'id="text"' in text.get("/").text


@pytest.mark.parametrize("body, content_type", [
    (b"garbage", "multipart/form-data"),  # no boundary
    (b"garbage", "multipart/form-data; boundary=xx"),
    (b'--xx\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--xx--\r\n', "multipart/form-data; boundary=xx"),
    (b"--xx\r\nfoo\r\n\r\nabc\r\n--xx--\r\n", "multipart/form-data; boundary=xx"),
])
def test_a_malformed_multipart_body_is_400(images, body, content_type):
    r = images.post("/predict", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 400 and r.json()["error"].startswith("unreadable upload"), r.text


def test_each_file_part_gets_its_prediction(images, runs):
    files = [("file", (f"{d}.png", (runs / "classification" / f"{d}.png").read_bytes(), "image/png")) for d in "737"]
    r = images.post("/predict", files=files)
    assert r.status_code == 200, r.text
    answers = [(p["input"], p["label"]) for p in r.json()["predictions"]]
    assert answers == [("7.png", "7"), ("3.png", "3"), ("7.png", "7")]


def test_only_this_servers_host_names_and_same_site_posts_are_answered(runs, images):
    "DNS rebinding (another Host), a cross-site form (another Origin, or JSON sent as text/plain) are refused."
    image = (runs / "classification" / "3.png").read_bytes()
    r = images.get("/info", headers={"Host": "evil.example:8000"})
    assert r.status_code == 421 and "--allow-host" in r.json()["error"]
    assert images.get("/", headers={"Host": "localhost:8000"}).status_code == 200
    named = client(runs / "classification", hosts=["box.lan"])
    assert named.get("/info", headers={"Host": "box.lan"}).status_code == 200
    r = images.post("/predict", files={"file": ("3.png", image)}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "another site" in r.json()["error"]
    r = images.post("/predict", files={"file": ("3.png", image)}, headers={"Origin": "http://127.0.0.1:8000"})
    assert r.status_code == 200, r.text
    tab = client(runs / "tabular")
    r = tab.post("/predict", content=json.dumps({"row": {"age": 30}}), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]


def test_an_image_over_the_pixel_budget_is_refused_by_its_header(images, runs, bomb, tmp_path):
    """issue 30: 413 before anything decodes it, the server still up; fxp predict: one line. The fixture run trained
    at its images' own size with an fxp that did not record it: its model sees an input whole, so its budget is
    1024x1024; --max-pixels changes it."""
    r = upload(images, bomb)
    assert r.status_code == 413 and "13000x13000" in r.json()["error"], r.text
    assert images.get("/health").status_code == 200
    just_over = blank_png(tmp_path / "big.png", 1025, 1024)
    r = upload(images, just_over)
    assert r.status_code == 413 and "at most 1.0 megapixels" in r.json()["error"], r.text
    run = runs / "classification"
    assert_one_line_error(run_fxp("predict", run, bomb, cwd=tmp_path), "bomb.png is 13000x13000", "--max-pixels")
    r = run_fxp("predict", run, just_over, "--max-pixels", "2000000", "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["label"] in ("3", "7"), r
    assert client(run, max_pixels=2_000_000).post("/predict", files={"file": ("big.png", just_over.read_bytes())}
                                                   ).status_code == 200


def test_an_upload_is_resized_to_the_size_the_run_trained_at(runs, tmp_path):
    """A run trained at its images' own size (28x28 here, as fxp.train.export records it) sees a 32x larger copy of
    a digit at 28x28: labelled as the digit (seen whole, the 3 was called a 7), in one batch with the small ones."""
    import shutil

    from PIL import Image

    from fxp import saved
    from fxp.writer import write_pickle

    run = Path(shutil.copytree(runs / "classification", tmp_path / "sized"))
    learn = saved.load(run / "model.pkl")
    learn.input_size = (28, 28)
    write_pickle(run / "model.pkl", learn.export)  # as fxp.train.export writes it: its hash in pickles.json
    with Image.open(run / "3.png") as im:
        im.resize((896, 896), Image.NEAREST).save(tmp_path / "big3.png")
    files = [("file", (f.name, f.read_bytes(), "image/png")) for f in (tmp_path / "big3.png", run / "7.png")]
    r = client(run).post("/predict", files=files)
    assert r.status_code == 200, r.text
    (big, small) = r.json()["predictions"]
    assert (big["label"], small["label"]) == ("3", "7") and big["probability"] > 0.9
    assert client(run).get("/info").json()["max_pixels"] == 2048 * 2048  # the floor: 16x28 on each side is less


def test_a_category_the_model_never_saw_is_named_with_the_closest_known_one(runs, tmp_path):
    "fxp predict warns on stderr, fxp serve in the answer; the page offers the known values."
    import pandas as pd

    rows = pd.read_csv(runs / "tabular" / "rows.csv", skipinitialspace=True)
    rows.loc[0, "workclass"] = "private"
    rows.to_csv(tmp_path / "lower.csv", index=False)
    r = run_fxp("predict", runs / "tabular", tmp_path / "lower.csv", cwd=tmp_path)
    assert r.returncode == 0, r
    (warning,) = [ln for ln in r.err_lines if ln.startswith("fxp: warning:")]
    assert "lower.csv: column 'workclass': 'private' (closest: 'Private')" in warning and "Self-emp-inc" in warning
    tab = client(runs / "tabular")
    r = tab.post("/predict", json={"rows": rows.to_dict("records")})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3
    (warning,) = r.json()["warnings"]
    assert warning.startswith("the request: column 'workclass': 'private' (closest: 'Private')"), warning
    assert tab.get("/info").json()["categories"]["workclass"][:3] == ["?", "Federal-gov", "Local-gov"]
    assert '<select class="col" name="workclass"><option value=""></option><option>?</option>' in tab.get("/").text


@pytest.mark.slow
def test_tabular_predict_says_only_what_the_user_needs_on_stderr(runs, tmp_path):
    """A fresh process (torch warns once per process): the unknown category and where the predictions went, not
    fastai's "The given NumPy array is not writable" (its batches now read writable copies of pandas' arrays)."""
    import pandas as pd

    rows = pd.read_csv(runs / "tabular" / "rows.csv", skipinitialspace=True)
    rows.loc[0, "workclass"] = "private"
    rows.to_csv(tmp_path / "lower.csv", index=False)
    r = run_installed("predict", runs / "tabular", tmp_path / "lower.csv", cwd=tmp_path)
    assert r.returncode == 0, r
    assert len(r.err_lines) == 2, r
    warning, wrote = r.err_lines
    assert warning.startswith("fxp: warning: lower.csv: column 'workclass'") and wrote.startswith("wrote 3 predictions")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_image(url: str, path: Path) -> tuple[int, dict]:
    "The status and JSON answer of a multipart upload of `path`, as curl -F sends it."
    boundary = "fxpboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def peak_rss_mb(pid: int) -> float:
    "The process's peak resident memory (VmHWM), in MB."
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def wait_up(url: str, running, output) -> None:
    "Until the server at `url` answers /health; fails with its `output()` once `running()` is false or after 60 s."
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                assert json.loads(r.read()) == {"status": "ok"}
            return
        except OSError:
            assert running() and time.time() < deadline, output()
            time.sleep(0.1)


@contextmanager
def serving(run: Path, cwd: Path):
    """`fxp serve RUN` on a free port in a child forked from this worker (conftest.forked), its output in
    cwd/serve-<port>.txt: its URL once it answers; stopped with SIGTERM (uvicorn shuts down) at the end."""
    port = free_port()
    console = cwd / f"serve-{port}.txt"
    pid = forked(cwd, "serve", run, "--port", str(port), console=console.name)
    try:
        wait_up(f"http://127.0.0.1:{port}", lambda: os.waitpid(pid, os.WNOHANG) == (0, 0), console.read_text)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(pid)


def stop(pid: int) -> None:
    "SIGTERM, then SIGKILL if the child has not ended within 30 s; reaped either way."
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 30
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.time() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.05)
    except (ChildProcessError, ProcessLookupError):  # ended and reaped already (wait_up saw it die)
        pass


@pytest.mark.slow
def test_the_real_server_survives_a_pixel_bomb_answers_20_requests_at_once_and_its_page_works(runs, bomb, tmp_path):
    """issue 30: a 164 KB 13000x13000 PNG and a 9000x9000 RGB one get 413, /health still answers, and the server's
    peak memory stays under 1 GB (it was killed for memory, or peaked at 4.3 GB)."""
    from browser import page

    run, port = runs / "classification", free_port()
    proc = start_fxp("serve", run, "--port", str(port), cwd=runs)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, lambda: proc.poll() is None, proc.communicate)
        started = peak_rss_mb(proc.pid)  # torch and fastai imported: about 870 MB
        for image in (bomb, blank_png(tmp_path / "rgb.png", 9000, 9000, "RGB")):
            status, answer = post_image(f"{url}/predict", image)
            assert status == 413 and "megapixels" in answer["error"], answer
        assert peak_rss_mb(proc.pid) - started < 50  # refused by the header: nothing decoded
        status, answer = post_image(f"{url}/predict", blank_png(tmp_path / "edge.png", 1024, 1024, "RGB"))
        assert status == 200, answer  # the budget itself, seen whole by this run's model: about 60 MB more
        digits = ["3", "7"] * 10
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda d: post_image(f"{url}/predict", run / f"{d}.png"), digits))
        assert [a["predictions"][0]["label"] for _, a in answers] == digits
        with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
            assert r.status == 200
        assert peak_rss_mb(proc.pid) < 1024
        with page() as tab:
            tab.goto(url)
            tab.set_input_files("#file", str(run / "7.png"))
            tab.click("#go")
            tab.wait_for_function("document.getElementById('label').textContent !== ''", timeout=30_000)
            assert tab.inner_text("#label") == "7"
            assert "probability" in tab.inner_text("#result")
            tab.set_input_files("#file", str(run / "config.yaml"))
            tab.click("#go")
            tab.wait_for_function("document.getElementById('error').textContent !== ''", timeout=30_000)
            assert "not an image" in tab.inner_text("#error")
            assert len(tab.console_errors) == 1 and "415" in tab.console_errors[0], tab.console_errors  # the refusal
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.mark.slow
def test_the_page_shows_a_mask_over_its_image_with_a_legend_and_offers_known_categories(more, runs):
    "issue 21: the mask in masks.png's colours over the photo, a legend of its classes; a table's form of choices."
    from browser import chromium_path, page

    chromium_path()  # skips before starting servers where there is no browser
    photo = more / "segmentation" / "0001TP_006750.png"
    with serving(more / "segmentation", more) as seg_url, serving(runs / "tabular", runs) as tab_url, page() as tab:
        tab.goto(seg_url)
        tab.set_input_files("#file", str(photo))
        tab.click("#go")
        tab.wait_for_function("document.querySelectorAll('#legend span').length > 0", timeout=30_000)
        assert tab.eval_on_selector("#mask", "m => !m.hidden && m.naturalWidth") == 128  # the photo's width
        box, over = tab.locator("#preview").bounding_box(), tab.locator("#mask").bounding_box()
        assert (box["x"], box["y"], box["width"]) == (over["x"], over["y"], over["width"])
        legend = tab.eval_on_selector_all("#legend span", "items => items.map(i => i.textContent.trim())")
        classes = json.loads(urllib.request.urlopen(f"{seg_url}/info").read())["classes"]
        assert legend and all(name in classes for name in legend), legend
        tab.goto(tab_url)
        assert "Private" in tab.eval_on_selector("select[name=workclass]", "s => [...s.options].map(o => o.text)")
        for col, value in (("age", "40"), ("fnlwgt", "100000"), ("education-num", "13")):
            tab.fill(f"input[name={col}]", value)
        tab.select_option("select[name=workclass]", "Private")
        tab.click("#go")
        tab.wait_for_function("document.getElementById('label').textContent !== ''", timeout=30_000)
        assert tab.inner_text("#label") in ("<50k", ">=50k") and not tab.inner_text("#warnings")
        assert tab.console_errors == []


# --- audio: a wav upload (the session's small fsdd run) ---------------------------------------------------------------


@pytest.mark.slow
def test_an_uploaded_wav_gets_the_label_fxp_predict_gives_and_a_non_audio_file_is_415(fsdd_run, runs, tmp_path):
    "issue 24: the audio kind served; the same clip gets the label and probability `fxp predict` prints."
    from conftest import need_data

    clip = need_data("fsdd") / "recordings" / "7_theo_0.wav"
    audio = client(fsdd_run)
    info = audio.get("/info").json()
    assert info["input"] == "audio" and info["kind"] == "audio" and len(info["classes"]) == 10, info
    r = upload(audio, clip, kind="audio/wav")
    assert r.status_code == 200, r.text
    (row,) = r.json()["predictions"]
    cli = run_fxp("predict", fsdd_run, clip, "--json", cwd=tmp_path)
    assert cli.returncode == 0, cli
    expected = json.loads(cli.stdout)[0]
    assert row["input"] == clip.name and row["label"] == expected["label"] in info["classes"]
    assert row["probability"] == pytest.approx(expected["probability"], abs=1e-3)
    assert sum(row["probabilities"].values()) <= 1 + 1e-3
    png = (runs / "classification" / "7.png").read_bytes()
    for name, data in (("notes.wav", b"hello, not a sound"), ("empty.wav", b""), ("7.png", png)):
        r = audio.post("/predict", files={"file": (name, data, "audio/wav")})
        assert r.status_code == 415 and f"{name} is not a sound file" in r.json()["error"], (name, r.text)


@pytest.mark.slow
def test_the_page_takes_a_wav_upload_in_a_real_browser(fsdd_run, tmp_path):
    "issue 24's done-when: the served page of an audio run, a wav chosen and sent in headless Chromium."
    from browser import chromium_path, page
    from conftest import need_data

    chromium_path()  # skips before starting the server where there is no browser
    clip = need_data("fsdd") / "recordings" / "7_theo_0.wav"
    with serving(fsdd_run, tmp_path) as url, page() as tab:
        tab.goto(url)
        tab.set_input_files("#file", str(clip))
        tab.click("#go")
        tab.wait_for_function("document.getElementById('label').textContent !== ''", timeout=30_000)
        assert tab.inner_text("#label") == post_label(url, clip)
        assert "probability" in tab.inner_text("#result")
        assert tab.console_errors == [], tab.console_errors


def post_label(url: str, clip: Path) -> str:
    "The label the server's API gives `clip` (what the page must show)."
    status, answer = post_image(f"{url}/predict", clip)
    assert status == 200, answer
    return answer["predictions"][0]["label"]
