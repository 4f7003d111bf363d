"""``ModelCheckpoint._plan``: Lightning's top-k / last decisions, driven without disk I/O."""

from __future__ import annotations

import io
import logging
import math
import os
import warnings

import pytest
import torch

from resilient.rules import ModelCheckpoint, SavePlan

NAN = math.nan


class Disk:
    """The checkpoint directory as the Run loop leaves it after carrying out each plan."""

    def __init__(self) -> None:
        self.entries: dict[str, str | None] = {}  # path -> symlink target, None for a file

    def exists(self, path: str) -> bool:
        return path in self.entries

    def apply(self, plan: SavePlan) -> SavePlan:
        for path in plan.save:
            self.entries[path] = None
        for path, target in plan.link:
            self.entries[path] = target
        for path in plan.remove:
            del self.entries[path]
        return plan

    def names(self) -> list[str]:
        shown = []
        for path, target in sorted(self.entries.items()):
            name = os.path.basename(path)
            shown.append(name if target is None else f"{name}->{os.path.basename(target)}")
        return shown


def make(tmp_path, **kwargs) -> ModelCheckpoint:
    kwargs = {"monitor": "val_loss", "filename": "{step}", **kwargs}
    rule = ModelCheckpoint(dirpath=tmp_path, **kwargs)
    rule.bind(tmp_path / "unused", clock=lambda: 0.0)
    return rule


def boundary(rule, disk, step, value, *, epoch=None, monitor="val_loss") -> SavePlan:
    epoch = step - 1 if epoch is None else epoch
    metrics = {"epoch": epoch, "step": step}
    if value is not None:
        metrics[monitor] = value
    return disk.apply(
        rule.plan(step=step, epoch=epoch, metrics=metrics, exists=disk.exists, time_fired=False)
    )


def feed(rule, disk, values) -> None:
    for step, value in enumerate(values, start=1):
        boundary(rule, disk, step, value)


def name(path: str) -> str:
    return os.path.basename(path)


def scores(rule) -> dict[str, float]:
    return {name(path): score for path, score in rule.best_k_models.items()}


# --------------------------------------------------------------------------- top-k


@pytest.mark.parametrize(
    ("mode", "values", "files", "best", "kth"),
    [
        (
            "min",
            [5, 3, 4, 1, 6, 2],
            ["step=2.ckpt", "step=4.ckpt", "step=6.ckpt"],
            (4, 1.0),
            (2, 3.0),
        ),
        (
            "max",
            [5, 3, 4, 1, 6, 2],
            ["step=1.ckpt", "step=3.ckpt", "step=5.ckpt"],
            (5, 6.0),
            (3, 4.0),
        ),
    ],
)
def test_top_3(tmp_path, mode, values, files, best, kth):
    rule, disk = make(tmp_path, save_top_k=3, mode=mode), Disk()
    feed(rule, disk, values)
    assert disk.names() == files
    assert list(scores(rule)) == files
    assert (name(rule.best_model_path), rule.best_model_score) == (f"step={best[0]}.ckpt", best[1])
    assert (name(rule.kth_best_model_path), rule.kth_value) == (f"step={kth[0]}.ckpt", kth[1])


def test_eviction_deletes_only_after_saving(tmp_path):
    rule, disk = make(tmp_path, save_top_k=2), Disk()
    feed(rule, disk, [3, 2])
    plan = boundary(rule, disk, 3, 1)
    assert [name(p) for p in plan.save] == ["step=3.ckpt"]
    assert [name(p) for p in plan.remove] == ["step=1.ckpt"]
    assert plan.link == []


def test_not_in_top_k_plans_nothing(tmp_path):
    rule, disk = make(tmp_path, save_top_k=1), Disk()
    feed(rule, disk, [1])
    assert boundary(rule, disk, 2, 5) == SavePlan()
    assert disk.names() == ["step=1.ckpt"]
    assert rule.current_score == 1  # as in Lightning: the score of the latest top-k save


