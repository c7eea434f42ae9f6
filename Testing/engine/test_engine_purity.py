"""The engine must never import slicer, qt, ctk or vtk (it runs in plain Python and in the worker)."""
import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "XAISegExtension" / "xaiseg"
FORBIDDEN = {"slicer", "qt", "ctk", "vtk", "PythonQt", "slicer_core"}


def forbidden_imports(source: str):
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "__import__", "import_module") and node.args and isinstance(node.args[0], ast.Constant):
            names = [str(node.args[0].value)]
        found += [n for n in names if n.split(".")[0] in FORBIDDEN or n.split(".")[0].startswith("vtk")]
    return found


def test_detector_flags_forbidden_imports():
    assert forbidden_imports("import vtk") == ["vtk"]
    assert forbidden_imports("def f():\n    from slicer.util import arrayFromVolume\n") == ["slicer.util"]
    assert forbidden_imports("import importlib\nimportlib.import_module('qt')") == ["qt"]
    assert forbidden_imports("import numpy, SimpleITK") == []


def test_engine_imports_no_gui_toolkit():
    files = sorted(ENGINE.rglob("*.py"))
    assert len(files) >= 10
    offenders = {str(f.relative_to(ENGINE)): bad for f in files if (bad := forbidden_imports(f.read_text()))}
    assert offenders == {}
