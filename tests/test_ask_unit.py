"""%%ask's parts that need no server: templates, conversations, the Answer views, error wording."""
import pytest

from vllm_magics.ask.answer import Answer, AnswerList
from vllm_magics.ask.request import Conversations, TemplateError, build_messages, explain, render_prompt
from vllm_magics.ask.client import ChatClient, NoServer, ServerError, error_message, iter_sse


def test_template_reads_the_namespace():
    assert render_prompt("Capital of {{ country }}?", {"country": "France"}) == "Capital of France?"
    assert render_prompt("{% for x in xs %}- {{ x }}\n{% endfor %}", {"xs": [1, 2]}) == "- 1\n- 2\n"


def test_undefined_name_is_named():
    with pytest.raises(TemplateError, match="'missing_var'"):
        render_prompt("Summarise {{ missing_var }}", {})


@pytest.mark.parametrize("code", [
    'd = {"a": {"b": 1}}',
    "print(f'{x!r} {y}') is fine, and so is `f'{x!r} {{literal}}'`",
    "```python\nprint(f'{{x}}')\n```\n{{ name }}",
    "JSON: [{\"k\": {\"v\": [1, 2]}}]",
    "echo ${#array[@]} {#not a comment#}",
    "`{{ not_templated }}` but {{ name }}",
])
def test_code_and_braces_pass_through(code):
    out = render_prompt(code, {"name": "N", "x": 1})
    for keep in ('{"a": {"b": 1}}', "{{literal}}", "print(f'{{x}}')", '[{"k": {"v": [1, 2]}}]',
                 "${#array[@]} {#not a comment#}", "`{{ not_templated }}`"):
        if keep in code:
            assert keep in out
    if "{{ name }}" in code.replace("`{{ not_templated }}`", ""):
        assert "N" in out


def test_bad_template_syntax_says_so():
    with pytest.raises(TemplateError, match="not a valid template"):
        render_prompt("{% for %}", {})


def test_conversations_keep_answers_not_reasoning():
    convs = Conversations()
    a = Answer(text="Paris.", reasoning="The user asks about France...")
    convs.record("geo", "Capital of France?", a)
    msgs = build_messages("And Italy?", "Be brief.", convs.history("geo"))
    assert msgs == [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Capital of France?"},
                    {"role": "assistant", "content": "Paris."},
                    {"role": "user", "content": "And Italy?"}]
    assert convs.last == "geo" and convs.reset("geo") == 1 and convs.history("geo") == []


def test_answer_views_and_warnings():
    a = Answer(text="**Paris** <script>x</script>", reasoning="Think <b>", model="m", finish_reason="length",
               usage={"prompt_tokens": 5, "completion_tokens": 7}, request={"max_tokens": 7})
    a.first_token_at = a.started_at + 0.05
    a.ended_at = a.started_at + 1.05
    bundle = a._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/markdown", "text/html"}
    html = bundle["text/html"]
    assert "<strong>Paris</strong>" in html and "<script>x" not in html and "Think &lt;b&gt;" in html
    assert "<details class=\"vm-reasoning\">" in html  # collapsed once the answer is there
    assert "max_tokens (7)" in bundle["text/plain"] and "7.0 tokens/s" in bundle["text/plain"]
    assert "first token 50 ms" in bundle["text/plain"]
    assert str(a) == a.text
    live = Answer(reasoning="thinking", streaming=True)
    assert "<details class=\"vm-reasoning\" open>" in live.html_view()


def test_answer_list_views():
    answers = AnswerList([Answer(text="A", prompt="p0"), Answer(error="boom", prompt="p1")])
    assert "[0] ok: A" in repr(answers) and "[1] error: boom" in repr(answers)
    assert "boom" in answers._repr_mimebundle_()["text/html"] and answers.texts == ["A", ""]


def test_error_wording_matches_vllms_bodies():
    c = ChatClient("http://127.0.0.1:1/v1")
    assert c.base_url == "http://127.0.0.1:1"
    assert "nothing answers" in explain(NoServer("x"), c)
    # vLLM's 401 body is a plain string, unlike its other errors.
    assert "refused the API key" in explain(ServerError("", 401, {"error": "Unauthorized"}), c)
    body404 = {"error": {"message": "The model `nope` does not exist.", "type": "NotFoundError", "param": None,
                         "code": 404}}
    assert "The model `nope` does not exist. Use --model" in explain(ServerError("", 404, body404), c)
    body400 = {"error": {"message": "This model's maximum context length is 8192 tokens. However, you "
                                    "requested 9000 tokens.", "type": "BadRequestError", "code": 400}}
    assert "does not fit the model's context" in explain(ServerError("", 400, body400), c)
    assert error_message(404, {"detail": "Not Found"}) == "Not Found"


def test_sse_parsing_stops_at_done_and_skips_noise():
    lines = [b": keep-alive", b"", b'data: {"a": 1}', b"event: x", b'data: {"b": 2}', b"data: [DONE]",
             b'data: {"c": 3}']
    assert list(iter_sse(lines)) == [{"a": 1}, {"b": 2}]
