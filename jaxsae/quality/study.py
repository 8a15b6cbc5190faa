"""jaxsae's default TopK recipe against sparsify and SAELens on identical activations: the main
job's stores, the same rows in the same order (`row_sources.train_batches` with the run's seed), the
same n, k, batch and number of steps, every SAE evaluated by the same code on the same held-out
store and spliced into the same model.

Each trainer is one row per (budget, seed) in <workdir>/results.jsonl, appended as it finishes,
so a rerun skips what is done. Budgets are multiples of the main job's `train.steps`. A run
without a row resumes from its folder (<workdir>/runs/<trainer>_b…_s…[_l…]_lr…), finished or
not: to retrain after a change of code, move its row and its folder away.
"""

from __future__ import annotations

import copy
import json
import pathlib
import time

import ml_collections

from jaxsae import main_job
from jaxsae.evals import downstream
from jaxsae.models import hooks as hooks_lib
from jaxsae.models import pretrained
from jaxsae.quality import peers
from jaxsae.sae import evaluate, export, optim, row_sources, train_config
from jaxsae.sae import train as train_lib

# Trainer name -> (peer, architecture, peer options, what it is). jaxsae-* are the default
# recipes (`train_config.RECIPES`); the λ architectures are run at every λ of their ladder in
# `quality.lambdas` and compared at the TopK runs' L0 (k), interpolated in log–log.
TRAINERS = {
  "jaxsae": ("jaxsae", "topk", {}, "jaxsae's default TopK recipe"),
  "sparsify-signum": ("sparsify", "topk", {"optimizer": "signum"}, "sparsify's default: signum"),
  "sparsify-adam": (
    "sparsify",
    "topk",
    {"optimizer": "adam"},
    "sparsify with Adam: warmup 1000 steps, linear decay",
  ),
  "sparsify-adam-constant": (
    "sparsify",
    "topk",
    {"optimizer": "adam", "warmup_steps": -1},
    "sparsify with Adam at a constant rate",
  ),
  "saelens": ("saelens", "topk", {}, "SAELens TopK, SAETrainer.fit()"),
  **{
    f"{peer}-{arch}": (peer, arch, {}, f"{label} {arch}")
    for arch in ("batchtopk", "relu", "gated", "jumprelu")
    for peer, label in (("jaxsae", "jaxsae's default"), ("saelens", "SAELens"))
  },
  # jaxsae's JumpReLU recipe targets an L0 (`sae.jumprelu_penalty="target"`, target k): its
  # ladder is of targets, each run with sae.k set to it.
  "jaxsae-jumprelu": (
    "jaxsae",
    "jumprelu",
    {"ladder": "target_l0"},
    "jaxsae's default jumprelu (L0 target)",
  ),
  "jaxsae-jumprelu-l0": (
    "jaxsae",
    "jumprelu",
    {"sae": {"jumprelu_penalty": "l0"}},
    "jaxsae jumprelu with the paper's λ·L0 penalty",
  ),
  # Gemma Scope 2's JumpReLU recipe in SAELens: inputs scaled to E‖x‖² = d (what its default
  # θ₀ = 0.01 and bandwidth 0.05 assume) and the quadratic penalty 2/T·(L0 − T)² around a target
  # L0 T. Its ladder is of targets T, not λ (λ = 1, SAELens's default).
  "saelens-jumprelu-target": (
    "saelens",
    "jumprelu",
    {
      "ladder": "target_l0",
      "sae_options": {
        "jumprelu_sparsity_loss_mode": "quadratic",
        "normalize_activations": "expected_average_only_in",
      },
    },
    "SAELens JumpReLU, Gemma Scope 2's L0 target, normalized inputs",
  ),
}
LAMBDA_ARCHITECTURES = ("relu", "gated", "jumprelu")
RESULTS = "results.jsonl"


