"""The typed experiment schema: every section, every field, its default and a one-line description.

Validation happens once, at the edge (`llmctl.config.load`); core code receives these objects, never raw dicts.
Fields typed `PathField` are resolved against the folder of the YAML file that set them (see `llmctl.config`).

This module holds `Experiment`, the run, model and command sections (train, finetune, evaluate, generate,
distribute, export, serve); the `Section` base and path fields are in `llmctl.schema_base`, the dataset sections
(`data`, `tokenizer`) in `llmctl.schema_data`. Every name is importable from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import Field, PrivateAttr, field_validator, model_validator

from llmctl.schema_base import MAX_SEED, IsPath, PathField, Section
from llmctl.schema_data import DataConfig, NormalizeConfig, SourceConfig, SplitConfig, TokenizerConfig

__all__ = [
    "MAX_NEW_TOKENS", "MAX_SEED", "DataConfig", "DistributeConfig", "EvaluateConfig", "Experiment", "ExportConfig",
    "FinetuneConfig", "GenerateConfig", "IsPath", "ModelConfig", "NormalizeConfig", "PathField", "RunConfig",
    "ScheduleConfig", "Section", "ServeConfig", "SourceConfig", "SplitConfig", "TokenizerConfig", "TrainConfig",
    "eval_bptt",
]

MAX_NEW_TOKENS = 1_000_000  # generate.max_new_tokens: beyond this a run of `generate` is a mistake, not a request


class RunConfig(Section):
    """Where the run lives and how it behaves as a process."""

    name: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                      description="Run name; the run directory is `<run.dir>/<run.name>`.")
    dir: PathField = Field(Path("runs"), description="Folder that holds run directories.")
    seed: int = Field(1234, ge=0, le=MAX_SEED, description="Seed for weights, data order, dropout and sampling.")
    deterministic: bool = Field(False, description="Enable TensorFlow op determinism: identical runs on CPU (slower).")
    resume: Literal["never", "auto", "always"] = Field(
        "never", description="`auto`: continue from the last checkpoint when one exists; `always`: require one.")
    overwrite: bool = Field(False, description="Replace an existing run directory that holds a different config.")
    progress: Literal["auto", "rich", "plain", "jsonl", "none"] = Field(
        "auto", description="Progress display: live Rich bar, plain lines, JSON lines (for CI logs) or nothing.")


class ModelConfig(Section):
    """Embedding → LSTM × layers → Dense language model."""

    embedding_dim: int = Field(128, ge=1, description="Embedding width.")
    layers: int = Field(2, ge=1, le=16, description="Number of stacked LSTM layers.")
    units: int = Field(256, ge=1, description="Units per LSTM layer.")
    embedding_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on embeddings.")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout between LSTM layers.")
    output_dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout before the output layer.")
    recurrent_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Recurrent dropout; anything > 0 disables the cuDNN kernel on GPUs.")
    tie_embeddings: bool = Field(
        False, description="Share input embedding and output weights (a projection is added when sizes differ).")
    pretrained_embeddings: Optional[PathField] = Field(
        None, description="word2vec/GloVe text-format vectors to initialise the embedding (mapped via the vocab).")
    freeze_embeddings: bool = Field(False, description="Keep the embedding fixed during training.")
    output: Literal["full", "sampled"] = Field(
        "full", description="`sampled`: sampled-softmax training loss for large vocabularies "
                            "(evaluation stays exact full softmax).")
    sampled_negatives: int = Field(1024, ge=1, description="Negative samples per step for `output: sampled`.")
    strict_cudnn: bool = Field(False, description="Make any setting that rules out the cuDNN LSTM kernel an error.")
    init: Literal["keras", "uniform"] = Field(
        "keras", description="Initial weights. `keras`: Keras defaults (Glorot-uniform embedding/LSTM input and output "
                             "kernels, orthogonal recurrent kernels, LSTM forget-gate bias 1). `uniform`: as PyTorch's "
                             "`word_language_model` — embedding and output weights uniform in ±`init_range`, output "
                             "bias 0, LSTM weights and biases as `torch.nn.LSTM` (uniform in ±1/sqrt(units), the bias "
                             "the sum of two such draws).")
    init_range: float = Field(0.1, gt=0.0, le=1.0,
                              description="`init: uniform`: half-width of the embedding and output weight range.")

    @model_validator(mode="after")
    def _cudnn(self):
        if self.strict_cudnn and self.recurrent_dropout > 0:
            raise ValueError(f"strict_cudnn is on but recurrent_dropout={self.recurrent_dropout} rules out the cuDNN "
                             "kernel; set model.recurrent_dropout=0 or model.strict_cudnn=false")
        return self


class ScheduleConfig(Section):
    """Learning-rate schedule."""

    kind: Literal["constant", "step", "plateau", "cosine", "onecycle", "slanted_triangular"] = Field(
        "constant", description="Schedule shape.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps (constant, step, cosine).")
    step_epochs: int = Field(1, ge=1, description="`step`: decay every this many epochs.")
    gamma: float = Field(0.5, gt=0.0, le=1.0, description="`step`: multiply the lr by this at each decay.")
    plateau_factor: float = Field(
        0.25, gt=0.0, lt=1.0, description="`plateau`: multiply the lr by this when valid loss stops improving.")
    plateau_patience: int = Field(0, ge=0, description="`plateau`: evaluations without improvement before decaying.")
    min_lr: float = Field(0.0, ge=0.0, description="Floor for decaying schedules.")
    cut_frac: float = Field(
        0.1, gt=0.0, lt=1.0, description="`onecycle`/`slanted_triangular`: fraction of steps spent increasing.")
    ratio: float = Field(32.0, ge=1.0, description="`slanted_triangular`: how much smaller the lowest lr is.")


class TrainConfig(Section):
    """Optimisation, budgets, checkpoints and performance options for `pretrain` and `finetune`."""

    batching: Literal["stream", "windows"] = Field(
        "stream", description="`stream`: B contiguous columns, state carried between windows (truncated BPTT); "
                              "`windows`: shuffled independent windows.")
    batch_size: int = Field(32, ge=1, description="Global batch size (sequences per step, across all replicas).")
    bptt: int = Field(64, ge=2, description="Tokens per training window (truncated BPTT length).")
    variable_bptt: bool = Field(False, description="AWD-LSTM style random window length around `bptt` (stream).")
    state_reset: float = Field(
        0.0, ge=0.0, lt=1.0, description="`stream`: chance that a column's carried LSTM state is zeroed before a "
                                         "window, so the model also learns to start cold (prompts, evaluation).")
    epochs: int = Field(1, ge=1, description="Passes over the training split.")
    max_steps: Optional[int] = Field(None, ge=1, description="Stop after this many optimizer steps.")
    max_tokens: Optional[int] = Field(None, ge=1, description="Stop after this many training tokens.")
    max_time: Optional[float] = Field(None, gt=0, description="Stop after this many seconds of training.")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adam", description="Optimizer.")
    lr: float = Field(2e-3, gt=0.0, description="Peak learning rate.")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="SGD momentum.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW decoupled weight decay.")
    clip_norm: Optional[float] = Field(1.0, gt=0.0, description="Global gradient-norm clipping (null = off).")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Learning-rate schedule.")
    grad_accum: int = Field(1, ge=1, description="Accumulate gradients over this many batches per optimizer step.")
    early_stopping: Optional[int] = Field(
        None, ge=1, description="Stop after this many evaluations without valid-loss improvement.")
    eval_every: Optional[int] = Field(None, ge=1, description="Evaluate every N steps and where training ends "
                                                              "(default: each epoch end).")
    checkpoint_every: int = Field(500, ge=1, description="Save the `last` checkpoint every N steps (and each epoch).")
    keep_last: int = Field(2, ge=1, description="How many `last` checkpoints to keep.")
    log_every: int = Field(20, ge=1, description="Log metrics every N steps.")
    mixed_precision: Literal["none", "bfloat16", "float16"] = Field(
        "none", description="Compute precision (weights stay float32).")
    jit_compile: Union[Literal["auto"], bool] = Field(
        "auto", description="XLA-compile the train step; `auto`: on for CPU, off when cuDNN LSTM kernels are used.")
    lstm_kernel: Literal["auto", "keras"] = Field(
        "auto", description="How LSTM layers run: `auto` — on GPUs the Keras layer (cuDNN kernel); on CPU llmctl's "
                            "fused kernel (whole-window matmuls for inputs and weight gradients, XLA-compiled "
                            "recurrence for fixed-length windows), same weights and results; `keras` — the Keras "
                            "layer everywhere.")


class FinetuneConfig(Section):
    """Adapting a pretrained run (or training a task head from scratch) with `llmctl finetune`."""

    task: Literal["lm", "classify", "pairs"] = Field(
        "classify", description="Domain LM adaptation, text classification, or prompt→response.")
    parent: Optional[PathField] = Field(
        None, description="Pretrained run directory (weights + tokenizer); null trains from scratch.")
    checkpoint: Literal["best", "last"] = Field("best", description="Which parent checkpoint to start from.")
    pooling: Literal["last", "mean", "max", "concat"] = Field(
        "concat", description="Classifier pooling over LSTM outputs (`concat` = last ⊕ mean ⊕ max).")
    head_units: int = Field(64, ge=0, description="Hidden units of the classifier head (0 = linear head).")
    head_dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout in the classifier head.")
    head_norm: Literal["none", "batch"] = Field(
        "none", description="`batch`: ULMFiT's normalised head (norm → dropout → Dense → ReLU → norm → dropout → "
                            "Dense); each norm standardises with the first training batch's statistics, then fixed, "
                            "with a trainable scale and shift, so a head on a pretrained encoder's small-variance "
                            "features trains at once and inference matches training. `none`: no normalisation.")
    max_length: Optional[int] = Field(
        128, ge=2, description="Truncate classification/pairs sequences to this many tokens (their first ones); "
                               "null = whole documents.")
    backprop_tokens: Optional[int] = Field(
        None, ge=1, description="`classify` (BPT3C, ULMFiT): read each document in `train.bptt` chunks carrying the "
                                "LSTM state, pool over the whole document, and backpropagate through its last this "
                                "many tokens only (rounded up to whole chunks): memory and step time are bounded by "
                                "this, not by the document length. null = backpropagate through every token.")
    class_weights: Literal["none", "balanced"] = Field("none", description="Weight classes inversely to frequency.")
    gradual_unfreeze: bool = Field(
        False, description="ULMFiT gradual unfreezing: head first, then one more layer group per epoch.")
    discriminative_lr: Optional[float] = Field(
        None, ge=1.0, description="Per-group lr divisor going down the stack (ULMFiT uses 2.6); null = same lr.")
    extend_vocab: bool = Field(
        False, description="`lm`: allow a dataset whose tokenizer extends the parent's; new rows start at the mean "
                           "embedding.")
    min_class_examples: int = Field(2, ge=1, description="Refuse a class with fewer training examples than this.")
    bidirectional: bool = Field(
        False, description="`classify` from scratch: a second LSTM stack reads each document backwards; both "
                           "directions are pooled (a language-model parent reads forward only).")
    word_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="`classify`: during training, replace each token by `<unk>` with this "
                                         "probability (trains the `<unk>` embedding that unseen words map to).")
    average_decay: Optional[float] = Field(
        None, gt=0.0, lt=1.0,
        description="`classify`/`pairs`: evaluate, select and save an exponential moving average of the weights "
                    "with this decay (Polyak averaging, e.g. 0.999); training continues on the raw weights.")

    @model_validator(mode="after")
    def _average_for_documents(self):
        if self.average_decay is not None and self.task == "lm":
            raise ValueError("finetune.average_decay applies to task classify and pairs, not lm; remove it")
        if self.backprop_tokens is not None and (self.task != "classify" or self.bidirectional):
            raise ValueError("finetune.backprop_tokens (chunked whole documents) is for task classify with a "
                             "forward encoder; remove it or finetune.bidirectional")
        if self.bidirectional and (self.task != "classify" or self.parent is not None):
            raise ValueError("finetune.bidirectional is for task classify trained from scratch (no parent: a "
                             "language model reads forward only); remove it or finetune.parent")
        return self


class EvaluateConfig(Section):
    """What `llmctl evaluate` measures."""

    split: Literal["train", "valid", "test"] = Field("valid", description="Dataset split to evaluate.")
    files: list[PathField] = Field(
        default_factory=list, description="Evaluate these text files instead (tokenized with the run's tokenizer).")
    context: Literal["carry", "reset"] = Field(
        "carry", description="`carry`: LSTM state carried over the whole stream (standard); `reset`: per window.")
    checkpoint: str = Field("best", description="`best`, `last`, or a checkpoint path.")
    batch_size: int = Field(10, ge=1, description="Stream columns during evaluation.")
    bptt: Optional[int] = Field(None, ge=2, description="Window length (default: `train.bptt`).")
    max_generate: int = Field(200, ge=0, description="`pairs`: how many examples to generate for EM/BLEU/chrF.")


class GenerateConfig(Section):
    """Decoding settings for `llmctl generate`."""

    strategy: Literal["greedy", "sample", "beam"] = Field("sample", description="Decoding strategy.")
    max_new_tokens: int = Field(200, ge=1, le=MAX_NEW_TOKENS, description="Tokens to generate per prompt.")
    min_new_tokens: int = Field(0, ge=0, description="Forbid end-of-sequence before this many tokens.")
    temperature: float = Field(1.0, gt=0.0, description="Softmax temperature (> 0).")
    top_k: Optional[int] = Field(None, ge=1, description="Sample only among the k most likely tokens.")
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0, description="Nucleus sampling: smallest set with mass ≥ p.")
    repetition_penalty: float = Field(1.0, ge=1.0, description="CTRL-style penalty on already generated tokens.")
    beam_width: int = Field(4, ge=1, description="`beam`: beams per prompt.")
    length_penalty: float = Field(1.0, ge=0.0, description="`beam`: score = logp / length**length_penalty.")
    n_best: int = Field(1, ge=1, description="`beam`: how many hypotheses to return per prompt.")
    stop: list[str] = Field(default_factory=list, description="Stop strings: output is cut at the first one.")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED,
                                description="Sampling seed (default: `run.seed`): same seed → same text.")
    checkpoint: str = Field("best", description="`best`, `last`, or a checkpoint path.")
    prompts: list[str] = Field(default_factory=list, description="Prompts used when none come from the command line.")

    @model_validator(mode="after")
    def _beam(self):
        if self.strategy == "beam" and self.n_best > self.beam_width:
            raise ValueError(f"n_best ({self.n_best}) cannot exceed beam_width ({self.beam_width})")
        return self


class DistributeConfig(Section):
    """Multi-device training through `tf.distribute`."""

    strategy: Literal["none", "mirrored", "multi_worker"] = Field(
        "none", description="`mirrored`: all local GPUs (or `devices`); `multi_worker`: machines described by "
                            "the TF_CONFIG environment variable.")
    devices: list[str] = Field(default_factory=list, description="`mirrored`: explicit device names.")
    logical_cpus: int = Field(
        0, ge=0, description="Split the CPU into this many logical devices (testing mirrored without GPUs).")


class ExportConfig(Section):
    """Deployable artifacts written by `llmctl export`."""

    dir: Optional[PathField] = Field(None, description="Output directory (default `<run>/export`).")
    formats: list[Literal["saved_model", "tflite"]] = Field(
        default_factory=lambda: ["saved_model", "tflite"], description="Which artifacts to write.")
    quantize: Literal["none", "dynamic_int8"] = Field("none", description="TFLite weight quantisation.")
    overwrite: bool = Field(False, description="Replace an existing export directory.")


class ServeConfig(Section):
    """`llmctl serve`: an OpenAI-compatible HTTP service for a trained run, with dynamic batching."""

    host: str = Field("127.0.0.1", min_length=1,
                      description="Address to bind (loopback only by default; `0.0.0.0` exposes the service).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port, printed at start).")
    backend: Literal["graph", "tflite"] = Field(
        "graph", description="Decoder: `graph` (the in-graph float32 decode loop, batched rows) or `tflite` (the "
                             "exported one-step TFLite model with dynamic-range int8 weights, run row by row; "
                             "greedy top-1 agrees with float32 on most tokens, see docs/serve.md).")
    max_batch: int = Field(32, ge=1, le=1024, description="Rows (prompts) decoded together at most.")
    batch_wait_ms: float = Field(
        5.0, ge=0.0, le=10_000, description="An idle decoder waits this long for more requests to batch with.")
    max_queue: int = Field(256, ge=1, description="Prompts waiting for a batch slot at most; beyond: 429 at once.")
    chunk: int = Field(8, ge=1, le=1024, description="Decode steps per loop call: rows join, leave and stream "
                                                      "between calls.")
    max_tokens_limit: int = Field(1024, ge=1, description="Largest `max_tokens` a request may ask for.")
    max_prompt_tokens: int = Field(1024, ge=1, description="Longest prompt, in tokens, a request may send.")
    max_prompts: int = Field(32, ge=1, description="Most prompts (or classify inputs) in one request.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body; beyond: 413.")
    api_key: Optional[str] = Field(
        None, min_length=1, description="Require `Authorization: Bearer KEY` on /v1/* (default: the "
                                        "LLMCTL_API_KEY environment variable, else no key).")
    xla: bool = Field(True, description="XLA-compile the decode loop (faster sampling on CPU; compiled at "
                                        "start-up for batches padded to 1, 2, 4, ... max_batch rows).")
    graceful_timeout_s: float = Field(
        60.0, gt=0, description="On SIGTERM/Ctrl-C: how long in-flight requests may take to finish.")
    access_log: bool = Field(False, description="Log every request line on stderr.")

    @field_validator("backend", mode="before")
    @classmethod
    def _earlier_backend_name(cls, value):
        # the config.yaml saved in runs made before the tflite backend says `backend: tf`, which is `graph`
        return "graph" if value == "tf" else value


class Experiment(Section):
    """One experiment: every command reads the sections it needs from this."""

    # the run directory a command was given (CONFIG = a run directory): it *is* the run, wherever it now lives;
    # set by `llmctl.config.load`, read by `llmctl.runs.RunDir.of`
    _run_root: Optional[Path] = PrivateAttr(default=None)

    run: RunConfig = Field(default_factory=RunConfig, description="Run directory and process behaviour.")
    data: DataConfig = Field(default_factory=DataConfig, description="Corpora and processed dataset.")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="Tokenizer.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Model architecture.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training.")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="Fine-tuning.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Evaluation.")
    generate: GenerateConfig = Field(default_factory=GenerateConfig, description="Generation.")
    distribute: DistributeConfig = Field(default_factory=DistributeConfig, description="Distribution strategy.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="Export.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="HTTP serving.")

    @model_validator(mode="after")
    def _cross(self):
        if self.model.tie_embeddings and self.model.output != "full":
            raise ValueError("model.tie_embeddings needs model.output=full")
        if self.data.train_limit is not None and self.data.task != "classify":
            raise ValueError(f"data.train_limit subsets labelled documents (data.task=classify), not "
                             f"data.task={self.data.task}; remove data.train_limit")
        if self.train.schedule.kind == "plateau" and self.data.split.valid == 0 and not self.data.valid:
            raise ValueError("train.schedule.kind=plateau needs a validation split (data.valid or data.split.valid)")
        return self


def eval_bptt(exp: Experiment) -> int:
    """The evaluation window length: `evaluate.bptt`, else `train.bptt` (the one place this rule is written)."""
    return exp.evaluate.bptt or exp.train.bptt
