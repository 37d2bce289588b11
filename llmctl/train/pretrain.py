"""`llmctl pretrain`: train a language model from scratch on a preprocessed dataset.

    result = run(exp, reporter=Reporter("rich"))

Steps: strategy first (multi-worker must exist before any op) → dataset (ArtifactError → run preprocess first) and
tokenizer checks → run directory (new, resumed per `run.resume`, or replaced with `run.overwrite`) with the dataset's
tokenizer copied in → setup report (devices, precision, XLA decision, per-layer cuDNN eligibility) → model
(+ pretrained embeddings) and optimizer → restore the last checkpoint when resuming → the training loop with budgets
(epochs / max_steps / max_tokens / max_time), evaluation (each epoch or every `eval_every` steps), best/last
checkpoints, early stopping, schedule feedback, non-finite-loss detection → final evaluation, `model.keras` (best
weights), `summary.json`, `loss.png`.

Only the chief worker writes to the run directory or reports progress.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmctl import locks
from llmctl.errors import ArtifactError, DataError, TrainingError
from llmctl.progress import Reporter
from llmctl.results import Result
from llmctl.runs import DatasetDir, RunDir
from llmctl.tfenv import device_report, import_tf, seed_everything
from llmctl.train.training_run import open_training_run

PRECISION_POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
DIVERGED_FACTOR = 10.0  # a finite training loss above 10 × ln(vocab) nats/token stops the run as diverged
MAX_SKIPPED_FP16_STEPS = 25  # consecutive non-finite float16 steps (skipped by loss scaling) before giving up


@dataclass
class Progress:
    """Everything about where training stands; saved as JSON inside every checkpoint."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # current 0-based epoch
    epoch_step: int = 0  # steps taken in the current epoch = data position (in steps)
    tokens: int = 0  # training targets consumed (padding excluded)
    train_time: float = 0.0  # seconds spent in the training loop, over all sessions of the run
    evals: int = 0
    last_eval_step: int | None = None
    last_valid: float | None = None
    best_valid: float | None = None
    best_step: int | None = None
    bad_evals: int = 0  # evaluations since the last improvement (early stopping)
    skipped_steps: int = 0  # float16 steps skipped by loss scaling
    log_interval: dict[str, float] = field(default_factory=dict)  # sums since the last metrics row
    schedule: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # batching mode, seed: the RNG keys of the window order

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Progress":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


# ---------------------------------------------------------------- checks before training


def _check_tokenizer_source(exp, ds) -> None:
    """`tokenizer.from` names a dataset, run or tokenizer folder: the dataset must use that very tokenizer."""
    source = exp.tokenizer.from_
    if source is None:
        return
    from llmctl.data.tokenizers import METADATA_FILE, load_tokenizer

    source = Path(source)
    for folder in (DatasetDir(source).tokenizer, RunDir(source).tokenizer, source):
        if (folder / METADATA_FILE).is_file():
            break
    else:
        raise ArtifactError(f"tokenizer.from={source} holds no tokenizer (looked for {source}/tokenizer/)",
                            hint="point tokenizer.from at a dataset or run directory")
    try:
        reused = load_tokenizer(folder)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read the tokenizer in {folder} ({exc})",
                            hint="point tokenizer.from at a dataset or run directory") from None
    if exp.tokenizer.extend:  # the dataset's tokenizer must extend that one (`tokenizer.extend`)
        from llmctl.train.parent import extension_of

        if extension_of(reused, ds.tokenizer()) is None and reused.fingerprint() != ds.tokenizer().fingerprint():
            raise ArtifactError(f"dataset {ds.root} was not made by extending the tokenizer of {source}",
                                hint="run `llmctl preprocess CONFIG --force` to rebuild the dataset")
        return
    expected = reused.fingerprint()
    actual = ds.manifest.get("tokenizer", {}).get("tokenizer_fingerprint") or ds.tokenizer().fingerprint()
    if expected != actual:
        raise ArtifactError(f"dataset {ds.root} was made with tokenizer {actual}, but tokenizer.from "
                            f"({source}) has {expected}",
                            hint="run `llmctl preprocess CONFIG --force` to rebuild the dataset with that tokenizer")


