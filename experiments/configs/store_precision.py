"""Training-store precision: the main job on a float32, a bfloat16 and an int8 training store.

python -m experiments.store_precision --workdir=runs/store_precision     # 3 main jobs, ~6 min
python -m experiments.store_precision --config.main.train.steps=300 --workdir=/tmp/sp

Runs jaxsae.main_job.run with the `main` config (the main job's, experiments/configs/main.py)
once per entry of `dtypes`, in <workdir>/<dtype>, each with harvest.dtype set to it; everything
else, the seed included, is the same, so the three training stores hold the same windows. The
held-out store is always float32, so the SAEs' held-out FVU and ΔCE compare fairly. Any field of
the main job can be overridden under `main`, e.g. --config.main.harvest.train_windows=1024.
"""

import ml_collections

from jaxsae.main_job import base_config


def get_config(architecture: str = "topk"):
  c = ml_collections.ConfigDict()
  c.dtypes = "float32,bfloat16,int8"  # Training-store dtypes, comma-separated; needs float32.
  c.main = base_config(architecture)
  return c
