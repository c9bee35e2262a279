"""Cases 1-7 and 14 of issue 13, reproduced through the real CLI: each gives one line naming the
file/key/value and exit 2, before anything is created."""

from __future__ import annotations

import pytest

from .conftest import run_cli, study_yaml

pytestmark = pytest.mark.faults


def _one_error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-2000:]
    return lines[0]


def _nothing_created(work, study="tiny"):
    root = work / "runs" / study
    assert not (root / "search.json").exists() and not (root / "optuna.journal").exists()
    assert not (work / "runs" / "mlflow.db").exists()


def test_case1_max_seq_len_out_of_range(work):
    cfg = study_yaml(work / "s.yaml", search={"trials": 4, "max_seq_len": [0, -3]})
    line = _one_error_line(run_cli(["--runs-dir", "runs", "search", str(cfg)], work))
    assert "search.max_seq_len" in line and "got 0" in line and "[1, 1000000]" in line
    _nothing_created(work)


def test_case2_measure_batch_size_bounded(work):
    cfg = study_yaml(work / "s.yaml", measure={"batch_size": 1_000_000_000})
    line = _one_error_line(run_cli(["--runs-dir", "runs", "search", str(cfg)], work))
    assert "measure.batch_size" in line and "less than or equal to 65536" in line
    _nothing_created(work)


def test_case2_what_cannot_be_measured_is_refused_before_anything_is_created(work):
    cfg = study_yaml(work / "s.yaml", measure={"batch_size": 65536, "seq_len": 1_000_000})
    line = _one_error_line(run_cli(["--runs-dir", "runs", "search", str(cfg)], work))
    assert "measuring latency at measure.batch_size=65536 and seq_len=1000000 needs at least" in line and "available" in line
    _nothing_created(work)


def test_case2_measurement_failure_becomes_one_line():
    from autoprune.errors import ConfigError
    from autoprune.models.arch import ArchSpec
    from autoprune.runtime.preflight import check_dense_measurable

    class Broken:
        def get(self, arch, settings):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4000000000 bytes")

    settings = {"batch_size": 4, "seq_len": 10, "threads": 1, "runtime": "torch"}
    with pytest.raises(ConfigError, match=r"s\.yaml: cannot measure the dense model's latency .*batch_size=4.*RuntimeError: DefaultCPUAllocator"):
        check_dense_measurable(ArchSpec("lstm", 3, [[8]], 2), settings, Broken(), "s.yaml")


HUGE = {"cell": "lstm", "hidden_sizes": [8192, 8192, 8192], "bidirectional": True}


def test_case3_model_too_big_for_memory_is_refused_before_building(work):
    from autoprune.models.arch import ArchSpec
    from autoprune.runtime.preflight import available_bytes, training_bytes

    need = training_bytes(ArchSpec("lstm", 1, [[8192, 8192]] * 3, 3), 32, 12)
    if (available_bytes() or 0) > need:
        pytest.skip("this machine has the memory to train it")
    cfg = study_yaml(work / "s.yaml", model=HUGE)
    for command in ("train", "search"):
        line = _one_error_line(run_cli(["--runs-dir", "runs", command, str(cfg)], work, timeout=120))
        assert "model.hidden_sizes [8192, 8192, 8192] (lstm, bidirectional)" in line
        assert "training it needs at least 5" in line and "GB of memory" in line and "available" in line
    _nothing_created(work)


def test_case3_estimate_matches_the_built_model_and_refuses_with_numbers():
    from autoprune.errors import ConfigError
    from autoprune.models.arch import ArchSpec
    from autoprune.models.rnn import RNNClassifier
    from autoprune.runtime.preflight import check_model_memory, param_count

    for arch in (ArchSpec("lstm", 12, [[64, 64], [32, 32]], 9), ArchSpec("gru", 3, [[16], [8]], 4, pooling="attention", attention_dim=7)):
        assert param_count(arch) == sum(p.numel() for p in RNNClassifier(arch).parameters())
    big = ArchSpec("lstm", 12, [[8192, 8192]] * 3, 9)
    with pytest.raises(ConfigError, match=r"3,759\.4 M parameters; training it needs at least 5\d\.\d GB .* only 8\.0 GB is available"):
        check_model_memory(big, 32, 29, "s.yaml", available=8 << 30)
    assert check_model_memory(ArchSpec("lstm", 12, [[16]], 9), 32, 29, "s.yaml", available=8 << 30) > 0


