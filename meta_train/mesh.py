"""Devices, processes and shardings of meta-training.

One mesh axis, ``"tasks"``, spans every device of every process. theta and
the outer-optimizer state are replicated; estimator states (every leaf has a
leading ``[num_pairs]`` axis) are sharded on that axis with
``NamedSharding(mesh, P("tasks"))``. The jitted outer step takes and returns
these shardings, so XLA inserts the one all-reduce the population mean needs;
there is no pmap and no hand-written communication.

Several processes (hosts, or one process per CPU core) are joined with
``jax.distributed.initialize``, enabled by ``MeshConfig.distributed`` or the
standard environment variables ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.

On a CPU-only machine, one process makes one JAX device per core
(``split_host_cpu``), so the population runs on all cores at once: XLA:CPU's
intra-op threading is poor on the small ops of meta-training.
"""

import importlib.util
import os
import pkgutil
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

from meta_train import config as config_lib

AXIS = "tasks"
P = jax.sharding.PartitionSpec


def distributed_settings(
  cfg: config_lib.MeshConfig,
) -> dict[str, Any] | None:
  """Arguments for ``jax.distributed.initialize``, or None if not wanted.

  Config fields win over the environment variables.

  Args:
    cfg: the mesh configuration.

  Returns:
    The keyword arguments, or None when neither the config nor the
    environment asks for several processes.
  """
  env = os.environ
  address = cfg.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS", "")
  num = cfg.num_processes or int(env.get("JAX_NUM_PROCESSES", "0") or 0)
  pid = cfg.process_id
  if pid < 0 and env.get("JAX_PROCESS_ID", ""):
    pid = int(env["JAX_PROCESS_ID"])
  if not (cfg.distributed or address):
    return None
  return {
    "coordinator_address": address or None,
    "num_processes": num or None,
    "process_id": pid if pid >= 0 else None,
  }


def initialize_distributed(cfg: config_lib.MeshConfig) -> bool:
  """Joins the processes of a multi-process run, if configured.

  Must run before any JAX computation of the process.

  Args:
    cfg: the mesh configuration.

  Returns:
    Whether this process is part of a multi-process run.
  """
  settings = distributed_settings(cfg)
  if settings is None:
    return False
  if jax.distributed.is_initialized():
    return True
  if cfg.cpu_collectives != "none":
    # Without CPU collectives, cross-process computations fail on CPU.
    jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
  jax.distributed.initialize(**settings)
  return True


def usable_cores() -> list[int]:
  """Cores this process may run on (all of them where affinity is unknown)."""
  if hasattr(os, "sched_getaffinity"):  # Linux; not macOS or Windows
    return sorted(os.sched_getaffinity(0))
  return list(range(os.cpu_count() or 1))


def cpu_device_count(num_cores: int, num_pairs: int) -> int:
  """The most devices, at most one per core, that divide the population."""
  return max(d for d in range(1, max(num_cores, 1) + 1) if num_pairs % d == 0)


def _accelerator_installed() -> bool:
  """Whether a GPU/TPU PJRT plugin is installed (checked without JAX init)."""
  if importlib.util.find_spec("libtpu") is not None:
    return True
  plugins = importlib.util.find_spec("jax_plugins")
  if plugins is None or not plugins.submodule_search_locations:
    return False
  return any(pkgutil.iter_modules(plugins.submodule_search_locations))


