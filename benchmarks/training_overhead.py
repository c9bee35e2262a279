"""training_overhead: autoprune's Lightning training against the same training as a plain PyTorch loop.

Lightning side: exactly what dense training does (``autoprune.reference.dense.ensure_dense``):
``RNNModule`` + ``make_trainer`` (no logger, checkpointing, summary, sanity check or
progress bar) + ``BestValidation`` + the study's data module. Plain side: the same model
(same seed, so identical initial weights), the same data module's loaders, batch size,
optimizer, cosine schedule, gradient clipping, per-epoch validation and training-loss
bookkeeping, written as a ``for`` loop.

Measured per model: a whole 1-epoch fit (what one call costs, setup included) and a
fit of E epochs; the marginal epoch is (T_E - T_1) / (E - 1).
Repeats are interleaved; medians; ratio lightning / plain.
A cProfile of one E-epoch fit of each says where Lightning's extra time goes.
"""

from __future__ import annotations

import cProfile
import pstats
from typing import Any, Dict, List, Tuple

from benchmarks._common import Context, header, interleave, load_study_config, log, median, one_thread, spread, table, verdict, write_result

NAME = "training_overhead"
TARGET = 1.25
MODELS = [("japanese_vowels_lstm", "JapaneseVowels study model (bi-LSTM 128x2)"), ("quickstart", "quickstart model (bi-LSTM 64x2)")]


def _new_model(config: Any, dm: Any):
    import torch

    from autoprune.models.arch import ArchSpec
    from autoprune.models.rnn import RNNClassifier

    torch.manual_seed(config.seed)
    return RNNClassifier(ArchSpec.from_config(config.model, dm.n_channels, dm.n_classes))


def lightning_fit(config: Any, dm: Any, model: Any, epochs: int) -> None:
    """Dense training as ``ensure_dense`` runs it (minus the cache and the final evaluation)."""
    from autoprune.models.fitting import RNNModule
    from autoprune.models.fitting import BestValidation, make_trainer

    t = config.train
    module = RNNModule(model, lr=t.lr, weight_decay=t.weight_decay, optimizer=t.optimizer, lr_schedule=t.lr_schedule, max_seq_len=t.max_seq_len, seed=config.seed)
    best = BestValidation(from_epoch=0 if t.select == "best_val" else epochs - 1)
    trainer = make_trainer(epochs, callbacks=[best], grad_clip_value=t.grad_clip.value, grad_clip_algorithm=t.grad_clip.algorithm, progress=False)
    trainer.fit(module, datamodule=dm)