def base_config() -> ml_collections.ConfigDict:
  c = main_job.base_config("topk")  # The main job's model, hook, stores, n, k, batch, steps.
  c.quality = ml_collections.ConfigDict()
  c.quality.seeds = "0,1"  # Comma-separated; each seeds init and data order for every trainer.
  c.quality.budgets = "1"  # Multiples of train.steps, comma-separated (e.g. "1,10").
  c.quality.trainers = "jaxsae,sparsify-signum,sparsify-adam,sparsify-adam-constant,saelens"
  c.quality.peer_threads = 0  # torch threads for the peers; 0: every usable core.
  # "i/n": this process takes the i-th of n shares of the runs (every n-th (budget, seed,
  # trainer, λ) from the i-th), so n processes share one workdir, e.g. one per core with
  # peer_threads=1, where small peer steps use one thread better than two.
  c.quality.shard = "0/1"
  # Held-out windows spliced for ΔCE and CE recovered (0: all of harvest.eval_windows; L0, FVU
  # and dead fraction always use the whole held-out store), and windows per spliced forward
  # (its logits are B × T × vocabulary: lower it for large vocabularies).
  c.quality.delta_ce_windows = 0
  c.quality.eval_batch_size = 16
  # SAELens's `normalize_activations` for every SAELens run ("": each trainer's own, raw inputs
  # unless it says otherwise). Raw activations far from E‖x‖² = d (Gemma's residual stream:
  # ‖x‖ in the thousands) leave SAELens's init and learning rate far off, so studies of such
  # models give it its own scaling: "expected_average_only_in".
  c.quality.saelens_normalize = ""
  # The command the published page names as its source (each study config sets its own).
  c.quality.command = (
    "python -m experiments.peer_quality --workdir=runs/peer_quality --publish=docs/quality"
  )
  # λ ladders (comma-separated) of the λ trainers named in `trainers`, keyed by the trainer's
  # name with "_" for "-" (a flag path cannot hold "-"): --config.quality.lambdas.saelens_relu=…
  # Each trainer's λ means its own penalty on its own input scale, so each has its own ladder
  # bracketing L0 = k.
  c.quality.lambdas = ml_collections.ConfigDict(
    {lambdas_key(name): "" for name, t in TRAINERS.items() if t[1] in LAMBDA_ARCHITECTURES}
  )
  # The L0 each λ architecture is read at (0: sae.k), for a model where a family cannot reach
  # L0 = k at a usable FVU within the budget: every trainer of it is then compared at this L0.
  c.quality.match_l0 = ml_collections.ConfigDict({a: 0.0 for a in LAMBDA_ARCHITECTURES})
  return c


def lambdas_key(trainer: str) -> str:
  """The `quality.lambdas` field of a λ trainer ("saelens-relu" -> "saelens_relu")."""
  return trainer.replace("-", "_")


def main_job_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The main-job part of a study config (everything but `quality`), as the main job reads it."""
  return ml_collections.ConfigDict({k: v for k, v in config.items() if k != "quality"})


def _numbers(text: str, kind=int) -> list:
  return [kind(t) for t in str(text).split(",") if t.strip()]


def runs_of(config) -> list[tuple[str, float | None]]:
  """(trainer, λ or None) for every run one (budget, seed) takes, checked."""
  names = [t.strip() for t in str(config.quality.trainers).split(",") if t.strip()]
  unknown = [t for t in names if t not in TRAINERS]
  if unknown:
    raise ValueError(f"quality.trainers: unknown {unknown}; choose from {list(TRAINERS)}")
  runs = []
  for name in names:
    if TRAINERS[name][1] not in LAMBDA_ARCHITECTURES:
      runs.append((name, None))
      continue
    key = lambdas_key(name)
    ladder = _numbers(config.quality.lambdas.get(key, ""), float)
    if len(ladder) < 2:
      raise ValueError(
        f"quality.lambdas.{key} needs at least two λ values (comma-separated) that bracket "
        f"L0 = {config.sae.k}, e.g. --config.quality.lambdas.{key}=0.02,0.05,0.1"
      )
    runs += [(name, lam) for lam in ladder]
  return runs


def share(shard: str) -> slice:
  """The runs of shard "i/n": every n-th from the i-th."""
  try:
    i, n = (int(t) for t in str(shard).split("/"))
  except ValueError:
    i, n = -1, 0
  if not 0 <= i < n:
    raise ValueError(f"quality.shard={shard!r}: write i/n with 0 ≤ i < n, e.g. 0/2 and 1/2")
  return slice(i, None, n)


def _key(r: dict) -> tuple:
  return r["trainer"], r["budget"], r["seed"], r.get("sparsity_coefficient"), r.get("lr")


def learning_rate(name: str, config) -> float:
  """The peak learning rate `name` trains at: `optim.lr` where set, else jaxsae's default rule
  (`optim.default_learning_rate`), which SAELens and sparsify's Adam are given too (SAELens has
  no rule of its own); sparsify's signum keeps its own (5e-3/√(n/2¹⁴))."""
  n = config.sae.n_latents
  peer, _, options, _ = TRAINERS[name]
  if peer == "sparsify" and options.get("optimizer") == "signum":
    return peers.SIGNUM_LR / (n / 2**14) ** 0.5
  return config.optim.lr if config.optim.lr > 0 else optim.default_learning_rate(n)


def _done(path: pathlib.Path) -> set[tuple]:
  if not path.is_file():
    return set()
  return {_key(json.loads(line)) for line in path.read_text().splitlines() if line.strip()}