def split_host_cpu(cfg: config_lib.MeshConfig, num_pairs: int) -> int:
  """Makes this process's CPU cores several JAX devices, before JAX starts.

  Changes process-wide state (``jax_num_cpu_devices``, ``XLA_FLAGS``):
  nothing in the library calls it; ``lopt meta-train`` does at its entry,
  and Python users call it through ``meta_train.use_cpu_layout``.

  The population axis is sharded over all devices, so with one device per
  core every core runs its share of the population in parallel, each with
  single-threaded XLA. On 2 cores this ran ES on an 11k-parameter MLP
  signature ~2x faster than one device using both cores, and faster than
  two processes joined by ``jax.distributed`` (~1.65x;
  bench/meta_throughput.py, part "cpu_layout").

  Each device holds its own copy of replicated arrays (theta, the tasks'
  datasets), so memory for those grows with the device count; set
  ``config.mesh.cpu_devices`` lower on a many-core machine short of memory.

  Does nothing in a multi-process run, on a machine with a GPU/TPU plugin,
  when ``JAX_PLATFORMS`` excludes the CPU, or when XLA_FLAGS
  (``xla_force_host_platform_device_count``) or JAX_NUM_CPU_DEVICES already
  chose a count.

  Args:
    cfg: the mesh configuration; ``cfg.cpu_devices`` devices are made (0:
      ``cfg.num_devices`` if set, else ``cpu_device_count`` of the cores
      this process may run on and the population; 1: leave one device).
    num_pairs: the population size (``config.estimator.num_pairs``).

  Returns:
    The number of CPU devices asked for (1 if unchanged). JAX reads it when
    it starts its backends: call this before any JAX computation.
  """
  platforms = os.environ.get("JAX_PLATFORMS", "")
  chosen = "xla_force_host_platform_device_count" in os.environ.get(
    "XLA_FLAGS", ""
  ) or os.environ.get("JAX_NUM_CPU_DEVICES")
  if chosen or (platforms and not platforms.startswith("cpu")):
    return 1
  if distributed_settings(cfg) is not None:
    return 1  # the device count must then agree over the processes
  if not platforms and _accelerator_installed():
    return 1
  cores = len(usable_cores())
  # A mesh of a given size gets that many devices (one: no split).
  n = cfg.cpu_devices or cfg.num_devices or cpu_device_count(cores, num_pairs)
  if n <= 1:
    return 1
  jax.config.update("jax_num_cpu_devices", n)
  if n >= cores:
    # One device per core: intra-op threads would only contend for cores.
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false"
  return n


def make_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
  """A 1-D mesh with axis ``"tasks"`` over the devices of all processes.

  Args:
    num_devices: number of devices to use (0: all). With several processes
      it must be 0 or the total device count.

  Returns:
    The mesh.

  Raises:
    ValueError: if more devices are requested than exist.
  """
  devices = jax.devices()
  if num_devices == 0:
    num_devices = len(devices)
  if num_devices > len(devices) or (
    jax.process_count() > 1 and num_devices != len(devices)
  ):
    raise ValueError(
      f"config.mesh.num_devices={num_devices}, but "
      f"{len(devices)} devices exist over {jax.process_count()} process(es); "
      "use 0 (all devices), or a number <= the device count in a "
      "single-process run."
    )
  return jax.sharding.Mesh(np.asarray(devices[:num_devices]), (AXIS,))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Sharding of theta, outer state, tasks and keys: a copy per device."""
  return jax.sharding.NamedSharding(mesh, P())


def task_sharded(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Sharding of estimator states: leading ``[num_pairs]`` axis split."""
  return jax.sharding.NamedSharding(mesh, P(AXIS))


def check_population(num_pairs: int, mesh: jax.sharding.Mesh) -> None:
  """Raises unless the population splits evenly over the mesh.

  Args:
    num_pairs: the estimator's population size (leading state axis).
    mesh: the mesh.

  Raises:
    ValueError: naming the config field and a valid value.
  """
  if num_pairs % mesh.size:
    fit = -(-num_pairs // mesh.size) * mesh.size
    raise ValueError(
      f"config.estimator.num_pairs={num_pairs} must be a multiple of the "
      f"number of devices ({mesh.size}) so the population shards evenly "
      f"over the mesh; use e.g. {fit}, or set config.mesh.num_devices."
    )


def _is_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(
    x.dtype, jax.dtypes.prng_key
  )


def put(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """Places host-identical values as global arrays with ``sharding``.

  Every process must hold the same values (e.g. computed from the same
  seed); each process then keeps only its addressable shards. Works for
  typed PRNG key leaves too.

  Args:
    tree: pytree of arrays (numpy or jax).
    sharding: target sharding of every leaf.

  Returns:
    The tree of global ``jax.Array``s.
  """

  def one(x):
    if _is_key(x):
      impl = jax.random.key_impl(x)
      return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=impl)
    host = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(
      host.shape, sharding, lambda index: host[index]
    )

  return jax.tree.map(one, tree)


def to_host(tree: Any) -> Any:
  """Numpy copies of a tree of (possibly multi-process) global arrays."""

  def one(x):
    if _is_key(x):
      return one(jax.random.key_data(x))
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(jax.device_get(x))
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(one, tree)


def is_main_process() -> bool:
  """Whether this process writes metrics and exports (process 0)."""
  return jax.process_index() == 0
