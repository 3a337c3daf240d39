"""The first run on a machine fxp never ran on: no font cache, no config folders (issue 30, item 1)."""
from __future__ import annotations

import logging

import pytest

from conftest import newest_run, run_installed, subprocess_env, summary
from fxp.errors import FxpError
from fxp.runs import LOG
from fxp.writer import check_claimable


def test_claim_ignores_the_log_this_process_writes(tmp_path):
    "Lines logged into the run's own train.log before the claim (an import's notice) do not make the folder taken."
    run = tmp_path / "run"
    run.mkdir()
    handler = logging.FileHandler(run / LOG)
    logging.getLogger().addHandler(handler)
    try:
        logging.getLogger("matplotlib.font_manager").warning("generated new fontManager")
        handler.flush()
        assert (run / LOG).stat().st_size > 0
        check_claimable(run)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    with pytest.raises(FxpError, match="not empty"):  # another process's log: the folder holds something
        check_claimable(run)


@pytest.mark.slow
def test_first_train_with_a_fresh_home(tmp_path):
    "`HOME=$(mktemp -d) fxp train trainer.epochs=1`: matplotlib builds its font cache (and logs it) on the way."
    home = tmp_path / "home"
    home.mkdir()
    env = subprocess_env(tmp_path)
    for key in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        env.pop(key, None)
    env["HOME"] = str(home)
    r = run_installed("train", "trainer.epochs=1", cwd=tmp_path, env=env)
    assert r.returncode == 0, r
    run = newest_run(tmp_path)
    assert summary(run)["status"] == "completed"
    assert summary(run)["final_metrics"]["accuracy"] > 0.5
    assert (home / ".cache" / "matplotlib").is_dir()  # the cache was really built in this run
