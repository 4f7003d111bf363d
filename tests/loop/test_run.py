"""Run in one process: resume position, rules through the loop, corruption fallback, bad input."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import resilient
from resilient import ModelCheckpoint, ResumableSampler, Run
from tests.requeue._notifiers import recorder, records


class Crash(Exception):
    """Stands in for a process dying mid-training (the subprocess tests use real SIGKILL)."""


def _dataset() -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=gen)
    return TensorDataset(x, x.sum(dim=1, keepdim=True) / 4)


def _train(run_dir: Path, rules: list[ModelCheckpoint], *, crash_at: int | None = None, epochs: int = 3,
           loader_kind: str = "sampler") -> tuple[Run, nn.Module]:
    """A tiny regression job; `crash_at` raises in the middle of that step."""
    torch.manual_seed(0)
    dataset = _dataset()
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.25), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if loader_kind == "sampler":
        loader = DataLoader(dataset, batch_size=4, sampler=ResumableSampler(dataset, seed=3))
    else:  # a plain random DataLoader: resumable only by fast-forwarding
        loader = DataLoader(dataset, batch_size=4, shuffle=True)
    run = Run(checkpoint=rules, run_dir=run_dir)
    with run:
        run.track(model=model, optimizer=opt)
        for _ in run.epochs(epochs):
            for x, y in run.batches(loader):
                loss = nn.functional.mse_loss(model(x), y)
                opt.zero_grad()
                loss.backward()
                if run.step + 1 == crash_at:
                    raise Crash
                opt.step()
                run.log("train_loss", loss)
            run.log("val_loss", nn.functional.mse_loss(model(dataset.tensors[0]), dataset.tensors[1]))
    return run, model


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("loader_kind", ["sampler", "plain"])
def test_resume_mid_epoch_is_bitwise(tmp_path: Path, loader_kind: str) -> None:
    _, reference = _train(tmp_path / "ref", [ModelCheckpoint(every_n_train_steps=4)], loader_kind=loader_kind)
    with pytest.raises(Crash):
        _train(tmp_path / "run", [ModelCheckpoint(every_n_train_steps=4)], crash_at=15, loader_kind=loader_kind)
    context = pytest.warns(UserWarning, match="read and discarded") if loader_kind == "plain" else warnings.catch_warnings()
    with context:
        run, resumed = _train(tmp_path / "run", [ModelCheckpoint(every_n_train_steps=4)], loader_kind=loader_kind)
    assert run.resumed_from is not None and run.resumed_from.endswith("epoch=1-step=12.ckpt")
    assert run.step == 30 and run.epoch == 3
    assert _same(_weights(reference), _weights(resumed))


def test_resume_from_epoch_end_checkpoint(tmp_path: Path) -> None:
    rule = lambda: [ModelCheckpoint(monitor="val_loss", save_top_k=2)]
    _, reference = _train(tmp_path / "ref", rule())
    with pytest.raises(Crash):
        _train(tmp_path / "run", rule(), crash_at=23)  # epoch 2 runs steps 21..30
    run, resumed = _train(tmp_path / "run", rule())
    assert run.resumed_from is not None and "epoch=1" in run.resumed_from
    assert _same(_weights(reference), _weights(resumed))


def test_top_k_after_resume_keeps_exactly_k_and_no_orphans(tmp_path: Path) -> None:
    def rules() -> list[ModelCheckpoint]:
        return [ModelCheckpoint(monitor="train_loss", save_top_k=2, every_n_train_steps=3, filename="{step}")]

    ref_run, _ = _train(tmp_path / "ref", rules())
    with pytest.raises(Crash):
        _train(tmp_path / "run", rules(), crash_at=17)
    run, _ = _train(tmp_path / "run", rules())
    (ref_rule,), (rule,) = ref_run._rules, run._rules
    names = lambda d: sorted(p.name for p in (d / "checkpoints").iterdir())
    assert len(names(tmp_path / "ref")) == 2
    kept_resume_point = {Path(run.resumed_from or "").name}  # never deleted by the run that resumed from it
    assert set(names(tmp_path / "ref")) <= set(names(tmp_path / "run")) <= set(names(tmp_path / "ref")) | kept_resume_point
    assert Path(rule.best_model_path).name == Path(ref_rule.best_model_path).name
    assert rule.best_model_score == ref_rule.best_model_score


def test_resume_verifies_only_the_checkpoint_it_resumes_from(tmp_path: Path) -> None:
    """Older checkpoints, however many, are not verified: the orphans a crash left are removed by their
    manifests' rule, a damaged one too, and the one warning names the damaged newest, which is skipped."""
    rules = lambda: [ModelCheckpoint(every_n_train_steps=1, filename="{step}")]  # keeps the latest alone
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    with pytest.raises(Crash):
        _train(run_dir, rules(), crash_at=8)  # leaves step=7.ckpt
    for step in range(1, 7):  # what each save evicted, as if the job died before deleting it
        with pytest.raises(Crash):
            _train(tmp_path / f"to-{step}", rules(), crash_at=step + 1)
        (tmp_path / f"to-{step}" / "checkpoints" / f"step={step}.ckpt").rename(checkpoints / f"step={step}.ckpt")
    os.truncate(checkpoints / "step=7.ckpt" / "state.pt", 1)
    os.truncate(checkpoints / "step=2.ckpt" / "state.pt", 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run, _ = _train(run_dir, rules())
    assert run.resumed_from == str((checkpoints / "step=6.ckpt").resolve())
    skipped = [str(w.message) for w in caught if "skipping checkpoint" in str(w.message)]
    assert len(skipped) == 1 and str(checkpoints / "step=7.ckpt") in skipped[0], skipped
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step=30.ckpt", "step=6.ckpt"]  # resumed from: kept


def test_resumed_from_checkpoint_is_never_deleted(tmp_path: Path) -> None:
    rules = lambda: [ModelCheckpoint(monitor="val_loss", save_top_k=1)]
    with pytest.raises(Crash):
        _train(tmp_path, rules(), crash_at=12)
    first = next((tmp_path / "checkpoints").iterdir())
    run, _ = _train(tmp_path, rules(), epochs=4)
    assert run.resumed_from == str(first.resolve())
    assert run._rules[0].best_model_path != str(first)  # a better epoch evicted it from the top 1 ...
    assert first.exists()  # ... but the checkpoint this run resumed from is kept


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_time_rule_fires_by_the_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    rule = ModelCheckpoint(train_time_interval="10s", save_top_k=-1, filename="{step}")
    with Run(checkpoint=[rule], run_dir=tmp_path, clock=clock) as run:
        model = nn.Linear(2, 1)
        run.track(model=model)
        for step in run.batches(range(10)):
            clock.now += 4.0  # each step takes 4 "seconds": due after steps 3, 6, 9
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step=3.ckpt", "step=6.ckpt", "step=9.ckpt"]


@pytest.mark.parametrize("damage", ["flip one bit", "truncate"])
def test_newest_corrupt_checkpoint_falls_back_with_warning(tmp_path: Path, damage: str) -> None:
    rules = lambda: [ModelCheckpoint(every_n_train_steps=5, save_top_k=-1, filename="{step}")]
    with pytest.raises(Crash):
        _train(tmp_path, rules(), crash_at=12)
    payload = tmp_path / "checkpoints" / "step=10.ckpt" / "state.pt"
    data = bytearray(payload.read_bytes())
    if damage == "truncate":
        del data[len(data) // 2:]
    else:
        data[len(data) // 2] ^= 0x01
    payload.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="step=10.ckpt"):
        run, _ = _train(tmp_path, rules(), epochs=1)
    assert run.resumed_from is not None and run.resumed_from.endswith("step=5.ckpt")


def test_weights_only_checkpoints_load_but_are_not_resumed_from(tmp_path: Path) -> None:
    rules = lambda: [ModelCheckpoint(every_n_train_steps=5, save_weights_only=True, filename="{step}")]
    with pytest.raises(Crash):
        _train(tmp_path, rules(), crash_at=12)
    saved = resilient.load_checkpoint(tmp_path / "checkpoints" / "step=10.ckpt")
    assert set(saved) == {"model", "resilient"} and saved["resilient"]["kind"] == "weights"
    run, _ = _train(tmp_path, rules(), epochs=1)
    assert run.resumed_from is None


def test_save_checkpoint_and_load_checkpoint_round_trip(tmp_path: Path) -> None:
    with Run(checkpoint=[], run_dir=tmp_path) as run:
        model = nn.Linear(3, 2)
        run.track(model=model, optimizer=torch.optim.Adam(model.parameters()))
        run.log("val_loss", 0.5)
        run.save_checkpoint(tmp_path / "manual.ckpt")
    loaded = resilient.load_checkpoint(tmp_path / "manual.ckpt")
    assert _same(loaded["model"], model.state_dict())
    assert "optimizer" in loaded
    assert loaded["resilient"]["metrics"] == {"val_loss": 0.5}
    assert loaded["resilient"]["rule"] == "manual"


def test_tracked_sampler_state_is_the_loop_position(tmp_path: Path) -> None:
    dataset = _dataset()
    sampler = ResumableSampler(dataset, seed=1)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=2)
    with Run(checkpoint=[], run_dir=tmp_path) as run:
        run.track(sampler=sampler)
        for _ in zip(range(3), run.batches(loader)):
            pass
    assert sampler.state_dict()["consumed"] == 8  # two completed steps: the third batch was never finished


def _bad_runs() -> Iterator[tuple[dict, type, str]]:
    yield {"checkpoint": "every epoch"}, TypeError, "checkpoint"
    yield {"checkpoint": [ModelCheckpoint(), 3]}, TypeError, "checkpoint[1]"
    yield {"checkpoint": [ModelCheckpoint(), ModelCheckpoint()]}, ValueError, "checkpoint"
    yield {"run_dir": 42}, TypeError, "run_dir"
    yield {"resume": "yes"}, TypeError, "resume"
    yield {"weights_only": 1}, TypeError, "weights_only"
    yield {"backend": 5}, TypeError, "backend"
    yield {"clock": 3.0}, TypeError, "clock"


@pytest.mark.parametrize("kwargs, error, name", list(_bad_runs()))
def test_bad_run_arguments_name_the_parameter(tmp_path: Path, kwargs: dict, error: type, name: str) -> None:
    kwargs.setdefault("run_dir", tmp_path / "run")
    with pytest.raises(error, match=name.replace("[", r"\[")):
        Run(**kwargs)
    assert not (tmp_path / "run").exists()


def test_run_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="run_dir"):
        Run(run_dir=tmp_path / "file")