def train_one(
  name: str,
  lam,
  config,
  data: main_job.Harvested,
  workdir: pathlib.Path,
  budget,
  seed,
  threads=0,
  saelens_normalize: str = "",
):
  """(SAEConfig, raw variables, training wall seconds, version) of one trainer's run;
  `saelens_normalize`: SAELens's `normalize_activations` where set (`quality.saelens_normalize`)."""
  peer, architecture, options, _ = TRAINERS[name]
  steps = config.train.steps * budget
  lr = learning_rate(name, config)
  run_name = f"{name}_b{budget}_s{seed}" + (f"_l{lam:g}" if lam else "") + f"_lr{lr:g}"
  folder = workdir / "runs" / run_name
  if peer == "jaxsae":
    run = copy.deepcopy(config)
    run.seed, run.train.steps = seed, steps
    run.train.checkpoint_every = steps  # Only the final state: the comparison is of recipes.
    run.sae.architecture = architecture
    run.sae.update(train_config.RECIPES[architecture])
    for key, value in options.get("sae", {}).items():  # The trainer's own settings win.
      run.sae[key] = run.overrides[architecture][key] = value
    if options.get("ladder") == "target_l0":
      run.sae.k = int(lam)
    elif lam is not None:
      # Both: the per-architecture overrides (which hold each recipe's own λ) win over `sae`.
      run.sae.sparsity_coefficient = lam
      run.overrides[architecture].sparsity_coefficient = lam
    start = time.perf_counter()
    result = train_lib.train(main_job.sae_part(run), folder, data.train, progress_desc=name)
    wall = time.perf_counter() - start
    group = result.groups[0]
    variables = result.member_variables(group.name, 0)
    export.save(folder / "sae", group.member_config(0), variables, result.scale)
    sae_config, variables, _ = export.load(folder / "sae")
    return sae_config, variables, wall, "this tree"
  reason = peers.missing(peer)
  if reason:
    raise RuntimeError(f"{name}: {reason}")
  batch = config.train.batch_size
  batches = iter(row_sources.train_batches(data.train, batch, seed=seed))
  n, k = config.sae.n_latents, config.sae.k
  if peer == "sparsify":
    run = peers.train_sparsify(
      batches, folder, n=n, k=k, steps=steps, seed=seed, threads=threads or None, lr=lr, **options
    )
  else:
    sae_options = dict(options.get("sae_options", {}))
    if saelens_normalize:
      sae_options["normalize_activations"] = saelens_normalize
    if options.get("ladder") == "target_l0":  # The ladder holds targets T; λ stays SAELens's.
      sae_options["target_l0"], lam = lam, 1.0
    run = peers.train_saelens(
      architecture,
      batches,
      folder,
      d=data.train.d_in,
      n=n,
      steps=steps,
      batch_size=batch,
      lr=lr,
      k=k,
      sparsity_coefficient=lam,
      seed=seed,
      threads=threads or None,
      sae_options=sae_options,
      # Other rows for SAELens's input-scale estimate, only where it normalizes.
      norm_batches=iter(row_sources.train_batches(data.train, batch, seed=seed + 1000))
      if sae_options.get("normalize_activations", "none") != "none"
      else None,
    )
  return run.config, run.variables, run.wall_s, run.version


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  """Train and evaluate every (trainer, budget, seed) not yet in results.jsonl; all rows."""
  runs, mine = runs_of(config), share(config.quality.shard)
  job = main_job_config(config)
  main_job.validate(job)
  job.harvest.hook = hooks_lib.canonical(job.harvest.hook)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  lm = pretrained.load(config.harvest.model)
  data = main_job.harvest_stores(job, lm, workdir / "stores")
  h = job.harvest
  q = config.quality
  windows = data.eval_windows[: q.delta_ce_windows or None]
  reference = downstream.reference_losses(lm, windows, h.hook, h.skip_first, q.eval_batch_size)
  out = workdir / RESULTS
  done = _done(out)
  every = [
    (budget, seed, name, lam)
    for budget in _numbers(config.quality.budgets)
    for seed in _numbers(config.quality.seeds)
    for name, lam in runs
  ]
  for budget, seed, name, lam in every[mine]:
    lr = learning_rate(name, job)
    if (name, budget, seed, lam, lr) in done:
      continue
    print(f"[quality] {name}, budget {budget}× ({config.train.steps * budget} steps), seed {seed}")
    sae_config, variables, wall, version = train_one(
      name, lam, job, data, workdir, budget, seed, q.peer_threads, q.saelens_normalize
    )
    measured = downstream.held_out_and_spliced(
      lm, windows, h.hook, evaluate.encode_decode(sae_config), variables,
      data.held_out, reference, h.skip_first, q.eval_batch_size,
    )  # fmt: skip
    row = {
      "trainer": name,
      "budget": budget,
      "steps": config.train.steps * budget,
      "seed": seed,
      "architecture": TRAINERS[name][1],
      "sparsity_coefficient": lam,
      "lr": lr,
      **{k: measured[k] for k in ("fvu", "l0", "dead_fraction", "delta_ce", "ce_recovered")},
      "train_s": wall,
      "version": version,
    }
    print(f"[quality] {name}: FVU {row['fvu']:.4f}, ΔCE {row['delta_ce']:.4f}, {wall:.0f} s")
    with out.open("a") as f:
      f.write(json.dumps(row) + "\n")
  return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
