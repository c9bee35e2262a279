"""The batch contract of SequenceDataModule, shuffling, caching and a Lightning run."""

from __future__ import annotations

import pickle

import pytest
import torch

from autoprune.errors import TaskError
from autoprune.tasks import SequenceDataModule, build_task


@pytest.fixture
def dm():
    return build_task("synthetic:sines", seed=3, batch_size=16)


def test_batches_are_trimmed_typed_and_zero_padded(dm):
    n_seen = 0
    for loader, n in ((dm.train_dataloader(), dm.n_train), (dm.val_dataloader(), dm.n_val),
                      (dm.test_dataloader(), dm.n_test)):
        assert len(loader) == -(-n // 16)
        total = 0
        for batch in loader:
            assert isinstance(batch, tuple) and len(batch) == 3
            x, lengths, y = batch
            assert x.dtype == torch.float32 and lengths.dtype == y.dtype == torch.int64
            assert x.shape == (len(y), int(lengths.max()), dm.n_channels)
            assert x.is_contiguous()
            pad = torch.arange(x.shape[1])[None, :] >= lengths[:, None]
            assert bool((x[pad] == 0).all()) and bool((x[~pad] != 0).any())
            total += len(y)
        n_seen += total
        assert total == n  # drop_last=False
    assert n_seen == 300


def test_val_and_test_keep_order_and_match_tensors(dm):
    x, lengths, y = dm.tensors("val")
    got = torch.cat([b[2] for b in dm.val_dataloader()])
    assert torch.equal(got, y)
    first = next(iter(dm.test_dataloader()))
    xt, lt, _ = dm.tensors("test")
    assert torch.equal(first[0], xt[:16, : int(lt[:16].max())])
    assert x.shape[1] == dm.max_length


def test_train_shuffle_differs_per_epoch_and_is_reproducible():
    def epochs(seed, n=3):
        loader = build_task("synthetic:sines", seed=seed, batch_size=16).train_dataloader()
        return [torch.cat([b[2] for b in loader]) for _ in range(n)]

    a, b = epochs(0), epochs(0)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])
    # Lightning calls set_epoch: epoch e always gives the same order (resume-safe)
    loader = build_task("synthetic:sines", seed=0, batch_size=16).train_dataloader()
    loader.sampler.set_epoch(2)
    assert torch.equal(torch.cat([b[2] for b in loader]), a[2])


def test_setup_is_idempotent_and_loading_is_cached(monkeypatch):
    import aeon.datasets

    calls = []
    real = aeon.datasets.load_classification
    monkeypatch.setattr(aeon.datasets, "load_classification",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    dm = build_task("uea:JapaneseVowels")
    assert calls == []  # lazy: nothing read before setup
    dm.setup()
    x = dm.tensors("train")[0]
    dm.setup("fit")
    assert dm.tensors("train")[0] is x and len(calls) == 2  # train + test files
    again = build_task("uea:JapaneseVowels")
    again.setup()
    assert len(calls) == 2  # served from the in-process cache
    assert torch.equal(again.tensors("test")[0], dm.tensors("test")[0])
    assert build_task("uea:JapaneseVowels", seed=1).n_train == dm.n_train
    assert len(calls) == 4  # another seed: loaded again (key is spec, seed, options)


def test_data_module_pickles(dm):
    dm.setup()
    clone = pickle.loads(pickle.dumps(dm))
    assert torch.equal(clone.tensors("val")[2], dm.tensors("val")[2])
    fresh = pickle.loads(pickle.dumps(build_task("synthetic:parity")))
    assert fresh.n_classes == 2


def test_unknown_split(dm):
    with pytest.raises(TaskError, match="unknown split 'dev'; valid splits: train, val, test"):
        dm.tensors("dev")


def test_from_arrays_and_bad_labels():
    x = [torch.ones(3, 2).numpy()] * 10
    ok = SequenceDataModule.from_arrays("toy", x, ["a", "b"] * 5, x[:4], ["b", "a"] * 2,
                                        val_fraction=0.2)
    assert ok.class_names == ["a", "b"] and ok.n_val == 2
    bad = SequenceDataModule.from_arrays("toy", x, ["a", "b"] * 5, x[:4], ["a", "c"] * 2)
    with pytest.raises(TaskError, match=r"task 'toy': the test split has labels never seen "
                                        r"in train: \['c'\]"):
        bad.setup()


def test_unstratified_fallback_warns(caplog):
    x = [torch.ones(3, 1).numpy()] * 10
    dm = SequenceDataModule.from_arrays("rare", x, [0] * 9 + [1], x[:2], [0, 1])
    dm.setup()
    assert "not stratified" in caplog.text and dm.n_val == 2


def test_lightning_fit_runs_on_the_loaders():
    import lightning.pytorch as pl

    class Tiny(pl.LightningModule):
        def __init__(self, c, k):
            super().__init__()
            self.rnn, self.head = torch.nn.GRU(c, 8, batch_first=True), torch.nn.Linear(8, k)
            self.epochs_seen = []

        def training_step(self, batch, _):
            x, lengths, y = batch
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                x, lengths, batch_first=True, enforce_sorted=False)
            _, h = self.rnn(packed)
            return torch.nn.functional.cross_entropy(self.head(h[-1]), y)

        def on_train_epoch_start(self):
            self.epochs_seen.append(self.trainer.train_dataloader.sampler.epoch)

        def validation_step(self, batch, _):
            x, lengths, _y = batch
            assert x.shape[1] == int(lengths.max())

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.01)

    dm = build_task("synthetic:sines", batch_size=32)
    model = Tiny(dm.n_channels, dm.n_classes)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert model.epochs_seen == [0, 1]