def test_bad_loop_calls_name_what_is_wrong(tmp_path: Path) -> None:
    with Run(checkpoint=[], run_dir=tmp_path) as run:
        with pytest.raises(TypeError, match="state_dict"):
            run.track(model=object())
        with pytest.raises(ValueError, match="reserved"):
            run.track(resilient=nn.Linear(1, 1))
        with pytest.raises(TypeError, match="n must be an int"):
            run.epochs("3")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=">= 0"):
            run.epochs(-1)
        with pytest.raises(TypeError, match="loader"):
            run.batches(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="log"):
            run.log("x", "high")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="step"):
            run.log("step", 1)
    assert not (tmp_path / "checkpoints").exists()


class _Opaque:
    """A user object whose state is an arbitrary Python object (not loadable with weights_only)."""

    def __init__(self) -> None:
        self.value = Crash("state")

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


def test_untrusted_checkpoint_is_refused_not_skipped(tmp_path: Path) -> None:
    rules = lambda: [ModelCheckpoint(every_n_train_steps=1, filename="{step}")]  # noqa: E731
    with Run(checkpoint=rules(), run_dir=tmp_path) as run:
        run.track(thing=_Opaque())
        for _ in run.batches(range(2)):
            pass
    with Run(checkpoint=rules(), run_dir=tmp_path) as run:
        with pytest.raises(resilient.checkpoint.UntrustedCheckpointError, match="weights_only=False"):
            run.track(thing=_Opaque())
    with Run(checkpoint=rules(), run_dir=tmp_path, weights_only=False) as run:
        run.track(thing=_Opaque())
        assert run.resumed_from is not None and run.resumed_from.endswith("step=2.ckpt")


