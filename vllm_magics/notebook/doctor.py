"""%vllm_install and %vllm_doctor: the vLLM build that fits this machine, and what stands in its way."""
from __future__ import annotations

import subprocess
import sys

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class

from vllm_magics.notebook.args import argument, magic_arguments
from vllm_magics.notebook.base import MagicsBase, _parse


@magics_class
class DoctorMagics(MagicsBase):
    """Install the right vLLM build; check the machine before serving."""

    @magic_arguments()
    @argument("--dry-run", action="store_true", help="Say what would be installed and why; install nothing")
    @line_magic
    def vllm_install(self, line=""):
        """Install the vLLM build that runs on this machine (GPU, driver, torch, Python), keeping torch.

        Reads the platform without importing torch or vLLM. When no release fits the installed torch it says
        what it would replace and that the runtime must restart afterwards.
        """
        args = _parse(self.vllm_install, line)
        from vllm_magics.doctor.install import decide
        from vllm_magics.doctor.platform import read_platform

        plan = decide(read_platform())
        print(plan.text(), flush=True)
        if plan.action != "install" or args.dry_run:
            if plan.action == "install":
                print("(dry run: nothing installed; %vllm_install installs it)")
            return
        # pip's own output, line by line, as it comes (downloads take minutes on Colab).
        cmd = [sys.executable, "-m", "pip", "install", "--progress-bar", "off"] + plan.pip_args()[1:]
        try:
            with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace") as proc:
                for ln in proc.stdout:
                    print(ln.rstrip("\n"), flush=True)
                code = proc.wait()
        except KeyboardInterrupt:
            raise UsageError("interrupted: pip was stopped; run %vllm_install again to finish") from None
        except OSError as exc:
            raise UsageError(f"could not run pip: {exc}") from None
        if code != 0:
            raise UsageError(f"pip failed (exit code {code}): its last lines are above")
        print("Installed." + (" Now restart the runtime (Colab: Runtime > Restart session), then "
                              "%load_ext vllm_magics again." if plan.restart else " %vllm_doctor checks the rest."))

    @magic_arguments()
    @argument("model", nargs="?", help="The model you mean to serve (checks its disk space and access)")
    @argument("--gpu-memory-utilization", type=float, default=None, help="The fraction you mean to give vLLM")
    @line_magic
    def vllm_doctor(self, line=""):
        """Check this machine for vLLM: builds that do not match (CUDA, torch, Python), a torch replaced in
        this session, GPU memory and disk space, a gated model without HF_TOKEN."""
        args = _parse(self.vllm_doctor, line)
        from vllm_magics.doctor.checks import doctor_text

        print(doctor_text(args.model, args.gpu_memory_utilization))
