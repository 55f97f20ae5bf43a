"""IPRLoop: SFT, then K IPR iterations, inside one `trainer.fit`.

Epochs `0 .. sft_epochs-1` are SFT; then each iteration k = 1..K has `ipr.epochs` epochs of
preference training (K may be 0: an SFT run evaluated like an IPR run's SFT phase, as
`ipr-bench` runs SFT). Each evaluation covers `eval.split` and `eval.extra_splits`. At the
end of the last epoch of each phase (`on_train_epoch_end`) the callback saves
`checkpoints/last.ckpt` (a kill during the long work that follows resumes right there, not
into the training before it), evaluates the policy on the held-out splits, and, if an
iteration follows:

1. after SFT, freezes a copy of the policy adapter as `sft`: the MC scorer and (by default)
   the DPO reference — no second copy of the base model;
2. explores with the current policy (`policy` adapter, greedy), scores with `sft` (T = 1),
   builds the pairs (`ipr_lightning.ipr.explore`; every episode goes to `rollouts.jsonl` as
   it finishes), computes reference log-probs, writes `iter_<k>/pairs.json` last;
   with several ranks each runs its share of the episodes (`rollouts.rank<r>.jsonl`), all
   build the pairs from the union, and rank 0 writes the run's files;
3. points the DataModule at the pairs and switches the module to the preference objective
   with the iteration's LR schedule.

Resuming (`ipr-fit --resume`) from that checkpoint finishes an interrupted evaluation and
re-enters step 2: finished episodes come from the store, the rest are run, the pairs are the
same. After the last phase Lightning has nothing left to fit and skips a resumed fit, so its
evaluation is finished in `on_fit_end` (which Lightning calls either way).

An iteration without pairs to train on (none built, or none left after truncation) skips
training — the DataModule serves one empty batch so the fit goes on — and is still evaluated
and recorded, with `trained: false` in its phase row. With full fine-tuning the frozen
policies are whole-model copies, saved beside the run (`frozen_<name>/`) and reloaded on resume.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
from ipr_lightning.callbacks.last_checkpoint import save_last

from ipr_lightning.config import RunConfig
from ipr_lightning.data.datasets import PairDataset
from ipr_lightning.data.io import read_pairs, write_pairs
from ipr_lightning.data.records import PreferencePair
from ipr_lightning.envs.base import EnvHandle
from ipr_lightning.ipr.experts import ExpertTask
from ipr_lightning.ipr.explore import Exploration, ExploreSettings
from ipr_lightning.ipr.pairs import PairRules
from ipr_lightning.ipr.store import RolloutStore
from ipr_lightning.ipr.value_model import StepValueModel, fit_and_check, split_labels
from ipr_lightning.ipr.values import LabelSet
from ipr_lightning.lightning.reference import reference_logps, with_reference
from ipr_lightning.models import POLICY, save_adapter
from ipr_lightning.rollout.evaluate import evaluate
from ipr_lightning.rollout.policy import HFPolicy, Policy, Sampling
from ipr_lightning.rollout.serving import adapter_server
from ipr_lightning.rollout.shard import Shard

log = logging.getLogger("ipr_lightning")
SFT = "sft"  # adapter: the frozen SFT policy (scorer, reference)
PREVIOUS = "previous"  # adapter: the policy at the start of the iteration (ETO's reference)


class IPRLoop(L.Callback):
    def __init__(
        self,
        cfg: RunConfig,
        tokenizer: Any,
        tasks: list[ExpertTask],
        train_handle: EnvHandle,
        eval_handles: list[EnvHandle],
        progress: bool = True,
    ) -> None:
        """`eval_handles`: the held-out splits evaluated after every phase, `eval.split`'s
        first (its results also fill the phase row's top-level fields)."""
        self.cfg, self.tokenizer, self.progress = cfg, tokenizer, progress
        self.out = Path(cfg.output_dir)
        self.sft_epochs, self.k_max = cfg.trainer.max_epochs, cfg.ipr.iterations
        self.eval_handles = eval_handles
        ipr = cfg.ipr
        rules = PairRules(
            ipr.tau_traj, ipr.step_tau(cfg.env.name), ipr.agent_wins, ipr.step_completion
        )
        log.info(
            "IPR pairs: tau_traj=%g, tau_step=%g (%s)",
            rules.tau_traj,
            rules.tau_step,
            "ipr.tau_step" if ipr.tau_step is not None else f"{cfg.env.name}'s own",
        )
        settings = ExploreSettings(
            ipr.mc_samples,
            ipr.mc_temperature,
            ipr.mc_only_when_needed,
            ipr.max_new_tokens,
            ipr.max_live,
            cfg.seed,
            rules,
            tuple(ipr.pair_types),
            ipr.mc,
            ipr.step_values,
            ipr.value_model.margin,
        )
        self._exploring = (train_handle, tasks, settings)
        self.exploration: Exploration | None = None  # built in `setup`, with this rank's store
        self.shard = Shard()
        self._phase_start = time.perf_counter()
        # rollout.backend vllm/openai: one engine for the run serving saved adapters
        self.server = adapter_server(cfg)

    @property
    def total_epochs(self) -> int:
        return self.sft_epochs + self.k_max * self.cfg.ipr.epochs

    def phase_of(self, epoch: int) -> int:
        """0 for SFT epochs, k for the epochs of iteration k."""
        if epoch < self.sft_epochs:
            return 0
        return 1 + (epoch - self.sft_epochs) // self.cfg.ipr.epochs

    def _last_epoch_of(self, k: int) -> int:
        return self.sft_epochs - 1 + k * self.cfg.ipr.epochs

    @staticmethod
    def pairs_path(out: Path, k: int) -> Path:
        return out / f"iter_{k}" / "pairs.json"

    # --- hooks ------------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        """This rank's share: with several ranks each explores, scores and evaluates part of
        the episodes (its own rollouts file) and all of them see the union."""
        self.shard = Shard.of_trainer(trainer)
        store = RolloutStore(self.out / "rollouts.jsonl", self.shard.rank)
        handle, tasks, settings = self._exploring
        self.exploration = Exploration(handle, tasks, store, settings, self.progress, self.shard)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        for name in list(module.missing_frozen):  # full fine-tuning, resumed
            module.load_frozen(name, self.out / f"frozen_{name}")
        epoch = trainer.current_epoch
        done = self.phase_of(epoch - 1) if epoch > 0 else -1
        if done >= 0 and epoch - 1 == self._last_epoch_of(done):  # resumed at a boundary
            self._finish_phase(trainer, module, done, None)
        k = self.phase_of(epoch)
        if k >= 1 and trainer.datamodule.pairs_file != str(self.pairs_path(self.out, k)):
            self._start_iteration(trainer, module, k)  # resumed into a preference phase
        self._phase_start = time.perf_counter()  # train_seconds: not the exploration above

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        k = self.phase_of(trainer.current_epoch)
        if trainer.current_epoch != self._last_epoch_of(k):
            return
        seconds = round(time.perf_counter() - self._phase_start, 1)
        # The phase's training is done: keep it before the long evaluation and exploration,
        # so a kill during either resumes right here instead of retraining the phase.
        save_last(trainer, self.out / "checkpoints" / "last.ckpt")
        self._finish_phase(trainer, module, k, seconds)
        if k < self.k_max:
            self._start_iteration(trainer, module, k + 1)
        self._phase_start = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """A run killed during the last phase's evaluation resumes into a fit that Lightning
        skips (every epoch is done): evaluate and record that phase here."""
        k = self.k_max
        if trainer.current_epoch > self._last_epoch_of(k) and not self.shard.agree(
            self._recorded(k)
        ):
            module.to(trainer.strategy.root_device)  # Lightning's teardown moved it off
            self._finish_phase(trainer, module, k, None)
        if self.server is not None:
            self.server.close()

    def _policy(
        self, module: L.LightningModule, name: str, k: int, batch_size: int, kv_cache_gb: float
    ) -> Policy:
        """Policy `name` (POLICY: the one training; SFT: the frozen scorer) as of phase k, on
        the configured engine. vLLM serves a saved copy of the adapter."""
        if self.server is not None:  # one engine per rank, each serving its own copy
            rank = f"rank{self.shard.rank}" if self.shard.world > 1 else ""
            folder = self.out / "rollout_adapters" / rank / (name if name == SFT else f"{name}_{k}")
            if not folder.is_dir() or name != SFT:  # SFT's is the same for the whole run
                save_adapter(module.model, folder, name)
            return self.server.policy(self.tokenizer, folder)
        model, adapter = module.acting(name)
        return HFPolicy(model, self.tokenizer, adapter, batch_size, kv_cache_gb=kv_cache_gb)

    # --- pieces -----------------------------------------------------------------------------

    @staticmethod
    def _name(k: int) -> str:
        return "sft" if k == 0 else f"iteration {k}"

    def _recorded(self, k: int) -> bool:
        path = self.out / "phases.jsonl"
        if not path.is_file():
            return False
        done = {json.loads(line)["phase"] for line in path.read_text().splitlines()}
        return self._name(k) in done

    def _finish_phase(
        self, trainer: L.Trainer, module: L.LightningModule, k: int, seconds: float | None
    ) -> None:
        """Evaluate phase k's policy and append its row to phases.jsonl (once per phase)."""
        if self.shard.agree(self._recorded(k)):  # a resumed run does not repeat a phase's row
            return
        row: dict[str, Any] = {"phase": self._name(k), "train_seconds": seconds}
        if k >= 1:
            trained = self._trained_pairs(k)
            row["trained"] = trained > 0
            if not trained:
                row["train_seconds"] = None
                row["note"] = "no pairs to train on: training skipped"
        row.update(self._evaluate(trainer, module, k))
        if trainer.is_global_zero:
            with (self.out / "phases.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")

    def _trained_pairs(self, k: int) -> int:
        """Pairs iteration k trained on (after truncation), from its stats."""
        stats = self.pairs_path(self.out, k).parent / "stats.json"
        if not stats.is_file():
            return 0
        stats = json.loads(stats.read_text())
        built = stats.get("pairs/outcome", 0) + stats.get("pairs/step", 0)
        return int(stats.get("pairs/trained", built))  # runs of older versions: all built

    def _evaluate(self, trainer: L.Trainer, module: L.LightningModule, k: int) -> dict:
        """Phase k's policy on every held-out split: the first split's summary, with all of
        them under `eval` ({split: summary})."""
        if not self.eval_handles or not self.cfg.ipr.eval_every_phase:
            return {}
        folder = self.out / "eval" / ("after_sft" if k == 0 else f"after_iter_{k}")
        by_split = {}
        for i, handle in enumerate(self.eval_handles):
            where = folder if i == 0 else folder / handle.split
            by_split[handle.split] = self._evaluate_split(trainer, module, k, handle, where)
        return {**by_split[self.eval_handles[0].split], "eval": by_split}

    def _evaluate_split(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        k: int,
        handle: EnvHandle,
        folder: Path,
    ) -> dict:
        if self.shard.agree((folder / "summary.json").is_file()):  # done before a kill
            return json.loads((folder / "summary.json").read_text())
        e = self.cfg.eval
        policy = self._policy(module, POLICY, k, e.batch_size, e.kv_cache_gb)
        sampling = Sampling(
            temperature=e.temperature,
            max_new_tokens=e.max_new_tokens,
            seed=self.cfg.seed,
            action_end=handle.action_end,
        )
        report, _ = evaluate(
            handle,
            policy,
            sampling,
            max_episodes=e.max_episodes,
            max_live=e.max_live,
            out_dir=folder if trainer.is_global_zero else None,
            progress=self.progress,
            shard=self.shard,
        )
        prefix = "eval" if handle is self.eval_handles[0] else f"eval_{handle.split}"
        metrics = {
            f"{prefix}/success_rate": report.success_rate,
            f"{prefix}/avg_reward": report.avg_reward,
            f"{prefix}/avg_turns": report.avg_turns,
            f"{prefix}/invalid_rate": report.invalid_rate,
            f"{prefix}/iteration": float(k),
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        log.info(
            "eval after %s: success %.3f on %d %s episodes",
            "SFT" if k == 0 else f"it {k}",
            report.success_rate,
            report.episodes,
            handle.split,
        )
        return json.loads(json.dumps(asdict(report)))  # as summary.json holds it

    def _freeze(self, trainer: L.Trainer, module: L.LightningModule, name: str) -> None:
        """Freeze the current policy as `name`; whole-model copies (full fine-tuning) are also
        saved, since checkpoints hold only what trains."""
        module.freeze_policy(name)
        if name in module.frozen and trainer.is_global_zero:
            save_adapter(module.frozen[name], self.out / f"frozen_{name}")

    def _start_iteration(self, trainer: L.Trainer, module: L.LightningModule, k: int) -> None:
        if not module.has_frozen(SFT):  # the SFT policy, frozen for the rest of the run
            self._freeze(trainer, module, SFT)
            if SFT not in module.frozen and trainer.is_global_zero:  # LoRA: keep SFT's adapter
                save_adapter(module.model, self.out / "adapter_sft", POLICY)
        reference = SFT
        if self.cfg.ipr.reference == "previous":
            self._freeze(trainer, module, PREVIOUS)
            reference = PREVIOUS
        module.reference_adapter = reference
        path = self.pairs_path(self.out, k)
        ipr = self.cfg.ipr
        rendered = None
        if self.shard.agree(path.is_file()):
            pairs = read_pairs(path)
        else:
            pairs, rendered = self._explore(trainer, module, k, path)
        if not pairs:
            log.warning("iteration %d produced no pairs: its preference epochs train nothing", k)
        trainer.datamodule.use_pairs(path, rendered)
        d = self.cfg.data
        trained = self._trained_pairs(k)
        per_rank = math.ceil(math.ceil(trained / d.batch_size) / trainer.world_size)
        steps = math.ceil(per_rank / trainer.accumulate_grad_batches)
        module.begin_phase(
            "preference",
            max(1, steps * ipr.epochs),
            lr=ipr.lr,
            schedule=ipr.schedule,
            warmup_ratio=ipr.warmup_ratio,
            fresh_optimizer=ipr.fresh_optimizer,
            disable_dropout=ipr.disable_dropout,
        )

    def _explore(
        self, trainer: L.Trainer, module: L.LightningModule, k: int, path: Path
    ) -> tuple[list[PreferencePair], PairDataset]:
        """Explore, score and pair iteration k; writes its stats.json, then pairs.json last
        (its presence marks a finished exploration). Returns the pairs and their rendering
        (reference log-probs included), which the DataModule serves as it is."""
        start = time.perf_counter()
        ipr = self.cfg.ipr
        failed_before = getattr(self.server, "failed_attempts", 0)
        explorer, scorer = (
            self._policy(module, name, k - 1, ipr.batch_size, ipr.kv_cache_gb)
            for name in (POLICY, SFT)
        )
        before = self._scorer_before(trainer, k, path.parent)
        value_model, value_stats = None, {}
        if ipr.step_values != "mc" and "step" in ipr.pair_types:
            value_model, value_stats = self._value_model(trainer, module, k)
        try:
            valuer = None
            if value_model is not None:
                batch = ipr.value_model.batch_size
                valuer = lambda items: value_model.predict(items, batch)  # noqa: E731
            result = self.exploration.iteration(
                k, explorer, scorer, valuer=valuer, scorer_before=before
            )
        finally:
            if value_model is not None:
                value_model.close()
        if self.server is not None:  # the GPU goes to the trainer (rollout.vllm_sleep)
            self.server.sleep()
        data = PairDataset(result.pairs, self.tokenizer, self.cfg.data.max_length)
        pairs = result.pairs
        if ipr.precompute_reference and data.rows:
            pairs = self._with_reference_logps(trainer, module, pairs, data)
        caches = [p.cache for p in (explorer, scorer) if p.cache is not None]
        stats = {
            **result.stats,
            **value_stats,
            "pairs/trained": data.stats.served,
            "pairs/history_shortened": data.stats.history_shortened,
            "pairs/cut_right": data.stats.cut_right,
            "pairs/dropped_untrained": data.stats.dropped_untrained,
            "explore/wall_seconds": round(time.perf_counter() - start, 1),
            # prompt tokens run through the model vs served from the KV cache (this process)
            "explore/prefilled_tokens": sum(c.prefilled_tokens for c in caches),
            "explore/reused_tokens": sum(c.reused_tokens for c in caches),
        }
        if self.cfg.rollout.backend == "vllm":  # tokens vLLM generated past a complete action
            stats["explore/wasted_tokens"] = explorer.wasted_tokens + scorer.wasted_tokens
        if self.cfg.rollout.backend == "openai":  # requests the fleet had to ask again
            stats["explore/failed_requests"] = self.server.failed_attempts - failed_before
        if trainer.is_global_zero:  # every rank built the same pairs: rank 0 writes them
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
            with (path.parent / "step_values.jsonl").open("w") as f:
                f.writelines(json.dumps(v) + "\n" for v in result.values)
            write_pairs(path, pairs)
        if self.shard.barrier is not None:  # the other ranks read stats.json next
            self.shard.barrier()
        for logger in trainer.loggers:
            logger.log_metrics({k_: float(v) for k_, v in stats.items()}, step=trainer.global_step)
        return pairs, data

    def _scorer_before(self, trainer: L.Trainer, k: int, folder: Path) -> dict[str, int]:
        """Iteration k's `scorer_totals` when it first started (`started.json`, so that a
        resumed iteration still counts the rollouts it ran before)."""
        path = folder / "started.json"
        if path.is_file():
            return json.loads(path.read_text())
        before = self.exploration.scorer_totals(k)
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(before) + "\n")
        return before

    def _value_model(
        self, trainer: L.Trainer, module: L.LightningModule, k: int
    ) -> tuple[StepValueModel | None, dict[str, float]]:
        """Iteration k's value model, trained on the labels of iterations < k (fixed in
        `iter_<k>/value_labels.json` when k first starts), and its held-out metrics; None
        (MC values this iteration) with fewer than `min_examples` labelled actions."""
        vm, store = self.cfg.ipr.value_model, self.exploration.store
        path = self.pairs_path(self.out, k).parent / "value_labels.json"
        if path.is_file():
            labels = LabelSet.load(path)
        else:
            labels = LabelSet.of_store(store, before=k)
            if trainer.is_global_zero:
                labels.save(path)
        examples = labels.examples(store)
        train = split_labels(examples)[0]
        stats: dict[str, float] = {"values/train_examples": len(train)}
        if len(train) < vm.min_examples:
            log.info(
                "iteration %d: %d labelled actions, fewer than ipr.value_model.min_examples="
                "%d: MC step values this iteration",
                k,
                len(train),
                vm.min_examples,
            )
            return None, stats
        model = StepValueModel.build(
            module.model,
            module.frozen.get(SFT),
            self.cfg.model.lora,
            self.tokenizer,
            vm.max_length,
            self.cfg.seed + k,
            trainer.precision_plugin.forward_context,
            sft_adapter=SFT,
        )
        rewards = {
            (it, task, j): (expert, ep.reward)
            for (it, _, task, j, _), ep in store.items(kind="explore")
            if it < k and (expert := self.exploration.task_reward(task)) is not None
        }
        rules, seed = self.exploration.s.rules, self.cfg.seed + k
        args = (vm.epochs, vm.lr, vm.batch_size, seed, self.progress)
        stats.update(fit_and_check(model, examples, rewards, rules, *args))
        log.info(
            "iteration %d: value model on %d labelled actions: held-out MSE %s (constant %s), "
            "decision agreement with MC %s",
            k,
            len(train),
            stats.get("values/heldout_mse"),
            stats.get("values/heldout_mse_constant"),
            stats.get("values/heldout_decision_agreement"),
        )
        return model, stats

    def _with_reference_logps(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        pairs: list[PreferencePair],
        data: PairDataset,
    ) -> list[PreferencePair]:
        """Token-summed reference log-probs of both sides of every served pair, computed now
        with the training forward (same rendering, truncation and precision); set on the
        pairs and on `data`'s rows."""
        values = reference_logps(
            module,
            data,
            self.cfg.data.batch_size,
            trainer.datamodule.pair_collator(),
            trainer.precision_plugin.forward_context(),
            shard=self.shard,
        )
        return with_reference(pairs, data, values)