def test_ties_do_not_replace_and_insertion_order_breaks_them(tmp_path):
    rule, disk = make(tmp_path, save_top_k=2), Disk()
    feed(rule, disk, [1, 2, 2, 1])
    # the tie at step 3 did not displace step 2; step 4 did
    assert disk.names() == ["step=1.ckpt", "step=4.ckpt"]
    # equal scores: the first inserted is both the best and the kth, as with Lightning's min/max
    assert name(rule.best_model_path) == name(rule.kth_best_model_path) == "step=1.ckpt"
    boundary(rule, disk, 5, 1)
    boundary(rule, disk, 6, 0.5)
    assert disk.names() == ["step=4.ckpt", "step=6.ckpt"]
    assert (name(rule.best_model_path), name(rule.kth_best_model_path)) == (
        "step=6.ckpt",
        "step=4.ckpt",
    )


@pytest.mark.parametrize("mode", ["min", "max"])
def test_nan_is_evicted_first_and_never_best(tmp_path, mode):
    sign = 1 if mode == "min" else -1
    rule, disk = make(tmp_path, save_top_k=2, mode=mode), Disk()
    boundary(rule, disk, 1, NAN)
    assert disk.names() == ["step=1.ckpt"]
    assert math.isnan(rule.best_k_models[rule.format_checkpoint_name({"step": 1})])
    assert math.isnan(rule.current_score)
    assert (rule.best_model_path, rule.best_model_score) == ("", None)
    boundary(rule, disk, 2, sign * 3.0)
    assert name(rule.kth_best_model_path) == "step=1.ckpt" and math.isnan(rule.kth_value)
    assert (name(rule.best_model_path), rule.best_model_score) == ("step=2.ckpt", sign * 3.0)
    boundary(rule, disk, 3, sign * 4.0)  # worse than 3 but better than NaN
    assert disk.names() == ["step=2.ckpt", "step=3.ckpt"]
    boundary(rule, disk, 4, NAN)  # NaN never displaces a real score
    assert disk.names() == ["step=2.ckpt", "step=3.ckpt"]
    assert name(rule.best_model_path) == "step=2.ckpt"


def test_all_nan_keeps_files_but_no_best(tmp_path):
    rule, disk = make(tmp_path, save_top_k=-1), Disk()
    feed(rule, disk, [NAN, NAN])
    assert disk.names() == ["step=1.ckpt", "step=2.ckpt"]
    assert (rule.best_model_path, rule.best_model_score) == ("", None)
    assert name(rule.kth_best_model_path) == "step=1.ckpt"


def test_save_top_k_all(tmp_path):
    rule, disk = make(tmp_path, save_top_k=-1), Disk()
    feed(rule, disk, [3, 1, 2])
    assert disk.names() == ["step=1.ckpt", "step=2.ckpt", "step=3.ckpt"]
    assert scores(rule) == {"step=1.ckpt": 3, "step=2.ckpt": 1, "step=3.ckpt": 2}
    assert (name(rule.best_model_path), name(rule.kth_best_model_path)) == (
        "step=2.ckpt",
        "step=1.ckpt",
    )


def test_save_top_k_1(tmp_path):
    rule, disk = make(tmp_path, save_top_k=1), Disk()
    feed(rule, disk, [3, 1, 2])
    assert disk.names() == ["step=2.ckpt"]
    assert (name(rule.best_model_path), rule.best_model_score) == ("step=2.ckpt", 1)


def test_save_top_k_0_saves_only_last(tmp_path):
    rule, disk = make(tmp_path, save_top_k=0, save_last=True), Disk()
    feed(rule, disk, [3, 1])
    assert disk.names() == ["last.ckpt"]
    assert rule.best_k_models == {} and rule.best_model_path == ""


def test_save_top_k_0_never_links(tmp_path):
    rule, disk = make(tmp_path, save_top_k=0, save_last="link"), Disk()
    feed(rule, disk, [3, 1])
    assert disk.names() == ["last.ckpt"]


