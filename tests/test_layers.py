"""Imports point down the layers only: a module may import its own package and the layers below it.

core -> data -> rm | policy | evaluation -> orchestration -> app. Packages on one layer do not import each
other (rm and policy share what they need through core and data), so each room can change on its own.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [("core",), ("data",), ("rm", "policy", "evaluation"), ("orchestration",), ("app",)]
LAYER_OF = {package: depth for depth, packages in enumerate(LAYERS) for package in packages}


def imported_packages(path: Path) -> set[str]:
    """Return the top-level names a module imports anywhere in it (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def upward_imports() -> list[str]:
    found = []
    for package, depth in LAYER_OF.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in sorted(imported_packages(path) & set(LAYER_OF)):
                if name != package and LAYER_OF[name] >= depth:
                    found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def test_every_import_points_down_the_layers():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from policy.grpo import train_grpo\n    import app.main\n")
    assert imported_packages(module) == {"policy", "app"}


def test_every_package_is_on_a_layer():
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(LAYER_OF)


# What only `core.distributed.Sharding` may know: trainers call it and never ask how the weights are split.
SHARDING_WORDS = re.compile(r"zero_stage|\bZeRO|zero3|ds_tensor|GatheredParameters|deepspeed_plugin|import deepspeed")
TRAINER_PACKAGES = ("rm", "policy")


def sharding_mentions(paths) -> list[str]:
    """Return 'file:line: text' for each line of the given modules that speaks of how weights are sharded."""
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if SHARDING_WORDS.search(line):
                found.append(f"{path.name}:{number}: {line.strip()}")
    return found


def test_no_trainer_asks_how_its_weights_are_sharded():
    assert (
        sharding_mentions(sorted(path for package in TRAINER_PACKAGES for path in (ROOT / package).rglob("*.py"))) == []
    )


def test_the_sharding_check_sees_a_mention(tmp_path):
    module = tmp_path / "trainer.py"
    module.write_text("if zero_stage(accelerator) == 3:\n    pass\nn = p.ds_tensor.numel()\n")
    assert len(sharding_mentions([module])) == 2


def test_no_module_is_longer_than_500_lines():
    packages = [package for packages in LAYERS for package in packages]
    long = [
        f"{path.relative_to(ROOT)} ({count} lines)"
        for package in packages
        for path in (ROOT / package).rglob("*.py")
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > 500
    ]
    assert long == []
