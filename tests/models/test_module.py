"""RNNModule: random training windows, evaluation, training on synthetic:sines."""

from __future__ import annotations

import torch

from autoprune.models.fitting import make_trainer
from autoprune.models.fitting import RNNModule, random_windows
from autoprune.models.rnn import ArchSpec, RNNClassifier, evaluate
from autoprune.tasks import build_task


def test_random_windows_crops_long_and_keeps_short_sequences_whole():
    torch.manual_seed(0)
    x = torch.randn(3, 10, 2)
    lengths = torch.tensor([10, 3, 6])
    x[1, 3:] = 0
    x[2, 6:] = 0
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        out, new = random_windows(x, lengths, 5, gen)
        assert out.shape == (3, 5, 2)
        assert new.tolist() == [5, 3, 5]
        # the short one is kept whole and zero-padded
        assert torch.equal(out[1, :3], x[1, :3])
        assert torch.equal(out[1, 3:], torch.zeros(2, 2))
        # the long ones are contiguous windows inside their own valid steps
        for i, n in ((0, 10), (2, 6)):
            starts = [s for s in range(n - 5 + 1) if torch.equal(out[i], x[i, s : s + 5])]
            assert starts, f"sequence {i} is not a window of its valid steps"


def test_random_windows_leaves_batches_that_fit_alone():
    x = torch.randn(2, 4, 1)
    lengths = torch.tensor([4, 2])
    out, new = random_windows(x, lengths, 4)
    assert out is x and new is lengths


def test_random_windows_visits_different_starts():
    x = torch.arange(20.0).view(1, 20, 1)
    lengths = torch.tensor([20])
    gen = torch.Generator().manual_seed(1)
    starts = {int(random_windows(x, lengths, 4, gen)[0][0, 0, 0]) for _ in range(50)}
    assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= 16


def test_rnn_module_training_improves_accuracy():
    torch.manual_seed(0)
    dm = build_task("synthetic:sines", seed=0, batch_size=16, options={"n_train": 120, "n_test": 30, "max_len": 12})
    dm.setup("fit")
    model = RNNClassifier(ArchSpec("lstm", dm.n_channels, [[16]], dm.n_classes))
    before = evaluate(model, *dm.tensors("val"))
    module = RNNModule(model, lr=0.02, max_seq_len=10)
    make_trainer(4, []).fit(module, datamodule=dm)
    after = evaluate(model, *dm.tensors("val"))
    assert len(module.history) == 4
    assert [h["epoch"] for h in module.history] == [0, 1, 2, 3]
    assert after["loss"] < before["loss"]
    assert after["accuracy"] > before["accuracy"]
    assert after["accuracy"] >= 0.5  # 3 classes: chance is 1/3
    assert module.history[-1]["val_accuracy"] == after["accuracy"]


def test_evaluate_restores_training_mode_and_counts_correctly():
    model = RNNClassifier(ArchSpec("gru", 2, [[3]], 2))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 1.0]))  # always predicts class 1
    model.train()
    x = torch.randn(4, 3, 2)
    res = evaluate(model, x, torch.tensor([3, 1, 2, 3]), torch.tensor([1, 1, 0, 1]), batch_size=3)
    assert model.training
    assert res["accuracy"] == 0.75
    expected = torch.nn.functional.cross_entropy(torch.tensor([[0.0, 1.0]] * 4), torch.tensor([1, 1, 0, 1]))
    assert abs(res["loss"] - float(expected)) < 1e-6


def test_distillation_pulls_the_student_towards_the_teacher():
    """With weight 1-eps the loss is (almost) only the KL to the teacher: training on it must reduce that KL."""
    import torch.nn.functional as F

    from autoprune.models.arch import ArchSpec
    from autoprune.models.fitting import RNNModule
    from autoprune.models.rnn import RNNClassifier

    torch.manual_seed(0)
    spec = ArchSpec("lstm", 3, [[8]], 4)
    teacher, student = RNNClassifier(spec).eval(), RNNClassifier(spec)
    module = RNNModule(student, teacher=teacher, distill_weight=0.999, distill_temperature=1.0)
    x, lengths, y = torch.randn(16, 6, 3), torch.full((16,), 6), torch.randint(0, 4, (16,))

    def kl():
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(student(x, lengths), 1), F.softmax(teacher(x, lengths), 1), reduction="batchmean"))

    before = kl()
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        module.training_step((x, lengths, y), 0).backward()
        opt.step()
    assert kl() < 0.5 * before
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not any(n.startswith("_teacher") for n, _ in module.named_parameters())
