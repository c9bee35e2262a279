"""Per-frame labels and token inputs (issue 20): the bundled tasks, a user's data function, batches, and the
one scoring rule (a sequence, or each frame within its true length) in training and evaluation alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoprune.errors import ConfigError, TaskError
from autoprune.models.arch import ArchSpec
from autoprune.models.fitting import RNNModule, make_trainer, random_windows
from autoprune.models.rnn import RNNClassifier, evaluate
from autoprune.tasks import SequenceDataModule, build_task
from autoprune.tasks.sequences import IGNORE


def _balanced(seq) -> bool:
    depth = 0
    for tok in seq:
        depth += {1: 1, 2: -1}.get(int(tok), 0)
        if depth < 0:
            return False
    return depth == 0


def test_brackets_are_token_ids_whose_label_is_balance_and_counting_is_not_enough():
    dm = build_task("synthetic:brackets", seed=3, options={"n_train": 120, "n_test": 60})
    x, lengths, y = dm.tensors("train")
    assert x.dtype == torch.int64 and x.dim() == 2 and dm.tokens and dm.padding_id == 0
    assert dm.n_channels == 3 + 6  # the vocabulary: padding, two brackets, six noise tokens
    seqs = [x[i, : int(n)].tolist() for i, n in enumerate(lengths)]
    assert all(0 not in s for s in seqs) and all(int(v) == 0 for i, n in enumerate(lengths) for v in x[i, int(n) :])
    assert [int(_balanced(s)) for s in seqs] == y.tolist()
    # unbalanced strings with as many opening as closing brackets: a bag of tokens cannot tell them from balanced ones
    same_counts = [s for s, label in zip(seqs, y.tolist()) if not label and s.count(1) == s.count(2)]
    assert len(same_counts) >= 0.3 * int((y == 0).sum())


def test_frames_option_joins_series_of_different_classes_and_labels_every_frame():
    raw = build_task("uea:JapaneseVowels")
    dm = build_task("uea:JapaneseVowels", options={"frames": True, "min_parts": 2, "max_parts": 3})
    x, lengths, y = dm.tensors("test")
    assert dm.per_frame and y.shape == x.shape[:2] and dm.n_classes == 9
    assert int(lengths.sum()) == int(raw.tensors("test")[1].sum())  # each test series used once
    for i, n in enumerate(lengths.tolist()):
        labels = y[i, :n]
        assert (y[i, n:] == IGNORE).all()
        changes = int((labels[1:] != labels[:-1]).sum())
        assert 1 <= changes <= 2  # 2..3 series of different speakers
    with pytest.raises(ConfigError, match=r"min_parts \(3\) must be <= max_parts \(2\)"):
        build_task("uea:JapaneseVowels", options={"frames": True, "min_parts": 3, "max_parts": 2})


def _frames_source(seed=0, bad=False):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(int(t), 2)) for t in rng.integers(3, 9, size=40)]
    ys = [(x[:, 0] > 0).astype(int) for x in xs]
    if bad:
        ys[3] = ys[3][:-1]
    return xs[:30], ys[:30], xs[30:], ys[30:]


def test_a_users_per_frame_labels_and_token_ids():
    dm = SequenceDataModule.from_arrays("f", *_frames_source(), val_fraction=0.2)
    x, lengths, y = dm.tensors("train")
    assert dm.per_frame and not dm.tokens and y.shape == x.shape[:2]
    batch = next(iter(dm.train_dataloader()))
    assert batch[2].shape == batch[0].shape[:2]  # labels trimmed with their frames
    with pytest.raises(TaskError, match=r"^task 'f': train sequence 3 has \d+ steps but \(\d+,\) per-frame labels; give one label per step$"):
        SequenceDataModule.from_arrays("f", *_frames_source(bad=True)).setup()
    xs, ys, xt, yt = _frames_source()
    with pytest.raises(TaskError, match=r"train labels are per frame but test labels are not"):
        SequenceDataModule.from_arrays("f", xs, ys, xt, np.zeros(len(xt), int)).setup()
    tok = [np.array([3, 1, 4, 1, 5]), np.array([2, 6]), np.array([5, 3, 5])] * 5
    dm = SequenceDataModule.from_arrays("t", tok, [0, 1, 1] * 5, tok[:6], [0, 1, 1] * 2, padding_id=0)
    x, lengths, _ = dm.tensors("test")
    assert x.dtype == torch.int64 and x[1].tolist() == [2, 6, 0, 0, 0] and dm.n_channels == 7 and dm.channel_mean is None
    with pytest.raises(TaskError, match=r"t x_train\[0\]: token ids must be >= 0, got -1"):
        SequenceDataModule.from_arrays("t", [np.array([-1, 2])] + tok, [0] * 16, tok, [0, 1, 1] * 5, padding_id=0).setup()


def test_training_and_evaluation_score_the_same_frames():
    """The one rule: the LightningModule's validation accuracy is evaluate()'s, frame by frame over the true lengths."""
    torch.manual_seed(0)
    dm = SequenceDataModule.from_arrays("f", *_frames_source(), val_fraction=0.3, batch_size=4)
    model = RNNClassifier(ArchSpec("gru", 2, [[6]], 2, pooling="none"))
    module = RNNModule(model, lr=0.01)
    make_trainer(2).fit(module, datamodule=dm)
    assert module.history[-1]["val_accuracy"] == pytest.approx(evaluate(model, *dm.tensors("val"))["accuracy"], abs=1e-6)
    x, lengths, y = dm.tensors("val")
    with torch.no_grad():
        pred = model.eval()(x, lengths).argmax(2)
    correct = sum(int((pred[i, :n] == y[i, :n]).sum()) for i, n in enumerate(lengths.tolist()))  # by hand: valid frames only
    assert evaluate(model, x, lengths, y)["accuracy"] == correct / int(lengths.sum())


def test_training_windows_crop_per_frame_labels_and_token_ids_with_their_frames():
    x = torch.arange(2 * 10).view(2, 10)
    y = x + 100
    lengths = torch.tensor([10, 4])
    cx, cl, cy = random_windows(x, lengths, 5, torch.Generator().manual_seed(0), y)
    assert cl.tolist() == [5, 4] and torch.equal(cy, cx + 100)
    assert cx[1, :4].tolist() == [10, 11, 12, 13]