def _prepare_run(exp, ds, dist, run_info: dict[str, Any] | None = None) -> tuple[RunDir, bool]:
    """Create / reopen the run directory per run.resume and run.overwrite (`open_training_run`). Returns (run,
    resuming). `run_info`: extra run.json fields (finetune: the parent run)."""
    info = {"dataset_manifest_sha256": _sha256(ds.layout.manifest),
            "dataset_tokens": {s: int(ds.manifest["splits"][s]["tokens"]) for s in ds.splits()}, **(run_info or {})}
    return open_training_run(exp, ds, kind="lm", info=info, dist=dist)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _planned_steps(train_cfg, steps) -> tuple[int, int]:
    """(steps per epoch, planned total steps) from epochs / max_steps / max_tokens."""
    per_epoch = steps.steps(0)
    total = train_cfg.epochs * per_epoch
    if train_cfg.max_steps:
        total = min(total, train_cfg.max_steps)
    if train_cfg.max_tokens:
        per_step = steps.tokens_per_epoch() / max(per_epoch, 1)
        total = min(total, max(1, math.ceil(train_cfg.max_tokens / per_step)))
    return per_epoch, max(1, int(total))


def _cudnn_rows(model, gpus: int) -> list[tuple[str, str]]:
    rows = []
    for name, reasons in model.cudnn_report():
        verdict = "cuDNN-eligible: yes" if not reasons else f"cuDNN-eligible: no: because {', '.join(reasons)}"
        if not gpus:
            verdict += " (no GPU: the CPU kernel runs)"
        rows.append((name, verdict))
    return rows


# ---------------------------------------------------------------- the session


