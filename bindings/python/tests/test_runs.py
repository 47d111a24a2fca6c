"""The run context manager, run queries, run diffs and lineage."""

from __future__ import annotations

from pathlib import Path

import pytest

import datamon


def test_run_success_and_failure(dm: datamon.Datamon, src: Path, tmp_path: Path) -> None:
    dm.create_repo("raw")
    dm.create_repo("model")
    raw = dm.upload("raw", src, "raw data", label="latest-good")
    out = tmp_path / "out"
    with dm.run(step="train", inputs=["raw@latest-good", "raw:data/deep"],
                outputs={"model": out}, params={"lr": 0.01}, meta={"team": "vision"}) as run:
        assert run.input_bundles["raw"] == raw.id
        assert (run.inputs["raw"] / "a.txt").read_text() == "hello\n"
        assert run.inputs["raw#2"].name == "deep"
        assert run.outputs["model"] == out.absolute()
        (out / "weights.bin").write_bytes(b"w" * 1000)
        run.log_metric("accuracy", 0.93)
        run.log_metrics({"loss": 0.1})
    rec = run.record
    assert rec.status == "succeeded" and rec.step == "train"
    assert rec.params == {"lr": "0.01"} and rec.metrics == {"accuracy": 0.93, "loss": 0.1}
    assert [i["bundle"] for i in rec.inputs] == [raw.id, raw.id]
    (model_out,) = rec.outputs
    model = dm.bundle("model", model_out["bundle"])
    assert model.read_bytes("weights.bin") == b"w" * 1000
    assert model.meta["datamon.run"] == run.id and model.meta["team"] == "vision"
    assert dm.get_run(run.id).status == "succeeded"

    with pytest.raises(ZeroDivisionError):
        with dm.run(step="train", inputs=["raw"], outputs={"model": None}, params={"lr": 0.1}) as run2:
            (run2.outputs["model"] / "half.bin").write_bytes(b"x")
            run2.log_metric("accuracy", 0.1)
            1 / 0
    assert run2.record.status == "failed" and run2.record.exit_code == 1
    assert run2.record.metrics == {"accuracy": 0.1}
    assert [b.id for b in dm.bundles("model")] == [model.id], "a failed run uploads nothing"

    assert [r.id for r in dm.runs(step="train")] == [run.id, run2.id]
    assert [r.id for r in dm.runs(where={"team": "vision"})] == [run.id]
    assert dm.runs(step="other") == []
    d = dm.diff_runs(run.id, run2.id)
    assert d.causes_changed
    assert {p["key"]: (p["a"], p["b"]) for p in d.params} == {"lr": ("0.01", "0.1")}

    up = model.lineage(direction="up")
    assert {(e["kind"], e["repo"]) for e in up.edges} == {("input", "raw"), ("output", "model")}
    down = dm.lineage("raw", raw.id, direction="down")
    assert any(e["repo"] == "model" for e in down.edges)
    with pytest.raises(datamon.InvalidInput):
        dm.lineage("raw", raw.id, direction="sideways")


def test_run_checks_everything_first(dm: datamon.Datamon, tmp_path: Path) -> None:
    dm.create_repo("model")
    with pytest.raises(datamon.NotFound, match="nope"):
        dm.run(step="train", inputs=["nope@latest"], outputs={"model": tmp_path / "o"})
    with pytest.raises(datamon.NotFound, match="ghost"):
        dm.run(step="train", outputs={"ghost": tmp_path / "o"})
    with pytest.raises(datamon.InvalidInput):
        dm.run(step=" ", outputs={"model": tmp_path / "o"})
    assert dm.runs() == []
