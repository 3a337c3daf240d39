"""What fxp says about the data: labels no font draws (issue 30 item 11), fxp clean's lists (issue 21 item 9)."""
from __future__ import annotations

import os
import sys
import warnings

import pytest


def test_characters_no_font_draws_are_one_note(tmp_path, capsys, monkeypatch):
    "Class names in a script no installed font has: one note per process naming them, not a warning per glyph."
    import matplotlib.pyplot as plt

    from fxp import plots

    monkeypatch.setattr(plots, "_noted", [], raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(2):
            fig, ax = plt.subplots()
            ax.set_xticks([0, 1], ["ネコ", "イヌ"])
            plots.save(fig, tmp_path / f"{i}.png")
    assert not [w for w in caught if "Glyph" in str(w.message)]
    err = capsys.readouterr().err
    assert err.count("fxp: note:") == 1 and "ネコイヌ" in err, err
    assert (tmp_path / "1.png").stat().st_size > 0


def test_other_warnings_of_a_figure_pass_through(tmp_path):
    import matplotlib.pyplot as plt

    from fxp import plots

    fig, ax = plt.subplots()
    with pytest.warns(UserWarning, match="not a glyph"):
        with plots.glyphs_noted():
            warnings.warn("not a glyph", UserWarning, stacklevel=1)
    plt.close(fig)


def marked(tmp_path, root, actions: dict):
    "fxp clean's CSV marking `actions` ({file under root: action})."
    import pandas as pd

    pd.DataFrame({"file": [f.relative_to(root).as_posix() for f in actions], "action": list(actions.values())}
                 ).to_csv(tmp_path / "marked.csv", index=False)
    return str(tmp_path / "marked.csv")


def test_relabel_to_a_label_that_is_no_class_is_refused_naming_the_classes(tmp_path):
    from types import SimpleNamespace

    from fastai.data.transforms import parent_label

    from conftest import mnist_subset
    from fxp.data import curate, item_key
    from fxp.errors import FxpError

    root = mnist_subset(tmp_path / "tiny", n=2, splits=("train",))
    files = sorted(root.rglob("*.png"))
    data = SimpleNamespace(exclude=None, relabel=marked(tmp_path, root, {files[0]: "relabel:8"}))
    with pytest.raises(FxpError, match=r"relabels train/3/\S+ as '8', which is not a class .*2 classes: 3, 7"):
        curate(files, parent_label, data, item_key(root))


def test_relabel_keeps_the_type_of_the_data_labels(tmp_path, capsys):
    "A CSV's numeric labels: relabel:7 is the class 7, not a new class '7'; the line says what the lists changed."
    from types import SimpleNamespace

    import pandas as pd
    from fastai.data.transforms import ColReader

    from fxp.data import curate, item_key

    root = tmp_path
    rows = pd.DataFrame({"name": ["a.png", "b.png", "c.png", "d.png"], "label": [3, 3, 7, 7]})
    listed = {root / "a.png": "relabel:7", root / "b.png": "delete"}
    data = SimpleNamespace(exclude=marked(tmp_path, root, listed), relabel=marked(tmp_path, root, listed))
    items, get_y, info = curate(rows, ColReader("label"), data, item_key(root, ColReader("name", pref=root)))
    assert list(items.name) == ["a.png", "c.png", "d.png"]
    assert [get_y(r) for _, r in items.iterrows()] == [7, 7, 7] and all(type(get_y(r)) is not str
                                                                      for _, r in items.iterrows())
    assert "data.exclude: 1 of 4 items left out; data.relabel: 1 item(s) relabelled" in capsys.readouterr().out


@pytest.mark.slow
def test_fxp_show_says_what_the_lists_changed(fxp, tmp_path):
    from conftest import mnist_subset

    root = mnist_subset(tmp_path / "tiny", n=4)
    files = sorted((root / "train").rglob("*.png"))
    csv = marked(tmp_path, root, {files[0]: "delete"})
    r = fxp("show", "task=mnist", f"data.path={root}", f"data.exclude={csv}", "trainer.bs=2")
    assert r.returncode == 0, r
    assert "data.exclude: 1 of 16 items left out" in r.stdout, r


def test_ranks_get_their_threads_so_accelerate_does_not_warn(tmp_path, monkeypatch):
    """trainer.devices=2 without OMP_NUM_THREADS: the ranks start with it set (Accelerate warned once per rank that it
    set it itself, issue 21 item 14); the launching process's environment is left as it was."""
    pytest.importorskip("accelerate")
    from types import SimpleNamespace

    import torch
    from omegaconf import OmegaConf
    from torch.distributed.launcher import api

    from fxp import distributed
    from fxp.schema import Config

    seen = {}

    def launcher(config, entrypoint):
        seen["threads"] = os.environ.get("OMP_NUM_THREADS")
        return lambda *args: None

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(api, "elastic_launch", launcher)
    cfg = OmegaConf.merge(OmegaConf.structured(Config), {"trainer": {"devices": 2}})
    distributed.launch(cfg, SimpleNamespace(path=tmp_path, resume=None, info={}), torch.device("cpu"))
    assert seen["threads"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert "OMP_NUM_THREADS" not in os.environ


def test_the_sweepers_database_set_up_is_quiet(tmp_path, monkeypatch):
    """alembic's seven `setup plugin ...` INFO lines as Optuna opens study.db do not reach Hydra's console (issue 21
    item 14)."""
    import logging

    from fxp import apps

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(logging.getLogger("alembic"), "level", logging.NOTSET)
    monkeypatch.setattr(logging.getLogger(), "level", logging.INFO)  # as Hydra's logging sets it
    logging.getLogger().manager._clear_cache()
    monkeypatch.setattr(sys, "argv", sys.argv[:])
    apps.hydra_command(lambda: None)(["trainer.epochs=1"])
    assert not logging.getLogger("alembic.runtime.plugins").isEnabledFor(logging.INFO)
    assert logging.getLogger("alembic.runtime.plugins").isEnabledFor(logging.WARNING)
