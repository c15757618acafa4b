from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    """A missing install step must fail CI: .ci/run runs exactly the README's test command."""
    readme = (ROOT / "README.md").read_text()
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python3.11")]
    assert len(ci_lines) == 1
    assert f"```bash\n{ci_lines[0]}\n```" in readme


def test_the_readmes_sample_error_is_what_the_cli_prints(capsys):
    from jaxdfl.cli import main

    readme = (ROOT / "README.md").read_text()
    assert main(["run", "--set", "nonexistent.key=1"]) == 2
    printed = capsys.readouterr().err.strip()
    assert f"$ jaxdfl run --set nonexistent.key=1\n{printed}\n" in readme


def test_the_wheel_lists_every_subpackage():
    """pyproject names the packages one by one; a new subpackage left out installs a broken jaxdfl."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "jaxdfl").rglob("__init__.py")}
    assert on_disk <= listed, f"add to pyproject's packages: {sorted(on_disk - listed)}"
