"""The one training loop: every task (`lm`, `classify`, `pairs`, whole-document classification) runs through it.

    result = drive(exp, task, reporter)

The driver owns everything that is not the task's: the distribution strategy and mixed-precision policy, the run
directory (`session.open_run`), one optimizer per layer group (`train.optimizer`, loss-scaled for float16), the
weight average (`finetune.average_decay`), the compiled step (`llmctl.train.step.GradientStep`, built by the task's
`trainer`), the `train.schedule` with ULMFiT's discriminative rates and gradual unfreezing (`llmctl.train.ulmfit`),
budgets (epochs / max_steps / max_tokens / max_time), evaluation → `best` checkpoint / early stopping / plateau
feedback, `last` checkpoints (every `train.checkpoint_every` steps and at each epoch end), Ctrl-C (finish the
step, save, stop), non-finite / diverged loss, metrics.csv + TensorBoard, and at the end `model.keras` (the best
weights), `summary.json` and `loss.png`.

A task (`llmctl.train.tasks.Task`) supplies its data, model, layer groups, forward pass and evaluator. Resume is
exact at any saved step: the data position, the carried state, the schedule and every optimizer variable travel in
the checkpoint. Only the chief worker writes to the run directory or reports progress.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict
from typing import Any

from llmctl import locks
from llmctl.errors import TrainingError
from llmctl.progress import Reporter
from llmctl.results import Result
from llmctl.tfenv import device_report, import_tf, seed_everything
from llmctl.train import session, ulmfit
from llmctl.train.session import PRECISION_POLICIES, Progress

DIVERGED_FACTOR = 10.0  # a finite loss above 10 × ln(vocab) nats/token stops a language model as diverged
MAX_SKIPPED_FP16_STEPS = 25  # consecutive non-finite float16 steps (skipped by loss scaling) before giving up


class _StopRequested(Exception):
    """Raised inside the loop after a Ctrl-C, at a step boundary."""


class _OptimizerSet:
    """The group optimizers (and the weight average) as one variable list for `CheckpointStore`."""

    def __init__(self, optimizers, average=None):
        self.variables = [v for opt in optimizers for v in opt.variables]
        if average is not None:
            self.variables += average.variables


class Driver:
    """One training command for one task."""

    def __init__(self, exp, task, reporter: Reporter):
        self.exp, self.task, self.reporter, self.cfg = exp, task, reporter, exp.train
        self.t_start = time.perf_counter()

    # -- setup
    def setup(self) -> None:
        import keras

        from llmctl.train.checkpoints import CheckpointStore
        from llmctl.train.distribution import build_distribution
        from llmctl.train.optimizers import build_optimizer
        from llmctl.train.schedules import build_schedule

        exp, cfg, task = self.exp, self.cfg, self.task
        self.dist = build_distribution(exp.distribute)  # before any other op (multi-worker requirement)
        if not self.dist.is_chief:
            self.reporter = Reporter("none")
        task.reporter = self.reporter
        seed_everything(exp.run.seed, exp.run.deterministic)
        task.open(self.dist)  # dataset and checks: before the run directory exists (no stub left behind)
        session.require_valid_for(cfg, task.validates)
        self.run_dir, self.resuming = session.open_run(exp, task.ds, kind=task.kind, info=task.run_info(),
                                                       parent=task.parent_run, dist=self.dist,
                                                       refuse_other_kind=task.kind != "lm")
        keras.mixed_precision.set_global_policy(PRECISION_POLICIES[cfg.mixed_precision])
        self.devices = device_report()
        with self.dist.strategy.scope():
            task.build(self.resuming)
            self.groups = task.groups()
            self.optimizers = []
            for _, variables in self.groups:
                optimizer = build_optimizer(cfg, mixed_precision=cfg.mixed_precision)
                optimizer.build([v for v in variables if v.trainable])
                self.optimizers.append(optimizer)
            self.average = None
            if task.average_decay:
                from llmctl.train.weight_average import WeightAverage

                self.average = WeightAverage([v for _, g in self.groups for v in g if v.trainable],
                                             task.average_decay)
        self.multipliers = task.lr_multipliers(len(self.groups))
        self.trainer = task.trainer(self.dist, self.groups, self.optimizers, self.multipliers, self.average,
                                    gpus=len(self.devices["gpus"]))
        self.steps_per_epoch = task.steps_per_epoch(0)
        self.total_steps = session.planned_steps(cfg, self.steps_per_epoch, task.tokens_per_epoch())
        self.store = CheckpointStore(self.run_dir.checkpoints, model=task.model,
                                     optimizer=_OptimizerSet(self.optimizers, self.average),
                                     carry_shapes=task.carry_shapes(), keep_last=cfg.keep_last,
                                     is_chief=self.dist.is_chief)
        self.schedule = build_schedule(cfg, total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch)
        self.progress = Progress(data=task.data_record())
        self.restored_carry = None
        self.resumed_from = None
        if self.resuming:
            data, carry, prefix = self.store.restore("last")
            if self.average is not None:
                self.average.swap()  # checkpoints hold the averaged weights as the model's: train on the raw ones
            self.progress = Progress.from_dict(data)
            if self.progress.schedule:
                self.schedule.load_state(self.progress.schedule)
            self.restored_carry = carry if self.progress.epoch_step > 0 else None
            self.resumed_from = self.progress.step
            self.reporter.info(f"resuming {self.run_dir.root} from {prefix.name}: step {self.progress.step}, "
                               f"epoch {self.progress.epoch + 1}, data position {self.progress.epoch_step}")

    def report_setup(self) -> None:
        from llmctl.train.peak_flops import matmul_peak

        cfg, task = self.cfg, self.task
        measure = task.flops_per_token() is not None and self.dist.is_chief
        self.peak = matmul_peak() if measure else {"flops": float("nan")}
        gpus = self.devices["gpus"]
        rows: list[tuple[str, Any]] = [("run", str(self.run_dir.root)), *task.describe_data(),
            ("devices", f"TF {self.devices['tensorflow']}, {', '.join(gpus) if gpus else 'CPU only'}; "
                        f"{self.dist.kind} × {self.dist.num_replicas} replica(s)"
                        + (f" on {self.dist.num_workers} workers" if self.dist.num_workers > 1 else "")),
            ("precision", f"{cfg.mixed_precision} (policy {PRECISION_POLICIES[cfg.mixed_precision]}, loss float32)"),
            *task.describe_model(self.trainer),
            ("batching", f"{task.batching()}" + (f", accumulate {cfg.grad_accum}" if cfg.grad_accum > 1 else "")
                         + f", {self.steps_per_epoch:,} steps/epoch, {self.total_steps:,} planned")]
        if measure:
            rows.append(("peak", f"{self.peak['flops'] / 1e9:.1f} GFLOP/s float32 matmul"
                                 + (" (cached)" if self.peak.get("cached") else " (measured)")))
        self.reporter.table(task.title, rows)
        names = [name for name, _ in self.groups]
        if len(names) > 1:
            ft = self.exp.finetune
            if ft.gradual_unfreeze and cfg.epochs < len(names):
                self.reporter.warn(f"gradual unfreezing needs {len(names)} epochs to reach the embedding, "
                                   f"train.epochs={cfg.epochs}: the lowest {len(names) - cfg.epochs} group(s) stay "
                                   "frozen")
            self.reporter.table("layer groups", ulmfit.describe(names, cfg.epochs, ft.discriminative_lr,
                                                                ft.gradual_unfreeze),
                                columns=("group", "lr ×", "trains from epoch"))

    # -- helpers
    def _trainable(self, epoch: int) -> tuple[bool, ...]:
        gradual = self.exp.finetune.gradual_unfreeze and len(self.groups) > 1
        return tuple(ulmfit.trainable_groups(epoch, len(self.groups), gradual))

    def _lr(self) -> float:
        return float(self.schedule.lr(self.progress.step, self.progress.epoch))

    def _averaged(self):
        """Evaluation, selection and checkpoints see the averaged weights (`finetune.average_decay`)."""
        return self.average.swapped() if self.average is not None else contextlib.nullcontext()

    def _save(self, kind: str, carry) -> None:
        p = self.progress
        p.schedule = self.schedule.state()
        metrics = {"valid_loss": p.last_valid, "tokens": p.tokens}
        if kind == "best" and self.task.monitor != "loss":
            metrics["valid_" + self.task.monitor] = p.best_valid
        with self._averaged():
            self.store.save(kind, step=p.step, progress=asdict(p), states=self.task.checkpoint_carry(carry),
                            metrics=metrics, validates=self.task.validates)
        if kind == "last":
            self.last_saved_step = p.step

    def _evaluate(self, carry) -> None:
        if not self.task.validates:
            return
        p, task = self.progress, self.task
        with self._averaged():
            metrics = task.evaluate()
        loss = float(metrics["loss"])
        value = float(metrics[task.monitor])
        p.evals += 1
        p.last_eval_step = p.step
        p.last_valid = loss
        better = session.improved(value, p, task.mode, loss)
        epoch = p.epoch + 1 if p.epoch_step else p.epoch  # 1-based: the epoch this evaluation ends or falls in
        if better:
            p.best_valid, p.best_step, p.best_epoch, p.bad_evals = value, p.step, epoch, 0
            p.best_metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        else:
            p.bad_evals += 1
        if task.keeps_history:
            p.history.append({"step": p.step, "epoch": epoch, "split": "valid", **metrics})
        decayed = self.schedule.on_evaluation(loss)
        self.log.log("valid", step=p.step, epoch=p.epoch, tokens=p.tokens, elapsed_s=p.train_time, lr=self._lr(),
                     **task.logged(metrics))
        epochs_done = p.epoch + p.epoch_step / max(task.steps_per_epoch(p.epoch), 1)
        self.reporter.metrics("valid", {"step": p.step, "epochs": round(epochs_done, 2), **metrics,
                                        "best": p.best_valid, **({"lr_decayed": True} if decayed else {})})
        if decayed:
            self.reporter.info(f"learning rate decayed to {self._lr():.3g} (valid loss did not improve)")
        if better:
            self._save("best", carry)

    def _advance(self, loss: float, lr: float, tok_s: float, flops: float | None) -> None:
        p, cfg = self.progress, self.cfg
        fields: dict[str, Any] = {"epoch": f"{p.epoch + 1}/{cfg.epochs}", "loss": loss, "lr": lr,
                                  "tok/s": round(tok_s)}
        if flops is not None:
            fields["ppl"] = math.exp(loss) if loss < 700 else float("inf")
            fields["mfu"] = f"{tok_s * flops / self.peak['flops']:.1%}"
        remaining = []
        if tok_s > 0 and self.total_steps > p.step:
            per_step = p.train_time / max(p.step - (self.resumed_from or 0), 1)
            remaining.append((self.total_steps - p.step) * per_step)
        if cfg.max_time:
            remaining.append(max(cfg.max_time - p.train_time, 0.0))
        if remaining:
            fields["eta"] = session.duration(min(remaining))
        self.reporter.advance(p.step, **fields)

    def _diverged(self, value: float, lr: float, what: str, limit: float | None = None) -> None:
        p = self.progress
        kept = f"the last good checkpoint (step {self.last_saved_step}) is kept" if self.last_saved_step is not None \
            else "no checkpoint had been written yet"
        clip = (f"lower train.clip_norm (now {self.cfg.clip_norm:g})" if self.cfg.clip_norm else
                "turn on clipping with --set train.clip_norm=1.0")
        self.reporter.stop()
        if self.dist.is_chief:
            self.log.close()
            self._write_outputs(status="diverged", stop=f"non-finite {what}" if limit is None else f"diverged {what}",
                                final_valid=None)
        became = f"became {value}" if limit is None else (
            f"diverged to {value:.4g} nats/token, above {limit:.3g} = {DIVERGED_FACTOR:g} × ln(vocab "
            f"{self.task.vocab_size:,}),")
        raise TrainingError(f"the training {what} {became} at step {p.step + 1} (epoch {p.epoch + 1}); {kept}",
                            hint=f"lower train.lr (now {lr:.3g}, e.g. --set train.lr={lr / 4:.3g}) or {clip}")

    # -- the loop
    def train(self) -> str:
        from llmctl.train.metrics_log import MetricsLog

        p, cfg, task = self.progress, self.cfg, self.task
        self.log = MetricsLog(self.run_dir, resume_step=p.step if self.resuming else None,
                              enabled=self.dist.is_chief)
        self.last_saved_step = p.step if self.resuming else None
        flops = task.flops_per_token()
        diverged_above = DIVERGED_FACTOR * math.log(max(task.vocab_size, 2)) if task.diverges else None
        self.compute_time, self.compute_tokens = 0.0, 0
        first_step, skipped_in_a_row = True, 0
        # the partial log interval travels in checkpoints, so a run resumed between two log rows logs the same rows
        interval = {"loss": 0.0, "tokens": 0.0, "count": 0.0, "time": 0.0, "norm": 0.0, "steps": 0,
                    **p.log_interval}
        p.log_interval = interval
        last_advance = 0.0
        stop = session.budget_stop(cfg, p)
        carry = None
        self.reporter.start(task.title, total=self.total_steps)
        self.reporter.advance(p.step, epoch=p.epoch + 1)
        loop_start, time_base = time.perf_counter(), p.train_time
        interrupts = session.Interrupts()
        try:
            with interrupts:
                while stop is None:
                    n_steps = task.steps_per_epoch(p.epoch)
                    if self.restored_carry is not None:
                        carry = task.restore_carry(self.restored_carry)
                        self.restored_carry = None
                    elif p.epoch_step == 0 or carry is None:
                        carry = task.initial_carry()
                    self.trainer.trainable = self._trainable(p.epoch)  # gradual unfreezing
                    elements = task.elements(p.epoch, p.epoch_step)
                    while p.epoch_step < n_steps and stop is None:
                        element, tokens = next(elements)
                        if first_step:
                            failure = self.trainer.probe_jit(element, carry, p.step)
                            if failure:
                                task.jit_reason = f"the step does not compile with XLA ({failure})"
                                self.reporter.warn(f"XLA off: {task.jit_reason}")
                        lr = self._lr() * task.lr_scale(p.epoch, p.epoch_step)
                        t0 = time.perf_counter()
                        loss_sum, count, norm, new_carry = self.trainer.step(element, carry, p.step, lr)
                        dt = time.perf_counter() - t0
                        mean = loss_sum / max(count, 1e-9)
                        if not (math.isfinite(loss_sum) and math.isfinite(norm)):
                            if cfg.mixed_precision == "float16" and math.isfinite(loss_sum):
                                p.skipped_steps += 1  # loss scaling skipped the update and lowered the scale
                                skipped_in_a_row += 1
                                if skipped_in_a_row > MAX_SKIPPED_FP16_STEPS:
                                    self._diverged(norm, lr, "gradient")
                            else:
                                self._diverged(loss_sum / max(count, 1.0), lr, "loss")
                        elif diverged_above is not None and mean > diverged_above:
                            self._diverged(mean, lr, "loss", limit=diverged_above)
                        else:
                            skipped_in_a_row = 0
                        carry = new_carry
                        tokens = int(round(count)) if tokens is None else int(tokens)
                        p.step += 1
                        p.epoch_step += 1
                        p.tokens += tokens
                        p.train_time = time_base + (time.perf_counter() - loop_start)
                        if first_step:
                            first_step = False  # tracing/compilation time is not throughput
                        else:
                            self.compute_time += dt
                            self.compute_tokens += tokens
                        interval["loss"] += loss_sum
                        interval["count"] += count
                        interval["tokens"] += tokens
                        interval["time"] += dt
                        interval["norm"] += norm
                        interval["steps"] += 1

                        now = time.perf_counter()
                        if p.step % cfg.log_every == 0 or p.epoch_step == n_steps:
                            mean = interval["loss"] / max(interval["count"], 1e-9)
                            tok_s = interval["tokens"] / max(interval["time"], 1e-9)
                            self.log.log("train", step=p.step, epoch=p.epoch, tokens=p.tokens,
                                         elapsed_s=p.train_time, lr=lr,
                                         grad_norm=interval["norm"] / interval["steps"], tokens_per_s=tok_s,
                                         mfu=None if flops is None else tok_s * flops / self.peak["flops"],
                                         **task.logged({"loss": mean}))
                            interval = {"loss": 0.0, "tokens": 0.0, "count": 0.0, "time": 0.0, "norm": 0.0,
                                        "steps": 0}
                            p.log_interval = interval
                            self._advance(mean, lr, tok_s, flops)
                            last_advance = now
                        elif self.reporter.mode == "rich" and now - last_advance > 0.5 and interval["count"]:
                            self._advance(interval["loss"] / interval["count"], lr,
                                          interval["tokens"] / max(interval["time"], 1e-9), flops)
                            last_advance = now

                        stop = session.budget_stop(cfg, p) if p.epoch_step < n_steps else None
                        if cfg.eval_every and p.step % cfg.eval_every == 0:
                            self._evaluate(carry)
                            stop = stop or session.early_stop(cfg, p)
                        if p.step % cfg.checkpoint_every == 0 and p.epoch_step < n_steps:
                            self._save("last", carry)
                        if interrupts.requested:
                            raise _StopRequested
                    if p.epoch_step >= n_steps:  # epoch finished
                        p.epoch += 1
                        p.epoch_step = 0
                        carry = None
                        if (not cfg.eval_every or task.evaluate_each_epoch) and p.last_eval_step != p.step:
                            self._evaluate(None)
                        self._save("last", None)
                        stop = stop or session.early_stop(cfg, p) or session.budget_stop(cfg, p)
                        p.train_time = time_base + (time.perf_counter() - loop_start)
        except _StopRequested:
            # Ctrl-C seen between steps: everything is consistent at step p.step — keep it, then stop as asked
            if self.dist.kind != "multi_worker" and self.last_saved_step != p.step:
                self.reporter.stop()
                self.reporter.info(f"interrupted at step {p.step}: saving a last checkpoint to resume from")
                self._save("last", carry if p.epoch_step else None)
            raise KeyboardInterrupt from None
        finally:
            self.reporter.stop()
        if task.validates and p.last_eval_step != p.step:
            self._evaluate(carry if p.epoch_step else None)
        if self.last_saved_step != p.step:
            self._save("last", carry if p.epoch_step else None)
        return stop or "done"

    # -- finish
    def finish(self, stop: str) -> Result:
        from llmctl.train.checkpoints import load_weights, resolve_checkpoint

        p = self.progress
        final_valid = p.last_valid if p.last_eval_step == p.step else None
        if self.dist.is_chief:
            self.log.close()
        which = "best" if self.task.validates and p.best_step is not None else "last"
        self.dist.barrier()  # every worker's part of the last save is done
        if self.dist.is_chief:
            prefix, _ = resolve_checkpoint(self.run_dir.checkpoints, which)
            load_weights(self.task.model, prefix)
            session.save_keras(self.run_dir, self.task.model)
        values = self._write_outputs(status="finished", stop=stop, final_valid=final_valid, weights=which)
        return Result(title=f"{self.task.title}: {self.run_dir.root.name}", values=values,
                      lines=self.task.result_lines(self.run_dir, p, which, stop))

    def _write_outputs(self, *, status: str, stop: str, final_valid: float | None,
                       weights: str | None = None) -> dict[str, Any]:
        from llmctl.train.metrics_log import write_loss_plot, write_summary

        p, cfg, task = self.progress, self.cfg, self.task
        tok_s = self.compute_tokens / self.compute_time if self.compute_time > 0 else None
        flops = task.flops_per_token()
        values: dict[str, Any] = {
            "run_dir": str(self.run_dir.root), "status": status, "stop_reason": stop,
            "final_valid_loss": final_valid,
            "final_valid_ppl": math.exp(final_valid) if final_valid is not None and final_valid < 700 else None,
            "best_valid_loss": p.best_metrics.get("loss"), "best_step": p.best_step, "best_epoch": p.best_epoch,
            "steps": p.step, "epochs_completed": p.epoch, "tokens": p.tokens, "tokens_per_s": tok_s,
            "mfu": tok_s * flops / self.peak["flops"] if tok_s and flops is not None else None,
            "peak_flops": self.peak["flops"], "train_time_s": p.train_time,
            "wall_time_s": time.perf_counter() - self.t_start, "resumed_from_step": self.resumed_from,
            "devices": {**self.devices, **self.dist.describe()}, "precision": cfg.mixed_precision,
            "jit": self.trainer.jit, "jit_reason": task.jit_reason, "params": int(task.model.count_params()),
            "model_weights": weights, **task.summary(p)}
        if self.dist.is_chief:
            summary = {**values, "budgets": {"epochs": cfg.epochs, "max_steps": cfg.max_steps,
                                             "max_tokens": cfg.max_tokens, "max_time": cfg.max_time},
                       **task.summary_details(p)}
            write_summary(self.run_dir.summary, summary)
            write_loss_plot(self.log.rows(), self.run_dir.loss_plot, title=f"{self.run_dir.root.name}: loss")
        return values


@locks.scoped  # the run / dataset directory lock is released when the command ends
def drive(exp, task, reporter: Reporter | None = None) -> Result:
    """Train `task` as `exp` says; returns the final metrics (also in summary.json)."""
    import_tf()  # before keras: TensorFlow's start-up noise is silenced there
    import keras

    reporter = reporter or Reporter("none")
    previous_policy = keras.mixed_precision.global_policy().name
    driver = Driver(exp, task, reporter)
    try:
        driver.setup()
        driver.report_setup()
        stop = driver.train()
        return driver.finish(stop)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
