"""Your own model, trained outside autoprune: a plain-PyTorch speech-style LSTM classifier on
JapaneseVowels (12 LPC cepstrum coefficients per frame, 9 speakers), saved as a state dict.

    python examples/own_lstm/japanese_vowels.py          # trains (about a minute), saves runs/examples/jv_lstm.pt
    autoprune search examples/own_lstm/study.yaml         # searches pruning policies for that checkpoint

The study file names this module's ``load_data`` (the data, exactly as the model was
trained on it) and ``build`` (the untrained module the state dict belongs to). Nothing
here imports autoprune.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

CHANNELS, CLASSES = 12, 9


def load_data(seed: int = 0):
    """JapaneseVowels as lists of ``[T_i, 12]`` float32 frames and integer speaker labels 0-8 (bundled with aeon, offline)."""
    from aeon.datasets import load_classification

    def split(name: str):
        x, y = load_classification("JapaneseVowels", split=name)
        return [np.asarray(s, dtype=np.float32).T for s in x], np.asarray(y).astype(int) - 1  # aeon: [C, T_i] and labels "1".."9"

    x_train, y_train = split("train")
    x_test, y_test = split("test")
    return x_train, y_train, x_test, y_test


class SpeakerLSTM(nn.Module):
    """2-layer LSTM over the frames, the last valid step's state, a linear head."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.lstm = nn.LSTM(CHANNELS, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, CLASSES)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.head(h[-1])


def build() -> SpeakerLSTM:
    """The untrained module the saved state dict belongs to."""
    return SpeakerLSTM()


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
        return float((model(x, lengths).argmax(1) == torch.from_numpy(ys)).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/examples/jv_lstm.pt")
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = load_data()
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, lengths = pad(x_train)
    y = torch.from_numpy(y_train)
    for epoch in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(y)).split(32):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx], lengths[idx]), y[idx])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    test_acc = accuracy(model, x_test, y_test)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"trained a 2-layer LSTM-64 on JapaneseVowels for {args.epochs} epochs: test accuracy {test_acc:.4f}; saved {args.out}")


if __name__ == "__main__":
    main()