@pytest.mark.parametrize(
    ("k", "files"),
    [
        (1, ["epoch=2-step=3.ckpt"]),
        (-1, ["epoch=0-step=1.ckpt", "epoch=1-step=2.ckpt", "epoch=2-step=3.ckpt"]),
    ],
)
def test_no_monitor_keeps_the_latest(tmp_path, k, files):
    rule, disk = make(tmp_path, monitor=None, filename=None, save_top_k=k), Disk()
    feed(rule, disk, [None, None, None])
    assert disk.names() == files
    assert name(rule.best_model_path) == "epoch=2-step=3.ckpt"
    assert (rule.best_model_score, rule.best_k_models) == (None, {})


def test_no_monitor_reuses_its_own_name(tmp_path):
    rule, disk = make(tmp_path, monitor=None, filename="{epoch}"), Disk()
    boundary(rule, disk, 1, None, epoch=0)
    plan = boundary(rule, disk, 2, None, epoch=0)
    assert ([name(p) for p in plan.save], plan.remove) == (["epoch=0.ckpt"], [])


# --------------------------------------------------------------------------- version counter


def test_version_counter_within_an_epoch(tmp_path):
    rule, disk = make(tmp_path, save_top_k=-1, filename="{epoch}"), Disk()
    for step in (1, 2, 3):
        boundary(rule, disk, step, float(step), epoch=0)
    assert disk.names() == ["epoch=0-v1.ckpt", "epoch=0-v2.ckpt", "epoch=0.ckpt"]


def test_version_counter_skips_foreign_files(tmp_path):
    rule, disk = make(tmp_path, filename="{epoch}"), Disk()
    foreign = rule.format_checkpoint_name({"epoch": 0})
    disk.entries[foreign] = None
    plan = boundary(rule, disk, 1, 1.0, epoch=0)
    assert [name(p) for p in plan.save] == ["epoch=0-v1.ckpt"]


def test_version_counter_reuses_the_replaced_name(tmp_path):
    rule, disk = make(tmp_path, filename="{epoch}"), Disk()
    boundary(rule, disk, 1, 3.0, epoch=0)
    plan = boundary(rule, disk, 2, 2.0, epoch=0)
    assert ([name(p) for p in plan.save], plan.remove) == (["epoch=0.ckpt"], [])
    assert scores(rule) == {"epoch=0.ckpt": 2.0}


def test_disabled_version_counter_overwrites(tmp_path):
    rule, disk = (
        make(tmp_path, save_top_k=-1, filename="{epoch}", enable_version_counter=False),
        Disk(),
    )
    for step in (1, 2, 3):
        boundary(rule, disk, step, float(step), epoch=0)
    assert disk.names() == ["epoch=0.ckpt"]
    assert scores(rule) == {"epoch=0.ckpt": 3.0}


# --------------------------------------------------------------------------- save_last


def test_save_last_writes_last_each_time(tmp_path):
    rule, disk = make(tmp_path, save_top_k=2, save_last=True), Disk()
    feed(rule, disk, [3, 1])
    plan = boundary(rule, disk, 3, 2)
    assert [name(p) for p in plan.save] == ["step=3.ckpt", "last.ckpt"]
    assert disk.names() == ["last.ckpt", "step=2.ckpt", "step=3.ckpt"]
    assert name(rule.last_model_path) == "last.ckpt"


def test_save_last_even_when_not_in_top_k(tmp_path):
    rule, disk = make(tmp_path, save_top_k=1, save_last=True), Disk()
    feed(rule, disk, [1])
    plan = boundary(rule, disk, 2, 5)
    assert ([name(p) for p in plan.save], plan.remove) == (["last.ckpt"], [])


def test_save_last_link_follows_the_latest_top_k(tmp_path):
    rule, disk = make(tmp_path, save_top_k=2, save_last="link"), Disk()
    feed(rule, disk, [3, 1, 2])
    assert disk.names() == ["last.ckpt->step=3.ckpt", "step=2.ckpt", "step=3.ckpt"]
    plan = boundary(rule, disk, 4, 5)  # not in the top 2: last keeps pointing at step 3
    assert plan.save == [] and [(name(a), name(b)) for a, b in plan.link] == [
        ("last.ckpt", "step=3.ckpt")
    ]
    assert disk.names() == ["last.ckpt->step=3.ckpt", "step=2.ckpt", "step=3.ckpt"]


