"""Meta-training of learned optimizers (see ARCHITECTURE.md).

The engine, directly in this package:
  ``config``: the typed configuration, config files and overrides;
  ``unroll``: vectorized truncated inner training (simulation only);
  ``estimators``: ES, PES and truncated backprop meta-gradients;
  ``outer``: the guarded outer step (``make_outer_step``);
  ``train``: the meta-training loop (``train.run(config, workdir)``);
  ``mesh``, ``checkpointing``, ``metrics``: devices, orbax state, logs;
  ``checks``: how the config dataclasses reject a value (one message style).

Built on it: ``evaluation`` (rollouts, reports, the optimizer resolver),
``self_training`` and ``cli`` (the ``lopt`` command; nothing else imports
it). Submodules are imported explicitly (``from meta_train import train``),
so that ``lopt tasks`` does not pay for importing JAX.
"""


def use_cpu_layout(config) -> int:
  """Gives this process the CPU layout of ``lopt meta-train`` (CPU only).

  The one call, for Python users of ``train.run``, that makes this process's
  CPU cores several JAX devices as the command does (one per core that
  divides the population, ``config.mesh.cpu_devices`` to choose;
  ``mesh.split_host_cpu``). It changes process-wide state (the JAX option
  ``jax_num_cpu_devices`` and, at one device per core, ``XLA_FLAGS``), so
  it must run before any JAX computation, and nothing in the library calls
  it behind your back.

  Args:
    config: the run's ``ml_collections.ConfigDict`` (or ``config.Config``).

  Returns:
    The number of CPU devices asked for (1: unchanged).
  """
  from meta_train import config as config_lib  # noqa: PLC0415
  from meta_train import mesh  # noqa: PLC0415 (imports jax)

  cfg = config_lib.from_config(config)
  return mesh.split_host_cpu(cfg.mesh, cfg.estimator.num_pairs)
