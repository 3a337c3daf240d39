"""fxp.tables.TableDL: fastai's tabular batches, cut from tensors made once an epoch, are fastai's own batches."""
import pandas as pd
import torch
from fastai.collab import CollabDataLoaders
from fastai.tabular.core import Categorify, FillMissing, Normalize, TabularPandas, TabWeightedDL
from fastai.torch_core import set_seed

from conftest import need_data
from fxp.tables import TableDL


def epochs(dls, n: int = 2) -> list:
    "The training batches of `n` epochs after seeding, then the validation batches, with the torch draws that follow."
    set_seed(7)
    out = [b for _ in range(n) for b in dls.train] + list(dls.valid)
    return out + [torch.rand(3)]


def same(a: list, b: list) -> bool:
    "Equal tensors with equal strides (a model sums a column-major batch in another order: other last bits)."
    def layout(x):
        return [s for s, n in zip(x.stride(), x.shape) if n > 1]  # a length-1 dimension's stride means nothing

    def equal(x, y):
        return torch.equal(x, y) and x.dtype == y.dtype and layout(x) == layout(y)
    return len(a) == len(b) and all(
        all(map(equal, p, q)) if isinstance(p, tuple) else equal(p, q) for p, q in zip(a, b))


def test_collab_batches_and_random_stream_are_fastais():
    df = pd.read_csv(need_data("movie_lens_sample") / "ratings.csv")
    kw = dict(valid_pct=0.2, user_name="userId", item_name="movieId", rating_name="rating", seed=1, bs=64,
              device="cpu")
    ours, theirs = (CollabDataLoaders.from_df(df, dl_type=t, **kw) for t in (TableDL, TabWeightedDL))
    assert type(ours.train) is TableDL and type(theirs.train) is TabWeightedDL
    assert same(epochs(ours), epochs(theirs))


def test_tabular_batches_with_continuous_columns_are_fastais():
    df = pd.read_csv(need_data("adult_sample") / "adult.csv", nrows=600)
    splits = (list(range(500)), list(range(500, 600)))
    to = TabularPandas(df, [Categorify, FillMissing, Normalize], ["workclass", "education"], ["age", "fnlwgt"],
                       y_names="salary", splits=splits)
    ours, theirs = (to.dataloaders(bs=32, device="cpu", dl_type=t) for t in (TableDL, TabWeightedDL))
    batch = next(iter(ours.valid))
    assert [t.dtype for t in batch] == [torch.int64, torch.float32, torch.int8]  # cats, conts, the class codes
    assert same(epochs(ours), epochs(theirs))
    assert same(list(ours.test_dl(df.iloc[:70])), list(theirs.test_dl(df.iloc[:70])))
