"""Rewrite MODULE_PYTHON_SCRIPTS in XAISegExtension/CMakeLists.txt from the Python files on disk
(run after adding or removing a module; Testing/slicer/test_cmake_lists.py checks the list)."""
import re
from pathlib import Path

MODULE = Path(__file__).resolve().parents[1] / "XAISegExtension"


def shipped(path: Path) -> bool:
    rel = path.relative_to(MODULE)
    return (rel.parts[0] != "Testing" and "__pycache__" not in rel.parts
            and not any(p.startswith(".") or p.endswith(".egg-info") for p in rel.parts))


def main() -> None:
    files = sorted(str(p.relative_to(MODULE)) for p in MODULE.rglob("*.py") if shipped(p))
    lib = [f for f in files if f.startswith("XAISegExtensionLib/")]
    engine = [f for f in files if f.startswith("xaiseg/")]
    names = ["${MODULE_NAME}.py"] + [f.replace("XAISegExtensionLib/", "${MODULE_NAME}Lib/") for f in lib] + engine
    cmake = MODULE / "CMakeLists.txt"
    text = cmake.read_text()
    m = re.search(r"set\(\s*MODULE_PYTHON_SCRIPTS(\s+.*?)\)", text, re.S)  # the whitespace too: no blank lines pile up
    cmake.write_text(text[:m.start(1)] + "\n  " + "\n  ".join(names) + "\n  " + text[m.end(1):])


if __name__ == "__main__":
    main()
