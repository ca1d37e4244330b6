"""`%%ask --compare A,B[,C]`: one prompt to several models at once, answers side by side as they stream.

Each of A, B, C names a managed server (%vllm_serve --name), a model one serves or one of its LoRA
adapters (with --url: a model of that server). A variant adds `:system=VAR` and/or `:params=VAR`,
VAR being a variable that holds the system prompt (a str) or extra request fields (a dict):

    %%ask --compare base,pineapple,base:system=pirate
    What is the capital of Italy?

The Comparison (with --each, a CompareTable) is stored in `_ask` and in `--out VAR`; the views are
notebook/views/compare.py, the requests ask/compare.py.
"""
from __future__ import annotations

import re

from IPython.core.error import UsageError

MAX_TARGETS = 6  # columns beyond this are too narrow to read in a notebook
_VARIANT = re.compile(r"^(system|params)=([A-Za-z_][A-Za-z0-9_]*)$")


def parse_compare(spec: str) -> list[tuple[str, str, dict]]:
    """`A,B:system=s` -> [(label, name, {"system": "s"}), ...]; a one-line UsageError for a bad list."""
    parts = [p.strip() for p in (spec or "").split(",")]
    if any(not p for p in parts) or len(parts) < 2:
        raise UsageError(f"--compare {spec!r}: name two or more models, servers or adapters, separated by commas, "
                         "e.g. --compare base,r1")
    if len(parts) > MAX_TARGETS:
        raise UsageError(f"--compare: at most {MAX_TARGETS} at once (columns get too narrow to read)")
    seen, out = set(), []
    for part in parts:
        if part in seen:
            raise UsageError(f"--compare: {part} is named twice (add :system=VAR or :params=VAR to vary it)")
        seen.add(part)
        name, *variants = part.split(":")
        if variants and not all(_VARIANT.match(v) for v in variants):
            name, variants = part, []  # a model name with a colon in it
        options = {}
        for v in variants:
            key, var = _VARIANT.match(v).groups()
            if key in options:
                raise UsageError(f"--compare {part}: {key}= is given twice")
            options[key] = var
        out.append((part, name, options))
    return out


def _variant_values(options: dict, ns: dict, part: str) -> tuple[str | None, dict]:
    system = params = None
    if "system" in options:
        system = ns.get(options["system"])
        if not isinstance(system, str):
            raise UsageError(f"--compare {part}: system={options['system']} must name a variable holding the "
                             "system prompt (a str)")
    if "params" in options:
        params = ns.get(options["params"])
        if not isinstance(params, dict):
            raise UsageError(f"--compare {part}: params={options['params']} must name a variable holding a dict "
                             "of request fields, e.g. hot = {'temperature': 1.2}")
    return system, dict(params or {})


def _check_combination(args) -> None:
    for flag, given in (("--continue", args.cont), ("--thread", args.thread),
                        ("--schema", getattr(args, "schema", None)), ("--jsonl", getattr(args, "jsonl", None)),
                        ("--resume", getattr(args, "resume", None)),
                        ("--export-batch", getattr(args, "export_batch", None)),
                        ("--model", args.model)):
        if given:
            hint = "--compare names the models itself" if flag == "--model" else \
                "compared answers are independent, one prompt per model" if flag in ("--continue", "--thread") \
                else "ask each model on its own for that"
            raise UsageError(f"--compare cannot be combined with {flag}: {hint}")


def build_targets(magics, args, ns: dict):
    """The Targets for `args.compare`: where each one's requests go, with its key, model and variant."""
    from vllm_magics.ask.compare import Target
    from vllm_magics.notebook.base import served_model_name_or_default

    timeout = args.timeout or magics.request_timeout
    resolved = []  # every name first: a wrong one is said before a stopped server is
    for label, name, options in parse_compare(args.compare):
        system, params = _variant_values(options, ns, label)
        if args.url or magics.url:
            base, key, server = magics._target(args)
            resolved.append((label, server, base, key, name or None, system, params))
            continue
        if name:
            server, model = magics._resolve_model(name)
            if server is None:
                known = ", ".join(magics.servers) or "none"
                raise UsageError(f"--compare: no server, model or adapter is called {name!r} (servers: {known}; "
                                 "%vllm_status lists their models and adapters)")
        else:  # ":system=VAR" alone: the default server's model
            server = magics.server
            if server is None:
                raise UsageError("no server: start one with %vllm_serve MODEL, or pass --url")
            model = served_model_name_or_default(server)
        resolved.append((label, server, server.base_url, server.api_key, model, system, params))
    targets = []
    for label, server, base, key, model, system, params in resolved:
        if server is not None:
            if not server.is_alive():
                code = server.exit_code()
                raise UsageError(f"--compare {label}: its server is not running" +
                                 (f" (exit code {code})" if code is not None else "") + "; %vllm_status shows why")
            params.setdefault("return_token_ids", True)  # vLLM: exact reasoning token counts
        targets.append(Target(label, base, key, model=model, system=system, params=params, timeout=timeout))
    return targets


