"""A run folder on a full disk: the run ends `failed` with its cause ("No space left on device") in one line and in
summary.json, not fastai's bare "Exception occured in ..."; no plot is left torn (0 B); train.log that cannot be
written costs one line, not a traceback per record. The full file system is a small tmpfs (root only, else skipped)
or /dev/full.
"""
from __future__ import annotations

import errno
import json
import logging
import logging.config

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import run_fxp, tmpfs
from fxp import config, errors, plots
from fxp.writer import write_atomic


@pytest.mark.slow
def test_full_run_folder_names_the_cause(tmp_path):
    with tmpfs(tmp_path / "small", "150k") as small:
        r = run_fxp("train", "trainer.epochs=1", f"hydra.run.dir={small / 'run'}", cwd=tmp_path)
        assert r.returncode == 1, r
        (line,) = [ln for ln in r.stderr.splitlines() if ln.strip()]  # no "--- Logging error ---" before it
        assert "No space left on device" in line and "Exception occured" not in line, line
        summary = json.loads((small / "run" / "summary.json").read_text())
        assert summary["status"] == "failed" and "No space left on device" in summary["error"], summary
        assert not [p for p in small.rglob("*.png") if p.stat().st_size == 0]  # no torn plot


@pytest.mark.parametrize("error, described", [
    (ValueError("the real cause\nmore"), "ValueError: the real cause (in Boom.after_epoch)"),
    (OSError(errno.ENOSPC, "No space left on device", "last.pth.tmp"),
     "OSError: [Errno 28] No space left on device: 'last.pth.tmp' (in Boom.after_epoch)")])
def test_fastai_callback_wrapper_is_unwrapped(error, described):
    from fastai.callback.core import Callback

    class Boom(Callback):
        def after_epoch(self):
            raise error

    with pytest.raises(type(error)) as e:
        Boom()("after_epoch")
    assert errors.describe(e.value) == described


def test_opaque_write_failure_on_a_full_disk_is_enospc(tmp_path):
    "torch.save's zip writer turns ENOSPC into `unexpected pos`: write_atomic says what it was."
    def torch_like(path):
        with open(path, "wb") as f:
            f.write(b"x" * 400_000)  # more than the disk holds
            f.flush()

    def opaque(path):
        try:
            torch_like(path)
        except OSError:
            pass
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    with tmpfs(tmp_path / "small", "100k") as small:
        with pytest.raises(OSError) as e:
            write_atomic(small / "last.pth", opaque)
        assert e.value.errno == errno.ENOSPC and "last.pth" in str(e.value)
        assert not list(small.iterdir())  # the temp file is gone


def test_plot_on_a_full_disk_leaves_the_old_file(tmp_path):
    import matplotlib.pyplot as plt

    with tmpfs(tmp_path / "small", "100k") as small:
        dest = small / "plots" / "loss_curves.png"
        dest.parent.mkdir()
        dest.write_bytes(b"old plot")
        (small / "filler").write_bytes(b"\0" * 90_000)  # 8 kB left
        fig, ax = plt.subplots()
        ax.imshow(np.random.default_rng(0).random((200, 200)))  # noise: a PNG far larger than what is left
        with pytest.raises(OSError):
            plots.save(fig, dest)
        assert dest.read_bytes() == b"old plot" and sorted(p.name for p in dest.parent.iterdir()) == [dest.name]


def test_log_file_that_cannot_be_written_says_so_once(capsys):
    "Hydra's job logging (conf/hydra/job_logging/fxp.yaml) with train.log on /dev/full: one line, then quiet."
    cfg = OmegaConf.to_container(OmegaConf.load(config.conf_dir() / "hydra" / "job_logging" / "fxp.yaml"))
    cfg["handlers"]["file"]["filename"] = "/dev/full"
    cfg["root"]["handlers"] = ["file"]
    log = logging.getLogger("fxp.test_full_disk")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logging.config.dictConfig(cfg)
        for i in range(4):
            log.info("epoch %d", i)
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    assert "Logging error" not in err and len(err.splitlines()) == 1 and "/dev/full" in err, err