def test_save_last_link_writes_a_file_until_a_top_k_exists(tmp_path):
    rule, disk = make(tmp_path, save_top_k=1, save_last="link"), Disk()
    with pytest.warns(UserWarning):
        boundary(rule, disk, 1, None)
    assert disk.names() == ["last.ckpt"]
    boundary(rule, disk, 2, None)  # Lightning would link last.ckpt to itself here
    assert disk.names() == ["last.ckpt"]
    boundary(rule, disk, 3, 1.0)
    assert disk.names() == ["last.ckpt->step=3.ckpt", "step=3.ckpt"]


def test_last_with_metric_template_replaces_the_previous_last(tmp_path):
    rule, disk = make(tmp_path, save_top_k=0, save_last=True), Disk()
    rule.CHECKPOINT_NAME_LAST = "{epoch}-last"
    boundary(rule, disk, 1, 1.0, epoch=0)
    plan = boundary(rule, disk, 2, 1.0, epoch=1)
    assert [name(p) for p in plan.remove] == ["epoch=0-last.ckpt"]
    assert disk.names() == ["epoch=1-last.ckpt"]


def test_last_version_counter_skips_files_of_the_same_boundary(tmp_path):
    # filename="last": the top-k file takes last.ckpt first, as Lightning's disk would show
    rule, disk = make(tmp_path, monitor=None, filename="last", save_last=True), Disk()
    plan = boundary(rule, disk, 1, None)
    assert [name(p) for p in plan.save] == ["last.ckpt", "last-v1.ckpt"]


def test_last_never_links_to_itself(tmp_path):
    rule = make(
        tmp_path, monitor=None, filename="last", save_last="link", enable_version_counter=False
    )
    disk = Disk()
    plan = boundary(rule, disk, 1, None)
    assert ([name(p) for p in plan.save], plan.link, plan.remove) == (["last.ckpt"], [], [])


# --------------------------------------------------------------------------- guards


