"""MLflow, which assigns run ids itself: the run made at the first start is the one every later
start logs to. Real MLflow (its file store, on this disk), two starts of one Run in one process."""

from __future__ import annotations

from pathlib import Path

import pytest

from resilient import Run


def test_every_start_logs_to_the_mlflow_run_the_first_one_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store for this opt-in
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("resilient-tests")
    made: list[str] = []

    def create() -> str:
        made.append(client.create_run(experiment).info.run_id)
        return made[-1]

    for start, steps in enumerate(([0, 1, 2], [2, 3])):  # the second start trains step 2 again
        with Run(checkpoint=[], run_dir=tmp_path / "run") as run:
            with mlflow.start_run(run_id=run.tracker_id("mlflow", new=create)):
                for step in steps:
                    mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
                mlflow.set_tag(f"start-{start}", "ok")

    (run_id,) = made
    (only,) = client.search_runs([experiment])
    assert only.info.run_id == run_id and {"start-0", "start-1"} <= set(only.data.tags)
    assert sorted(point.step for point in client.get_metric_history(run_id, "loss")) == [0, 1, 2, 2, 3]
