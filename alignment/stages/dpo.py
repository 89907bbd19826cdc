"""Direct preference optimisation with TRL's DPOTrainer, from an SFT model that is also the reference.

``trainer.loss_type`` takes any of TRL's DPO losses (sigmoid, ipo, hinge, robust, bco_pair, sppo_hard, nca_pair,
apo_zero, apo_down, exo_pair, discopop, ...) or a list of them with ``trainer.loss_weights``. Conservative DPO
(label smoothing on the sigmoid loss) is ``loss_type=robust`` with ``label_smoothing`` in TRL >= 0.29.
"""

from __future__ import annotations

from omegaconf import DictConfig

from alignment import adapters
from alignment.stages.inputs import policy_and_reference, preference_data
from alignment.stages.stage_run import StageRun


def run(cfg: DictConfig) -> dict:
    from trl import DPOConfig, DPOTrainer

    class SharedEncodingDPOTrainer(DPOTrainer):
        """The pairs arrive encoded by the shared data layer; TRL's own text tokenisation is skipped."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    stage = StageRun(cfg)
    tokenizer, policy, reference, adapter = policy_and_reference(cfg)
    train_ds, eval_ds = preference_data(cfg, tokenizer, stage)

    trainer = SharedEncodingDPOTrainer(
        model=policy,
        ref_model=reference,
        args=stage.trainer_args(DPOConfig),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=adapter,
        callbacks=adapters.callbacks(cfg.peft),
    )
    trainable, total = adapters.count_parameters(trainer.model)
    stage.record({"trainable_params": trainable, "total_params": total})

    stage.evaluate(trainer, suffix="_before")
    stage.measure_oracle(trainer.model, tokenizer, suffix="_before")
    stage.train(trainer)
    stage.evaluate(trainer)
    stage.measure_oracle(trainer.model, tokenizer)
    stage.save_model(trainer.model, tokenizer)
    return stage.finish()
