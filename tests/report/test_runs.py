"""Reading runs from disk: run_metrics for stages and pipelines, run discovery, and the runs a sweep expected."""

from __future__ import annotations

from alignment.report import run_metrics
from alignment.report.runs import expected_runs, find_run_dirs, load_run
from tests.report import dirs


def test_run_metrics_of_a_stage_run_are_the_stage_metrics_also_prefixed(tmp_path):
    dirs.stage(tmp_path, "sft", {"eval_loss": 1.5, "eval_rows": 32, "note": "not a number"})
    assert run_metrics(tmp_path) == {"eval_loss": 1.5, "eval_rows": 32, "sft/eval_loss": 1.5, "sft/eval_rows": 32}


def test_run_metrics_of_a_pipeline_prefix_each_step_and_keep_the_last_unprefixed(tmp_path):
    steps = [
        dirs.stage(tmp_path, "sft", {"eval_loss": 2.0, "oracle_reward": 0.3}),
        dirs.stage(tmp_path, "dpo", {"eval_loss": 0.6, "eval_rewards/accuracies": 0.9}),
    ]
    dirs.pipeline(tmp_path, steps)
    assert run_metrics(tmp_path) == {
        "dpo/eval_loss": 0.6,
        "dpo/eval_rewards/accuracies": 0.9,
        "eval_loss": 0.6,
        "eval_rewards/accuracies": 0.9,
        "sft/eval_loss": 2.0,
        "sft/oracle_reward": 0.3,
    }


def test_an_unfinished_pipeline_does_not_pass_off_an_earlier_step_as_its_result(tmp_path):
    steps = [dirs.stage(tmp_path, "sft", {"eval_loss": 2.0})]
    steps.append({"name": "dpo", "stage": "dpo", "status": "running", "output": str(tmp_path / "dpo")})
    dirs.pipeline(tmp_path, steps)
    assert run_metrics(tmp_path) == {"sft/eval_loss": 2.0}
    assert load_run(tmp_path, tmp_path.parent).status == "incomplete"


def test_a_moved_pipeline_reads_its_steps_inside_the_run_dir(tmp_path):
    steps = [dirs.stage(tmp_path / "new", "sft", {"eval_loss": 2.0})]
    steps[0]["output"] = "/elsewhere/old_run/sft"
    dirs.pipeline(tmp_path / "new", steps)
    assert run_metrics(tmp_path / "new")["sft/eval_loss"] == 2.0


def test_run_dirs_are_found_two_levels_down_and_not_inside_a_run(tmp_path):
    dirs.stage(tmp_path / "a", "sft", {"eval_loss": 1.0})
    dirs.hydra_job(tmp_path / "sweep" / "0", ["seed=1"])
    dirs.stage(tmp_path / "sweep" / "0", "sft", {"eval_loss": 1.0})
    dirs.failed(tmp_path / "sweep" / "1", "boom", "ValueError", ["seed=2"])
    dirs.stage(tmp_path / "deep" / "er" / "run", "sft", {"eval_loss": 1.0})  # three levels down: not searched
    (tmp_path / "empty").mkdir()
    found = [p.relative_to(tmp_path).as_posix() for p in find_run_dirs(tmp_path)]
    assert found == ["a", "sweep/0", "sweep/1"]
    failed = load_run(tmp_path / "sweep" / "1", tmp_path)
    assert (failed.name, failed.status, failed.error) == ("sweep/1", "failed", "ValueError: boom")


def test_missing_runs_are_the_expanded_sweep_less_the_runs_found_whatever_the_number_spelling(tmp_path):
    dirs.multirun(tmp_path, ["trainer.learning_rate=1e-3,1e-2", "seed=1,2", "stage=sft"])
    # Hydra writes a job's overrides after parsing (0.001); a hand-made run may keep the spelling typed (1e-2).
    for i, typed in enumerate([["trainer.learning_rate=0.001", "seed=1"], ["trainer.learning_rate=1e-2", "seed=2"]]):
        dirs.hydra_job(tmp_path / str(i), [*typed, "stage=sft"])
        dirs.stage(tmp_path / str(i), "sft", {"eval_loss": 1.0})
    found = [load_run(tmp_path / str(i), tmp_path) for i in range(2)]
    missing, note = expected_runs(tmp_path, found)
    assert [m.overrides for m in missing] == [
        {"trainer.learning_rate": "0.001", "seed": "2", "stage": "sft"},
        {"trainer.learning_rate": "0.01", "seed": "1", "stage": "sft"},
    ]
    assert all(m.status == "missing" for m in missing)
    assert note.startswith("4 jobs expected from multirun.yaml")


def test_optuna_missing_runs_are_n_trials_less_the_runs_found(tmp_path):
    sweeper = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", "n_trials": 5}
    dirs.multirun(tmp_path, ["trainer.learning_rate=interval(1e-4,1e-2)"], sweeper=sweeper)
    found = []
    for i in range(3):
        dirs.hydra_job(tmp_path / str(i), [f"trainer.learning_rate=0.00{i + 1}"])
        dirs.stage(tmp_path / str(i), "sft", {"eval_loss": 1.0})
        found.append(load_run(tmp_path / str(i), tmp_path))
    missing, note = expected_runs(tmp_path, found)
    assert len(missing) == 2 and note == "Optuna sweep of n_trials=5: 3 run dirs found, 2 missing"


def test_a_presets_sweeper_params_count_as_swept_and_the_command_line_wins(tmp_path):
    sweeper = {
        "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
        "params": {"vars.noise": "0.0,0.2,0.4", "seed": "1,2"},
    }
    dirs.multirun(tmp_path, ["experiment=label_noise", "seed=1"], sweeper=sweeper)  # seed=1 replaces 1,2
    dirs.hydra_job(tmp_path / "a", ["vars.noise=0.2", "seed=1", "experiment=label_noise"])
    dirs.stage(tmp_path / "a", "rm", {"eval_accuracy": 0.6})
    missing, note = expected_runs(tmp_path, [load_run(tmp_path / "a", tmp_path)])
    assert sorted(m.overrides["vars.noise"] for m in missing) == ["0.0", "0.4"]
    assert all(m.overrides["seed"] == "1" for m in missing)
    assert note.startswith("3 jobs expected")
