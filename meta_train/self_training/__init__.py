"""Self-training: meta-training a fresh learned optimizer as a task.

An application of the engine (the engine never imports it):
  ``task``: ``SelfTrainFamily`` / ``SelfTrainTask``, whose gradient is the
    engine's truncated-ES estimate;
  ``self_train``: trains that task with the pretrained learned optimizer,
    Adam and SGD as outer optimizers (``outer.make_outer_step``);
  ``report``: steps-to-level tables and meta-loss plots.
"""
