"""``lopt tasks list | show | sample``."""

import pytest

from meta_train import cli as lopt_cli
from task_suite import cli, registry, suite


def _run(capsys, argv):
  code = cli.main(argv)
  out, err = capsys.readouterr()
  return code, out, err


def test_sample_prints_the_suite_names(capsys):
  code, out, _ = _run(capsys, ["sample", "--n", "7", "--split", "test"])
  assert code == 0
  expected = [s.name for s in suite.sample_suite(7, seed=0, split="test")]
  assert out.splitlines() == expected
  # The same through the `lopt` dispatcher, with a seed and weights.
  assert (
    lopt_cli.main(
      ["tasks", "sample", "--n", "4", "--seed", "3", "--weights", "quadratic=1"]
    )
    == 0
  )
  out = capsys.readouterr().out.splitlines()
  assert out == [
    s.name for s in suite.sample_suite(4, seed=3, weights={"quadratic": 1})
  ]


def test_list_counts_families_and_signatures(capsys):
  code, out, _ = _run(capsys, ["list", "--num-tasks", "300", "--seed", "1"])
  assert code == 0
  specs = suite.sample_suite(300, seed=1)
  rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[3:]}
  for name in registry.FAMILIES:
    weight, count, signatures = rows[name]
    family_specs = [s for s in specs if s.family == name]
    assert int(count) == len(family_specs)
    assert int(signatures) == len(suite.group_by_signature(family_specs))
    assert float(weight) == pytest.approx(
      suite.resolve_weights()[name], abs=1e-3
    )
  assert rows["total"][1:] == [
    "300",
    str(len(suite.group_by_signature(specs))),
  ]


def test_show_describes_fields_parameters_and_data(capsys):
  spec = suite.sample_suite(1, seed=0, weights={"regression": 1})[0]
  code, out, _ = _run(capsys, ["show", spec.name])
  assert code == 0
  lines = out.splitlines()
  assert lines[0] == f"name: {spec.name}"
  sizes = (spec.input_dim, *spec.hidden, spec.output_dim)
  expected = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
  assert f"parameters: {expected} in {2 * (len(sizes) - 1)} tensors" in lines
  static = lines.index("static fields:")
  dynamic = lines.index("dynamic fields:")
  assert f"  input_dim = {spec.input_dim}" in lines[static:dynamic]
  assert f"  teacher_seed = {spec.teacher_seed}" in lines[dynamic:]
  assert f"  ['x']: float32[{spec.batch_size}x{spec.input_dim}]" in lines
  assert lines[-1].startswith("data: none")


def test_bad_input_exits_2_with_a_message(capsys):
  code, _, err = _run(capsys, ["show", "nope(a=1)"])
  assert code == 2 and "valid families: mlp" in err
  code, _, err = _run(capsys, ["sample", "--n", "2", "--weights", "mlp"])
  assert code == 2 and "FAMILY=WEIGHT" in err
  code, _, err = _run(capsys, ["sample", "--n", "-1"])
  assert code == 2 and "num_tasks must be" in err
  with pytest.raises(SystemExit):
    cli.main(["sample", "--split", "valid", "--n", "1"])
