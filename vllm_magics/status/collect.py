"""What a vLLM server is doing, as one plain dict (no IPython): `%vllm_status --json` returns it.

Keys (values are None when unknown). A top-level key is followed by a colon, a figure of `metrics` is
not: tests/test_status.py reads this list and compares it with what the function returns.
- `url`: base URL; `api_key`: the key, masked; `collected_at`: ISO time; `took_ms`: how long it took.
- `process`: for a managed server {state, pid, pgid, exit_code, uptime_s, host, port, model,
  log_path, detach, adopted} (state: starting, ready, exited, stopped, adopted), or
  {state: "external"} for a server given by URL.
- `health`: {status, ok}: /health's HTTP status (200 ready, 503 engine dead), None if nothing answers.
- `version`: vLLM's version (/version).
- `models`: [{id, root, parent, max_model_len}] (parent: a LoRA adapter's base) from /v1/models (which needs the key); `models_error`: why
  the list is empty (an HTTP status, a reply that is not a model list).
- `gpus`: [{index, name, memory_used_mib, memory_total_mib, utilization_pct, compute_capability}]
  from nvidia-smi ([] without a GPU).
- `metrics`: from /metrics: `requests_running`, `requests_waiting`, `kv_cache_usage` (0-1),
  `prompt_tokens_total`, `generation_tokens_total`, `generation_tokens_per_s` (between this sample and
  the previous one), `preemptions_total`, `requests_finished` ({finished_reason: count}),
  `time_to_first_token` / `e2e_latency` / `inter_token_latency` ({count, mean_s, p50_s, p90_s, p99_s}).
- `metrics_error`: why `metrics` is None (e.g. "no vLLM figures" from a server that is not vLLM).
- `tunnel`: {public_url} when one is open.
- `log_tail`: the last log lines (managed server); `diagnoses`: [{key, summary, fix}] for an exited one.
"""
from __future__ import annotations

import datetime
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from vllm_magics.errors import Unreachable
from vllm_magics.status.probes import BadReply, get_json, get_status, get_text, server_root


PATHS = {"health": "/health", "version": "/version", "models": "/v1/models", "metrics": "/metrics"}


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
                   timeout: float = 5.0) -> tuple[dict, object]:
    """Ask the server (in parallel) and return (status dict, metrics snapshot for the next rate).

    Each request ends within `timeout` seconds in total (a CPU-bound vLLM under load can take seconds
    to answer /metrics; a server dripping bytes cannot hold the magic longer). For a server given by URL (`server` None),
    raises Unreachable when nothing answers, or when what answers does not look like an
    OpenAI-compatible server (no JSON from /version or /v1/models, no vLLM figures in /metrics)."""
    from vllm_magics.status.metrics import parse_metrics
    from vllm_magics.redact import mask_secret

    t0 = time.monotonic()
    base_url = server_root(base_url)
    alive = server.is_alive() if server is not None else True
    problems: dict[str, str] = {}  # path -> what went wrong, for the one-line error

    def fetch(what):
        try:
            if what == "health":
                return get_status(base_url, "/health", timeout)
            if what == "version":
                return get_json(base_url, "/version", timeout)
            if what == "models":
                return get_json(base_url, "/v1/models", timeout, api_key)
            if what == "metrics":
                code, text = get_text(base_url, "/metrics", timeout)
                if code != 200:
                    problems["/metrics"] = f"HTTP {code}"
                    return None
                snap = parse_metrics(text)
                if not snap.has_vllm_figures:
                    problems["/metrics"] = "no vLLM figures"
                    return None
                return snap
            if what == "gpus":
                return query_gpus() if query_gpus else []
        except BadReply as exc:
            problems[PATHS.get(what, what)] = str(exc)
        except OSError:
            problems[PATHS.get(what, what)] = "nothing answers"
        except ValueError:  # prometheus_client's parser on a page that is not Prometheus text
            problems["/metrics"] = "not Prometheus text"
        return None

    kinds = ["gpus"] + (["health", "version", "models", "metrics"] if alive else [])
    pool = ThreadPoolExecutor(len(kinds))
    try:
        results = dict(zip(kinds, pool.map(fetch, kinds)))
    finally:  # on Ctrl-C, do not wait for probes still reading (each ends by its deadline anyway)
        pool.shutdown(wait=False)

    version = _json_of(results.get("version"))
    status = {
        "url": base_url, "api_key": mask_secret(api_key) if api_key else None,
        "collected_at": datetime.datetime.now().isoformat(timespec="seconds"),
        "process": _process_info(server) if server is not None else {"state": "external"},
        "health": {"status": results.get("health"), "ok": results.get("health") == 200},
        "version": str(version["version"]) if isinstance(version, dict) and version.get("version") else None,
        "models": [], "models_error": None,
        "gpus": [_gpu_dict(g) for g in results.get("gpus") or []],
        "metrics": None, "metrics_error": problems.get("/metrics"),
        "tunnel": {"public_url": tunnel_url} if tunnel_url else None,
        "log_tail": server.log_tail(log_lines) if server is not None else [],
        "diagnoses": [],
    }
    models = results.get("models")
    if models is not None:
        status["models"], status["models_error"] = _models(*models)
    else:
        status["models_error"] = problems.get("/v1/models")
    snapshot = results.get("metrics")
    if snapshot is not None:
        status["metrics"] = snapshot.as_dict(previous)
    if server is not None and not alive:
        from vllm_magics.server.diagnose import diagnose

        code = server.exit_code()
        if not server.last_stop:  # stopped by us: nothing to diagnose
            status["diagnoses"] = [{"key": d.key, "summary": d.summary, "fix": d.fix}
                                   for d in diagnose("\n".join(server.log_tail(400)), code)]
    elif server is None:
        _check_external(base_url, results, problems, status)
    status["took_ms"] = round((time.monotonic() - t0) * 1000, 1)
    return status, snapshot