def test_a_completed_run_started_again_says_so_and_trains_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    _, finished = _train(tmp_path, [ModelCheckpoint()])
    capfd.readouterr()
    run, again = _train(tmp_path, [ModelCheckpoint()])
    assert run.step == 30 and _same(_weights(finished), _weights(again))
    assert "resilient: nothing left to train: resumed at epoch 3, step 30" in capfd.readouterr().err


def test_run_refuses_a_rule_writing_into_the_emergency_directory(tmp_path: Path) -> None:
    rule = ModelCheckpoint(dirpath=tmp_path / "checkpoints" / "emergency", save_top_k=-1)
    with pytest.raises(ValueError, match=r"checkpoint\[0\].*emergency checkpoints"):
        Run(checkpoint=[rule], run_dir=tmp_path)
    assert not (tmp_path / "status.json").exists()


def test_a_checkpoint_of_another_model_is_refused_not_replaced_by_an_older_one(tmp_path: Path) -> None:
    """A sound checkpoint that does not fit the tracked model is an error at `track`; falling back to an
    older one would not fit either and would hide the newer one's progress. Nothing is deleted."""
    run_dir = tmp_path / "run"
    with pytest.raises(Crash):
        _train(run_dir, [ModelCheckpoint(every_n_train_steps=4, save_top_k=-1)], crash_at=10)
    listing = lambda: sorted((p.name, p.stat().st_mtime_ns) for p in (run_dir / "checkpoints").rglob("*"))
    before = listing()
    wider = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.25), nn.Linear(16, 1))
    with Run(checkpoint=[ModelCheckpoint(every_n_train_steps=4, save_top_k=-1)], run_dir=run_dir) as run:
        with warnings.catch_warnings(record=True) as caught, pytest.raises(RuntimeError, match="size mismatch"):
            warnings.simplefilter("always")
            run.track(model=wider)
    assert not [w for w in caught if "skipping checkpoint" in str(w.message)]
    assert listing() == before
    run, _ = _train(run_dir, [ModelCheckpoint(every_n_train_steps=4, save_top_k=-1)])
    assert run.resumed_from == str((run_dir / "checkpoints" / "epoch=0-step=8.ckpt").resolve())


def test_a_run_tells_its_notifier_how_it_ended(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"^notify must be a resilient.Notify, not \{'command': 'x'\}"):
        Run(run_dir=tmp_path, notify={"command": "x"})  # type: ignore[arg-type]
    told = tmp_path / "told.jsonl"
    with Run(checkpoint=[], run_dir=tmp_path / "run", notify=resilient.Notify(command=recorder(told))) as run:
        for _ in run.epochs(1):
            for _ in run.batches([0, 1, 2]):
                pass
    (record,) = records(told)
    assert (record["RESILIENT_STATE"], record["RESILIENT_STEP"], record["RESILIENT_JOB_ID"]) == ("completed", "3", "")
    assert record["RESILIENT_STATUS_LINE"] == "resilient: run completed at step 3"
