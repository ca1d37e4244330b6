"""%%ask's cell as a jinja2 template (README, "The cell is a jinja2 template over your variables"):
what is sent is the cell as written except for `{{ }}` and `{% %}`, and every failure is one sentence
that names the way out (`--no-template`).
"""
import pytest

from vllm_magics.ask.prompt import PromptTemplate, TemplateError, render_prompt


def test_template_free_cell_reads_no_names():
    template = PromptTemplate("no placeholders here")
    assert template.names == frozenset() and template.missing({}) == []
    assert template.render({}) == "no placeholders here"


@pytest.mark.parametrize("cell, expected", [
    ("{{ v }}\n", "<b>&amp; 'x'\n"),  # the last newline stays (jinja drops it by default)
    ("{{ v }}\n\n", "<b>&amp; 'x'\n\n"),
    ("{{ v }} {#not a comment#} {# nor this #}", "<b>&amp; 'x' {#not a comment#} {# nor this #}"),
])
def test_template_values_and_text_are_sent_as_written(cell, expected):
    # no HTML escaping of values (a prompt is not a web page), jinja's comments off
    assert render_prompt(cell, {"v": "<b>&amp; 'x'"}) == expected


def test_template_syntax_error_names_the_line_and_the_way_out():
    with pytest.raises(TemplateError) as err:
        render_prompt("fine\n{% for %}", {})
    message = str(err.value)
    assert message.startswith("the prompt is not a valid template (line 2: ")
    assert message.endswith("); send it as written with --no-template")


def test_template_undefined_name_is_one_sentence_with_the_way_out():
    with pytest.raises(TemplateError) as err:
        render_prompt("Summarise {{ missing_var }}", {})
    assert str(err.value) == ("the prompt uses 'missing_var' which is not defined: define it in a cell first, "
                              "or send the cell as written with --no-template")


def test_template_expression_that_raises_names_the_error():
    with pytest.raises(TemplateError) as err:
        render_prompt("{{ 1 // n }}", {"n": 0})
    assert str(err.value) == ("evaluating the prompt template failed: ZeroDivisionError: "
                              "integer division or modulo by zero")
