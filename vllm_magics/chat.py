"""Kept for scripts written against the flat layout: the chat client lives in `vllm_magics.ask.client`."""
from vllm_magics.ask.client import ChatClient, NoServer, ServerError, iter_sse  # noqa: F401