def plain_fit(config: Any, dm: Any, model: Any, epochs: int) -> List[Dict[str, float]]:
    """The same training as a plain loop: same loaders, optimizer, schedule, clipping, validation."""
    import torch
    import torch.nn.functional as F

    t = config.train
    params = list(model.parameters())
    if t.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    elif t.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs) if t.lr_schedule == "cosine" else None
    clip = t.grad_clip
    train_loader, val_loader = dm.train_dataloader(), dm.val_dataloader()
    history = []
    for epoch in range(epochs):
        model.train()
        train_sum, n = torch.zeros(()), 0
        for x, lengths, y in train_loader:
            loss = F.cross_entropy(model(x, lengths), y)
            train_sum += loss.detach() * len(y)
            n += len(y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip.value:
                if clip.algorithm == "norm":
                    torch.nn.utils.clip_grad_norm_(params, clip.value)
                else:
                    torch.nn.utils.clip_grad_value_(params, clip.value)
            opt.step()
        model.eval()
        val_loss, correct, m = torch.zeros(()), torch.zeros((), dtype=torch.long), 0
        with torch.no_grad():
            for x, lengths, y in val_loader:
                logits = model(x, lengths)
                val_loss += F.cross_entropy(logits, y, reduction="sum")
                correct += (logits.argmax(1) == y).sum()
                m += len(y)
        history.append({"epoch": epoch, "train_loss": float(train_sum) / n, "val_loss": float(val_loss) / m, "val_accuracy": float(correct) / m})
        if sched is not None:
            sched.step()
    return history


def _candidate(fn, config, dm, epochs):
    import time

    def run() -> float:
        model = _new_model(config, dm)  # outside the stopwatch: identical weights for both sides
        t0 = time.perf_counter()
        fn(config, dm, model, epochs)
        return time.perf_counter() - t0

    return run


def _classify(filename: str) -> str:
    f = filename.replace("\\", "/")
    if "/lightning/" in f or "/lightning_utilities/" in f or "/torchmetrics/" in f:
        return "Lightning (Python)"
    if "/autoprune/" in f:
        return "autoprune (Python)"
    if "/torch/" in f:
        return "torch (Python wrappers)"
    if f == "~" or f.startswith("<"):
        return "C / built-ins (torch kernels, autograd)"
    return "other Python (stdlib, numpy, ...)"


def profile(fn, config, dm, epochs: int, out_path) -> Tuple[float, Dict[str, float], List[Tuple[str, float, float, int]]]:
    """cProfile one fit: total seconds, tottime per code owner, top Lightning functions by cumulative time."""
    model = _new_model(config, dm)
    prof = cProfile.Profile()
    prof.enable()
    fn(config, dm, model, epochs)
    prof.disable()
    prof.dump_stats(str(out_path))
    stats = pstats.Stats(prof)
    owners: Dict[str, float] = {}
    lightning_fns = []
    for (filename, line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        owner = _classify(filename)
        owners[owner] = owners.get(owner, 0.0) + tt
        if owner == "Lightning (Python)":
            short = filename.replace("\\", "/").split("site-packages/")[-1]
            lightning_fns.append((f"{short}:{line} {func}", ct, tt, nc))
    total = stats.total_tt  # type: ignore[attr-defined]
    lightning_fns.sort(key=lambda r: -r[2])
    return total, owners, lightning_fns


def run(ctx: Context) -> None:
    one_thread()
    from autoprune.tasks import build_datamodule
    from autoprune.models.fitting import quiet_lightning

    quiet_lightning()
    out_dir = ctx.runs(NAME)
    repeats = 7 if ctx.quick else 15
    epochs = 3 if ctx.quick else 6
    rows, detail, prof_lines, verdicts = [], [], [], []
    for study, label in MODELS:
        config = load_study_config(study)
        dm = build_datamodule(config)
        log(f"{NAME}: {study}: warm-up")
        lightning_fit(config, dm, _new_model(config, dm), 1)  # first-call imports and lazy init, untimed
        plain_fit(config, dm, _new_model(config, dm), 1)
        log(f"{NAME}: {study}: {repeats} interleaved repeats of 1- and {epochs}-epoch fits")
        times = interleave(
            {
                "lightning_1": _candidate(lightning_fit, config, dm, 1),
                "plain_1": _candidate(plain_fit, config, dm, 1),
                f"lightning_{epochs}": _candidate(lightning_fit, config, dm, epochs),
                f"plain_{epochs}": _candidate(plain_fit, config, dm, epochs),
            },
            repeats,
        )
        l1, p1 = median(times["lightning_1"]), median(times["plain_1"])
        lE, pE = median(times[f"lightning_{epochs}"]), median(times[f"plain_{epochs}"])
        l_epoch, p_epoch = (lE - l1) / (epochs - 1), (pE - p1) / (epochs - 1)
        n_batches = len(dm.train_dataloader())
        rows.append([label, f"{n_batches} + {len(dm.val_dataloader())}", l1 * 1e3, p1 * 1e3, l1 / p1, l_epoch * 1e3, p_epoch * 1e3, l_epoch / p_epoch])
        verdicts.append((label, l1 / p1, l_epoch / p_epoch))
        for key, vals in times.items():
            detail.append([label, key, median(vals) * 1e3, spread([v * 1e3 for v in vals]), len(vals)])

        log(f"{NAME}: {study}: profiling one {epochs}-epoch fit of each")
        lt, lown, lfns = profile(lightning_fit, config, dm, epochs, out_dir / f"{study}_lightning.prof")
        pt, pown, _ = profile(plain_fit, config, dm, epochs, out_dir / f"{study}_plain.prof")
        owners = sorted(set(lown) | set(pown), key=lambda o: -lown.get(o, 0.0))
        prof_lines += [f"**{label}**, one {epochs}-epoch fit under cProfile (profiling inflates Python-heavy code; compare the columns, not with the timings above):", ""]
        prof_lines += table(
            ["code owner (tottime)", "Lightning fit (ms)", "plain loop (ms)", "difference (ms)"],
            [[o, lown.get(o, 0.0) * 1e3, pown.get(o, 0.0) * 1e3, (lown.get(o, 0.0) - pown.get(o, 0.0)) * 1e3] for o in owners]
            + [["**total**", lt * 1e3, pt * 1e3, (lt - pt) * 1e3]],
        )
        own = lown.get("Lightning (Python)", 0.0)
        prof_lines += [
            "",
            f"Lightning's own Python code: {own * 1e3:.1f} ms of {lt * 1e3:.1f} ms profiled ({100 * own / lt:.1f} %); "
            f"the whole profiled fit is {(lt - pt) * 1e3:+.1f} ms ({100 * (lt / pt - 1):+.1f} %) against the plain loop. "
            "Lightning functions with the most own time (tottime):",
            "",
        ]
        prof_lines += table(["function", "calls", "tottime (ms)", "cumulative (ms)"], [[f"`{n}`", c, tt * 1e3, ct * 1e3] for n, ct, tt, c in lfns[:10]], align="lrrr")
        prof_lines.append("")

    lines = header(
        "training_overhead: Lightning training vs a plain PyTorch loop",
        ctx,
        [
            "Lightning side: `RNNModule` + `make_trainer` + `BestValidation` + the study's data module, as `ensure_dense` trains. "
            "Plain side: the same model (same initial weights), loaders, batch size, optimizer, cosine schedule, gradient clipping and per-epoch validation as a `for` loop. "
            f"One torch thread. {repeats} interleaved repeats of each; medians. "
            f"`1-epoch fit` is a whole `fit` call of one epoch (trainer construction, setup and teardown included); "
            f"`per epoch` is the marginal epoch, (T_{epochs} − T_1)/{epochs - 1}, a difference of medians (noisier than either).",
        ],
    )
    lines += table(
        ["model", "batches (train + val)", "Lightning 1-epoch fit (ms)", "plain (ms)", "ratio", "Lightning per epoch (ms)", "plain (ms)", "ratio"],
        rows,
    )
    lines += ["", f"**Target: Lightning / plain <= {TARGET}.**", ""]
    for label, r1, re in verdicts:
        lines.append(f"- {label}: 1-epoch fit ratio {r1:.2f} → {verdict(r1 <= TARGET)}; marginal-epoch ratio {re:.2f} → {verdict(re <= TARGET)}.")
    lines += ["", "## Where Lightning's extra time goes", ""] + prof_lines
    lines += [
        "Reading the profile: `C / built-ins` is the model's real work (kernels, autograd); `Lightning (Python)` is its loops, hook dispatch "
        "and result bookkeeping, which a plain loop does not have. Raw profiles: `runs/bench/training_overhead/*.prof` (`python -m pstats`).",
        "",
        "## All timings",
        "",
    ]
    lines += table(["model", "candidate", "median (ms)", "min–max (ms)", "repeats"], detail)
    write_result(ctx, NAME, lines)