def ask_compare(magics, args, cell: str):
    """Run `%%ask --compare`: the same prompt (or, with --each, prompts) to every target at once."""
    from vllm_magics.ask import prompt as prompt_mod

    _check_combination(args)
    if args.out and not args.out.isidentifier():  # said now: after the answers it would leave the live view
        raise UsageError(f"--out needs a variable name, not {args.out!r}")
    if not (cell or "").strip():
        raise UsageError("%%ask needs a prompt in the cell body, e.g.\n%%ask --compare a,b\nWhat is vLLM?")
    params = magics._request_params(args)
    ns = magics.shell.user_ns if magics.shell is not None else {}
    targets = build_targets(magics, args, ns)
    system = args.system if args.system is not None else (magics.system or None)
    if args.each:
        return _compare_each(magics, args, cell.strip("\n"), ns, params, targets, system)
    try:
        prompt = cell.strip("\n") if args.no_template else prompt_mod.render_prompt(cell.strip("\n"), ns)
    except prompt_mod.TemplateError as exc:
        raise UsageError(str(exc)) from None
    messages = prompt_mod.build_messages(prompt, system)
    return _compare_one(magics, args, prompt, messages, params, targets)


def _compare_one(magics, args, prompt, messages, params, targets):
    from vllm_magics.ask.compare import CompareInterrupted, compare
    from vllm_magics.notebook.views.compare import LiveCompare

    live = LiveCompare([t.label for t in targets], magics._in_notebook(),
                       hide_reasoning=args.hide_reasoning or magics.hide_reasoning,
                       updates_per_second=magics.stream_updates_per_second)
    try:
        result = compare(targets, messages, params, on_update=live.update, stream=not args.no_stream,
                         on_done=live.done, on_tick=live.tick)
    except CompareInterrupted as exc:
        _keep(magics, exc.result, targets, prompt, args.out)
        _finish(live, exc.result)
        raise UsageError("interrupted: the partial answers stay above (and in _ask)") from None
    _keep(magics, result, targets, prompt, args.out)
    _finish(live, result)


def _finish(live, result) -> None:
    try:
        live.finish(result)
    except KeyboardInterrupt:
        raise UsageError("interrupted while drawing the answers: they are all in _ask") from None


def _keep(magics, result, targets, prompt, out) -> None:
    """Store the result (`_ask`, --out) and record each answer in the history, if the session keeps one."""
    for answer in result:
        if answer is not None and not answer.prompt:
            answer.prompt = prompt
    magics._store_answer(result, out)
    record = getattr(magics, "_record_history", None)
    if record is not None:
        for target, answer in zip(targets, result):
            if answer is not None and (answer.text or answer.reasoning):
                record(answer, target.base_url)


def _compare_each(magics, args, cell, ns, params, targets, system):
    from vllm_magics.ask.compare import CompareInterrupted, compare_each
    from vllm_magics.notebook.ask_each import items_of, make_prepare
    from vllm_magics.notebook.views.live import BatchProgress

    items, _rows = items_of(args.each, ns)
    prepare = make_prepare(args, cell, ns, system)  # the template checked once, before any request

    concurrency = args.concurrency or magics.concurrency
    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    progress = BatchProgress(len(items) * len(targets), magics._in_notebook())
    try:
        table = compare_each(targets, items, prepare, params, concurrency=concurrency, stream=not args.no_stream,
                             on_done=lambda i, j, answer: progress.update(answer))
    except CompareInterrupted as exc:
        progress.finish()
        _keep_table(magics, exc.result, targets, args.out)
        raise UsageError(f"interrupted: {sum(1 for r in exc.result.rows for a in r if a is not None and a.ok)} "
                         "answers finished; the table is in _ask (requests in flight were aborted)") from None
    progress.finish()
    _keep_table(magics, table, targets, args.out)
    if magics._in_notebook():
        from IPython.display import display

        from vllm_magics.notebook.views.compare import compare_table_bundle

        display(compare_table_bundle(table), raw=True)
    else:
        print(table.text_view(), flush=True)


def _keep_table(magics, table, targets, out) -> None:
    magics._store_answer(table, out)
    record = getattr(magics, "_record_history", None)
    if record is not None:
        for row in table.rows:
            for target, answer in zip(targets, row):
                if answer is not None and (answer.text or answer.reasoning):
                    record(answer, target.base_url)
