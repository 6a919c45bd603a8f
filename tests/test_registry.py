from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench_suite.registry import MODELS, Registry, RegistryError, load_all


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
    # a plugin that does not import is named in one warning line; list goes on without it
    bad = subprocess.run([sys.executable, "-m", "bench_suite.cli", "list", "--plugin", "no_such_mod_xyz"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 0 and "gcn" in bad.stdout, bad.stderr
    assert bad.stderr.count("\n") == 1 and "--plugin no_such_mod_xyz failed to load" in bad.stderr
    assert "No module named 'no_such_mod_xyz'" in bad.stderr


def test_key_value_pairs_may_follow_options():
    """`bench-suite run smoke --workers 2 epochs=3` (the README's order) keeps the override."""
    from bench_suite.cli import build_parser, main

    assert main(["run", "smoke", "--dry-run", "--no-progress", "epochs=3", "--workers", "1", "depht=2"]) == 2
    parser = build_parser()
    args, extra = parser.parse_known_args(["run", "smoke", "--workers", "2", "epochs=3"])
    assert extra == ["epochs=3"]  # what argparse alone does: the pair would be lost


REPO = Path(__file__).resolve().parents[1]
#: a subprocess with this checkout first on its path, and ``extra`` folders after it
def env_with(*extra: Path) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), *map(str, extra)]))


def bench(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench_suite.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180)


def fake_distribution(site: Path, dist: str, version: str, module: str, code: str) -> None:
    """An installed distribution ``dist`` (a dist-info folder on ``site``) whose module ``module``
    is advertised in the ``bench_suite.plugins`` entry-point group."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[bench_suite.plugins]\n{module} = {module}\n")
    (info / "top_level.txt").write_text(f"{module}\n")


GOOD_MODEL = '''
    import torch
    from bench_suite.nn.models import GraphModel
    from bench_suite.registry import MODELS


    @MODELS.register("{key}")
    class Lin(GraphModel):
        """A linear model."""

        def __init__(self, in_dim, num_classes, depth, quant, hidden: int = 8):
            super().__init__()
            self.lin = torch.nn.Linear(in_dim, num_classes)

        def forward(self, g, x, return_hidden=False):
            out = self.lin(x)
            return self.output(out, [out], return_hidden)
'''


def test_a_broken_entry_point_is_named_and_left_out(tmp_path):
    """A distribution whose plugin raises at import: list and status go on with one warning naming the
    entry point, its distribution and the error; a run whose spec needs it is one error line naming it;
    an installed plugin's records name its distribution and version, in the spec (so the run id) too."""
    site = tmp_path / "site"
    fake_distribution(site, "broken-plugin", "0.3", "broken_plugin_mod",
                      "from bench_suite.registry import MODELS\n"
                      "MODELS.register('half-there', lambda in_dim, num_classes, depth, quant: None)\n"
                      "raise RuntimeError('planted import failure')\n")
    fake_distribution(site, "good-plugin", "1.2", "good_plugin_mod", GOOD_MODEL.format(key="good-lin"))
    env = env_with(site)
    (tmp_path / "m.yaml").write_text("name: m\nseeds: [0]\n"
                                     "fixed: {dataset: csbm, dataset.nodes: 100, model: half-there, epochs: 2}\n")
    warning = ("plugin entry point 'broken_plugin_mod' (broken_plugin_mod of distribution broken-plugin 0.3) "
               "failed to load and is left out: RuntimeError: planted import failure")

    listed = bench("list", "models", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and "good-lin" in listed.stdout and "gcnii" in listed.stdout, listed.stderr
    assert "half-there" not in listed.stdout  # what it registered before failing is removed too
    assert listed.stderr.strip() == f"bench-suite: warning: {warning}", listed.stderr

    status = bench("status", "smoke", "--results", str(tmp_path / "res"), cwd=tmp_path, env=env)
    assert status.returncode == 0 and status.stderr.count("\n") == 1 and warning in status.stderr

    run = bench("run", "m.yaml", "--results", "res", cwd=tmp_path, env=env)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "unknown model 'half-there'" in run.stderr and "broken-plugin 0.3" in run.stderr
    assert "planted import failure" in run.stderr and not (tmp_path / "res").exists()

    train = bench("train", "dataset=csbm", "dataset.nodes=100", "model=good-lin", "epochs=2", cwd=tmp_path, env=env)
    assert train.returncode == 0, train.stderr
    rec = json.loads(train.stdout)
    assert rec["spec"]["plugins"] == {"model": {"distribution": "good-plugin", "version": "1.2"}}
    assert rec["env"]["plugins"]["model"]["registered_by"] == "good_plugin_mod"
    assert rec["env"]["plugins"]["dataset"]["distribution"] == "bench-suite"


def test_plugin_by_file_path_and_by_module_from_the_current_folder(tmp_path, monkeypatch, capsys):
    """``--plugin ./file.py`` and ``--plugin module`` (the current folder is not on sys.path, as under the
    ``bench-suite`` console script) both register; the run id of a spec using the plugin carries the
    file's SHA-256, so an edited plugin is a new run; the spec of a core plugin has no plugins entry."""
    from bench_suite import registry as R
    from bench_suite.cli import main
    from bench_suite.spec import resolve_spec

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path), os.getcwd())])
    (tmp_path / "pathplug_t7.py").write_text(textwrap.dedent(GOOD_MODEL.format(key="path-lin")))
    (tmp_path / "modplug_t7.py").write_text(textwrap.dedent(GOOD_MODEL.format(key="mod-lin")))
    try:
        assert main(["list", "models", "--plugin", "./pathplug_t7.py", "--plugin", "modplug_t7"]) == 0
        out = capsys.readouterr()
        assert "path-lin" in out.out and "mod-lin" in out.out and out.err == "", out.err
        digest = hashlib.sha256((tmp_path / "pathplug_t7.py").read_bytes()).hexdigest()
        spec = resolve_spec({"dataset": "csbm", "model": "path-lin"})
        assert spec.data["plugins"] == {"model": {"module": "pathplug_t7", "sha256": digest}}
        before = spec.run_id
        with open(tmp_path / "pathplug_t7.py", "a") as fh:
            fh.write("# an edit\n")
        os.utime(tmp_path / "pathplug_t7.py", ns=(1, 1))  # another mtime, whatever the clock's resolution
        assert resolve_spec({"dataset": "csbm", "model": "path-lin"}).run_id != before
        assert "plugins" not in resolve_spec({"dataset": "csbm", "model": "gcn"}).data
        assert R.plugin_refs(["./pathplug_t7.py", "modplug_t7"]) == [str(tmp_path / "pathplug_t7.py"), "modplug_t7"]
    finally:
        R.MODELS.unregister("path-lin")
        R.MODELS.unregister("mod-lin")


