"""SequenceDataModule: padded, normalised sequence splits served a whole batch at a time.

Batches are ``(x float32 [B, T_batch, C], lengths int64 [B], y int64 [B])`` with
``T_batch = lengths.max()``; token tasks give ``x`` as int64 ids ``[B, T_batch]``, per-frame
tasks ``y`` as ``[B, T_batch]`` (padded frames labelled -100). The loaders index the stored tensors with one index tensor
per batch (no per-item collation), which keeps an epoch as cheap as a plain PyTorch loop.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from autoprune.errors import TaskError
from autoprune.tasks.budget import epoch_steps
from autoprune.tasks.sequences import SPLITS, Prepared, RawSplits, prepare, to_sequences, to_tokens

__all__ = ["SequenceDataModule"]

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class _IndexBatches(Sampler[torch.Tensor]):
    """Yields one int64 index tensor per batch; shuffles per epoch when asked.

    The order of epoch ``e`` depends only on ``(seed, e)``: Lightning calls
    :meth:`set_epoch` before every epoch (so resuming reproduces the order), and a plain
    loop advances the epoch on every new iteration.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, min_batches: int = 0) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.min_batches = min_batches  # an epoch goes on over reshuffled passes until it has this many (autoprune.tasks.budget)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return epoch_steps(self.n, self.batch_size, self.min_batches)

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.shuffle:
            state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(2)
            g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
            order = torch.randperm(self.n, generator=g)
            self.epoch += 1
        else:
            g, order = None, torch.arange(self.n)
        batches = list(order.split(self.batch_size))
        while len(batches) < self.min_batches:
            more = torch.randperm(self.n, generator=g) if self.shuffle else order
            batches.extend(more.split(self.batch_size))
        yield from batches[: len(self)]


class _TensorBatches(Dataset):
    """Indexed by a whole index tensor: returns the batch trimmed to its longest sequence."""

    def __init__(self, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.lengths, self.y = x, lengths, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: torch.Tensor) -> Batch:
        lengths = self.lengths[idx]
        t = int(lengths.max())
        y = self.y.index_select(0, idx)
        return self.x[:, :t].index_select(0, idx), lengths, y[:, :t] if y.dim() == 2 else y


def _no_collate(batch: Batch) -> Batch:
    return batch


def _given(raw: RawSplits) -> RawSplits:
    return raw


