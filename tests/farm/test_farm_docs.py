"""docs/spec.md documents every key the validators accept; README's commands are the CI's."""

from __future__ import annotations

from pathlib import Path

import pytest

from simfarm.params import ParamReader
from simfarm.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]

# Specs that make every validator read every key it knows (each reader's
# known keys are collected when it finishes).
SPECS = [
    """
    [[experiments]]
    scenario = "constant"
    graduation_rule = { sustained_rounds = 2 }
    schedule = { kind = "geometric", initial = 1000, growth = 2.0, n_rounds = 3 }
    [[rollouts]]
    env = "raycast"
    policy = "mlp-train"
    capture = { episode_indices = [0] }
    [[rollouts]]
    env = "cartpole"
    [[jobs]]
    workload = "random-walk"
    [farm]
    workers = 1
    [farm.runtime_env]
    env_vars = { A = "b" }
    [render]
    fps = 2.0
    """,
    """
    [[experiments]]
    scenario = "constant"
    schedule = { kind = "fixed", per_round = 100, n_rounds = 2 }
    [[experiments]]
    scenario = "constant"
    schedule = { kind = "explicit", sizes = [100, 200] }
    """,
]


def _known_keys(monkeypatch) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    original = ParamReader.finish

    def finish(self, also_allowed=()):
        seen.setdefault(self.where, set()).update(self._used | set(also_allowed))
        return original(self, also_allowed)

    monkeypatch.setattr(ParamReader, "finish", finish)
    for text in SPECS:
        load_spec(text)
    return seen


def test_every_spec_key_is_documented(monkeypatch):
    text = (ROOT / "docs" / "spec.md").read_text()
    seen = _known_keys(monkeypatch)
    assert len(seen) > 8, "the hook saw too few tables: the test would prove nothing"
    missing = sorted(
        f"{where or '(top)'}.{key}" for where, keys in seen.items() for key in keys if f"`{key}`" not in text
    )
    assert not missing, f"keys missing from docs/spec.md: {missing}"


def test_readme_setup_is_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Set up", 1)[1].split("```", 2)[1]
    commands = [line for line in block.splitlines()[1:] if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo.rstrip().endswith("simfarm run")
    assert "pytest" in tests
    assert tests.strip() in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("path", sorted((ROOT / "docs" / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_example_specs_are_valid(path):
    spec = load_spec(path)
    assert spec.jobs


def test_relative_links_in_the_docs_resolve():
    import re

    pages = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md", ROOT / "cluster" / "README.md"]
    assert len(pages) > 8
    broken = []
    for page in pages:
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not link.startswith(("http://", "https://")) and not (page.parent / link).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {link}")
    assert not broken, broken
