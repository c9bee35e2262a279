"""``python failing_cli.py ARGS``: the autoprune CLI with every search trial failing the way a bad
training window length made them fail (a ValueError when the trial's policy is built)."""

import sys

import autoprune.search.space as space_mod
from autoprune.cli import main


def _fails(self, trial):
    raise ValueError("max_seq_len must be >= 1, got -3 (a window length no sequence has)")


space_mod.SearchSpace.suggest = _fails

if __name__ == "__main__":
    main(sys.argv[1:])
