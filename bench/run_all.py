"""Run every benchmark and print its figures (they report; they never fail a build)."""
import pathlib
import runpy

HERE = pathlib.Path(__file__).resolve().parent
for name in ("load_ext_cost", "readiness_delay", "ask_overhead", "status_time", "stream_cost", "batch_cost",
             "markdown_cost", "diagnose_time", "batch_memory", "magic_batch_memory", "cpu_wait_policy"):
    print(f"== {name}")
    runpy.run_path(str(HERE / f"{name}.py"), run_name="__main__")
