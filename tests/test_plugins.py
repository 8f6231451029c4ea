"""Extensions from outside the package reach the command line: `gradsum --plugin FILE` imports a module
that registers with the public decorators, in a real `gradsum` process, before the command runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gradsum.errors import SpecError
from gradsum.plugins import load_plugin

PLUGIN = textwrap.dedent(
    '''
    """A method registered from outside GradSUM: its map is the input's red channel."""
    from gradsum.attribution import Method, register_method
    from gradsum.taxonomy import FAMILIES

    @register_method("plugin_red")
    class PluginRed(Method):
        """the input's red channel, from a plugin"""

        description = "the input's red channel, from a plugin"
        applies_to = frozenset(FAMILIES)
        uses_layer = False

        def grid(self, model, images, target, layer):
            return images[:, 0]
    '''
)


def gradsum(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gradsum", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_a_plugin_file_registers_a_method_the_cli_lists(tmp_path: Path) -> None:
    plugin = tmp_path / "red.py"
    plugin.write_text(PLUGIN, encoding="utf-8")
    listed = gradsum("--plugin", str(plugin), "methods")
    assert listed.returncode == 0, listed.stderr
    assert "plugin_red" in listed.stdout
    assert "plugin_red" not in gradsum("methods").stdout


def test_an_unknown_plugin_is_one_error_naming_it(tmp_path: Path) -> None:
    missing = gradsum("--plugin", str(tmp_path / "absent.py"), "methods")
    assert missing.returncode == 2
    assert f"plugin '{tmp_path / 'absent.py'}': no such file" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [("gradsum_no_such_module", "cannot import it"), ("broken.py", "invalid Python")],
)
def test_bad_plugins_name_themselves(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "broken.py").write_text("def (:\n", encoding="utf-8")
    target = str(tmp_path / name) if name.endswith(".py") else name
    with pytest.raises(SpecError, match=message):
        load_plugin(target)
