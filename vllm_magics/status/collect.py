"""What a vLLM server is doing, as one plain dict (no IPython): `%vllm_status --json` returns it.

Keys (values are None when unknown):
- `url`: base URL; `api_key`: the key, masked; `collected_at`: ISO time; `took_ms`.
- `process`: for a managed server `{state, pid, pgid, exit_code, uptime_s, host, port, model,
  log_path, detach, adopted}` (state: starting, ready, exited, stopped, adopted), or
  `{state: "external"}` for a server given by URL.
- `health`: `{status, ok}`: /health's HTTP status (200 ready, 503 engine dead), None if nothing answers.
- `version`: vLLM's version (/version).
- `models`: `[{id, root, max_model_len}]` from /v1/models (which needs the key); `models_error`.
- `gpus`: `[{index, name, memory_used_mib, memory_total_mib, utilization_pct, compute_capability}]`
  from nvidia-smi ([] without a GPU).
- `metrics`: from /metrics: `requests_running`, `requests_waiting`, `kv_cache_usage` (0-1),
  `prompt_tokens_total`, `generation_tokens_total`, `generation_tokens_per_s` (between this sample and
  the previous one), `preemptions_total`, `requests_finished` ({finished_reason: count}),
  `time_to_first_token` / `e2e_latency` / `inter_token_latency` ({count, mean_s, p50_s, p90_s, p99_s}).
- `tunnel`: `{public_url}` when one is open.
- `log_tail`: the last log lines (managed server); `diagnoses`: `[{key, summary, fix}]` for an exited one.
"""
from __future__ import annotations

import datetime
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from vllm_magics.errors import VllmMagicsError
from vllm_magics.status.probes import get_json, get_text, health_status, server_root


class Unreachable(VllmMagicsError):
    pass


def _process_info(server) -> dict:
    state = server.state
    if server.adopted and state in ("ready", "starting"):
        state = "adopted"
    uptime = server.uptime()
    return {"state": state, "pid": server.pid, "pgid": server.pgid, "exit_code": server.exit_code(),
            "uptime_s": round(uptime, 1) if uptime is not None else None, "host": server.plan.host,
            "port": server.plan.port, "model": server.plan.model, "log_path": str(server.log_path),
            "detach": server.detach, "adopted": server.adopted}


def collect_status(base_url: str, api_key: str | None = None, *, server=None, previous=None,
                   tunnel_url: str | None = None, query_gpus=None, log_lines: int = 15,
                   timeout: float = 2.0) -> tuple[dict, object]:
    """Ask the server (in parallel) and return (status dict, metrics snapshot for the next rate)."""
    from vllm_magics.status.metrics import parse_metrics
    from vllm_magics.redact import mask_secret

    t0 = time.monotonic()
    base_url = server_root(base_url)
    alive = server.is_alive() if server is not None else True

    def fetch(what):
        try:
            if what == "health":
                return health_status(base_url, timeout)
            if what == "version":
                return get_json(base_url, "/version", timeout)[1]
            if what == "models":
                return get_json(base_url, "/v1/models", timeout, api_key)
            if what == "metrics":
                code, text = get_text(base_url, "/metrics", timeout)
                return parse_metrics(text) if code == 200 else None
            if what == "gpus":
                return query_gpus() if query_gpus else []
        except (OSError, ValueError):
            return None

    kinds = ["gpus"] + (["health", "version", "models", "metrics"] if alive else [])
    with ThreadPoolExecutor(len(kinds)) as pool:
        results = dict(zip(kinds, pool.map(fetch, kinds)))

    status = {
        "url": base_url, "api_key": mask_secret(api_key) if api_key else None,
        "collected_at": datetime.datetime.now().isoformat(timespec="seconds"),
        "process": _process_info(server) if server is not None else {"state": "external"},
        "health": {"status": results.get("health"), "ok": results.get("health") == 200},
        "version": (results.get("version") or {}).get("version") if isinstance(results.get("version"), dict) else None,
        "models": [], "models_error": None,
        "gpus": [_gpu_dict(g) for g in results.get("gpus") or []],
        "metrics": None,
        "tunnel": {"public_url": tunnel_url} if tunnel_url else None,
        "log_tail": server.log_tail(log_lines) if server is not None else [],
        "diagnoses": [],
    }
    models = results.get("models")
    if models is not None:
        code, body = models
        if code == 200 and isinstance(body, dict):
            status["models"] = [{"id": m.get("id"), "root": m.get("root"), "max_model_len": m.get("max_model_len")}
                                for m in body.get("data", [])]
        else:
            status["models_error"] = f"HTTP {code}" + (" (the API key was refused)" if code == 401 else "")
    snapshot = results.get("metrics")
    if snapshot is not None:
        status["metrics"] = snapshot.as_dict(previous)
    if server is not None and not alive:
        from vllm_magics.server.diagnose import diagnose

        code = server.exit_code()
        if not server.last_stop:  # stopped by us: nothing to diagnose
            status["diagnoses"] = [{"key": d.key, "summary": d.summary, "fix": d.fix}
                                   for d in diagnose("\n".join(server.log_tail(400)), code)]
    elif server is None and results.get("health") is None and snapshot is None:
        raise Unreachable(f"nothing answers at {base_url}: check the URL (and that the server runs)")
    status["took_ms"] = round((time.monotonic() - t0) * 1000, 1)
    return status, snapshot


def _gpu_dict(g) -> dict:
    d = asdict(g)
    d["compute_capability"] = ".".join(map(str, g.compute_capability)) if g.compute_capability else None
    return d