def test_duplicate_key_from_a_plugin_names_both_modules(tmp_path, monkeypatch, capsys):
    """A plugin registering a core key under a class it imports: the message names the module that
    registered each (not the class's home module) and the plugin being loaded; its other keys go too."""
    from bench_suite import registry as R
    from bench_suite.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dupplug_t7.py").write_text(textwrap.dedent('''
        from bench_suite.nn.propagations import APPNPPropagation
        from bench_suite.registry import PROPAGATIONS

        PROPAGATIONS.register("dup-first", APPNPPropagation)
        PROPAGATIONS.register("appnp", APPNPPropagation)
    '''))
    assert main(["list", "propagations", "--plugin", "dupplug_t7.py"]) == 0
    out = capsys.readouterr()
    assert "dup-first" not in out.out and "appnp" in out.out
    assert out.err.count("\n") == 1, out.err
    assert ("duplicate propagation key 'appnp': already registered by module bench_suite.nn.propagations "
            "(APPNPPropagation), now again by module dupplug_t7 (loading --plugin dupplug_t7.py)") in out.err
    assert "dup-first" not in R.PROPAGATIONS


#: run ids of these specs on main before plugin provenance existed (resolved without and with the
#: tuned defaults): core and baselines specs must keep them, or every stored record would be orphaned
CORE_RUN_IDS = [
    ({"dataset": "cora", "model": "gcn", "depth": 4, "seed": 0}, "9c471b2fea18c1cf", "3bb8086b311d5d4c"),
    ({"dataset": "csbm", "model": "gcnii", "depth": 8, "quant": "dq", "bits": 4}, "27d8af235f4b4442",
     "d7c32831bdcf14ae"),
    ({"dataset": "cora", "model": "decoupled", "propagation": "smp", "quant": "qlr", "bits": 2,
      "truncation": "bt*", "depth": 10}, "8de615a091756f70", "ed01b4597df16f62"),  # tuned: SMP's own protocol
    # tuned: the DropEdge search's CiteSeer GCN+DropEdge-8 setting (bench_suite/defaults/models.yaml, 2026-12-07;
    # before it 4cfa890fa8c66f43, the 2-layer script's setting, whose records were never run at depth 8)
    ({"dataset": "citeseer", "model": "gcn", "transform": "dropedge", "depth": 8}, "c7f903f5204228b4",
     "794177443ed4890e"),
]


@pytest.mark.parametrize("flat,plain,tuned", CORE_RUN_IDS)
def test_core_and_baselines_run_ids_are_unchanged(flat, plain, tuned):
    from bench_suite.defaults import apply_defaults
    from bench_suite.spec import resolve_spec

    load_all()
    assert resolve_spec(flat).run_id == plain
    assert resolve_spec(apply_defaults(flat)).run_id == tuned


def test_fp32_is_a_registered_full_precision_quantizer():
    from bench_suite.bits import is_full_precision
    from bench_suite.registry import QUANTIZERS
    from bench_suite.spec import SpecError, resolve_spec, spec_plugins

    load_all()
    assert "fp32" in QUANTIZERS.keys() and is_full_precision(QUANTIZERS.get("fp32"))
    assert not is_full_precision(QUANTIZERS.get("qlr"))
    spec = resolve_spec({"dataset": "csbm", "model": "gcn"})
    assert spec.data["quant"] == {"name": "fp32", "bits": 32}
    assert spec_plugins(spec.data)["quant"]["key"] == "fp32"  # its provenance is recorded like any plugin's
    with pytest.raises(SpecError, match="makes no sense with quant=fp32; drop bits or choose a quantizer"):
        resolve_spec({"dataset": "csbm", "model": "gcn", "quant": "fp32", "bits": 4})
