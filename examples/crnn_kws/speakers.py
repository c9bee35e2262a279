"""Your own keyword-spotting-style CRNN, trained outside autoprune: Conv1d + BatchNorm + ReLU over the
frames, a GRU, max over time, a two-layer MLP head; on JapaneseVowels (12 LPC cepstrum coefficients per
frame, 9 speakers: the speech data that ships with aeon, so nothing is downloaded).

    python examples/crnn_kws/speakers.py                # trains (about a minute), saves runs/examples/crnn_kws.pt
    autoprune search examples/crnn_kws/study.yaml       # searches pruning policies for that checkpoint

The study file names this module's ``load_data`` and ``build`` and, to show how, the parts of the model
(autoprune finds them by itself from what ``forward`` does). Nothing here imports autoprune.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CHANNELS, CLASSES = 12, 9


def load_data(seed: int = 0):
    """JapaneseVowels as lists of ``[T_i, 12]`` float32 frames and integer speaker labels 0-8 (bundled with aeon, offline)."""
    from aeon.datasets import load_classification

    def split(name: str):
        x, y = load_classification("JapaneseVowels", split=name)
        return [np.asarray(s, dtype=np.float32).T for s in x], np.asarray(y).astype(int) - 1  # aeon: [C, T_i] and labels "1".."9"

    return (*split("train"), *split("test"))


class CRNN(nn.Module):
    """Conv1d front-end (same length), a GRU over the valid frames, max over the valid frames, an MLP head."""

    def __init__(self, filters: int = 32, hidden: int = 48, mlp: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv1d(CHANNELS, filters, kernel_size=5, padding=2)
        self.bn = nn.BatchNorm1d(filters)
        self.gru = nn.GRU(filters, hidden, batch_first=True)
        self.fc1 = nn.Linear(hidden, mlp)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(mlp, CLASSES)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x [B, T, 12] zero-padded after each sequence; the conv sees zeros past the end, as it would alone
        h = F.relu(self.bn(self.conv(x.transpose(1, 2)))).transpose(1, 2)
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=x.size(1))
        valid = torch.arange(x.size(1))[None, :, None] < lengths[:, None, None]
        pooled = out.masked_fill(~valid, float("-inf")).max(1).values
        return self.fc2(self.drop(F.relu(self.fc1(pooled))))


def build() -> CRNN:
    """The untrained module the saved state dict belongs to."""
    return CRNN()


def pad(xs):
    lengths = torch.tensor([len(x) for x in xs])
    out = torch.zeros(len(xs), int(lengths.max()), CHANNELS)
    for i, x in enumerate(xs):
        out[i, : len(x)] = torch.from_numpy(x)
    return out, lengths


def accuracy(model: nn.Module, xs, ys) -> float:
    model.eval()
    x, lengths = pad(xs)
    with torch.no_grad():
        return int((model(x, lengths).argmax(1) == torch.from_numpy(ys)).sum()) / len(ys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/examples/crnn_kws.pt")
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = load_data()
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, lengths = pad(x_train)
    y = torch.from_numpy(y_train)
    for _ in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(y)).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx], lengths[idx]), y[idx]).backward()
            opt.step()
    test_acc = accuracy(model, x_test, y_test)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"trained a CRNN (Conv1d-32, GRU-48, MLP 32) on JapaneseVowels for {args.epochs} epochs: test accuracy {test_acc:.4f}; saved {args.out}")


if __name__ == "__main__":
    main()
