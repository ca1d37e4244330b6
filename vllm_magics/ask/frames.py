"""Answers as a DataFrame next to the input rows (pandas is imported when used). Plain module: the
Answer class imports it for `AnswerList.to_frame`, so it imports no other part of the package."""
from __future__ import annotations

from typing import Iterable


def answers_frame(answers: Iterable, rows=None):
    """Answers (in input order) as columns text, reasoning, finish_reason, completion_tokens, error,
    next to the input rows when given (then prefixed `answer_` if a name clashes)."""
    import pandas as pd

    cols: dict[str, list] = {"text": [], "reasoning": [], "finish_reason": [], "completion_tokens": [], "error": []}
    for a in answers:
        cols["text"].append(a.text)
        cols["reasoning"].append(a.reasoning)
        cols["finish_reason"].append(a.finish_reason)
        cols["completion_tokens"].append(a.completion_tokens)
        cols["error"].append(a.error)
    frame = pd.DataFrame(cols)
    if rows is None:
        return frame
    base = rows.reset_index(drop=True) if isinstance(rows, pd.DataFrame) else pd.DataFrame({"input": list(rows)})
    if len(base) != len(frame):
        raise ValueError(f"{len(frame)} answers for {len(base)} input rows: they must pair up in order")
    out = pd.concat([base, frame.add_prefix("answer_" if set(cols) & set(base.columns) else "")], axis=1)
    if isinstance(rows, pd.DataFrame):
        out.index = rows.index
    return out
