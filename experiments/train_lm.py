"""Train a GPT-style language model on a text corpus.

  python -m experiments.train_lm --config=experiments/configs/lm_default.py --workdir=runs/lm
  # any field can be overridden: --config.train.steps=200 --config.model.d_model=64

Resumes from the workdir's latest checkpoint. Leaves checkpoints/, metrics.jsonl,
tensorboard/ and config.json in the workdir.
"""

from absl import flags
from ml_collections import config_flags

from jaxsae import cli
from jaxsae.lm import train

_CONFIG = config_flags.DEFINE_config_file("config", lock_config=True, help_string="LM config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  result = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if result.evals:
    final = result.evals[-1]
    print(
      f"step {final['step']}: validation loss {final['loss']:.4f} nats/token, "
      f"{final['bits_per_byte']:.4f} bits/byte"
    )


if __name__ == "__main__":
  cli.run(main)
