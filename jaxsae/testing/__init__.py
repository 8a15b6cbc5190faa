"""Test harnesses that ship with the library, for the tests and the soak experiments.

jobs      the child: one tiny LM-training, SAE-training or harvesting job, run to its end
          (`python -m jaxsae.testing.jobs --kind=lm --workdir=/tmp/j`), with self-kill points
          armed from the environment
faults    the parent: run a job in a subprocess, SIGKILL it at a chosen moment, rerun it to
          the end (kill -9 fault injection; tests/test_kill_resume.py, experiments/fault_soak.py)
progress  what a job has done so far, read from its files (checkpoints, metrics, the store)
results   a finished job's result, saved leaf by leaf and compared bitwise with another run's
"""
