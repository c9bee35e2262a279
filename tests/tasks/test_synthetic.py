"""Generated tasks: deterministic in the seed, unequal lengths, learnable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoprune.tasks import build_task


@pytest.mark.parametrize("name", ["sines", "parity"])
def test_deterministic_in_seed_with_unequal_lengths(name):
    a, b, c = (build_task(f"synthetic:{name}", seed=s) for s in (0, 0, 1))
    for split in ("train", "val", "test"):
        for ta, tb in zip(a.tensors(split), b.tensors(split), strict=True):
            assert torch.equal(ta, tb)
    assert not torch.equal(a.tensors("test")[0], c.tensors("test")[0])
    lengths = a.tensors("train")[1]
    assert lengths.min() >= 5 and lengths.max() <= 20 and len(set(lengths.tolist())) > 5
    assert a.n_train + a.n_val == 200 and a.n_test == 100


def test_options_shape_the_task():
    dm = build_task("synthetic:sines", options={
        "n_train": 40, "n_test": 20, "n_channels": 2, "n_classes": 4, "min_len": 3,
        "max_len": 6})
    assert (dm.n_train + dm.n_val, dm.n_test, dm.n_channels, dm.n_classes) == (40, 20, 2, 4)
    assert dm.max_length <= 6
    parity = build_task("synthetic:parity")
    assert (parity.n_channels, parity.n_classes) == (1, 2)


def test_sines_is_learnable_by_a_tiny_lstm():
    torch.manual_seed(0)
    dm = build_task("synthetic:sines", seed=0, batch_size=16)
    lstm = torch.nn.LSTM(dm.n_channels, 16, batch_first=True)
    head = torch.nn.Linear(16, dm.n_classes)
    params = [*lstm.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=0.02)

    def logits(x, lengths):
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = lstm(packed)
        return head(h[-1])

    for _ in range(15):
        for x, lengths, y in dm.train_dataloader():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(logits(x, lengths), y).backward()
            opt.step()
    with torch.no_grad():
        x, lengths, y = dm.tensors("test")
        acc = (logits(x, lengths).argmax(1) == y).float().mean().item()
    assert acc > 0.9, acc
    assert np.isfinite(acc)
