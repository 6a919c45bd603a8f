from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from bench_suite.registry import MODELS, QUANTIZERS, Registry, RegistryError, load_all


def test_register_decorator_and_call_forms():
    reg = Registry("thing")

    @reg.register("a")
    class A:
        def __init__(self, x: int = 1):
            self.x = x

    def make_b(y: float = 2.0):
        return ("b", y)

    reg.register("b", make_b)
    assert reg.keys() == ["a", "b"]
    assert reg.create("a", x=3).x == 3
    assert reg.create("b", y=1.5) == ("b", 1.5)
    assert [p.name for p in reg.params("a")] == ["x"]


def test_duplicate_key_is_an_error():
    reg = Registry("thing")
    reg.register("a", lambda x=1: x)
    with pytest.raises(RegistryError, match="duplicate thing key 'a'"):
        reg.register("a", lambda x=1: x)


def test_unknown_key_lists_valid_and_suggests_closest():
    reg = Registry("model")
    reg.register("gcnii", lambda depth=2: depth)
    reg.register("jknet", lambda depth=2: depth)
    with pytest.raises(RegistryError) as exc:
        reg.get("gcni", where="matrix m.yaml")
    msg = str(exc.value)
    assert "unknown model 'gcni'" in msg and "gcnii, jknet" in msg
    assert "Did you mean 'gcnii'?" in msg and "m.yaml" in msg


def test_unknown_parameter_rejected_before_construction():
    reg = Registry("thing")
    built = []

    @reg.register("a")
    class A:
        def __init__(self, alpha: float = 0.1):
            built.append(alpha)

    with pytest.raises(RegistryError, match="unknown parameter of thing 'a' 'alhpa'.*Did you mean 'alpha'"):
        reg.create("a", alhpa=0.2)
    assert built == []


def test_var_kwargs_plugins_refused():
    reg = Registry("thing")
    with pytest.raises(RegistryError, match="explicit keyword"):
        reg.register("bad", lambda **kw: kw)


def test_builtins_and_entry_point_plugins_are_registered():
    load_all()
    assert {"gcn", "gat", "sage", "decoupled"} <= set(MODELS.keys())
    # baselines arrive through the entry point, not through an import by the core
    import bench_suite.builtins as b

    assert not any(m.startswith("baselines") for m in b.BUILTIN_MODULES)


def test_local_plugin_module_via_cli(tmp_path):
    mod = tmp_path / "my_plugin_mod.py"
    mod.write_text(textwrap.dedent('''
        from bench_suite.registry import PROPAGATIONS
        from bench_suite.nn.propagations import APPNPPropagation

        @PROPAGATIONS.register("my-appnp")
        class MyAPPNP(APPNPPropagation):
            """A local copy of APPNP with another name."""
    '''))
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "bench_suite.cli", "list", "propagations", "--plugin", "my_plugin_mod"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "my-appnp" in out.stdout and "alpha=0.1" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "bench_suite.cli", "list", "--plugin", "no_such_mod_xyz"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "no_such_mod_xyz" in bad.stderr


def test_key_value_pairs_may_follow_options():
    """`bench-suite run smoke --workers 2 epochs=3` (the README's order) keeps the override."""
    from bench_suite.cli import build_parser, main

    assert main(["run", "smoke", "--dry-run", "--no-progress", "epochs=3", "--workers", "1", "depht=2"]) == 2
    parser = build_parser()
    args, extra = parser.parse_known_args(["run", "smoke", "--workers", "2", "epochs=3"])
    assert extra == ["epochs=3"]  # what argparse alone does: the pair would be lost