class SequenceDataModule(LightningDataModule):
    """Train / val / test splits of a sequence classification task.

    Data is loaded lazily by :meth:`setup` (idempotent). The attributes ``n_channels``,
    ``n_classes``, ``class_names``, ``max_length``, ``n_train``, ``n_val``, ``n_test``,
    ``channel_mean`` and ``channel_std`` are available after ``setup()``; reading one
    before calls ``setup()``.

    Args:
        name: the task spec (shown in messages and logs).
        load: zero-argument callable returning :class:`RawSplits`.
        seed: seeds the validation split and the training shuffle.
        batch_size: sequences per batch.
        val_fraction: share of the training sequences held out for validation.
    """

    def __init__(
        self,
        name: str,
        load: Callable[[], RawSplits],
        *,
        seed: int = 0,
        batch_size: int = 32,
        val_fraction: float = 0.2,
    ) -> None:
        super().__init__()
        self.name = name
        self.seed = seed
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self._load = load
        #: per-channel normalisation fitted on train; off for a user's model trained on raw inputs (set before setup)
        self.normalize = True
        #: least number of training batches per epoch (``finetune.min_epoch_steps``; 0: one pass)
        self.min_train_batches = 0
        self._data: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        self._prepared: Prepared | None = None

    @classmethod
    def from_arrays(cls, name: str, x_train, y_train, x_test, y_test, padding_id: int | None = None, **kwargs):
        """Build from in-memory arrays (``x``: ``[N, T, C]`` or a list of ``[T_i, C]``; with ``padding_id``,
        token ids: a list of ``[T_i]`` integer arrays; ``y``: one label per sequence or a ``[T_i]`` array per sequence).

        Args:
            name: a name for messages.
            x_train, y_train, x_test, y_test: sequences and labels of both splits.
            **kwargs: ``seed``, ``batch_size``, ``val_fraction``.

        Returns:
            A data module (not yet set up).

        Raises:
            TaskError: malformed arrays.
        """
        if padding_id is None:
            convert = functools.partial(to_sequences, layout="NTC")
        else:
            convert = functools.partial(to_tokens, padding_id=padding_id)
        raw = RawSplits(convert(x_train, what=f"{name} x_train"), y_train, convert(x_test, what=f"{name} x_test"), y_test, padding_id)
        return cls.from_raw(name, raw, **kwargs)

    @classmethod
    def from_raw(cls, name: str, raw: RawSplits, **kwargs):
        """Build from already loaded :class:`RawSplits` (``kwargs`` as in the constructor)."""
        return cls(name, functools.partial(_given, raw), **kwargs)

    def prepare_data(self) -> None:
        """Nothing to do: loaders read or generate data in :meth:`setup`."""

    def setup(self, stage: str | None = None) -> None:
        """Load, split, normalise and pad the data once; later calls return at once.

        Raises:
            TaskError: the data cannot be loaded or breaks the contract (NaN/inf values,
                unseen test labels, ...).
        """
        if self._data is not None:
            return
        raw = self._load()
        p = prepare(raw, name=self.name, seed=self.seed, val_fraction=self.val_fraction, normalize=self.normalize)
        self._prepared = p
        self._data = {
            k: (torch.from_numpy(p.x[k]), torch.from_numpy(p.lengths[k]),
                torch.from_numpy(p.y[k]))
            for k in SPLITS
        }
        logger.debug(
            "task %s: %d train / %d val / %d test sequences, %d channels, %d classes, "
            "max length %d", self.name, self.n_train, self.n_val, self.n_test,
            self.n_channels, self.n_classes, self.max_length,
        )

    def _ready(self) -> Prepared:
        self.setup()
        return self._prepared

    @property
    def n_channels(self) -> int:
        """Input channels, or for a token task the vocabulary size: what the model's first layer takes."""
        p = self._ready()
        return int(p.vocab_size) if p.vocab_size is not None else int(p.x["train"].shape[2])

    @property
    def tokens(self) -> bool:
        """The inputs are token ids ``[N, T]`` int64 (padded with :attr:`padding_id`)."""
        return self._ready().padding_id is not None

    @property
    def padding_id(self) -> int | None:
        return self._ready().padding_id

    @property
    def per_frame(self) -> bool:
        """One label per frame: ``y`` is ``[N, T]``, scored over the true lengths."""
        return self._ready().per_frame

    @property
    def n_classes(self) -> int:
        return len(self._ready().class_names)

    @property
    def class_names(self) -> list[str]:
        return list(self._ready().class_names)

    @property
    def max_length(self) -> int:
        return int(self._ready().x["train"].shape[1])  # the same for x [N, T, C] and token ids [N, T]

    @property
    def n_train(self) -> int:
        return len(self._ready().y["train"])

    @property
    def n_val(self) -> int:
        return len(self._ready().y["val"])

    @property
    def n_test(self) -> int:
        return len(self._ready().y["test"])

    @property
    def channel_mean(self) -> torch.Tensor | None:
        """Per-channel mean subtracted from the inputs (fitted on train); None for token ids."""
        mean = self._ready().mean
        return None if mean is None else torch.from_numpy(mean)

    @property
    def channel_std(self) -> torch.Tensor | None:
        """Per-channel std the inputs are divided by (fitted on train; 1 where 0); None for token ids."""
        std = self._ready().std
        return None if std is None else torch.from_numpy(std)

    def tensors(self, split: str) -> Batch:
        """The full padded tensors of a split, for evaluation and plain-loop baselines.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            ``(x float32 [N, max_length, C], lengths int64 [N], y int64 [N])`` (token ids
            ``x [N, max_length]`` int64; per-frame labels ``y [N, max_length]``); shared
            with the loaders, so do not modify them in place.

        Raises:
            TaskError: an unknown split name.
        """
        if split not in SPLITS:
            raise TaskError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        self.setup()
        return self._data[split]

    def _loader(self, split: str, shuffle: bool, min_batches: int = 0) -> DataLoader:
        x, lengths, y = self.tensors(split)
        sampler = _IndexBatches(len(y), self.batch_size, shuffle, self.seed, min_batches)
        return DataLoader(
            _TensorBatches(x, lengths, y), sampler=sampler, batch_size=None,
            collate_fn=_no_collate, num_workers=0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, min_batches=self.min_train_batches)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, seed={self.seed}, "
                f"batch_size={self.batch_size}, val_fraction={self.val_fraction})")
