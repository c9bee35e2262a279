"""Your own text-style model, trained outside autoprune: an Embedding and an LSTM over token ids, its final
state, a Linear head; on short generated "reviews" whose sentiment needs word order (negation).

    python examples/text_lstm/reviews.py                # trains (under a minute), saves runs/examples/text_lstm.pt
    autoprune search examples/text_lstm/study.yaml      # searches pruning policies for that checkpoint

The reviews are generated here, offline and always the same: 3 or 5 clauses ("the plot was not dull",
"the acting is really great"), each positive or negative by its adjective, flipped by a "not" or "never"
before it; a review is positive when most of its clauses are. Which adjective a negation belongs to is a
matter of order, so counting words (a bag of embeddings) is not enough. ``load_data`` returns the token
ids with their padding id, as autoprune's data contract asks for token inputs. Nothing here imports autoprune.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

PAD = 0
SUBJECTS = ["the movie", "the film", "the plot", "the acting", "the story", "the cast", "the music", "the ending", "it"]
VERBS = ["was", "is", "felt", "seemed"]
ADVERBS = ["really", "quite", "so", "rather"]
NEGATIONS = ["not", "never"]
GOOD = ["good", "great", "fun", "moving", "clever", "brilliant", "charming", "solid"]
BAD = ["bad", "dull", "boring", "awful", "weak", "messy", "slow", "bland"]
JOINS = ["and", "but", ",", "while", "yet"]
WORDS = sorted({w for group in (SUBJECTS, VERBS, ADVERBS, NEGATIONS, GOOD, BAD, JOINS) for phrase in group for w in phrase.split()})
VOCAB = {w: i + 1 for i, w in enumerate(WORDS)}  # 0 pads
CLASSES = 2


def _review(rng: np.random.Generator) -> tuple[list[str], int]:
    words, votes = [], 0
    for k in range(int(rng.choice([3, 5]))):
        if k:
            words.append(str(rng.choice(JOINS)))
        words += str(rng.choice(SUBJECTS)).split() + [str(rng.choice(VERBS))]
        if rng.random() < 0.3:
            words.append(str(rng.choice(ADVERBS)))
        negated = rng.random() < 0.4
        if negated:
            words.append(str(rng.choice(NEGATIONS)))
        good = rng.random() < 0.5
        words.append(str(rng.choice(GOOD if good else BAD)))
        votes += 1 if good != negated else -1
    return words, int(votes > 0)


def load_data(seed: int = 0):
    """2000 training and 1000 test reviews as token ids (lists of int64 arrays), labels 1 positive / 0 negative, padding id 0.

    The reviews do not depend on ``seed``: they are the data the model was trained on.
    """
    rng = np.random.default_rng(20240620)

    def make(n: int):
        xs, ys = [], []
        for _ in range(n):
            words, label = _review(rng)
            xs.append(np.array([VOCAB[w] for w in words], dtype=np.int64))
            ys.append(label)
        return xs, np.array(ys)

    x_train, y_train = make(2000)
    x_test, y_test = make(1000)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "padding_id": PAD}


class ReviewLSTM(nn.Module):
    """Embedding → LSTM over the valid tokens (packed) → its final state → Dropout → Linear."""

    def __init__(self, dim: int = 24, hidden: int = 48) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB) + 1, dim, padding_idx=PAD)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.drop = nn.Dropout(0.2)
        self.out = nn.Linear(hidden, CLASSES)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.out(self.drop(h[-1]))


def build() -> ReviewLSTM:
    """The untrained module the saved state dict belongs to."""
    return ReviewLSTM()


def pad(xs):
    lengths = torch.tensor([len(x) for x in xs])
    out = torch.full((len(xs), int(lengths.max())), PAD, dtype=torch.long)
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
    parser.add_argument("--out", default="runs/examples/text_lstm.pt")
    parser.add_argument("--epochs", type=int, default=25)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_data()
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, lengths = pad(data["x_train"])
    y = torch.from_numpy(data["y_train"])
    for _ in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(y)).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx], lengths[idx]), y[idx]).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    test_acc = accuracy(model, data["x_test"], data["y_test"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"trained an Embedding-24 + LSTM-48 on {len(y)} reviews for {args.epochs} epochs: test accuracy {test_acc:.4f}; saved {args.out}")


if __name__ == "__main__":
    main()
