"""fastai's tabular loader with each batch cut from tensors made once an epoch from the whole table.

fastai's TabDataLoader takes a pandas `iloc` of every batch and converts it (ReadTabBatch): on MovieLens 100k that was
1.3 ms of a 5 ms CPU step (1,250 batches an epoch) and would be most of a GPU step. The batches, their order and the
random draws are fastai's own, so a run's numbers do not change (tests/test_tables.py).
"""
from __future__ import annotations

import torch
from fastai.tabular.core import ReadTabBatch, TabWeightedDL
from fastai.torch_core import to_device


class TableDL(TabWeightedDL):  # fastai makes TabWeightedDL every TabularPandas' loader type (uniform weights)
    "Batches indexed out of the whole table's tensors (ReadTabBatch applied once to the table, not once a batch)."

    def __iter__(self):
        if not self._plain():
            yield from super().__iter__()
            return
        self.randomize()
        self.before_iter()
        idxs = torch.as_tensor(self.get_idxs(), dtype=torch.long)
        torch.empty((), dtype=torch.int64).random_()  # the seed torch's DataLoader draws as it starts: same RNG stream
        whole = self.after_batch.fs[0](self.dataset)
        for b in idxs.split(self.bs):
            if self.drop_last and len(b) < self.bs:
                break
            batch = tuple(_rows(t, b) for t in whole)
            yield batch if self.device is None else to_device(batch, self.device)
        self.after_iter()

    def _plain(self) -> bool:
        "Only ReadTabBatch after batching, no worker processes: anything else goes through fastai's own path."
        fs = self.after_batch.fs
        return len(fs) == 1 and isinstance(fs[0], ReadTabBatch) and self.fake_l.num_workers == 0


def _rows(t: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rows `b` of `t`, column-major when `t` is (pandas' blocks make fastai's batches so): a linear layer then sums
    in the same order, and a run stays bit-identical to fastai's (tests/tasks/test_tabular.py)."""
    return t.T[:, b].T if t.dim() == 2 and not t.is_contiguous() else t[b]