def _json_of(reply):
    return reply[1] if reply is not None else None


def _models(code, body) -> tuple[list, str | None]:
    """([{id, root, parent, max_model_len}], error) from /v1/models; any other shape is an error, not a crash."""
    if code == 200 and isinstance(body, dict) and isinstance(body.get("data"), list) and all(
            isinstance(m, dict) for m in body["data"]):
        # `parent`: the base model of a LoRA adapter (vLLM lists adapters beside their base), else None.
        return [{"id": _short(m.get("id")), "root": _short(m.get("root")), "parent": _short(m.get("parent")),
                 "max_model_len": m.get("max_model_len") if isinstance(m.get("max_model_len"), int) else None}
                for m in body["data"]], None
    if code == 200:
        return [], "HTTP 200, but not a model list" + ("" if body is not None else " (not JSON)")
    return [], f"HTTP {code}" + (" (the API key was refused)" if code == 401 else "")


def _short(value, limit: int = 200):
    return None if value is None else str(value)[:limit]


def _check_external(base_url: str, results: dict, problems: dict, status: dict) -> None:
    """A server given by URL must look like an OpenAI-compatible one: JSON from /version or
    /v1/models (a 401 in JSON counts: the key is wrong, the server is right), or vLLM's figures."""
    if status["version"] or status["metrics"] is not None or isinstance(_json_of(results.get("models")), dict):
        return
    problems.pop("gpus", None)
    if problems and all(p == "nothing answers" for p in problems.values()):
        raise Unreachable(f"nothing answers at {base_url}: check the URL (and that the server runs)")
    if results.get("models") is not None:
        problems.setdefault("/v1/models", status["models_error"] or "not JSON")
    if results.get("version") is not None:
        problems.setdefault("/version", "not JSON")
    detail = "; ".join(f"{path}: {what}" for path, what in sorted(problems.items()))
    raise Unreachable(f"{base_url} does not answer like a vLLM (or OpenAI-compatible) server ({detail}): "
                      "check the URL")


def _gpu_dict(g) -> dict:
    d = asdict(g)
    d["compute_capability"] = ".".join(map(str, g.compute_capability)) if g.compute_capability else None
    return d
