"""What fxp says about the data: labels no font draws (issue 30 item 11), fxp clean's lists (issue 21 item 9)."""
from __future__ import annotations

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
            warnings.warn("not a glyph", UserWarning)
    plt.close(fig)
