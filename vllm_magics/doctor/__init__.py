"""What this machine needs to run vLLM: the platform (GPU, driver, torch, Python), the vLLM build that fits it,
and plain-words checks (%vllm_doctor, %vllm_install). Plain Python: no IPython, no torch or vllm import."""