def test_case4_non_utf8_yaml(work):
    path = work / "latin1.yaml"
    path.write_bytes("study: caf\u00e9\n".encode("latin-1"))
    line = _one_error_line(run_cli(["--runs-dir", "runs", "train", str(path)], work))
    assert line == f"error: {path}: not UTF-8 text: byte 0xe9 at byte position 10 (line 1); save the file as UTF-8"


def test_case5_duplicate_key(work):
    path = study_yaml(work / "dup.yaml")
    path.write_text(path.read_text().replace("study: tiny\n", "study: x\nstudy: y\n", 1))
    line = _one_error_line(run_cli(["--runs-dir", "runs", "train", str(path)], work))
    assert line.startswith(f"error: {path}:2: duplicate key 'study' (first given on line 1)")


def test_case5_duplicate_nested_key_and_policy():
    from autoprune.errors import ConfigError
    from autoprune.yamlio import load_yaml_text

    with pytest.raises(ConfigError, match=r"p\.yaml:4: duplicate key 'epochs' \(first given on line 3\)"):
        load_yaml_text("method: magnitude\nfinetune:\n  epochs: 3\n  epochs: 5\n", "p.yaml")
    assert load_yaml_text("a: {x: 1}\nb: {x: 1}\n", "ok.yaml") == {"a": {"x": 1}, "b": {"x": 1}}  # same key, other mappings


def test_case6_empty_sparsity_mapping_is_refused(work):
    cfg = study_yaml(work / "s.yaml")
    policy = work / "p.yaml"
    policy.write_text("method: magnitude\ngranularity: unstructured\nsparsity: {}\nfinetune: {epochs: 3}\n")
    line = _one_error_line(run_cli(["--runs-dir", "runs", "prune", str(cfg), "--policy", str(policy)], work))
    assert line.startswith(f"error: {policy}: sparsity: an empty mapping prunes nothing")


@pytest.mark.parametrize("url", ["bogus://nowhere", "postgresql+nodriver://u@h/db"])
def test_case7_bogus_storage_url(work, url):
    cfg = study_yaml(work / "s.yaml")
    line = _one_error_line(run_cli(["--runs-dir", "runs", "search", str(cfg), "--storage", url], work))
    assert line.startswith(f"error: --storage {url}: ") and "accepted: a journal file path" in line and "sqlite:///PATH" in line
    _nothing_created(work)


def test_case14_one_checkpoint_loader_with_weights_only(tmp_path):
    """No weights_only=False left; a checkpoint holding code is refused; autoprune's own files load."""
    import pickle
    from pathlib import Path

    import torch

    from autoprune.models.checkpoints import CheckpointError, load_checkpoint

    src = Path(__file__).resolve().parents[2] / "autoprune"
    offenders = [str(p) for p in src.rglob("*.py") if "weights_only=False" in p.read_text()]
    assert offenders == []
    import re

    calls = [(p.name, m) for p in src.rglob("*.py") for m in re.findall(r"torch\.load\([^)]*\)", p.read_text())]
    assert calls and all("weights_only=True" in m for _, m in calls), calls
    # autoprune's own checkpoints (dense, trial, exported state dict) go through the one loader
    # where each reads checkpoints since the package layout moved (dense.py -> reference/cache.py, ...)
    moved = {"dense.py": "reference/cache.py", "search/trial.py": "trial/result.py", "export.py": "export/exporter.py", "export_formats.py": "export/formats.py"}
    texts = {m: (src / path).read_text() for m, path in moved.items() if (src / path).is_file()}
    assert all("torch.load(" not in t for t in texts.values())
    assert "load_checkpoint(" in texts["dense.py"] and "load_checkpoint(" in texts["search/trial.py"]
    assert any("load_checkpoint(" in texts.get(m, "") for m in ("export.py", "export_formats.py"))

    good = tmp_path / "good.pt"
    torch.save({"arch": {"cell": "lstm"}, "state_dict": {"w": torch.zeros(2)}, "metrics": {"a": 1.0}, "names": ["x"]}, good)
    assert load_checkpoint(good)["state_dict"]["w"].shape == (2,)

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.pt"
    torch.save({"arch": Payload(), "state_dict": {}}, evil)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused to load: it holds objects other than tensors"):
        load_checkpoint(evil)
    torn = tmp_path / "torn.pt"
    torn.write_bytes(good.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"torn\.pt: unreadable checkpoint"):
        load_checkpoint(torn)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "none.pt")
    assert pickle  # imported for the reader: the refused payload is a plain pickle REDUCE