class PretrainSession:
    """One `pretrain` invocation: owns the model, optimizer, data, checkpoints and logs."""

    def __init__(self, exp, reporter: Reporter, *, init_model=None, run_info: dict[str, Any] | None = None):
        self.exp = exp
        self.reporter = reporter
        self.init_model = init_model  # finetune hook: called with the freshly built model (not when resuming)
        self.run_info = run_info
        self.cfg = exp.train
        self.t_start = time.perf_counter()

    # -- setup
    def setup(self) -> None:
        exp, cfg = self.exp, self.cfg
        tf = import_tf()
        from llmctl.data.batching import build_steps
        from llmctl.data.dataset import open_dataset
        from llmctl.train.distribution import build_distribution

        self.dist = build_distribution(exp.distribute)  # before any other op (multi-worker requirement)
        if not self.dist.is_chief:
            self.reporter = Reporter("none")
        seed_everything(exp.run.seed, exp.run.deterministic)

        self.ds = ds = open_dataset(exp.data.dir)
        if ds.task != "lm":
            self.reporter.warn(f"dataset {ds.root} was built for task={ds.task}; pretraining reads its token "
                               "stream as plain text")
        _check_tokenizer_source(exp, ds)
        if not ds.has("train"):
            raise DataError(f"dataset {ds.root} has an empty train split", hint="give preprocess training text")
        self.train_tokens = ds.tokens("train")
        self.valid_tokens = ds.tokens("valid") if ds.has("valid") else None
        if self.valid_tokens is None:
            if cfg.early_stopping:
                raise DataError("train.early_stopping needs a validation split, the dataset has none",
                                hint="set data.split.valid > 0 (or data.valid) and preprocess again, or unset "
                                     "train.early_stopping")
            if cfg.schedule.kind == "plateau":
                raise DataError("train.schedule.kind=plateau needs a validation split, the dataset has none",
                                hint="set data.split.valid > 0 and preprocess again, or pick another schedule")
        self.steps = build_steps(self.train_tokens, cfg, seed=exp.run.seed, num_replicas=self.dist.num_replicas)
        self.steps_per_epoch, self.total_steps = _planned_steps(cfg, self.steps)

        from llmctl.limits import check_training_memory

        check_training_memory(exp, ds.vocab_size)  # before the run directory exists: no stub left behind
        self.run_dir, self.resuming = _prepare_run(exp, ds, self.dist, self.run_info)
        self._build_model(tf)

    def _build_model(self, tf) -> None:
        import keras

        from llmctl.models.lstm_lm import build_language_model
        from llmctl.train.checkpoints import CheckpointStore
        from llmctl.train.loop import SampledSoftmax, StreamEvaluator, Trainer, decide_jit, decide_lstm_kernel
        from llmctl.train.optimizers import build_optimizer
        from llmctl.train.schedules import build_schedule

        exp, cfg = self.exp, self.cfg
        keras.mixed_precision.set_global_policy(PRECISION_POLICIES[cfg.mixed_precision])
        self.devices = device_report()
        gpus = len(self.devices["gpus"])
        with self.dist.strategy.scope():
            self.model = build_language_model(exp.model, self.ds.vocab_size)
            self.embedding_stats = None
            if exp.model.pretrained_embeddings is not None:
                from llmctl.models.embeddings_init import load_pretrained_vectors

                matrix, stats = load_pretrained_vectors(exp.model.pretrained_embeddings, self.ds.tokenizer(),
                                                        exp.model.embedding_dim, seed=exp.run.seed)
                self.model.embedding.embeddings.assign(matrix)
                self.embedding_stats = stats
            if self.init_model is not None and not self.resuming:
                self.init_model(self.model)
            self.optimizer = build_optimizer(cfg, mixed_precision=cfg.mixed_precision)
            self.optimizer.build(self.model.trainable_variables)

        sampled = None
        if exp.model.output == "sampled":
            counts = SampledSoftmax.count_tokens(self.train_tokens, self.ds.vocab_size)
            sampled = SampledSoftmax(counts, exp.model.sampled_negatives)
        self.sampled = sampled
        kernel, self.kernel_reason = decide_lstm_kernel(cfg.lstm_kernel, gpus=gpus, variable_bptt=cfg.variable_bptt,
                                                        mixed_precision=cfg.mixed_precision)
        self.model.lstm_kernel = kernel
        jit, why = decide_jit(cfg.jit_compile, gpus=gpus, mixed_precision=cfg.mixed_precision,
                              variable_bptt=cfg.variable_bptt, distributed=self.dist.distributed)
        if jit is None:
            from llmctl.train.xla_choice import choose_xla

            jit, why = choose_xla(exp.model, cfg, self.ds.vocab_size, self.steps.fixed_width or cfg.bptt,
                                  self.steps.replica_batch, sampled, lstm_kernel=kernel)
        self.jit_reason = why
        self.trainer = Trainer(self.model, self.optimizer, self.dist, clip_norm=cfg.clip_norm,
                               carry_state=self.steps.carry_state, jit=jit, sampled=sampled, seed=exp.run.seed,
                               state_reset=cfg.state_reset)
        self.trainer.replica_batch = self.steps.replica_batch
        self.evaluator = StreamEvaluator(self.model, jit=jit and not gpus)
        self.eval_batch = self.exp.evaluate.batch_size
        self.eval_bptt = self.exp.evaluate.bptt or cfg.bptt
        carry_shapes = [(cfg.batch_size, exp.model.units)] * (2 * exp.model.layers)
        self.store = CheckpointStore(self.run_dir.checkpoints, model=self.model, optimizer=self.optimizer,
                                     carry_shapes=carry_shapes, keep_last=cfg.keep_last, is_chief=self.dist.is_chief)
        self.schedule = build_schedule(cfg, total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch)
        self.progress = Progress(data={"mode": self.steps.mode, "seed": exp.run.seed,
                                       "variable_bptt": cfg.variable_bptt})
        self.restored_states: list[np.ndarray] | None = None
        if self.resuming:
            data, states, prefix = self.store.restore("last")
            self.progress = Progress.from_dict(data)
            if self.progress.schedule:
                self.schedule.load_state(self.progress.schedule)
            self.restored_states = states if self.progress.epoch_step > 0 else None
            self.resumed_from = self.progress.step
            self.reporter.info(f"resuming {self.run_dir.root} from {prefix.name}: step {self.progress.step}, "
                               f"epoch {self.progress.epoch + 1}, data position {self.progress.epoch_step}")
        else:
            self.resumed_from = None

    def report_setup(self) -> None:
        exp, cfg = self.exp, self.cfg
        from llmctl.train.peak_flops import matmul_peak

        self.peak = matmul_peak() if self.dist.is_chief else {"flops": float("nan")}
        gpus = self.devices["gpus"]
        rows: list[tuple[str, Any]] = [
            ("run", str(self.run_dir.root)),
            ("dataset", f"{self.ds.root} (train {len(self.train_tokens):,} tokens, valid "
                        f"{len(self.valid_tokens) if self.valid_tokens is not None else 0:,}, vocab "
                        f"{self.ds.vocab_size:,})"),
            ("devices", f"TF {self.devices['tensorflow']}, {', '.join(gpus) if gpus else 'CPU only'}; "
                        f"{self.dist.kind} × {self.dist.num_replicas} replica(s)"
                        + (f" on {self.dist.num_workers} workers" if self.dist.num_workers > 1 else "")),
            ("precision", f"{cfg.mixed_precision} (policy {PRECISION_POLICIES[cfg.mixed_precision]}, loss float32)"),
            ("XLA", f"{'on' if self.trainer.jit else 'off'} — {self.jit_reason}"),
            ("LSTM kernel", self.kernel_reason),
            ("model", f"{exp.model.layers}×{exp.model.units} LSTM, emb {exp.model.embedding_dim}, "
                      f"{self.model.count_params():,} params, output {exp.model.output}"),
            ("batching", f"{self.steps.mode}, {cfg.batch_size} × {cfg.bptt}"
                         + (" (variable)" if cfg.variable_bptt else "")
                         + (f", accumulate {cfg.grad_accum}" if cfg.grad_accum > 1 else "")
                         + f", {self.steps_per_epoch:,} steps/epoch, {self.total_steps:,} planned"),
            ("peak", f"{self.peak['flops'] / 1e9:.1f} GFLOP/s float32 matmul"
                     + (" (cached)" if self.peak.get("cached") else " (measured)")),
        ]
        rows += _cudnn_rows(self.model, len(gpus))
        if self.embedding_stats:
            s = self.embedding_stats
            rows.append(("embeddings", f"{s['covered']:,}/{s['vocab']:,} tokens covered ({s['coverage']:.1%}; "
                                       f"{s['exact']:,} exact, {s['lowercase']:,} lowercase) from {s['path']}"))
        self.reporter.table("pretrain", rows)

    # -- helpers
    def _flops_per_token(self) -> float:
        flops = float(self.model.flops_per_token())
        if self.sampled is not None:
            width = self.exp.model.embedding_dim if self.model.projection is not None else self.exp.model.units
            flops += 2.0 * width * (self.sampled.num_sampled + 1) - 2.0 * width * self.ds.vocab_size
        return 3.0 * flops  # forward + backward

    def _budget_stop(self) -> str | None:
        p, cfg = self.progress, self.cfg
        if cfg.max_steps and p.step >= cfg.max_steps:
            return f"max_steps={cfg.max_steps}"
        if cfg.max_tokens and p.tokens >= cfg.max_tokens:
            return f"max_tokens={cfg.max_tokens:,}"
        if cfg.max_time and p.train_time >= cfg.max_time:
            return f"max_time={cfg.max_time:g}s"
        if p.epoch >= cfg.epochs:
            return f"epochs={cfg.epochs}"
        return None

    def _states_for_checkpoint(self, states) -> list[np.ndarray]:
        if states is None or not self.steps.carry_state:
            return [np.zeros((self.cfg.batch_size, self.exp.model.units), np.float32)] * (2 * self.exp.model.layers)
        return self.trainer.gather_states(states)

    def _save(self, kind: str, states) -> None:
        self.progress.schedule = self.schedule.state()
        metrics = {"valid_loss": self.progress.last_valid, "tokens": self.progress.tokens}
        self.store.save(kind, step=self.progress.step, progress=asdict(self.progress),
                        states=self._states_for_checkpoint(states), metrics=metrics,
                        validates=self.valid_tokens is not None)
        if kind == "last":
            self.last_saved_step = self.progress.step

    def _evaluate(self, states) -> float | None:
        if self.valid_tokens is None:
            return None
        p = self.progress
        result = self.evaluator(self.valid_tokens, batch_size=self.eval_batch, bptt=self.eval_bptt)
        loss = result.loss
        p.evals += 1
        p.last_eval_step = p.step
        p.last_valid = loss
        improved = math.isfinite(loss) and (p.best_valid is None or loss < p.best_valid)
        if improved:
            p.best_valid, p.best_step, p.bad_evals = loss, p.step, 0
        else:
            p.bad_evals += 1
        decayed = self.schedule.on_evaluation(loss)
        self.log.log("valid", step=p.step, epoch=p.epoch, tokens=p.tokens, elapsed_s=p.train_time, loss=loss,
                     lr=self._lr())
        epochs_done = p.epoch + p.epoch_step / max(self.steps.steps(p.epoch), 1)
        self.reporter.metrics("valid", {"step": p.step, "epochs": round(epochs_done, 2), "loss": loss,
                                        "ppl": result.perplexity, "bits": result.bits_per_token,
                                        "best": p.best_valid, **({"lr_decayed": True} if decayed else {})})
        if decayed:
            self.reporter.info(f"learning rate decayed to {self.schedule.lr(p.step, p.epoch):.3g} "
                               f"(valid loss did not improve)")
        if improved:
            self._save("best", states)
        return loss

    def _lr(self) -> float:
        return float(self.schedule.lr(self.progress.step, self.progress.epoch))

    # -- the loop
    def train(self) -> str:
        from llmctl.data.batching import dataset_fn_for, step_arrays
        from llmctl.train.metrics_log import MetricsLog

        p, cfg = self.progress, self.cfg
        self.log = MetricsLog(self.run_dir, resume_step=p.step if self.resuming else None,
                              enabled=self.dist.is_chief)
        self.last_saved_step = p.step if self.resuming else None
        flops_per_token = self._flops_per_token()
        peak = self.peak["flops"]
        self.compute_time = 0.0
        self.compute_tokens = 0
        first_step = True
        skipped_in_a_row = 0
        # the partial log interval travels in checkpoints, so a run resumed between two log rows logs the same rows
        interval = {"loss": 0.0, "tokens": 0.0, "time": 0.0, "norm": 0.0, "steps": 0, **p.log_interval}
        p.log_interval = interval
        last_advance = 0.0
        stop = self._budget_stop()
        states = None
        self.reporter.start("pretrain", total=self.total_steps)
        self.reporter.advance(p.step, epoch=p.epoch + 1)
        loop_start = time.perf_counter()
        time_base = p.train_time
        restore_sigint = self._catch_first_interrupt()
        try:
            while stop is None:
                n_steps = self.steps.steps(p.epoch)
                if self.restored_states is not None:
                    states = self.trainer.scatter_states(self.restored_states)
                    self.restored_states = None
                elif p.epoch_step == 0 or states is None:
                    states = self.trainer.zero_states()
                if self.dist.distributed:
                    fn = dataset_fn_for(self.steps, p.epoch, p.epoch_step,
                                        replicas_per_worker=self.dist.replicas_per_worker)
                    iterator = iter(self.dist.strategy.distribute_datasets_from_function(fn))
                else:
                    iterator = step_arrays(self.steps, p.epoch, start_step=p.epoch_step)
                while p.epoch_step < n_steps and stop is None:
                    element = next(iterator)
                    if first_step:
                        failure = self.trainer.probe_jit(element, states, p.step)
                        if failure:
                            self.jit_reason = f"the step does not compile with XLA ({failure})"
                            self.reporter.warn(f"XLA off: {self.jit_reason}")
                    lr = self._lr()
                    if cfg.variable_bptt:
                        lr *= self.steps.mean_window(p.epoch, p.epoch_step) / cfg.bptt
                    t0 = time.perf_counter()
                    loss_sum, count, norm, new_states = self.trainer.step(element, states, p.step, lr)
                    dt = time.perf_counter() - t0
                    if not (math.isfinite(loss_sum) and math.isfinite(norm)):
                        if cfg.mixed_precision == "float16" and math.isfinite(loss_sum):
                            p.skipped_steps += 1  # loss scaling skipped the update and lowered the scale
                            skipped_in_a_row += 1
                            if skipped_in_a_row > MAX_SKIPPED_FP16_STEPS:
                                self._diverged(norm, lr, "gradient")
                        else:
                            self._diverged(loss_sum / max(count, 1.0), lr, "loss")
                    elif loss_sum / max(count, 1.0) > self.diverged_above:
                        self._diverged(loss_sum / max(count, 1.0), lr, "loss", limit=self.diverged_above)
                    else:
                        skipped_in_a_row = 0
                    states = new_states
                    p.step += 1
                    p.epoch_step += 1
                    p.tokens += int(round(count))
                    p.train_time = time_base + (time.perf_counter() - loop_start)
                    if first_step:
                        first_step = False  # tracing/compilation time is not throughput
                    else:
                        self.compute_time += dt
                        self.compute_tokens += int(round(count))
                    interval["loss"] += loss_sum
                    interval["tokens"] += count
                    interval["time"] += dt
                    interval["norm"] += norm
                    interval["steps"] += 1

                    now = time.perf_counter()
                    if p.step % cfg.log_every == 0 or p.epoch_step == n_steps:
                        mean = interval["loss"] / max(interval["tokens"], 1.0)
                        tok_s = interval["tokens"] / max(interval["time"], 1e-9)
                        self.log.log("train", step=p.step, epoch=p.epoch, tokens=p.tokens, elapsed_s=p.train_time,
                                     loss=mean, lr=lr, grad_norm=interval["norm"] / interval["steps"],
                                     tokens_per_s=tok_s, mfu=tok_s * flops_per_token / peak)
                        interval = {"loss": 0.0, "tokens": 0.0, "time": 0.0, "norm": 0.0, "steps": 0}
                        p.log_interval = interval
                        self._advance(mean, lr, tok_s, flops_per_token, peak)
                        last_advance = now
                    elif self.reporter.mode == "rich" and now - last_advance > 0.5 and interval["tokens"]:
                        mean = interval["loss"] / interval["tokens"]
                        self._advance(mean, lr, interval["tokens"] / max(interval["time"], 1e-9), flops_per_token,
                                      peak)
                        last_advance = now

                    stop = self._budget_stop() if p.epoch_step < n_steps else None
                    if cfg.eval_every and p.step % cfg.eval_every == 0:
                        self._evaluate(states)
                        stop = stop or self._early_stop()
                    if p.step % cfg.checkpoint_every == 0 and p.epoch_step < n_steps:
                        self._save("last", states)
                    if self.interrupted:
                        raise _StopRequested
                if p.epoch_step >= n_steps:  # epoch finished
                    p.epoch += 1
                    p.epoch_step = 0
                    states = None
                    if not cfg.eval_every:
                        self._evaluate(None)
                    self._save("last", None)
                    stop = self._early_stop() or self._budget_stop()
                    p.train_time = time_base + (time.perf_counter() - loop_start)
        except _StopRequested:
            # Ctrl-C seen between steps: everything is consistent at step p.step — keep it, then stop as asked
            if self.dist.kind != "multi_worker" and self.last_saved_step != p.step:
                self.reporter.stop()
                self.reporter.info(f"interrupted at step {p.step}: saving a last checkpoint to resume from")
                self._save("last", states if p.epoch_step else None)
            raise KeyboardInterrupt from None
        finally:
            restore_sigint()
            self.reporter.stop()
        if self.valid_tokens is not None and p.last_eval_step != p.step:
            self._evaluate(states if p.epoch_step else None)
        if self.last_saved_step != p.step:
            self._save("last", states if p.epoch_step else None)
        return stop or "done"

    def _catch_first_interrupt(self):
        """The first Ctrl-C only sets a flag: the loop finishes the current step, saves, and stops. A second Ctrl-C
        interrupts at once (nothing saved). Returns the function that puts the previous handler back."""
        import signal

        self.interrupted = False
        try:
            previous = signal.getsignal(signal.SIGINT)
        except ValueError:
            return lambda: None

        def handler(signum, frame):
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True

        try:
            signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: keep Python's default behaviour
            return lambda: None
        return lambda: signal.signal(signal.SIGINT, previous)

    def _early_stop(self) -> str | None:
        es = self.cfg.early_stopping
        if es and self.progress.bad_evals >= es:
            return f"early_stopping: {es} evaluation(s) without improvement"
        return None

    def _advance(self, loss: float, lr: float, tok_s: float, flops_per_token: float, peak: float) -> None:
        p, cfg = self.progress, self.cfg
        fields: dict[str, Any] = {"epoch": f"{p.epoch + 1}/{cfg.epochs}", "loss": loss,
                                  "ppl": math.exp(loss) if loss < 700 else float("inf"), "lr": lr,
                                  "tok/s": round(tok_s), "mfu": f"{tok_s * flops_per_token / peak:.1%}"}
        remaining = []
        if tok_s > 0 and self.total_steps > p.step:
            per_step = p.train_time / max(p.step - (self.resumed_from or 0), 1)
            remaining.append((self.total_steps - p.step) * per_step)
        if cfg.max_time:
            remaining.append(max(cfg.max_time - p.train_time, 0.0))
        if remaining:
            fields["eta"] = _duration(min(remaining))
        self.reporter.advance(p.step, **fields)

    @property
    def diverged_above(self) -> float:
        """A finite loss this high means the run diverged: DIVERGED_FACTOR × ln(vocab) nats per token, i.e. the
        targets get a probability below vocab**-DIVERGED_FACTOR — far worse than uniform guessing (ln vocab), which
        an initialised model starts near. Training stops as for a NaN loss."""
        return DIVERGED_FACTOR * math.log(max(self.ds.vocab_size, 2))

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
            f"{self.ds.vocab_size:,}),")
        raise TrainingError(f"the training {what} {became} at step {p.step + 1} (epoch {p.epoch + 1}); {kept}",
                            hint=f"lower train.lr (now {lr:.3g}, e.g. --set train.lr={lr / 4:.3g}) or {clip}")

    # -- finish
    def finish(self, stop: str) -> Result:
        from llmctl.models.keras_file import save_model_file
        from llmctl.train.checkpoints import load_weights, resolve_checkpoint

        p = self.progress
        final_valid = p.last_valid if p.last_eval_step == p.step else None
        if self.dist.is_chief:
            self.log.close()
        which = "best" if self.valid_tokens is not None and p.best_step is not None else "last"
        self.dist.barrier()  # every worker's part of the last save is done
        if self.dist.is_chief:
            prefix, _ = resolve_checkpoint(self.run_dir.checkpoints, which)
            load_weights(self.model, prefix)
            save_model_file(self.model, self.run_dir.model)
        values = self._write_outputs(status="finished", stop=stop, final_valid=final_valid, weights=which)
        return Result(title=f"pretrain: {self.run_dir.root.name}", values=values,
                      lines=[f"stopped by {stop}; model.keras holds the {which} weights (step "
                             f"{p.best_step if which == 'best' else p.step})"])

    def _write_outputs(self, *, status: str, stop: str, final_valid: float | None,
                       weights: str | None = None) -> dict[str, Any]:
        from llmctl.train.metrics_log import write_loss_plot, write_summary

        p, cfg = self.progress, self.cfg
        tok_s = self.compute_tokens / self.compute_time if self.compute_time > 0 else None
        mfu = tok_s * self._flops_per_token() / self.peak["flops"] if tok_s else None
        values: dict[str, Any] = {
            "run_dir": str(self.run_dir.root),
            "status": status,
            "stop_reason": stop,
            "final_valid_loss": final_valid,
            "final_valid_ppl": math.exp(final_valid) if final_valid is not None and final_valid < 700 else None,
            "best_valid_loss": p.best_valid,
            "best_step": p.best_step,
            "steps": p.step,
            "epochs_completed": p.epoch,
            "tokens": p.tokens,
            "tokens_per_s": tok_s,
            "mfu": mfu,
            "peak_flops": self.peak["flops"],
            "train_time_s": p.train_time,
            "wall_time_s": time.perf_counter() - self.t_start,
            "resumed_from_step": self.resumed_from,
            "devices": {**self.devices, **self.dist.describe()},
            "precision": cfg.mixed_precision,
            "jit": self.trainer.jit,
            "jit_reason": self.jit_reason,
            "params": int(self.model.count_params()),
            "model_weights": weights,
        }
        if self.dist.is_chief:
            summary = {**values, "budgets": {"epochs": cfg.epochs, "max_steps": cfg.max_steps,
                                             "max_tokens": cfg.max_tokens, "max_time": cfg.max_time},
                       "batching": self.steps.describe(), "eval": {"batch_size": self.eval_batch,
                                                                   "bptt": self.eval_bptt, "split": "valid"}}
            write_summary(self.run_dir.summary, summary)
            write_loss_plot(self.log.rows(), self.run_dir.loss_plot, title=f"{self.run_dir.root.name}: loss")
        return values


class _StopRequested(Exception):
    """Raised inside the loop after a Ctrl-C, at a step boundary."""


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@locks.scoped  # the run / dataset directory lock is released when the command ends
def run(exp, reporter: Reporter | None = None, *, init_model=None, run_info: dict[str, Any] | None = None) -> Result:
    """Train the language model `exp` describes; returns the final metrics (also in summary.json).

    `init_model(model)` (used by `finetune.task=lm`) initialises the freshly built model, e.g. with a parent run's
    weights; `run_info` adds fields to run.json."""
    import_tf()  # before keras: TensorFlow's start-up noise is silenced there
    import keras

    reporter = reporter or Reporter("none")
    previous_policy = keras.mixed_precision.global_policy().name
    session = PretrainSession(exp, reporter, init_model=init_model, run_info=run_info)
    try:
        session.setup()
        session.report_setup()
        stop = session.train()
        return session.finish(stop)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