def test_missing_monitor_warns_once_and_still_saves_last(tmp_path):
    rule, disk = make(tmp_path, save_last=True), Disk()
    with pytest.warns(
        UserWarning, match=r"monitor='val_loss'.*\['epoch', 'step'\].*run\.log\('val_loss', value\)"
    ):
        plan = boundary(rule, disk, 1, None)
    assert [name(p) for p in plan.save] == ["last.ckpt"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        boundary(rule, disk, 2, None)
    assert rule.best_k_models == {}


def test_nothing_twice_at_the_same_step(tmp_path):
    rule, disk = make(tmp_path, save_top_k=-1, save_last=True), Disk()
    boundary(rule, disk, 1, 1.0)
    assert boundary(rule, disk, 1, 0.5) == SavePlan()
    assert len(rule.best_k_models) == 1


def test_nothing_before_the_first_step(tmp_path):
    rule, disk = make(tmp_path, save_last=True), Disk()
    assert boundary(rule, disk, 0, 1.0) == SavePlan()


def test_protected_checkpoint_is_never_removed(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    rule, disk = make(real, save_top_k=1, monitor=None, save_last=True), Disk()
    rule.CHECKPOINT_NAME_LAST = "{step}-last"
    feed(rule, disk, [None])
    rule.protect(str(tmp_path / "alias" / "step=1.ckpt"))  # same file, through a symlinked dir
    plan = boundary(rule, disk, 2, None)
    assert [name(p) for p in plan.remove] == ["step=1-last.ckpt"]
    rule.protect(str(real / "step=2-last.ckpt"))
    assert [name(p) for p in boundary(rule, disk, 3, None).remove] == ["step=2.ckpt"]
    assert disk.names() == ["step=1.ckpt", "step=2-last.ckpt", "step=3-last.ckpt", "step=3.ckpt"]


def test_paths_outside_dirpath_are_never_removed(tmp_path):
    rule, disk = make(tmp_path / "ckpts", save_top_k=1), Disk()
    outside = "../elsewhere.ckpt"
    rule.load_state_dict(
        {
            **rule.state_dict(),
            "best_k_models": [[outside, 5.0]],
            "kth_best_model_path": outside,
            "best_model_path": outside,
        }
    )
    plan = boundary(rule, disk, 1, 1.0)
    assert [name(p) for p in plan.save] == ["step=1.ckpt"] and plan.remove == []
    assert scores(rule) == {"step=1.ckpt": 1.0}


def test_plan_requires_bind(tmp_path):
    rule = ModelCheckpoint(dirpath=tmp_path)
    with pytest.raises(RuntimeError, match="before bind"):
        rule.plan(step=1, epoch=0, metrics={}, exists=lambda p: False, time_fired=False)


def test_bind_defaults_dirpath_only_when_unset(tmp_path):
    rule = ModelCheckpoint()
    rule.bind(tmp_path / "run" / "checkpoints", clock=lambda: 0.0)
    assert rule.dirpath == str((tmp_path / "run" / "checkpoints").resolve())
    given = ModelCheckpoint(dirpath=tmp_path / "mine")
    given.bind(tmp_path / "other", clock=lambda: 0.0)
    assert given.dirpath == str((tmp_path / "mine").resolve())


def test_verbose_logs_like_lightning(tmp_path, caplog):
    rule, disk = make(tmp_path, verbose=True, save_top_k=1), Disk()
    with caplog.at_level(logging.INFO, logger="resilient"):
        feed(rule, disk, [0.5, 0.75])
    assert "Epoch 0, global step 1: 'val_loss' reached 0.50000 (best 0.50000)" in caplog.text
    assert "as top 1" in caplog.text
    assert "Epoch 1, global step 2: 'val_loss' was not in top 1" in caplog.text


# --------------------------------------------------------------------------- resume


def plain_types_only(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain_types_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain_types_only(v) for v in value)
    return value is None or isinstance(value, (str, float, int, bool))


def through_checkpoint(state: dict) -> dict:
    """What a restarted job gets back: torch.save, then the safe weights_only load."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def outcome(rule, disk):
    return (
        disk.names(),
        name(rule.best_model_path),
        rule.best_model_score,
        scores(rule),
        name(rule.kth_best_model_path),
        rule.kth_value,
        name(rule.last_model_path),
    )


RESUME_CASES = [
    ({"save_top_k": 3, "save_last": "link"}, [5, 3, 4, 1, None, 6, 2, 2, 0.5]),
    ({"save_top_k": -1, "mode": "max", "save_last": True}, [1, 3, 2, 3, 0.5]),
    ({"save_top_k": 2, "filename": "{epoch}"}, [4, 3, 2, 1, 5, 0.5]),
    ({"monitor": None, "save_top_k": 1, "save_last": True}, [None] * 5),
]


@pytest.mark.filterwarnings("ignore:`ModelCheckpoint\\(monitor='val_loss'\\)` could not find")
@pytest.mark.parametrize(("kwargs", "values"), RESUME_CASES)
@pytest.mark.parametrize("cut", [1, 3, 4])
def test_resume_matches_an_uninterrupted_run(tmp_path, kwargs, values, cut):
    def epoch_of(step):  # two boundaries per epoch, to exercise the version counter
        return (step - 1) // 2

    whole, whole_disk = make(tmp_path, **kwargs), Disk()
    for step, value in enumerate(values, start=1):
        boundary(whole, whole_disk, step, value, epoch=epoch_of(step))

    first, disk = make(tmp_path, **kwargs), Disk()
    for step, value in enumerate(values[:cut], start=1):
        boundary(first, disk, step, value, epoch=epoch_of(step))
    state = through_checkpoint(first.state_dict())
    resumed = make(tmp_path, **kwargs)
    resumed.load_state_dict(state)
    resumed.reconcile(disk.exists)
    for step, value in enumerate(values[cut:], start=cut + 1):
        boundary(resumed, disk, step, value, epoch=epoch_of(step))

    assert outcome(resumed, disk) == outcome(whole, whole_disk)


def test_state_dict_is_plain_and_relative(tmp_path):
    rule, disk = make(tmp_path, save_top_k=2, save_last="link"), Disk()
    feed(rule, disk, [NAN, 2.0, 1.0])
    state = rule.state_dict()
    assert plain_types_only(state)
    assert state["best_model_path"] == "step=3.ckpt"
    assert state["best_k_models"] == [["step=2.ckpt", 2.0], ["step=3.ckpt", 1.0]]
    assert state["last_model_path"] == "last.ckpt"


def test_moved_run_directory_still_resumes(tmp_path):
    old, disk = make(tmp_path / "old", save_top_k=2), Disk()
    feed(old, disk, [2.0, 1.0])
    new = make(tmp_path / "new", save_top_k=2)
    new.load_state_dict(through_checkpoint(old.state_dict()))
    assert new.best_model_path == str((tmp_path / "new" / "step=2.ckpt").resolve())
    assert list(new.best_k_models) == [
        str((tmp_path / "new" / f"step={s}.ckpt").resolve()) for s in (1, 2)
    ]


def test_reconcile_forgets_missing_checkpoints(tmp_path):
    rule, disk = make(tmp_path, save_top_k=3, save_last=True), Disk()
    feed(rule, disk, [3.0, 1.0, 2.0])
    del disk.entries[rule.best_model_path]  # step=2: committed bookkeeping, file lost
    del disk.entries[rule.last_model_path]
    rule.reconcile(disk.exists)
    assert scores(rule) == {"step=1.ckpt": 3.0, "step=3.ckpt": 2.0}
    assert (name(rule.best_model_path), rule.best_model_score) == ("step=3.ckpt", 2.0)
    assert (name(rule.kth_best_model_path), rule.kth_value) == ("step=1.ckpt", 3.0)
    assert rule.last_model_path == ""
    boundary(rule, disk, 4, 2.5)  # a free slot again: saved without evicting anything
    assert disk.names() == ["last.ckpt", "step=1.ckpt", "step=3.ckpt", "step=4.ckpt"]


def test_reconcile_of_everything_resets_best_and_kth(tmp_path):
    rule, disk = make(tmp_path, save_top_k=2, mode="max"), Disk()
    feed(rule, disk, [1.0, 2.0])
    rule.reconcile(lambda path: False)
    assert (rule.best_k_models, rule.best_model_path, rule.best_model_score) == ({}, "", None)
    assert (rule.kth_best_model_path, rule.kth_value) == ("", -math.inf)


def test_reconcile_without_monitor_forgets_the_latest(tmp_path):
    rule, disk = make(tmp_path, monitor=None), Disk()
    feed(rule, disk, [None])
    rule.reconcile(lambda path: False)
    assert rule.best_model_path == ""
    plan = boundary(rule, disk, 2, None)
    assert plan.remove == []  # nothing left to replace


def test_reconcile_stops_linking_to_a_lost_checkpoint(tmp_path):
    rule, disk = make(tmp_path, save_top_k=1, save_last="link"), Disk()
    feed(rule, disk, [1.0])
    rule.reconcile(lambda path: name(path) != "step=1.ckpt")
    with pytest.warns(UserWarning):
        plan = boundary(rule, disk, 2, None)  # no top-k save at this boundary
    assert ([name(p) for p in plan.save], plan.link) == (["last.ckpt"], [])


def test_reconcile_with_everything_present_changes_nothing(tmp_path):
    rule, disk = make(tmp_path, save_top_k=2, save_last=True), Disk()
    feed(rule, disk, [3.0, 1.0, 2.0])
    before = rule.state_dict()
    rule.reconcile(disk.exists)
    assert rule.state_dict() == before


@pytest.mark.parametrize(
    ("state", "error"), [([], TypeError), ({"best_model_path": ""}, ValueError)]
)
def test_load_refuses_foreign_state(tmp_path, state, error):
    with pytest.raises(error, match="state"):
        make(tmp_path).load_state_dict(state)
