"""The extension's CMake files agree with the files on disk, so a packaged extension never misses
(or names a missing) Python file or resource; and the top-level file has every EXTENSION_* field
the Extension Manager shows.  These tests need no Slicer build and no slicer-core."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "XAISegExtension"
FIELDS = ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
          "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS")
RAW_PREFIX = "https://raw.githubusercontent.com/xaiseg/XAISeg/main/"


def cmake_list(text: str, variable: str):
    m = re.search(r"set\(\s*" + variable + r"\s+(.*?)\)", text, re.S)
    assert m, f"{variable} is not set"
    items = [line.split("#")[0].strip() for line in m.group(1).splitlines()]
    return [i.replace("${MODULE_NAME}", "XAISegExtension") for i in items if i]


def cmake_set(text: str, variable: str) -> str:
    m = re.search(r"set\(\s*" + variable + r'\s+"([^"]*)"\s*\)', text)
    assert m, f"{variable} is not set to a quoted string"
    return m.group(1)


def _shipped(path: Path) -> bool:
    rel = path.relative_to(MODULE)
    return (path.is_file() and rel.parts[0] != "Testing" and "__pycache__" not in rel.parts
            and not any(p.startswith(".") or p.endswith(".egg-info") for p in rel.parts)
            and path.suffix != ".pyc" and path.name != "CMakeLists.txt")


def files_on_disk():
    files = sorted(str(p.relative_to(MODULE)) for p in MODULE.rglob("*") if _shipped(p))
    return [f for f in files if f.endswith(".py")], [f for f in files if not f.endswith(".py")]


def test_module_cmake_lists_exactly_the_python_files_and_resources():
    text = (MODULE / "CMakeLists.txt").read_text()
    scripts, resources = cmake_list(text, "MODULE_PYTHON_SCRIPTS"), cmake_list(text, "MODULE_PYTHON_RESOURCES")
    py, other = files_on_disk()
    assert len(scripts) == len(set(scripts)), "a script is listed twice"
    missing, stale = sorted(set(py) - set(scripts)), sorted(set(scripts) - set(py))
    assert not missing and not stale, (f"XAISegExtension/CMakeLists.txt MODULE_PYTHON_SCRIPTS: add {missing}, "
                                       f"remove {stale}")
    missing, stale = sorted(set(other) - set(resources)), sorted(set(resources) - set(other))
    assert not missing and not stale, (f"XAISegExtension/CMakeLists.txt MODULE_PYTHON_RESOURCES: add {missing}, "
                                       f"remove {stale}")
    assert "XAISegExtension.py" in scripts and "xaiseg/worker.py" in scripts
    assert {"Resources/UI/XAISegExtension.ui", "Resources/Icons/XAISegExtension.png"} <= set(resources)


def test_module_cmake_builds_a_scripted_module_with_generic_tests():
    text = (MODULE / "CMakeLists.txt").read_text()
    call = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", text, re.S).group(1)
    assert "NAME ${MODULE_NAME}" in call and "SCRIPTS ${MODULE_PYTHON_SCRIPTS}" in call
    assert "RESOURCES ${MODULE_PYTHON_RESOURCES}" in call and "WITH_GENERIC_TESTS" in call
    assert "add_subdirectory(Testing/Python)" in text


def test_self_test_is_registered():
    text = (MODULE / "Testing" / "Python" / "CMakeLists.txt").read_text()
    m = re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+(\S+)", text)
    assert m, "slicer_add_python_unittest(SCRIPT ...) is missing"
    script = m.group(1).replace("${CMAKE_CURRENT_SOURCE_DIR}", str(MODULE / "Testing" / "Python")) \
        .replace("${MODULE_NAME}", "XAISegExtension")
    assert Path(script).resolve() == (MODULE / "XAISegExtension.py").resolve()
    assert "class XAISegExtensionTest(ScriptedLoadableModuleTest)" in (MODULE / "XAISegExtension.py").read_text()


def test_top_level_cmake_has_every_extension_field():
    text = (ROOT / "CMakeLists.txt").read_text()
    values = {f: cmake_set(text, f) for f in FIELDS}
    assert all(v.strip() for v in values.values()), {k: v for k, v in values.items() if not v.strip()}
    assert values["EXTENSION_DEPENDS"].split() == ["PyTorch"]
    assert values["EXTENSION_CATEGORY"] == "Segmentation"
    assert values["EXTENSION_HOMEPAGE"].startswith("https://")
    for url in [values["EXTENSION_ICONURL"], *values["EXTENSION_SCREENSHOTURLS"].split()]:
        assert url.startswith(RAW_PREFIX), url
        assert (ROOT / url[len(RAW_PREFIX):]).is_file(), f"{url} points to a file that is not in the repository"
    assert "add_subdirectory(XAISegExtension)" in text
    assert "find_package(Slicer REQUIRED)" in text and "Slicer_EXTENSION_CPACK" in text
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")


# The Slicer extensions catalog entry schema (v1.0.2): its required and allowed keys, and the
# categories the index's checker accepts for an extension like this one.
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}
CATALOG_ALLOWED = CATALOG_REQUIRED | {"scm_revision", "scm_type", "build_dependencies", "dicom_support_rule",
                                      "build_subdirectory", "enabled", "tier"}
CATALOG_SCHEMA = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"


def test_contributors_are_listed_as_the_index_asks():
    text = (ROOT / "CMakeLists.txt").read_text()
    contributors = [c.strip() for c in cmake_set(text, "EXTENSION_CONTRIBUTORS").split(",")]
    for c in contributors:
        assert re.fullmatch(r"[^(),]+ \([^()]+\)", c), f"contributor {c!r} is not 'Name (Organization)'"
    module = (MODULE / "XAISegExtension.py").read_text()
    assert f"self.parent.contributors = {contributors!r}".replace("'", '"') in module, \
        "the module's contributors differ from the extension's"


def test_catalog_entry_for_the_extensions_index():
    import json

    text = (ROOT / "CMakeLists.txt").read_text()
    project = re.search(r"project\(\s*([^\s)]+)", text).group(1)
    path = ROOT / f"{project}.json"
    assert path.is_file(), f"the index's entry is named after project(): {path.name}"
    raw = path.read_bytes()
    assert b"\r" not in raw, "the index accepts LF line endings only"
    entry = json.loads(raw)
    assert CATALOG_REQUIRED <= set(entry) <= CATALOG_ALLOWED, sorted(entry)
    assert entry["$schema"] == CATALOG_SCHEMA
    assert entry["category"] == cmake_set(text, "EXTENSION_CATEGORY") == "Segmentation"
    assert entry["scm_url"].startswith("https://github.com/") and not entry["scm_url"].endswith("/")
    assert cmake_set(text, "EXTENSION_HOMEPAGE").startswith(entry["scm_url"])
    assert entry["build_dependencies"] == cmake_set(text, "EXTENSION_DEPENDS").split()
    assert isinstance(entry["tier"], int) and 1 <= entry["tier"] <= 5 and entry["scm_revision"]
    screenshots = cmake_set(text, "EXTENSION_SCREENSHOTURLS").split()
    assert any("compare_layout" in u for u in screenshots) and len(screenshots) >= 2


def test_cmake_list_parser_reads_what_cmake_reads():
    text = "set(MODULE_PYTHON_SCRIPTS\n  ${MODULE_NAME}.py  # main\n  a/b.py\n  )\n"
    assert cmake_list(text, "MODULE_PYTHON_SCRIPTS") == ["XAISegExtension.py", "a/b.py"]


def rewrite_lists() -> None:
    """Rewrite the two lists in XAISegExtension/CMakeLists.txt from the files on disk."""
    path = MODULE / "CMakeLists.txt"
    text = path.read_text()
    py, other = files_on_disk()

    def cmake_name(f):
        return f.replace("XAISegExtensionLib/", "${MODULE_NAME}Lib/") if not f.startswith("Resources/") and \
            f != "XAISegExtension.py" else f.replace("XAISegExtension.", "${MODULE_NAME}.")

    first = [f for f in py if not f.startswith("xaiseg/")]
    first = sorted(first, key=lambda f: (f != "XAISegExtension.py", f))
    scripts = "\n".join("  " + cmake_name(f) for f in first + [f for f in py if f.startswith("xaiseg/")])
    resources = "\n".join("  " + cmake_name(f) for f in other)
    text = re.sub(r"set\(MODULE_PYTHON_SCRIPTS\n.*?\n  \)", f"set(MODULE_PYTHON_SCRIPTS\n{scripts}\n  )", text, flags=re.S)
    text = re.sub(r"set\(MODULE_PYTHON_RESOURCES\n.*?\n  \)", f"set(MODULE_PYTHON_RESOURCES\n{resources}\n  )", text,
                  flags=re.S)
    path.write_text(text)


if __name__ == "__main__":  # python Testing/slicer/test_cmake_lists.py  (after adding or removing a file)
    rewrite_lists()
    print(f"rewrote the file lists of {MODULE / 'CMakeLists.txt'}")
