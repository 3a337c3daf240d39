"""`fxp serve`: the JSON API and the page, on the exported learners of tests/fixtures/exported (no training).

Most tests call the Starlette app in this process (TestClient); one starts the real `fxp serve` command (uvicorn on a
free port) and sends it 20 requests at once, then drives its page in headless Chromium.
"""
from __future__ import annotations

import json
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import copy_exported, start_fxp



@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return copy_exported(tmp_path_factory.mktemp("serve"), "classification", "tabular")


@pytest.fixture(scope="module")
def images(runs):
    from starlette.testclient import TestClient

    from fxp.commands.serve import make_app

    return TestClient(make_app(runs / "classification"))


def upload(client, path: Path, name: str | None = None, kind: str = "image/png"):
    return client.post("/predict", files={"file": (name or path.name, path.read_bytes(), kind)})


def test_health_and_info(images, runs):
    assert images.get("/health").json() == {"status": "ok"}
    info = images.get("/info").json()
    assert info["classes"] == ["3", "7"] and info["input"] == "image" and info["kind"] == "classification"
    assert info["run"] == str((runs / "classification").resolve())


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


def test_an_upload_over_the_limit_is_413(runs):
    from starlette.testclient import TestClient

    from fxp.commands.serve import make_app

    small = TestClient(make_app(runs / "classification", max_mb=0.0001))  # 104 bytes
    r = upload(small, runs / "classification" / "3.png")
    assert r.status_code == 413 and "MB" in r.json()["error"]


def test_table_rows_as_json(runs):
    "Rows in, fxp predict's salary predictions out, in order; a row without the model's columns is a 422."
    import pandas as pd
    from starlette.testclient import TestClient

    from fxp.commands.serve import make_app

    client = TestClient(make_app(runs / "tabular"))
    info = client.get("/info").json()
    assert info["input"] == "table" and "education-num" in info["columns"] and "salary" not in info["columns"]
    rows = pd.read_csv(runs / "tabular" / "rows.csv", skipinitialspace=True).to_dict("records")
    r = client.post("/predict", json={"rows": rows * 5})  # 15 rows: two CSV chunks for the kind
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 15 and [p["salary_pred"] for p in preds] == [p["salary_pred"] for p in preds[:3]] * 5
    assert all(p["salary_pred"] in ("<50k", ">=50k") and 0.5 <= p["probability"] <= 1 for p in preds)
    r = client.post("/predict", json={"row": {"age": 30}})
    assert r.status_code == 422 and "lacks the model's input columns: workclass" in r.json()["error"]
    assert client.post("/predict", content=b"{not json").status_code == 400
    assert client.post("/predict", json={"rows": []}).status_code == 422
    page = client.get("/").text
    assert all(f'name="{c}"' in page for c in info["columns"])


def test_a_segmentation_mask_and_a_text_label(tmp_path):
    "The mask comes back as a PNG data URL of the image's size; a text run takes JSON texts (never a file name)."
    import base64
    import io

    from PIL import Image
    from starlette.testclient import TestClient

    from fxp.commands.serve import make_app

    copy_exported(tmp_path, "segmentation", "text")
    seg = TestClient(make_app(tmp_path / "segmentation"))
    assert "Road" in seg.get("/info").json()["classes"]
    photo = tmp_path / "segmentation" / "0001TP_006750.png"
    (row,) = upload(seg, photo).json()["predictions"]
    head, _, data = row["mask"].partition(",")
    with Image.open(io.BytesIO(base64.b64decode(data))) as mask, Image.open(photo) as im:
        assert head == "data:image/png;base64" and mask.size == im.size
    assert sum(row["shares"].values()) == pytest.approx(1, abs=1e-3)
    text = TestClient(make_app(tmp_path / "text"))
    assert text.get("/info").json()["classes"] == ["negative", "positive"]
    r = text.post("/predict", json={"texts": ["a dull film", "a wonderful film"]})
    assert r.status_code == 200 and [p["input"] for p in r.json()["predictions"]] == ["a dull film", "a wonderful film"]
    assert all(p["label"] in ("negative", "positive") for p in r.json()["predictions"])
    for bad in ({"text": ""}, {"text": "/etc/review.txt"}, {"texts": "not a list"}):
        r = text.post("/predict", json=bad)
        assert r.status_code == 422 and r.json()["error"], bad
    assert 'id="text"' in text.get("/").text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_image(url: str, path: Path) -> dict:
    boundary = "fxpboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_the_real_server_answers_20_requests_at_once_and_its_page_works(runs):
    from browser import page

    run, port = runs / "classification", free_port()
    proc = start_fxp("serve", run, "--port", str(port), cwd=runs)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    assert json.loads(r.read()) == {"status": "ok"}
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.communicate()
                time.sleep(0.3)
        digits = ["3", "7"] * 10
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda d: post_image(f"{url}/predict", run / f"{d}.png"), digits))
        assert [a["predictions"][0]["label"] for a in answers] == digits
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
