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
